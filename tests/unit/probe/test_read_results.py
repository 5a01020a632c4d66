"""A worker's result files as the controller reads them: damaged ones are a CaptureError, never a traceback."""

from __future__ import annotations

import io
import json
from array import array
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import CaptureError
from latscope.probe.columns import write_npz
from latscope.probe.controller import read_results


def _good(tmp_path: Path) -> Path:
    result = tmp_path / "receiver.npz"
    buf = io.BytesIO()
    write_npz(buf, {"rx_sw": (array("q", range(100)), 100), "flags": (array("q", [0] * 100), 100)})
    result.write_bytes(buf.getvalue())
    Path(f"{result}.json").write_text(json.dumps({"received": 100}))
    return result


def test_a_good_result_is_read(tmp_path: Path) -> None:
    arrays, info = read_results("receiver", _good(tmp_path), 0, "")
    assert info == {"received": 100} and arrays is not None
    assert np.array_equal(arrays["rx_sw"], np.arange(100)) and arrays["flags"].dtype == np.int64


@pytest.mark.parametrize("damage", ["half", "garbage", "empty", "pickle", "short column", "json", "json list"])
def test_a_damaged_result_is_a_capture_error(tmp_path: Path, damage: str) -> None:
    """Cut short, overwritten, emptied, an object array, columns of different lengths, a broken account."""
    result = _good(tmp_path)
    data = result.read_bytes()
    if damage == "half":
        result.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        result.write_bytes(b"\x00not a zip file" * 50)
    elif damage == "empty":
        result.write_bytes(b"")
    elif damage == "pickle":
        with result.open("wb") as fh:
            np.savez(fh, rx_sw=np.array([object()], dtype=object))
    elif damage == "short column":
        buf = io.BytesIO()
        write_npz(buf, {"rx_sw": (array("q", range(100)), 100), "flags": (array("q", [0] * 60), 60)})
        result.write_bytes(buf.getvalue())
    elif damage == "json":
        Path(f"{result}.json").write_text('{"received": 1')
    else:
        Path(f"{result}.json").write_text("[1, 2]")
    with pytest.raises(CaptureError, match="receiver's (result|account)"):
        read_results("receiver", result, 0, "")
