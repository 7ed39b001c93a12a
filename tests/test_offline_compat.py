"""Offline mode on paddlenlp 2.8.x: the claim in docs/offline.md, proven in CI.

The main suite runs against the pinned paddlenlp 3.0.0b4 in ``.venv``. These tests drive a
second environment, ``.venv-pnlp28`` (``make setup-compat``: paddlepaddle 3.3.1, paddlenlp
2.8.1, and this package installed editable without extras), through subprocesses; the test
process itself stays in ``.venv`` and never imports Paddle.

* The tiny models are built by 2.8.1 itself: tokenizer files written by 3.0.0b4 do not load
  in 2.8.1 (tools/FINDINGS-internals.md §6.3).
* They are packed and installed with this process's bundler (pack and install need no Paddle).
* Everything else runs in one 2.8.1 interpreter under ``unshare -n``, switched on by
  ``PADDLE_BUNDLE_OFFLINE=1`` alone (the start-up hook ``pip install -e .`` put in that
  environment), with an audit hook recording every DNS lookup and connect, which must stay
  empty, as in tests/test_offline.py.
* CodeGen is run forward, not asked to generate: 2.8.1's CodeGen cannot generate on paddle 3
  for a reason unrelated to offline mode (FINDINGS §6.2; see the test-only cast below).

Skipped when ``.venv-pnlp28/bin/python`` does not exist, unless
``PADDLE_BUNDLE_COMPAT_REQUIRED=1`` (what ``make test-compat`` sets), which turns the skip
into a failure so that CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bundler import _offline
from tests.conftest import AUDIT_RECORDER, ROOT, have_unshare
from tests.conftest import script_result as _result

COMPAT_VENV = ROOT / ".venv-pnlp28"
COMPAT_PYTHON = COMPAT_VENV / "bin" / "python"
#: Set by ``make test-compat``: a missing environment or ``unshare`` fails instead of skipping.
ENV_REQUIRED = "PADDLE_BUNDLE_COMPAT_REQUIRED"

CODEGEN = "Salesforce/codegen-350M-mono"
ERNIE = "paddle-bundle-test/tiny-ernie-sharded"
DAMAGED = "paddle-bundle-test/tiny-ernie-damaged"  # an installed copy the script damages
ABSENT = ("added_tokens.json", "chat_template.json")  # what fetch records for CodeGen

pytestmark = pytest.mark.compat


def _missing_prerequisite() -> str | None:
    if not COMPAT_PYTHON.exists():
        return (f"{COMPAT_PYTHON.relative_to(ROOT)} does not exist: 'make setup-compat' "
                "creates the paddlenlp 2.8.1 environment ('make test-compat' runs these tests)")
    if not have_unshare():
        return ("unshare -n is not permitted here, so 'no network' cannot be proven for "
                "PaddleNLP 2.8.1")
    return None


def _compat_env(**extra: str) -> dict[str, str]:
    """This environment minus offline mode's switches and Python path settings, plus
    ``extra``: what the 2.8.1 interpreter sees is exactly what the test sets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PADDLE_BUNDLE_") and k not in ("PYTHONPATH", "PYTHONHOME",
                                                               "PPNLP_HOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def _run_compat(script: Path, env: dict[str, str], *, unshare: bool = False,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the 2.8.1 interpreter, from the script's folder (not the repo, so
    ``bundler`` comes from that environment's editable install, as a user's would)."""
    cmd = [str(COMPAT_PYTHON), str(script)]
    if unshare:
        cmd = ["unshare", "-n", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=script.parent,
                          timeout=timeout, env=env)


BUILD = f"""
    import json, os, sys
    sys.path.insert(0, {str(ROOT / "tools")!r})
    from pathlib import Path
    import paddlenlp
    import tiny_models as t
    models = Path(os.environ["PPNLP_HOME"]) / "models"
    t.build_codegen(models / {CODEGEN!r})
    t.build_ernie_sharded(models / {ERNIE!r})
    print("RESULT " + json.dumps({{"version": paddlenlp.__version__}}))
