"""Review rv10: scanner bypasses found by building payloads the walker modelled differently
from the loaders. Each payload is first shown to reach its global in the real loader (with a
harmless allowed global in place of the evil one), then shown refused."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

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


# -- zip archives: what zipfile reads must be what the walk checked ------------------------
HARMLESS = pickle.dumps(set(), protocol=2)  # stands in for the payload to show it is reached
EVIL = b"\x80\x02cos\nsystem\n(S'true'\ntR."


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED,
         prefix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    buf.write(prefix)
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _load(data: bytes, member: str = "archive/data.pkl") -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # as paddlenlp's load_torch reads it
        return pickle.loads(zf.read(member))


def _appended(payload: bytes) -> bytes:
    return _zip({"archive/data.pkl": payload},
                prefix=_zip({"archive/data.pkl": pickle.dumps({}, protocol=2)}))


def _stored_in_local_header(payload: bytes) -> bytes:
    data = bytearray(_zip({"archive/data.pkl": payload}, zipfile.ZIP_DEFLATED))
    data[8:10] = b"\0\0"  # the local header says stored; the directory still says deflated
    return bytes(data)


def _garbage_first(payload: bytes) -> bytes:
    return _zip({"a/junk.pkl": b"\xff not a pickle", "archive/data.pkl": payload})


def _directory_in_member(payload: bytes) -> bytes:
    # the last member's data ends with a hidden local header and a directory entry for it; an
    # end record whose directory size reaches back over that entry makes zipfile read it
    inner = _zip({"archive/data.pkl": payload})
    cd_at = struct.unpack("<I", inner[-6:-2])[0]
    hidden, entry = inner[:cd_at], inner[cd_at:-22]
    outer = bytearray(_zip({"archive/version": b"3", "archive/blob": hidden + entry}))
    at = outer.index(hidden + entry)
    fake = at + len(hidden)
    outer[fake + 42:fake + 46] = struct.pack("<I", at)  # the entry names the hidden header
    end = len(outer) - 22
    size, offset = struct.unpack("<II", outer[end + 12:end + 20])
    outer[end + 12:end + 20] = struct.pack("<II", size + len(entry), offset - len(entry))
    return bytes(outer)


@pytest.mark.parametrize("build", [_appended, _stored_in_local_header, _garbage_first,
                                   _directory_in_member])
def test_zip_that_zipfile_reads_differently_is_refused(build) -> None:  # type: ignore[no-untyped-def]
    reached = _load(build(HARMLESS))
    assert reached == set()
    finding = scan(build(EVIL), "pytorch_model.bin").finding
    assert finding is not None, build.__name__


def test_zip_comment_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        zf.comment = b"hello"
    assert scan(buf.getvalue(), "pytorch_model.bin").finding is not None


def test_real_archives_still_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    np.savez(tmp_path / "a.npz", x=np.zeros(3), y=np.arange(4))
    np.savez_compressed(tmp_path / "b.npz", x=np.zeros(3))
    with zipfile.ZipFile(tmp_path / "c.pt", "w") as zf:  # zip64 records on every entry
        with zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
            fh.write(pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/data/0", b"\0" * 64)
    with open(tmp_path / "d.pt", "wb") as raw:  # not seekable: data descriptors
        class Pipe(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, b) -> int:  # type: ignore[no-untyped-def]
                return raw.write(b)
        with zipfile.ZipFile(Pipe(), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    for name in ("a.npz", "b.npz", "c.pt", "d.pt"):
        data = (tmp_path / name).read_bytes()
        s = scan(data, name)
        assert s.kind == "zip" and s.finding is None and s.malformed is None, (name, s.finding)


# -- names whose loaders unpickle protocol 0/1 pickles (no header to detect) -----------------
PROTO0 = b"cos\nsystem\n(S'true'\ntR."


@pytest.mark.parametrize("name", ["pytorch_model.bin", "training_args.bin", "idx.npy",
                                  "model.ckpt", "inference.pdiparams.info"])
def test_headerless_pickle_under_a_loaded_name_is_walked(name: str) -> None:
    if name.endswith(".npy"):  # numpy.load unpickles a .npy without its magic
        assert np.load(io.BytesIO(pickle.dumps(set(), protocol=0)), allow_pickle=True) == set()
    finding = scan(PROTO0, name).finding
    assert finding is not None and finding.global_name == "os.system"


def test_raw_numbers_in_a_bin_are_not_refused() -> None:
    for data in (np.zeros(1000, "<f4").tobytes(), np.arange(1000, dtype="<f4").tobytes(),
                 np.random.default_rng(0).standard_normal(50_000).astype("<f4").tobytes()):
        s = scan(data, "weights.bin")
        assert s.finding is None


def test_scan_command_follows_a_symlink_named_as_a_pickle(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``paddle-bundle scan`` skipped symlinks: ``model_state.pdparams -> blob`` (blob a
    protocol-0 pickle, named as nothing) passed, folder or file given alike."""
    from bundler.cli import _main

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "blob").write_bytes(PROTO0)
    (tmp_path / "m" / "model_state.pdparams").symlink_to("blob")
    assert _main(["scan", str(tmp_path)]) == 3
    assert _main(["scan", str(tmp_path / "m" / "model_state.pdparams")]) == 3
    assert "os.system" in capsys.readouterr().err


