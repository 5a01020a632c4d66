"""Key files: a secret only its owner can read, never empty, never something that is not a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latscope.errors import ConfigError
from latscope.probe.auth import MAX_KEY_FILE, load_key


def _key(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    p = tmp_path / "key"
    p.write_bytes(data)
    p.chmod(mode)
    return p


def test_a_private_key_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    """`echo secret > key` gives the key b'secret'; binary keys are taken as they are."""
    assert load_key(str(_key(tmp_path, b"secret\n"))) == b"secret"
    assert load_key(str(_key(tmp_path, b"secret\r\n", 0o640))) == b"secret"
    assert load_key(str(_key(tmp_path, b"\x00\xff" * 16))) == b"\x00\xff" * 16


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o666])
def test_world_readable_or_writable_key_files_are_refused(tmp_path: Path, mode: int) -> None:
    """A key other users can read is no secret: a one-line error that says how to fix it."""
    p = _key(tmp_path, b"secret", mode)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        load_key(str(p))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_empty_key_files_are_refused(tmp_path: Path, data: bytes) -> None:
    """An empty key would authenticate nothing."""
    with pytest.raises(ConfigError, match="empty"):
        load_key(str(_key(tmp_path, data)))


def test_things_that_are_not_key_files(tmp_path: Path) -> None:
    """Missing files, directories, FIFOs (without hanging) and huge files give one-line errors."""
    with pytest.raises(ConfigError, match="No such file"):
        load_key(str(tmp_path / "absent"))
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_key(str(d))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_key(str(fifo))
    with pytest.raises(ConfigError, match="at most"):
        load_key(str(_key(tmp_path, b"k" * (MAX_KEY_FILE + 1))))
