"""Output files are never replaced when they are devices, FIFOs or symlinks; a full device is one clear line."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from latscope.errors import StoreError
from latscope.files import atomic_output, write_atomic
from tests.hostile.conftest import one_line_error

pytestmark = pytest.mark.hostile
TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "trace" / "veth-run.report"


@pytest.fixture
def full_device(tmp_path: Path) -> Path:
    """A private node of the kernel's "full" device (char 1:7): every write fails with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    node = tmp_path / "full"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    return node


def _read_fifo(path: Path, into: list[bytes]) -> threading.Thread:
    def reader() -> None:
        with open(path, "rb") as fh:
            into.append(fh.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    return t


@pytest.mark.root
def test_full_device_is_an_error_and_stays_a_device(full_device: Path) -> None:
    """Writing to a "full" device raises StoreError naming ENOSPC; the node is not renamed over."""
    with pytest.raises(StoreError, match="ENOSPC") as info:
        write_atomic(full_device, "x" * 100_000)
    assert "\n" not in str(info.value) and str(full_device) in str(info.value)
    assert stat.S_ISCHR(os.lstat(full_device).st_mode)
    assert sorted(p.name for p in full_device.parent.iterdir()) == ["full"]


def test_fifo_target_is_written_into(tmp_path: Path) -> None:
    """A FIFO as the output gets the bytes through the pipe and stays a FIFO."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    t = _read_fifo(fifo, got)
    write_atomic(fifo, b"report bytes")
    t.join(10)
    assert got == [b"report bytes"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]


def test_symlink_is_written_through(tmp_path: Path) -> None:
    """A symlink stays a symlink; the file it points to gets the new content and keeps its mode."""
    real = tmp_path / "real.html"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.html"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and stat.S_IMODE(real.stat().st_mode) == 0o640
    dangling = tmp_path / "dangling.html"
    dangling.symlink_to(tmp_path / "not-yet.html")
    write_atomic(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "not-yet.html").read_text() == "made"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    """An error while writing leaves the old file as it was and no temporary file behind."""
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write(b"half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_directory_target_is_refused(tmp_path: Path) -> None:
    """A directory as the output file is a one-line StoreError, and the directory is untouched."""
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir()


@pytest.mark.root
def test_report_to_full_device(latscope, stored, full_device: Path) -> None:
    """`report -o FULL` fails with one line naming ENOSPC, exit 1, and leaves the device node alone."""
    r = latscope("report", stored.run_id, "-o", str(full_device), "--bootstrap", "100")
    assert r.returncode == 1
    assert "ENOSPC" in one_line_error(r)
    assert stat.S_ISCHR(os.lstat(full_device).st_mode)


def test_report_png_and_perfetto_through_symlinks(latscope, stored, tmp_path: Path) -> None:
    """--png into a directory whose PNG is a symlink, and --perfetto onto a symlink: written through."""
    pngs = tmp_path / "png"
    pngs.mkdir()
    real_png = tmp_path / "elsewhere.png"
    real_png.write_bytes(b"old")
    (pngs / "tail-ccdf.png").symlink_to(real_png)
    r = latscope("report", stored.run_id, "-o", str(tmp_path / "r.html"), "--png", str(pngs), "--bootstrap", "100")
    assert r.returncode == 0, r.stderr
    assert (pngs / "tail-ccdf.png").is_symlink() and real_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    real_json = tmp_path / "trace.json"
    (tmp_path / "perfetto.json").symlink_to(real_json)
    r = latscope("breakdown", "--trace", str(TRACE), "--perfetto", str(tmp_path / "perfetto.json"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "perfetto.json").is_symlink() and real_json.read_bytes().startswith(b'{"traceEvents"')
