"""Review rv10: scanner bypasses found by building payloads the walker modelled differently
from the loaders. Each payload is first shown to reach its global in the real loader (with a
harmless allowed global in place of the evil one), then shown refused."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest

from bundler.scan import Allowlist, FileScan


def scan(data: bytes, name: str = "model_state.pdparams") -> FileScan:
    s = FileScan([name], Allowlist())
    s.feed(data)
    s.close()
    return s


def _pop_mark(module: bytes, name: bytes) -> bytes:
    # MARK POP: _pickle's load_pop pops the MARK itself and carries on
    return b"\x80\x04(0c" + module + b"\n" + name + b"\n(tR."


def test_pop_of_a_mark_does_not_end_the_walk() -> None:
    assert pickle.loads(_pop_mark(b"builtins", b"set"), encoding="latin1") == set()
    finding = scan(_pop_mark(b"os", b"system")).finding
    assert finding is not None and finding.global_name == "os.system"


def _npy(descr: str, body: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize("descr", ["object", "(2,)O", "i4,O", "O8"])
def test_npy_object_dtype_in_any_spelling_is_walked(descr: str) -> None:
    assert np.dtype(descr).hasobject
    body = pickle.dumps([set()], protocol=2)
    loaded = np.load(io.BytesIO(_npy(descr, body)), allow_pickle=True)
    assert loaded == [set()]  # numpy unpickles what follows such a header
    evil = _npy(descr, b"cos\nsystem\n(S'true'\ntR.")
    finding = scan(evil, "x.npy").finding
    assert finding is not None and finding.global_name == "os.system"


def test_npy_plain_and_structured_numbers_pass() -> None:
    for arr in (np.zeros(3, "<f4"), np.zeros(2, "<M8[ns]"), np.zeros(2, "|S5"),
                np.zeros(2, [("a", "<i4"), ("b", "<f8", (2,))])):
        buf = io.BytesIO()
        np.save(buf, arr)
        s = scan(buf.getvalue(), "x.npy")
        assert s.finding is None and s.kind == "npy"