"""

# The audit hook records every lookup and connect that reaches it; offline mode's own guard,
# installed earlier by the start-up hook, records what it refused before ours could see it.
OFFLINE = AUDIT_RECORDER + f"""

    RESULT["switched_on_by_env"] = "bundler.offline" in sys.modules  # we imported nothing
    import os
    import paddle
    import paddlenlp
    import bundler
    from paddlenlp import Taskflow
    from paddlenlp.transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    dl = sys.modules["paddlenlp.utils.download"]
    RESULT["version"] = paddlenlp.__version__
    RESULT["bundler"] = bundler.__file__
    RESULT["patched"] = [getattr(getattr(dl, name), "_paddle_bundle_offline", False)
                         for name in ("bos_aistudio_hf_try_to_load_from_cache",
                                      "bos_aistudio_hf_file_exist", "bos_download")]
    RESULT["ping_off"] = sys.modules["paddlenlp.taskflow.utils"].DOWNLOAD_CHECK

    tok = AutoTokenizer.from_pretrained({CODEGEN!r})
    lm = AutoModelForCausalLM.from_pretrained({CODEGEN!r})
    lm.eval()
    # TEST-ONLY, unrelated to offline mode: 2.8.1's CodeGenAttention keeps a float causal
    # mask and paddle 3's paddle.where() wants a bool one (FINDINGS §6.2; 3.0.0b4 casts it).
    for block in lm.transformer.h:
        block.attn.causal_mask = block.attn.causal_mask.astype("bool")
    ids = tok("def add(a, b):", return_tensors="pd")["input_ids"]
    with paddle.no_grad():
        logits = lm(input_ids=ids)
    logits = logits[0] if isinstance(logits, (list, tuple)) else logits
    RESULT["codegen"] = [type(tok).__name__, type(lm).__name__, list(ids.shape),
                         list(logits.shape), bool(paddle.isfinite(logits).all())]

    etok = AutoTokenizer.from_pretrained({ERNIE!r})
    em = AutoModel.from_pretrained({ERNIE!r})
    em.eval()
    with paddle.no_grad():
        seq, pooled = em(**etok("你好世界 hello paddle", return_tensors="pd"))
    RESULT["ernie"] = [type(etok).__name__, type(em).__name__, list(seq.shape),
                       bool(paddle.isfinite(seq).all())]

    RESULT["configs"] = [type(AutoConfig.from_pretrained(name)).__name__
                         for name in ({CODEGEN!r}, {ERNIE!r})]

    flow = Taskflow("code_generation", model={CODEGEN!r})  # constructed, not called
    RESULT["taskflow"] = [type(flow.task_instance).__name__, flow.task_instance.model]

    RESULT["not_installed"] = {{
        "AutoTokenizer": failure(lambda: AutoTokenizer.from_pretrained("Nobody/nothing")),
        "AutoModelForCausalLM": failure(
            lambda: AutoModelForCausalLM.from_pretrained("Nobody/nothing")),
        "AutoConfig": failure(lambda: AutoConfig.from_pretrained("Nobody/nothing")),
        "Taskflow": failure(
            lambda: Taskflow("code_generation", model="Salesforce/codegen-2B-mono")),
    }}
    damaged = os.path.join(os.environ["PPNLP_HOME"], "models", {DAMAGED!r})
    os.remove(os.path.join(damaged, "model-00002-of-00003.safetensors"))
    RESULT["missing_shard"] = failure(lambda: AutoModel.from_pretrained({DAMAGED!r}))

    # The guard again, on the real 2.8.1 module: an unknown version is refused.
    from bundler.errors import UnsupportedPaddleNLPError
    try:
        bundler._offline.patch_module(bundler._offline.MOD_DOWNLOAD, dl, version="2.9.0")
        RESULT["unknown_version"] = None
    except UnsupportedPaddleNLPError as exc:
        RESULT["unknown_version"] = str(exc)

    offline = sys.modules["bundler.offline"]
    RESULT["net"] = NET
    RESULT["blocked"] = [list(b) for b in offline.blocked_attempts()]
    print("RESULT " + json.dumps(RESULT))
