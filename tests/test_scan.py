"""The pickle walker itself: streaming (any chunking gives the same answer, memory stays
bounded), what is refused and what is not, the zip and .npy paths, and ``paddle-bundle scan``."""

from __future__ import annotations

import io
import os
import pickle
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler.cli import _main
from bundler.scan import Allowlist, FileScan
from bundler.scan.opcodes import Finding


class Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("true",))


def scan(data: bytes, name: str = "model_state.pdparams", chunk: int = 1 << 20,
         allow: Allowlist | None = None) -> FileScan:
    s = FileScan([name], allow or Allowlist())
    for i in range(0, len(data), chunk):
        s.feed(memoryview(data)[i:i + chunk])
    s.close()
    return s


EVIL_4 = pickle.dumps({"a": [1, 2, {"b": Evil()}]}, protocol=4)


@given(st.integers(min_value=1, max_value=64))
def test_any_chunking_gives_the_same_finding(chunk: int) -> None:
    whole = scan(EVIL_4).finding
    assert whole is not None and whole.global_name == "posix.system"
    assert scan(EVIL_4, chunk=chunk).finding == whole


def test_offset_is_the_opcode_that_names_the_global() -> None:
    finding = scan(EVIL_4).finding
    assert isinstance(finding, Finding)
    assert EVIL_4[finding.offset] == 0x93  # STACK_GLOBAL


@pytest.mark.parametrize("data", [
    pytest.param(os.urandom(200_000), id="random-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(pickle.dumps({"w": list(range(10))}, protocol=4)[:-5], id="truncated"),
    pytest.param(b"V\\U12\n.", id="undecodable-UNICODE"),  # crashed the walker once
])
def test_not_a_loadable_pickle_is_not_refused(data: bytes) -> None:
    """Bytes that stop being a pickle make pickle.load fail at that opcode, having run
    nothing: a .pdparams of random bytes (as tests/conftest.py packs) is no threat."""
    assert scan(data).finding is None


def test_random_bytes_named_pdparams_are_never_refused() -> None:
    """tests/conftest.py packs os.urandom as model_state.pdparams: opcodes such as EXT2 or
    PERSID turn up in random bytes every few hundred bytes, and must not fail a pack."""
    import random

    rng = random.Random(0)
    for _ in range(3000):
        data = rng.randbytes(512)
        finding = scan(data).finding
        assert finding is None, (data[:64], finding)


def test_ext_in_a_pickle_with_a_protocol_header_is_refused() -> None:
    finding = scan(b"\x80\x02\x82\xf0S'true'\n\x85R.").finding
    assert finding is not None and "EXT1" in finding.what


def test_plain_files_are_not_walked() -> None:
    s = scan(b"cos\nsystem\n(S'true'\ntR.", name="README.md")
    assert s.kind is None and s.finding is None
    assert scan(b"cos\nsystem\n(S'true'\ntR.", name="x.pkl").finding is not None


def test_memory_stays_bounded_while_a_large_pickle_streams() -> None:
    import numpy as np

    data = pickle.dumps({"w": np.zeros(16 * 1024 * 1024, dtype="uint8")}, protocol=4)
    tracemalloc.start()
    try:
        assert scan(data, chunk=1 << 20).finding is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # a 16 MiB tensor, never held


def test_allow_global_extends_the_list() -> None:
    data = pickle.dumps(Evil(), protocol=2)
    assert scan(data).finding is not None
    assert scan(data, allow=Allowlist(["posix.system"])).finding is None


def test_zip_whose_directory_disagrees_with_its_members_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/notes.txt", b"\x80\x02cos\nsystem\nq\x00.")
        zf.writestr("archive/version", b"3")
    data = buf.getvalue()
    # the directory names the first member data.pkl: a loader trusting it reads the pickle
    forged = data.replace(b"archive/notes.txt", b"archive/data.pk_", 1)
    finding = scan(forged, name="pytorch_model.bin").finding
    assert finding is not None and "zip" in finding.what


def test_npy_without_objects_is_not_unpickled() -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    s = scan(buf.getvalue(), name="a.npy")
    assert s.kind == "npy" and s.finding is None


def test_scan_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "model_state.pdparams").write_bytes(pickle.dumps({"w": (1, 2)}, protocol=4))
    assert _main(["scan", str(clean)]) == 0
    assert "scanned 1 files, 1 in a pickle format" in capsys.readouterr().out
    bad = tmp_path / "bad\x1b[2J"
    bad.mkdir()
    (bad / "x.pdopt").write_bytes(EVIL_4)
    assert _main(["scan", str(clean), str(bad)]) == 3
    captured = capsys.readouterr()
    assert "x.pdopt: STACK_GLOBAL posix.system is not an allowed global" in captured.err
    assert "\x1b" not in captured.err and "bad\\x1b[2J" in captured.err
    assert _main(["scan", str(bad), "--allow-global", "posix.system", "-q"]) == 0
    assert _main(["scan", str(bad), "--allow-global", "not a global"]) == 2
    assert _main(["scan", str(tmp_path / "missing")]) == 2
