"""Review rv10: scanner bypasses found by building payloads the walker modelled differently
from the loaders. Each payload is first shown to reach its global in the real loader (with a
harmless allowed global in place of the evil one), then shown refused."""

from __future__ import annotations

import pickle

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
