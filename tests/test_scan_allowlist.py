"""Issue 10: zero false positives. Every tiny real model the suite builds, saved by PaddleNLP's
own save_pretrained in pdparams and in safetensors, and what paddle.save writes for state
dicts, optimizer states, bare tensors and nested containers in protocols 2-4, passes the scan;
so does a checkpoint saved by paddlenlp 2.8.1 (tests/test_scan_allowlist.py::test_compat...).
The globals those files name are the allowlist, read from them rather than guessed."""

from __future__ import annotations

import io
import json
import os
import pickletools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bundler.cli import _main
from bundler.scan import Allowlist, scan_paths
from bundler.scan.allowlist import NEVER, PADDLE, TORCH
from tests.conftest import ROOT

PICKLE_NAMES = (".pdparams", ".pdopt", ".pkl", ".pickle")


def globals_in(path: Path) -> set[str]:
    """What a file's pickle names, by pickletools (independent of our walker)."""
    found: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    last: str | None = None  # the string the previous opcode pushed, if it pushed one
    for op, arg, _ in pickletools.genops(io.BytesIO(path.read_bytes())):
        pushed = None
        if op.name in ("GLOBAL", "INST"):
            found.add(str(arg).replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pushed = str(arg)
            strings.append(pushed)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
            pushed = last
        elif op.name in ("BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last  # type: ignore[call-overload]
            pushed = last
        elif op.name in ("BINGET", "LONG_BINGET") and memo.get(int(arg)):  # type: ignore[call-overload]
            pushed = memo[int(arg)]  # type: ignore[call-overload]
            strings.append(pushed or "")
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        last = pushed
    return found


def assert_clean(root: Path, capsys: pytest.CaptureFixture[str], min_pickles: int) -> set[str]:
    results = list(scan_paths([root], Allowlist()))
    refused = [(r.path, r.finding) for r in results if r.finding is not None]
    assert not refused, refused
    pickles = [r.path for r in results if r.kind == "pickle"]
    assert len(pickles) >= min_pickles, f"only {pickles} scanned as pickles below {root}"
    assert _main(["scan", str(root)]) == 0
    assert "none names a global outside the allowlist" in capsys.readouterr().out
    return set().union(*(globals_in(p) for p in pickles)) if pickles else set()


@pytest.mark.paddle
def test_every_tiny_family_passes(families_root: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Llama, Qwen2, BERT, T5 (sharded), m3e, PP-UIE: as save_pretrained wrote them."""
    seen = assert_clean(families_root, capsys, min_pickles=3)
    assert seen <= {f"{m}.{n}" for m, n in PADDLE}, seen


@pytest.mark.paddle
def test_codegen_and_ernie_pass_in_pdparams_and_safetensors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["codegen", str(tmp_path / "cg")],
                 ["codegen", "--safetensors", str(tmp_path / "cg-safe")],
                 ["ernie-sharded", str(tmp_path / "ernie")]):
        proc = subprocess.run([sys.executable, "tools/tiny_models.py", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "cg-safe").glob("*.safetensors"))
    seen = assert_clean(tmp_path, capsys, min_pickles=1)
    assert "numpy.core.multiarray._reconstruct" in seen or \
        "numpy._core.multiarray._reconstruct" in seen


PADDLE_SAVES = """
    import json, sys
    import paddle
    out = sys.argv[1]
    lin = paddle.nn.Linear(3, 2)
    sched = paddle.optimizer.lr.LinearWarmup(0.1, 10, 0.0, 0.1)
    opt = paddle.optimizer.AdamW(learning_rate=sched, parameters=lin.parameters())
    lin(paddle.ones([1, 3])).sum().backward()
    opt.step()
    cases = {"state": lin.state_dict(), "opt": opt.state_dict(), "tensor": paddle.ones([2]),
             "nested": {"a": {"b": [lin.weight, 1, "x", 2.0, None, True]}},
             "bf16": {"w": paddle.ones([2], dtype="bfloat16")},
             "fp16": {"w": paddle.ones([2], dtype="float16")},
             "int64": {"w": paddle.ones([2], dtype="int64")},
             "bool": {"w": paddle.ones([2], dtype="bool")}}
    for name, obj in cases.items():
        for proto in (2, 3, 4):
            suffix = ".pdopt" if name == "opt" else ".pdparams"
            paddle.save(obj, f"{out}/{name}-p{proto}{suffix}", protocol=proto)
"""


def _run_saves(python: Path | str, out: Path, env: dict[str, str] | None = None) -> None:
    script = out / "save.py"
    script.write_text(textwrap.dedent(PADDLE_SAVES))
    proc = subprocess.run([str(python), str(script), str(out)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.paddle
def test_paddle_save_of_every_shape_passes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _run_saves(sys.executable, tmp_path)
    seen = assert_clean(tmp_path, capsys, min_pickles=24)
    # read from what paddle.save wrote, and every one of them is on the list
    assert {"numpy.ndarray", "numpy.dtype", "builtins.tuple", "_codecs.encode"} <= seen, seen
    py2 = {"__builtin__.tuple": "builtins.tuple"}  # protocol 2's name, mapped on load
    assert {py2.get(g, g) for g in seen} <= {f"{m}.{n}" for m, n in PADDLE}, seen


def test_allowlist_holds_nothing_that_runs_imports_or_unpickles() -> None:
    entries = {f"{m}.{n}" for m, n in {**PADDLE, **TORCH}}
    for entry in entries:
        module = entry.rsplit(".", 1)[0]
        assert not any(entry == bad or module == bad or module.startswith(bad + ".")
                       for bad in NEVER), entry
    assert not any(name in ("loads", "load", "eval", "exec", "getattr", "__import__",
                            "system", "_load_from_bytes") for _, name in {**PADDLE, **TORCH})


COMPAT_PYTHON = ROOT / ".venv-pnlp28" / "bin" / "python"


@pytest.mark.compat
def test_paddlenlp_2_8_1_checkpoint_passes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if not COMPAT_PYTHON.exists():
        if os.environ.get("PADDLE_BUNDLE_COMPAT_REQUIRED"):
            pytest.fail("make setup-compat first")
        pytest.skip("needs .venv-pnlp28 (make setup-compat)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PADDLE_BUNDLE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PPNLP_HOME"] = str(tmp_path / "ppnlp")
    build = tmp_path / "build.py"
    build.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tools")!r})
        from pathlib import Path
        import paddlenlp
        import tiny_models as t
        out = Path(sys.argv[1])
        t.build_codegen(out / "codegen")
        t.build_ernie_sharded(out / "ernie")
        print(json.dumps({{"version": paddlenlp.__version__}}))
    """))
    models = tmp_path / "models"
    proc = subprocess.run([str(COMPAT_PYTHON), str(build), str(models)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["version"].startswith("2.8.1")
    _run_saves(COMPAT_PYTHON, models, env)
    assert_clean(models, capsys, min_pickles=25)
