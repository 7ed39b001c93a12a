"""Issue 10: a corpus of malicious pickles, each placed in an otherwise real tiny model (CodeGen,
built by PaddleNLP's own save_pretrained), refused at pack, at verify and at install.

Every payload writes a canary file when unpickled; ``test_payload_is_live`` proves that it
really does (in a child process, with the loader each format's users call), so the refusals
below are refusals of working exploits, not of junk. Afterwards the canary must never exist.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.cli import _main
from tests.conftest import ROOT

pytestmark = pytest.mark.paddle
MODEL_ID = "Org/evil"


# -- payload builders: each returns (file name in the model, bytes, live loader) ------------------
def _cmd(canary: Path) -> str:
    return f"touch {canary}"


def _code(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').close()"


def _s0(text: str) -> bytes:  # protocol 0 string argument
    return b"S" + repr(text).encode() + b"\n"


def _u(text: str) -> bytes:  # SHORT_BINUNICODE
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _reduce_obj(func: Callable[..., object], *args: object) -> object:
    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (func, args)

    return Payload()


def p_proto(proto: int) -> Callable[[Path], bytes]:
    def build(canary: Path) -> bytes:
        return pickle.dumps({"w": [1, _reduce_obj(os.system, _cmd(canary))]}, protocol=proto)

    return build


def p_text_global(canary: Path) -> bytes:  # hand-written protocol 0: GLOBAL + REDUCE
    return b"cos\nsystem\n(" + _s0(_cmd(canary)) + b"tR."


def p_eval(canary: Path) -> bytes:
    return pickle.dumps(_reduce_obj(eval, _code(canary)), protocol=2)


def p_exec(canary: Path) -> bytes:
    return pickle.dumps(_reduce_obj(exec, _code(canary)), protocol=4)


def p_import_getattr(canary: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch ...') in protocol 4
    return (b"\x80\x04" + _u("builtins") + _u("getattr") + b"\x93"
            + _u("builtins") + _u("__import__") + b"\x93" + _u("os") + b"\x85R"
            + _u("system") + b"\x86R" + _u(_cmd(canary)) + b"\x85R.")


def p_subprocess(canary: Path) -> bytes:
    return pickle.dumps(_reduce_obj(subprocess.call, ["touch", str(canary)]), protocol=3)


def p_runpy(canary: Path) -> bytes:
    script = canary.with_suffix(".py")
    script.write_text(_code(canary))
    import runpy

    return pickle.dumps(_reduce_obj(runpy.run_path, str(script)), protocol=4)


def p_importlib(canary: Path) -> bytes:
    # importlib.import_module('os').system via BUILD-free getattr chain on an allowed-looking
    # module name: the first refused global is importlib's
    return (b"\x80\x04" + _u("importlib") + _u("import_module") + b"\x93" + _u("os") + b"\x85R"
            + b"0" + _u("posix") + _u("system") + b"\x93" + _u(_cmd(canary)) + b"\x85R.")


def p_inst(canary: Path) -> bytes:  # INST: class and call in one opcode
    return b"(" + _s0(_cmd(canary)) + b"ios\nsystem\n."


def p_obj(canary: Path) -> bytes:  # OBJ: MARK callable args OBJ
    return b"(cos\nsystem\n" + _s0(_cmd(canary)) + b"o."


def p_newobj(canary: Path) -> bytes:
    # NEWOBJ on a class from outside the allowlist, then BUILD: the route that calls
    # __new__/__setstate__; refused at the class
    return (b"\x80\x02cos\nsystem\n)\x81" + b"}b.")


def p_newobj_ex(canary: Path) -> bytes:
    return (b"\x80\x04" + _u("subprocess") + _u("Popen") + b"\x93" + b")}\x92.")


def p_memo_trick(canary: Path) -> bytes:
    # names memoized, decoy strings pushed, names fetched back with BINGET: a scanner that
    # looks at the last two strings pushed sees numpy.ndarray
    return (b"\x80\x04" + _u("posix") + b"q\x00" + b"0" + _u("system") + b"q\x01" + b"0"
            + _u("numpy") + _u("ndarray") + b"00" + b"h\x00h\x01\x93"
            + _u(_cmd(canary)) + b"\x85R.")


def p_memoize_trick(canary: Path) -> bytes:  # protocol 4 MEMOIZE + LONG_BINGET
    return (b"\x80\x04" + _u("posix") + b"\x94" + b"0" + _u("system") + b"\x94" + b"0"
            + b"j\x00\x00\x00\x00j\x01\x00\x00\x00\x93" + _u(_cmd(canary)) + b"\x85R.")


def p_computed_name(canary: Path) -> bytes:
    # an ALLOWED global computes the module name: _codecs.encode('cbfvk', 'rot13') == 'posix'
    return (b"\x80\x04" + _u("_codecs") + _u("encode") + b"\x93" + _u("cbfvk") + _u("rot13")
            + b"\x86R" + _u("system") + b"\x93" + _u(_cmd(canary)) + b"\x85R.")


def p_nested_pickle(canary: Path) -> bytes:
    inner = pickle.dumps(_reduce_obj(os.system, _cmd(canary)), protocol=2)
    return pickle.dumps(_reduce_obj(pickle.loads, inner), protocol=4)


def p_py2_name(canary: Path) -> bytes:  # __builtin__.eval, mapped to builtins.eval
    return b"\x80\x02c__builtin__\neval\n" + _s0(_code(canary)) + b"\x85R."


def p_ext(canary: Path) -> bytes:  # a global from the copyreg extension registry
    return b"\x80\x02\x82\xf0" + _s0(_cmd(canary)) + b"\x85R."


def p_hidden_in_tensors(canary: Path) -> bytes:
    import numpy as np

    state = {"embed.weight": np.ones((4, 4), dtype="float32"),
             "layers": {"0": {"attn.weight": np.zeros((4, 4), dtype="float32"),
                              "meta": [1, 2, {"x": _reduce_obj(os.system, _cmd(canary))}]}}}
    return pickle.dumps(state, protocol=4)


def p_second_pickle(canary: Path) -> bytes:  # a clean pickle, then a malicious one after STOP
    import numpy as np

    return (pickle.dumps({"w": np.ones(3)}, protocol=4)
            + pickle.dumps(_reduce_obj(os.system, _cmd(canary)), protocol=4))


def _torch_zip(canary: Path, compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(
            {"w": _reduce_obj(os.system, _cmd(canary))}, protocol=2))
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/data/0", b"\0" * 64)
    return buf.getvalue()


def p_torch_zip(canary: Path) -> bytes:
    return _torch_zip(canary, zipfile.ZIP_STORED)


def p_torch_zip_deflated(canary: Path) -> bytes:
    return _torch_zip(canary, zipfile.ZIP_DEFLATED)


def p_npy_object(canary: Path) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([1, _reduce_obj(os.system, _cmd(canary))], dtype=object),
            allow_pickle=True)
    return buf.getvalue()


#: id -> (file name in the model, builder, how the real world loads it, live?)
CORPUS: dict[str, tuple[str, Callable[[Path], bytes], str, bool]] = {
    **{f"protocol-{n}": ("model_state.pdparams", p_proto(n), "pickle", True) for n in range(6)},
    "protocol-0-by-hand": ("model_state.pdparams", p_text_global, "pickle", True),
    "builtins-eval": ("model_state.pdparams", p_eval, "pickle", True),
    "builtins-exec": ("model_state.pdparams", p_exec, "pickle", True),
    "getattr-import": ("model_state.pdparams", p_import_getattr, "pickle", True),
    "subprocess": ("optimizer.pdopt", p_subprocess, "pickle", True),
    "runpy": ("model_state.pdparams", p_runpy, "pickle", True),
    "importlib": ("model_state.pdparams", p_importlib, "pickle", True),
    "INST": ("model_state.pdparams", p_inst, "pickle", True),
    "OBJ": ("model_state.pdparams", p_obj, "pickle", True),
    "NEWOBJ": ("model_state.pdparams", p_newobj, "pickle", False),
    "NEWOBJ_EX": ("model_state.pdparams", p_newobj_ex, "pickle", False),
    "memo-BINGET": ("model_state.pdparams", p_memo_trick, "pickle", True),
    "memo-MEMOIZE": ("model_state.pdparams", p_memoize_trick, "pickle", True),
    "computed-name": ("model_state.pdparams", p_computed_name, "pickle", True),
    "nested-pickle": ("model_state.pdparams", p_nested_pickle, "pickle", True),
    "py2-name": ("model_state.pdparams", p_py2_name, "pickle", True),
    "EXT1": ("model_state.pdparams", p_ext, "pickle", False),
    "hidden-in-tensors": ("model_state.pdparams", p_hidden_in_tensors, "pickle", True),
    "second-pickle": ("model_state.pdparams", p_second_pickle, "pickle-twice", True),
    "misnamed": ("vocab.txt", p_proto(4), "pickle", True),
    "torch-zip": ("pytorch_model.bin", p_torch_zip, "torch-zip", True),
    "torch-zip-deflated": ("pytorch_model.bin", p_torch_zip_deflated, "torch-zip", True),
    "npy-object-array": ("embeddings.npy", p_npy_object, "npy", True),
}

LOADERS = {
    "pickle": "import pickle; pickle.load(open(sys.argv[1], 'rb'))",
    "pickle-twice": "import pickle; f = open(sys.argv[1], 'rb'); pickle.load(f); pickle.load(f)",
    # what torch.load does with the archive's data.pkl (torch is not installed here)
    "torch-zip": "import pickle, zipfile; pickle.loads(zipfile.ZipFile(sys.argv[1])"
                 ".read('archive/data.pkl'))",
    "npy": "import numpy; numpy.load(sys.argv[1], allow_pickle=True)",
}


@pytest.fixture(scope="session")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CodeGen written by PaddleNLP's save_pretrained (pdparams), built once."""
    out = tmp_path_factory.mktemp("codegen") / "model"
    proc = subprocess.run([sys.executable, "tools/tiny_models.py", "codegen", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _evil_home(real_model: Path, tmp_path: Path, case: str) -> tuple[Path, Path, str]:
    """An online home with the real model plus the case's payload; the canary's path."""
    name, build, _, _ = CORPUS[case]
    canary = tmp_path / "CANARY"
    home = tmp_path / "online"
    folder = home / "models" / MODEL_ID
    shutil.copytree(real_model, folder)
    (folder / name).write_bytes(build(canary))
    return home, canary, name


@pytest.mark.parametrize("case", [c for c in CORPUS if CORPUS[c][3]])
def test_payload_is_live(case: str, tmp_path: Path) -> None:
    """The corpus is real: loading each payload the usual way creates its canary."""
    name, build, loader, _ = CORPUS[case]
    canary = tmp_path / "LIVE"
    path = tmp_path / name
    path.write_bytes(build(canary))
    subprocess.run([sys.executable, "-c", "import sys; " + LOADERS[loader], str(path)],
                   capture_output=True, timeout=120, cwd=tmp_path)
    assert canary.exists(), f"{case} does not run code, so refusing it proves nothing"


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 20
    assert sum(live for *_, live in CORPUS.values()) >= 20


@pytest.mark.parametrize("case", list(CORPUS))
def test_refused_at_pack(case: str, real_model: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    home, canary, name = _evil_home(real_model, tmp_path, case)
    out = tmp_path / "evil.tar.zst"
    rc = _main(["pack", MODEL_ID, "-o", str(out), "--home", str(home), "-q"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert f"models/{MODEL_ID}/{name}" in err and "byte offset" in err, err
    assert not out.exists() and not list(tmp_path.glob("evil.tar.zst*")), "written anyway"
    assert not canary.exists()


def _hostile_bundle(real_model: Path, tmp_path: Path, case: str,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    """The bundle an attacker's own packer writes: ours with its scan switched off."""
    import bundler.pack

    class NoScan:
        def __init__(self, *args: object) -> None:
            self.finding = None

        def feed(self, data: object) -> None:
            return None

        def close(self) -> None:
            return None

    home, canary, name = _evil_home(real_model, tmp_path, case)
    out = tmp_path / "evil.tar.zst"
    with monkeypatch.context() as patch:
        patch.setattr(bundler.pack, "FileScan", NoScan)
        assert _main(["pack", MODEL_ID, "-o", str(out), "--home", str(home), "-q"]) == 0
    return out, canary, name


@pytest.mark.parametrize("case", list(CORPUS))
def test_refused_at_verify_and_install(case: str, real_model: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bundle, canary, name = _hostile_bundle(real_model, tmp_path, case, monkeypatch)
    capsys.readouterr()
    assert _main(["verify", str(bundle), "-q"]) == 3
    err = capsys.readouterr().err
    assert f"models/{MODEL_ID}/{name}" in err and "byte offset" in err, err
    offline = tmp_path / "offline"
    assert _main(["install", str(bundle), "--home", str(offline), "-q"]) == 3
    err = capsys.readouterr().err
    assert f"models/{MODEL_ID}/{name}" in err and "nothing was installed" in err, err
    assert not (offline / "models" / MODEL_ID).exists()
    assert not [p for p in offline.rglob("*") if p.is_file() and "models" in p.parts]
    assert not canary.exists()


def test_refusal_names_file_global_and_offset(real_model: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bundle, _, _ = _hostile_bundle(real_model, tmp_path, "memo-BINGET", monkeypatch)
    data = (tmp_path / "online" / "models" / MODEL_ID / "model_state.pdparams").read_bytes()
    offset = data.index(b"\x93")  # the STACK_GLOBAL opcode
    capsys.readouterr()
    assert _main(["verify", str(bundle)]) == 3
    err = capsys.readouterr().err
    assert (f"models/{MODEL_ID}/model_state.pdparams: STACK_GLOBAL posix.system is not an "
            f"allowed global (byte offset {offset})") in err, err


def test_allow_global_is_recorded_and_honoured_only_where_repeated(
        real_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A site that knowingly accepts a global packs with --allow-global: recorded in the
    manifest. Unsigned, the manifest's word is not enough offline; --allow-global there is."""
    home = tmp_path / "online"
    folder = home / "models" / MODEL_ID
    shutil.copytree(real_model, folder)
    # a global outside the built-in list: struct.pack is not code execution, just unknown
    (folder / "extra.pkl").write_bytes(b"\x80\x02cstruct\ncalcsize\n" + _s0("i") + b"\x85R.")
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", MODEL_ID, "-o", str(out), "--home", str(home), "-q"]) == 3
    assert "struct.calcsize" in capsys.readouterr().err
    assert _main(["pack", MODEL_ID, "-o", str(out), "--home", str(home), "-q",
                  "--allow-global", "struct.calcsize"]) == 0
    capsys.readouterr()
    assert _main(["inspect", str(out)]) == 0
    assert "struct.calcsize" in capsys.readouterr().out
    offline = tmp_path / "offline"
    assert _main(["install", str(out), "--home", str(offline), "-q"]) == 3
    err = capsys.readouterr().err
    assert "asks to allow struct.calcsize" in err, err
    assert _main(["install", str(out), "--home", str(offline), "-q",
                  "--allow-global", "struct.calcsize"]) == 0
    assert (offline / "models" / MODEL_ID / "extra.pkl").exists()


def test_alias_of_a_pickle_is_scanned(real_model: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol-0 pickle stored as notes.txt, reachable as model_state.pdparams through a
    symlink (or as a duplicate stored once): scanned as the pickle it is to paddle.load."""
    for how in ("symlink", "copy"):
        case_dir = tmp_path / how
        home = case_dir / "online"
        folder = home / "models" / MODEL_ID
        shutil.copytree(real_model, folder)
        payload = p_text_global(case_dir / "CANARY")
        (folder / "notes.txt").write_bytes(payload)
        (folder / "model_state.pdparams").unlink()
        if how == "symlink":
            (folder / "model_state.pdparams").symlink_to("notes.txt")
        else:
            (folder / "model_state.pdparams").write_bytes(payload)
        out = case_dir / "b.tar.zst"
        assert _main(["pack", MODEL_ID, "-o", str(out), "--home", str(home), "-q"]) == 3, how
        assert "GLOBAL os.system is not an allowed global" in capsys.readouterr().err, how
        assert not out.exists()

