"""Shared fixtures: the real CLI as a subprocess, a private results root, synthetic runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


# Capability bits (linux/capability.h) the tests marked root need.
CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_SYS_NICE = 12, 13, 21, 23
ROOT_CAPS = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_NET_RAW": CAP_NET_RAW, "CAP_SYS_ADMIN": CAP_SYS_ADMIN,
             "CAP_SYS_NICE": CAP_SYS_NICE}
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def effective_caps() -> int:
    """CapEff of this process: what it may do, whatever its uid (a container can be uid 0 without them)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_caps(caps: int) -> list[str]:
    return [name for name, bit in ROOT_CAPS.items() if not caps >> bit & 1]


def tracefs_problem(caps: int) -> str | None:
    """Why kernel tracing cannot work here (None when a writable tracefs is mounted or can be mounted)."""
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "tracefs":
            mounts[parts[1]] = parts[3].split(",")
    for path in TRACEFS_MOUNTS:
        if path in mounts:
            if "ro" in mounts[path]:
                return f"tracefs at {path} is mounted read-only"
            if not os.access(os.path.join(path, "instances"), os.W_OK):
                return f"{path}/instances is not writable"
            return None
    if not caps >> CAP_SYS_ADMIN & 1:
        return "tracefs is not mounted and mounting it needs CAP_SYS_ADMIN"
    if not any(os.path.isdir(p) for p in TRACEFS_MOUNTS):
        return "the kernel has no tracefs mount point"
    return None


#: ``./dev test`` runs the suite in two phases (LATSCOPE_TEST_PHASE): ``parallel`` (pytest-xdist
#: workers) takes every test not marked serial, ``serial`` takes the serial ones on a machine left to them.
PHASES = ("parallel", "serial")


def test_phase(config: pytest.Config) -> str | None:
    phase = os.environ.get("LATSCOPE_TEST_PHASE") or None
    if phase is not None and phase not in PHASES:
        raise pytest.UsageError(f"LATSCOPE_TEST_PHASE={phase}: expected one of {', '.join(PHASES)}")
    return phase


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The serial phase does not import test files that mark nothing serial (its collection: 7 s -> 1 s).

    A file's tests are marked serial in its own text (``pytest.mark.serial``, on a test or as
    ``pytestmark``); nothing adds the mark from outside.
    """
    if test_phase(config) != "serial" or not collection_path.name.startswith("test_") \
            or collection_path.suffix != ".py":
        return None
    try:
        text = collection_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if "mark.serial" in text else True


def work_group(nodeid: str) -> str:
    """Which tests one xdist worker runs together, in order.

    Every VM test (tests/integration/vm) goes to one worker, so the session's booted guest is booted
    once and no two guests compete; the tests of one integration or hostile file stay together, in the
    order they were written (module fixtures, fixed ports inside their namespaces); unit tests spread
    one by one. (xdist's own ``--dist loadgroup`` reads xdist_group marks from node ids, which pytest 9
    no longer lets it rewrite: each VM test went to a worker of its own.)
    """
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/integration/vm/"):
        return "vm"
    return nodeid if path.startswith("tests/unit/") else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n N``: work handed out by ``work_group``, the largest groups first (the VM tests' among them)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_group(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this phase's tests, skip what this machine cannot run.

    Skips: what counts is the effective capability set, not the uid: CI runs as root with every
    capability, so the tests marked root or tracefs run there.
    """
    strays = [it.nodeid for it in items if it.get_closest_marker("vm") and work_group(it.nodeid) != "vm"]
    if strays:
        raise pytest.UsageError(f"tests marked vm belong in tests/integration/vm (one worker boots one guest): "
                                f"{', '.join(strays)}")
    phase = test_phase(config)
    if phase is not None:
        serial = {id(it) for it in items if it.get_closest_marker("serial")}
        keep = [it for it in items if (id(it) in serial) == (phase == "serial")]
        dropped = [it for it in items if (id(it) in serial) != (phase == "serial")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    caps = effective_caps()
    missing = missing_caps(caps)
    skip_root = pytest.mark.skip(reason=f"needs {', '.join(missing)}") if missing else None
    trace_problem = tracefs_problem(caps)
    skip_trace = pytest.mark.skip(reason=f"needs kernel tracing: {trace_problem}") if trace_problem else None
    for item in items:
        if skip_root is not None and "root" in item.keywords:
            item.add_marker(skip_root)
        elif skip_trace is not None and "tracefs" in item.keywords:
            item.add_marker(skip_trace)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A private, empty results root."""
    root = tmp_path / "results"
    root.mkdir()
    return root


@pytest.fixture
def latscope(results: Path):
    """Run the installed `latscope` command; returns CompletedProcess (text)."""

    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None, use_results: bool = True,
            **kw) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "LATSCOPE_RESULTS": str(results)} if use_results else dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([str(BIN / "latscope"), *args], capture_output=True, text=True, timeout=timeout,
                              env=full_env, **kw)

    return run