def test_persistent_id_does_not_end_the_walk_of_a_torch_named_file() -> None:
    """torch.load's legacy (not zip) format defines persistent_load, so a persistent id in
    ``pytorch_model.bin`` does not stop it; it stopped the walk, and what followed passed."""
    def body(module: bytes, name: bytes) -> bytes:
        return b"\x80\x02P0\n0c" + module + b"\n" + name + b"\n)R."

    class Loader(pickle.Unpickler):
        def persistent_load(self, pid: object) -> object:
            return pid

    assert Loader(io.BytesIO(body(b"builtins", b"set"))).load() == set()
    finding = scan(body(b"os", b"system"), "pytorch_model.bin").finding
    assert finding is not None and finding.global_name == "os.system"
    # paddle.load has no persistent_load: a .pdparams stops there, as before
    assert scan(body(b"os", b"system")).finding is None


def test_protocol_above_the_highest_stops_the_walk_without_refusing() -> None:
    """Raw float32 bytes of a .bin hit PROTO 0xc0 then EXT4 (refused as a registry global):
    the unpickler refuses such a protocol first, having run nothing."""
    data = b"\x80\xc0\x84\x01\x00\x00\x00" + bytes(64)
    with pytest.raises(ValueError, match="unsupported pickle protocol"):
        pickle.loads(data)
    s = scan(data, "weights.bin")
    assert s.finding is None and s.malformed is not None


def test_a_link_through_a_folder_link_names_the_file_it_reaches() -> None:
    """``m/model_state.pdparams -> d/blob`` with ``m/d -> c`` opens ``m/c/blob`` (the
    manifest check resolves it so, and paddle.load reads it): the scan must see ``m/c/blob``
    under the .pdparams name, not attach that name to a ``m/d/blob`` that is never stored."""
    from bundler.paths import resolve_within
    from bundler.scan import aliases

    entries = [("m/c/blob", None, None), ("m/d", None, "c"),
               ("m/model_state.pdparams", None, "d/blob")]
    links = {p: t for p, _, t in entries if t is not None}
    assert resolve_within("m/model_state.pdparams", "m", links) == "m/c/blob"
    names = aliases(entries)["m/c/blob"]
    assert "m/model_state.pdparams" in names
    s = FileScan(names, Allowlist())
    s.feed(PROTO0)
    s.close()
    assert s.finding is not None and s.finding.global_name == "os.system"


def test_delta_that_renames_a_base_file_to_a_pickle_is_scanned(
        build_raw_bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A delta's base files are not in the archive, so the stream never scans them: a first
    bundle installs ``notes.txt`` (a pickle under a name that is none), a delta adds
    ``model_state.pdparams -> notes.txt``; paddle.load of that name would run it."""
    import tarfile

    from bundler.errors import IntegrityError
    from bundler.install import install
    from tests.conftest import manifest_for, tarinfo

    files = {"config.json": b"{}", "notes.txt": PROTO0}
    v1 = build_raw_bundle("v1.tar.zst", manifest_for(files),
                          [(tarinfo(f"models/Org/evil/{n}", size=len(d)), d)
                           for n, d in files.items()])
    home = tmp_path / "home"
    install(v1, home=home)  # notes.txt is not a pickle by name: installed
    link = {"path": "models/Org/evil/model_state.pdparams", "type": "symlink",
            "target": "notes.txt", "mode": "0777"}
    manifest = manifest_for(files, extra_files=[link])
    for entry in manifest["files"]:
        entry["from_base"] = True
    delta = build_raw_bundle("delta.tar.zst", manifest, [
        (tarinfo(link["path"], kind=tarfile.SYMTYPE, linkname="notes.txt", mode=0o777), b"")])
    with pytest.raises(IntegrityError) as info:
        install(delta, home=home, force=True)
    assert any("os.system" in p for p in info.value.problems)
    assert not (home / "models/Org/evil/model_state.pdparams").is_symlink()


def test_pickle_with_a_zip_at_its_end_is_refused_under_a_torch_name() -> None:
    """zipfile finds an archive by its end record and allows data before it: a
    ``pytorch_model.bin`` that starts as a harmless pickle (whose bytes at offset 30 read
    ``archive/data.pkl``, where PaddleNLP's read_prefix_key looks) and ends with a zip is
    read by load_torch as that zip, whose data.pkl the walk never saw."""
    pad = 26
    head = b"\x80\x02\x8c" + bytes([pad + 16]) + b"x" * pad + b"archive/data.pkl."
    assert head[30:46] == b"archive/data.pkl"

    def build(payload: bytes) -> bytes:
        buf = io.BytesIO()
        buf.write(head)
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
        return buf.getvalue()

    data = build(HARMLESS)
    end = data.index(b"data.pkl") + len(b"data.pkl")
    prefix = data[30:end - len("/data.pkl")].decode("latin1")  # as load_torch computes it
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert pickle.loads(zf.open(f"{prefix}/data.pkl").read()) == set()
    assert scan(build(EVIL), "pytorch_model.bin").finding is not None
    assert scan(pickle.dumps({"w": b"PK\x05\x06" * 8}, protocol=4)).finding is None
