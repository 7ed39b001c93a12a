"""Issue 10, defense in depth: under offline mode paddle.load refuses a pickle naming a global
outside the allowlist (files that never went through a bundle), and loads real ones."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bundler.errors import UnsafePickleLoadError
from bundler.scan.allowlist import Allowlist
from bundler.scan.loadguard import GuardedPickle
from tests.conftest import ROOT
from tests.test_scan_corpus import CORPUS

SCRIPT = """
    import json, os, sys
    if sys.argv[3] == "install":
        import bundler.scan.loadguard
        bundler.scan.loadguard.install()
    import paddle
    out, canary = sys.argv[1], sys.argv[2]
    result = {"guarded": type(sys.modules["paddle.framework.io"].pickle).__name__,
              "static": type(sys.modules["paddle.static.io_utils"].pickle).__name__}
    for proto in (2, 3, 4):
        paddle.save({"w": paddle.ones([3]), "n": {"x": [1, "a"]}}, f"{out}/ok{proto}.pdparams",
                    protocol=proto)
        result[f"ok{proto}"] = list(paddle.load(f"{out}/ok{proto}.pdparams")["w"].shape)
    for name in sorted(os.listdir(out)):
        if name.startswith("evil-"):
            try:
                paddle.load(f"{out}/{name}")
                result[name] = "loaded"
            except Exception as exc:
                result[name] = type(exc).__name__ + ": " + str(exc)
    result["canary"] = os.path.exists(canary)
    print("RESULT " + json.dumps(result))
"""

CASES = ["protocol-0", "protocol-2", "protocol-4", "protocol-5", "INST", "OBJ",
         "computed-name", "memo-BINGET", "py2-name", "nested-pickle", "getattr-import"]


def _run(tmp_path: Path, env_extra: dict[str, str], mode: str = "") -> dict[str, object]:
    canary = tmp_path / "CANARY"
    for case in CASES:
        _, build, _, _ = CORPUS[case]
        (tmp_path / f"evil-{case}.pdparams").write_bytes(build(canary))
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_BUNDLE_")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(canary), mode],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result: dict[str, object] = json.loads(line[len("RESULT "):])
    return result


@pytest.mark.paddle
def test_offline_mode_refuses_malicious_pdparams_and_loads_real_ones(tmp_path: Path) -> None:
    result = _run(tmp_path, {"PADDLE_BUNDLE_OFFLINE": "1",
                             "PPNLP_HOME": str(tmp_path / "home")})
    assert result["guarded"] == result["static"] == "GuardedPickle"
    assert result["ok2"] == result["ok3"] == result["ok4"] == [3]
    for case in CASES:
        outcome = str(result[f"evil-{case}.pdparams"])
        assert outcome.startswith("UnsafePickleLoadError: refused to unpickle"), (case, outcome)
        assert f"evil-{case}.pdparams" in outcome
    assert result["canary"] is False


@pytest.mark.paddle
def test_guard_off_is_explicit_and_then_the_payloads_run(tmp_path: Path) -> None:
    """PADDLE_BUNDLE_LOAD_GUARD=0 is the only way round it, and it is what keeps the test
    above honest: without the guard the same files do run code."""
    result = _run(tmp_path, {"PADDLE_BUNDLE_OFFLINE": "1", "PADDLE_BUNDLE_LOAD_GUARD": "0",
                             "PPNLP_HOME": str(tmp_path / "home")})
    assert result["guarded"] == "module"
    assert result["canary"] is True


@pytest.mark.paddle
def test_separate_switch_without_offline_mode(tmp_path: Path) -> None:
    result = _run(tmp_path, {}, mode="install")
    assert result["guarded"] == "GuardedPickle"
    assert result["canary"] is False


def test_restricted_loads_refuses_a_name_computed_by_an_allowed_global(tmp_path: Path) -> None:
    guarded = GuardedPickle(Allowlist())
    _, build, _, _ = CORPUS["computed-name"]
    with pytest.raises(UnsafePickleLoadError, match="posix.system"):
        guarded.loads(build(tmp_path / "CANARY"))
    assert not (tmp_path / "CANARY").exists()
    assert guarded.loads(pickle.dumps({"a": (1, 2), "b": {3}}, protocol=2)) == {
        "a": (1, 2), "b": {3}}
    assert guarded.dumps is pickle.dumps  # everything else is the real module


JIT_HAPI = """
    import json, os, sys
    import bundler.scan.loadguard
    bundler.scan.loadguard.install()
    import paddle
    import paddle.hapi.model as hapi
    import paddle.jit.translated_layer as jit
    evil, canary = sys.argv[1], sys.argv[2]
    result = {}
    calls = {"jit": lambda: jit._load_persistable_vars(None, evil, None, None),
             "hapi": lambda: paddle.Model(paddle.nn.Linear(2, 2)).load(evil[:-len(".pdparams")])}
    for label, call in calls.items():
        try:
            call()
            result[label] = "loaded"
        except Exception as exc:
            result[label] = type(exc).__name__
    result["canary"] = os.path.exists(canary)
    print("RESULT " + json.dumps(result))
"""


@pytest.mark.paddle
def test_guard_covers_paddle_jit_load_and_paddle_model_load(tmp_path: Path) -> None:
    """Review rv10: paddle.jit.load unpickles ``*.pdiparams.info`` and paddle.Model.load
    ``*.pdparams`` through their own modules' ``pickle``, which the guard left alone."""
    canary = tmp_path / "CANARY"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR.")
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(JIT_HAPI))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_BUNDLE_")}
    proc = subprocess.run([sys.executable, str(script), str(evil), str(canary)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stderr[-2000:]
    result = json.loads(line[0][len("RESULT "):])
    assert result == {"jit": "UnsafePickleLoadError", "hapi": "UnsafePickleLoadError",
                      "canary": False}
