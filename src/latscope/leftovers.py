"""What killed latscope processes left behind, found and removed by the next run (or by `doctor`).

SIGKILL gives a process no chance to clean up, so everything latscope
creates outside a run directory carries its creator's pid in its name, and
a name whose process no longer exists is a leftover:

- network namespaces ``latscope-<pid>-tx``, ``-rx``, ``-probe`` (latscope.netns);
- tracefs instances ``latscope-<pid>-run``, each holding its trace buffer (trace.tracefs);
- staging directories ``.staging-<run>-<pid>`` in the results root, which a
  live run also holds a lock on, and write probes ``.write-test-<pid>``
  (store.layout);
- the scratch directory of `latscope send`, ``latscope-send-<pid>-*`` in the temporary directory;
- the directory the workers of a run write their results to, ``latscope-work-<pid>-*`` in /dev/shm
  (session.worker_dir);
- a network agent's scratch directory, ``latscope-agent-<pid>-*`` in /dev/shm or the temporary directory
  (remote.netagent);
- a VM run's work directory and disk image (topo.vm.guest; QEMU itself dies with its controller);
- the file system of a run's stream logs (--log-fs): a tmpfs named ``latscope-<pid>-logs``, or an ext2/ext4
  image in ``latscope-logfs-<pid>-*`` in the temporary directory, mounted through a loop device (latscope.mounts).

Worker processes are not in the list: they end with their controller
(probe.worker.die_with_parent), and so do --stress loads (experiment.procs).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from latscope.errors import LatscopeError
from latscope.process import pid_alive

SEND_SCRATCH_PREFIX = "latscope-send-"
_SEND_SCRATCH = re.compile(rf"^{SEND_SCRATCH_PREFIX}(\d+)-")
_WORK = re.compile(r"^latscope-work-(\d+)-")
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Reaped:
    """Leftovers removed (``kind name``), and leftovers found but kept, with the reason."""

    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.removed or self.kept)

    def notes(self) -> tuple[str, ...]:
        """What a run tells the user about them: one line for the removed, one for the kept."""
        out = []
        if self.removed:
            out.append(f"removed what killed latscope runs left behind: {', '.join(self.removed)}")
        if self.kept:
            out.append(f"left behind by killed latscope runs, not removed: {', '.join(self.kept)}")
        return tuple(out)


def reap(results_root: Path | None, *, tracefs_root: Path | None = None, tmp_root: Path | None = None,
         shm_root: Path | None = None) -> Reaped:
    """Remove the leftovers of dead latscope processes (namespaces and tracefs need root; else they are kept)."""
    removed: list[str] = []
    kept: list[str] = []
    _namespaces(removed, kept)
    _instances(tracefs_root, removed, kept)
    if results_root is not None:
        from latscope.store.layout import ResultsStore

        removed += [f"staging {results_root / n}" for n in ResultsStore(results_root).reap_staging()]
    tmp = Path(tmp_root or tempfile.gettempdir())
    removed += [f"scratch {p}" for p in _send_scratch(tmp)]
    removed += [f"worker results {p}" for p in _send_scratch(shm_root or SHM, _WORK)]
    from latscope.remote.netagent import reap_stale as reap_agent_scratch

    for root in {shm_root or SHM, tmp}:
        removed += [f"agent scratch {p}" for p in reap_agent_scratch(root)]
    from latscope.topo.vm.guest import reap_stale as reap_vm_work

    removed += [f"VM work {p}" for p in reap_vm_work(tmp)]
    from latscope import mounts

    gone, left = mounts.reap_stale(tmp)
    removed += gone
    kept += left
    return Reaped(tuple(removed), tuple(kept))


def _dead_owner(name: str, pattern: re.Pattern[str]) -> bool:
    m = pattern.match(name)
    return m is not None and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1)))


def _namespaces(removed: list[str], kept: list[str]) -> None:
    from latscope import netns
    from latscope.privileges import can_build_namespaces

    if not can_build_namespaces():
        kept += [f"namespace {n} (removing it needs CAP_SYS_ADMIN)" for n in netns.stale()]
        return
    removed += [f"namespace {n}" for n in netns.reap_stale(kept)]


def _instances(root: Path | None, removed: list[str], kept: list[str]) -> None:
    from latscope.trace import tracefs

    try:
        found = tracefs.find_tracefs(root, mount=False)
    except LatscopeError:
        return  # not mounted (then there is no instance) or not readable without root
    stale = tracefs.stale(found)
    if not stale:
        return
    gone = tracefs.reap_stale(found)
    removed += [f"tracefs instance {n}" for n in gone]
    kept += [f"tracefs instance {n} (busy or not removable)" for n in stale if n not in gone]


def _send_scratch(tmp: Path, pattern: re.Pattern[str] = _SEND_SCRATCH) -> list[str]:
    out: list[str] = []
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return out
    for p in entries:
        if p.is_dir() and not p.is_symlink() and _dead_owner(p.name, pattern):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                out.append(str(p))
    return out
