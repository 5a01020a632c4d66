"""What a user can ask of the VM topology (`run --topology vm[:bridge|macvtap] --vm-...`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from latscope.errors import ConfigError

CWD_KINDS = ("tmpfs", "9p", "ext4", "ext2")
ROOT_KINDS = ("9p", "initramfs")
DIRECTIONS = ("forward", "reverse", "both")


@dataclass(frozen=True)
class VmOptions:
    """The guest and how it is attached; defaults are the verified TCG set-up of docs/vm.md."""

    variant: str = "bridge"          # bridge | macvtap
    accel: str = "auto"              # auto | kvm | tcg
    cpus: int = 1
    mem_mb: int = 1024
    iothread: bool = False
    affinity: str | None = None      # vcpu=1,io=1,main=0
    cwd: str = "tmpfs"               # where the guest workers run and write stream logs
    root: str = "9p"                 # 9p: the host's root, read-only; initramfs: self-contained, no root fs
    boot_timeout_s: float = 180.0
    #: Step the guest clock by this much after synchronising it (tests check the estimate against it).
    clock_skew_ns: int = 0
    #: Clock exchanges before and after the run.
    clock_samples: int = 200
    #: More guest kernel command line (isolcpus=..., or rdinit=/x to see a guest that does not boot).
    append: str = ""

    def __post_init__(self) -> None:
        if self.variant not in ("bridge", "macvtap"):
            raise ConfigError(f"--topology vm:{self.variant}: choose vm:bridge or vm:macvtap")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise ConfigError(f"--vm-accel {self.accel}: choose auto, kvm or tcg")
        if not 1 <= self.cpus <= 8:
            raise ConfigError("--vm-cpus must be between 1 and 8")
        if not 256 <= self.mem_mb <= 16384:
            raise ConfigError("--vm-mem must be between 256 and 16384 (MiB)")
        if self.cwd not in CWD_KINDS:
            raise ConfigError(f"--vm-cwd {self.cwd}: choose from {', '.join(CWD_KINDS)}")
        if self.root not in ROOT_KINDS:
            raise ConfigError(f"--vm-root {self.root}: choose from {', '.join(ROOT_KINDS)}")
        if not 5 <= self.boot_timeout_s <= 3600:
            raise ConfigError("--vm-boot-timeout must be between 5 s and 1 h")
        if len(self.append) > 1024:
            raise ConfigError("--vm-append: at most 1024 characters")
        if any(not c.isprintable() for c in self.append):
            raise ConfigError("--vm-append: only printable characters (no newlines or control characters)")
        if "latscope." in self.append:
            raise ConfigError("--vm-append may not set latscope's own latscope.* parameters")
        if self.affinity and "io=" in self.affinity and not self.iothread:
            raise ConfigError("--vm-cpu-affinity io=...: there is no IO thread to pin without --vm-iothread")
        if not 8 <= self.clock_samples <= 10_000:
            raise ConfigError("clock samples must be between 8 and 10000")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_topology(text: str) -> tuple[str, str | None]:
    """``vm``, ``vm:bridge``, ``vm:macvtap`` -> ("vm", variant); others -> (text, None)."""
    kind, _, variant = text.partition(":")
    if kind != "vm":
        if variant:
            raise ConfigError(f"--topology {text}: only vm takes a :VARIANT")
        return kind, None
    return "vm", variant or "bridge"