"""


@pytest.fixture(scope="module")
def compat_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the tiny models with 2.8.1, pack and install them with this bundler, and load
    them by name in 2.8.1 with no network: two runs of the 2.8.1 interpreter in all."""
    missing = _missing_prerequisite()
    if missing is not None:
        if _offline.env_flag(ENV_REQUIRED):
            pytest.fail(f"{missing} ({ENV_REQUIRED} is set)")
        pytest.skip(missing)
    from bundler.install import install
    from bundler.pack import PackOptions, pack

    scripts = tmp_path_factory.mktemp("scripts")
    build = scripts / "build.py"
    build.write_text(textwrap.dedent(BUILD), encoding="utf-8")
    online = tmp_path_factory.mktemp("online-2.8")
    built = _result(_run_compat(build, _compat_env(PPNLP_HOME=str(online))))
    assert built["version"].startswith("2.8.1"), built
    shutil.copytree(online / "models" / ERNIE, online / "models" / DAMAGED)

    bundle = tmp_path_factory.mktemp("stick") / "models.tar.zst"
    pack([CODEGEN, ERNIE, DAMAGED], bundle, home=online,
         options=PackOptions(absent_upstream={CODEGEN: ABSENT}))
    home = tmp_path_factory.mktemp("offline-home-2.8")
    install(bundle, home=home)

    offline = scripts / "offline.py"
    offline.write_text(textwrap.dedent(OFFLINE), encoding="utf-8")
    env = _compat_env(PPNLP_HOME=str(home), PADDLE_BUNDLE_OFFLINE="1")
    return _result(_run_compat(offline, env, unshare=True))


def test_by_name_loads_run_on_paddlenlp_2_8_with_no_network(compat_run: dict[str, Any]) -> None:
    result = compat_run
    assert result["net"] == [], "PaddleNLP 2.8.1 looked up or connected to a host"
    assert result["blocked"] == [], "offline mode's guard had to refuse a network access"
    assert result["switched_on_by_env"] is True
    assert Path(result["bundler"]).resolve().is_relative_to(ROOT), (
        f"the 2.8.1 environment runs another checkout's bundler: {result['bundler']}")
    assert result["patched"] == [True, True, True]
    assert result["ping_off"] is True

    tok, model, ids, logits, finite = result["codegen"]
    assert [tok, model] == ["CodeGenTokenizer", "CodeGenForCausalLM"]
    assert ids[0] == 1 and logits[:2] == ids and logits[2] > 256 and finite
    tok, model, seq, finite = result["ernie"]
    assert [tok, model] == ["ErnieTokenizer", "ErnieModel"]
    assert seq[0] == 1 and seq[2] == 32 and finite
    assert result["configs"] == ["CodeGenConfig", "ErnieConfig"]
    assert result["taskflow"] == ["CodeGenerationTask", CODEGEN]

    for call, (kind, message, seconds) in result["not_installed"].items():
        model_id = "Salesforce/codegen-2B-mono" if call == "Taskflow" else "Nobody/nothing"
        assert kind == "ModelNotInstalledError", (call, kind, message)
        assert f"model {model_id!r} is not installed" in message, call
        assert f"paddle-bundle fetch {model_id}" in message, call
        assert seconds < 3, f"{call}: a model that is not installed must fail at once"

    kind, message, _ = result["missing_shard"]
    assert kind == "MissingFromBundleError"
    assert "model-00002-of-00003.safetensors" in message and DAMAGED in message


def test_version_guard_accepts_2_8_1_and_refuses_unknown(compat_run: dict[str, Any]) -> None:
    """Importing 2.8.1 under offline mode, with no escape hatch set, patched it (above), and
    the same check on the same real module refuses a version it does not know."""
    version = compat_run["version"]
    assert version.startswith("2.8.1") and _offline.is_supported_version(version)
    assert compat_run["patched"] == [True, True, True]
    refused = compat_run["unknown_version"]
    assert refused is not None and "does not know paddlenlp 2.9.0" in refused
