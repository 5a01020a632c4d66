"""The suite's own skip rule: tests marked root skip on missing capabilities, whatever the uid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed")
def test_root_tests_skip_without_cap_sys_admin_even_as_uid_0() -> None:
    """uid 0 without CAP_SYS_ADMIN (dropped from the bounding set): every root test is skipped, naming the cap."""
    r = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", sys.executable, "-m", "pytest", "-q", "-rs",
                        "-p", "no:cacheprovider", str(TESTS / "integration" / "test_doctor.py")],
                       capture_output=True, text=True, timeout=120, cwd=TESTS.parent)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "needs CAP_SYS_ADMIN" in r.stdout
    assert " passed" not in r.stdout and " failed" not in r.stdout and " skipped" in r.stdout
