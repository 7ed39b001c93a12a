"""``fetch ID`` and ``fetch --task`` for the model families of issue 8, proven offline.

Each family is a tiny *real* model built with PaddleNLP's own classes (tools/tiny_models.py)
and served by the local mirror in BOS's community layout: a sentencepiece Llama, a Qwen2 chat
model, a BERT, a sharded T5, and the two Taskflow models ``moka-ai/m3e-base``
(feature_extraction) and ``paddlenlp/PP-UIE-0.5B`` (information_extraction). The bundles are
installed under ``unshare -n`` and loaded *by name* in offline mode, the way a user's program
does it, with an audit hook proving zero DNS lookups and connects.

Cost: the models are built once, fetched in three child runs (the four plain families in one
call, then each task) and loaded offline in one process, all at module scope; each test then
only reads what they produced. The first part needs no Paddle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler import _fetch_child
from bundler.errors import UsageError
from bundler.fetch import ChildReport, error_for, parse_task_args
from tests.conftest import AUDIT_RECORDER, ROOT, have_unshare, run_cli, script_result
from tests.test_fetch import bundled, fetch_cli, manifest_of, upstream
from tools import mirror, tiny_models

LLAMA = tiny_models.LLAMA_SP_ID
QWEN2 = tiny_models.QWEN2_CHAT_ID
BERT = tiny_models.BERT_ID
T5 = tiny_models.T5_SHARDED_ID
M3E = tiny_models.M3E_ID
UIE = tiny_models.PP_UIE_ID
PLAIN = (LLAMA, QWEN2, BERT, T5)
SCHEMA = json.dumps(tiny_models.UIE_SCHEMA, ensure_ascii=False)

needs_unshare = pytest.mark.skipif(
    not have_unshare(), reason="unshare -n is not permitted here, so 'no network' cannot be "
    "proven for PaddleNLP itself")


# -- no Paddle: task arguments and the child's verdicts ----------------------------------
@pytest.mark.parametrize(("pairs", "expected"), [
    pytest.param([f"schema={SCHEMA}"], {"schema": ["时间", "人物"]}, id="json-list"),
    pytest.param(["precision=float32"], {"precision": "float32"}, id="plain-string"),
    pytest.param(["batch_size=2", "lazy=true"], {"batch_size": 2, "lazy": True}, id="json"),
    pytest.param(["schema=时间"], {"schema": "时间"}, id="one-word-schema"),
    pytest.param(["prompt=a=b"], {"prompt": "a=b"}, id="first-equals-splits"),
])
def test_task_args_are_json_else_strings(pairs: list[str], expected: dict[str, Any]) -> None:
    assert parse_task_args(pairs) == expected


@pytest.mark.parametrize("pairs", [
    pytest.param(["schema"], id="no-equals"), pytest.param(["=x"], id="no-key"),
    pytest.param(["bad key=1"], id="not-an-identifier"),
    pytest.param(["model=x"], id="model-is-MODEL"), pytest.param(["a=1", "a=2"], id="twice"),
])
def test_malformed_task_args_are_usage_errors(pairs: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        parse_task_args(pairs)
    assert "\n" not in str(info.value)


def test_task_arg_without_task_and_fetch_without_model_are_usage_errors(
        tmp_path: Path) -> None:
    """Refused before Paddle starts: exit 2, one line."""
    out = tmp_path / "b.tar.zst"
    rc, _, err = run_cli("fetch", M3E, "--task-arg", "a=1", "-o", out, "--home", tmp_path)
    assert rc == 2 and "--task-arg needs --task" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("fetch", "-o", out, "--home", tmp_path)
    assert rc == 2 and "needs a MODEL" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("fetch", "--task", "x", "--task-arg", "nokey", "-o", out)
    assert rc == 2 and "is not KEY=VALUE" in err
    assert not out.exists()


def _report(steps: list[dict[str, Any]], failures: list[dict[str, str]] | None = None,
            files: bool = True) -> dict[str, Any]:
    used = [{"path": f"/h/models/{UIE}/config.json", "root": f"models/{UIE}",
             "how": "downloaded"}] if files else []
    return {"endpoint": "http://x/paddlenlp", "files": used, "steps": steps,
            "failures": failures or []}


def test_a_missing_task_argument_is_a_usage_error_naming_it() -> None:
    steps = [{"model": UIE, "step": "Taskflow('information_extraction')", "ok": False,
              "required": True, "error_type": "MissingTaskArg", "error": "schema"}]
    verdict = _fetch_child.judge([UIE], "information_extraction", _report(steps, files=False))
    assert verdict is not None and verdict["kind"] == "usage"
    error = error_for(ChildReport("", "", "", (), {}, verdict), "")
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert "needs schema=" in str(error) and "--task-arg schema=" in str(error)


def test_weights_the_bundle_would_lack_fail_the_fetch() -> None:
    steps = [{"model": M3E, "step": "Taskflow('feature_extraction')", "ok": True,
              "required": True, "error_type": "", "error": ""}]
    failure = {"kind": "weights", "url": "", "message": "Taskflow('feature_extraction') read "
               "its weights from /x/inference.pdiparams, which fetch cannot bundle"}
    verdict = _fetch_child.judge([M3E], "feature_extraction", _report(steps, [failure]))
    assert verdict is not None and verdict["kind"] == "weights"
    error = error_for(ChildReport("", "", "", (), {}, verdict), "")
    assert error.exit_code == 1 and "/x/inference.pdiparams" in str(error)
    assert _fetch_child.judge([M3E], "feature_extraction", _report(steps)) is None


def test_weight_watch_tells_bundled_derived_and_foreign_weights_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("paddlenlp")
    package.__file__ = str(tmp_path / "site" / "paddlenlp" / "__init__.py")
    monkeypatch.setitem(sys.modules, "paddlenlp", package)
    rec = _fetch_child.Recorder(str(tmp_path), None)
    weights = str(tmp_path / "models" / M3E / "model_state.pdparams")
    rec.use(f"models/{M3E}", weights, "downloaded")
    watch = _fetch_child._WeightWatch()
    assert watch.problem("t", rec) == "Taskflow('t') loaded no weights from the files fetch " \
                                      "can bundle"
    watch.read = [weights, str(tmp_path / "static" / "inference.pdiparams")]
    assert "inference.pdiparams, which fetch cannot bundle" in str(watch.problem("t", rec))
    watch.written.add(watch.read[1])  # Taskflow's static export of this run: derived
    assert watch.problem("t", rec) is None
    watch.read.append(str(tmp_path / "site" / "paddlenlp" / "data" / "x.pdparams"))
    assert watch.problem("t", rec) is None  # installed with PaddleNLP: there offline too
    watch.read.append(str(tmp_path / "site" / "paddlenlp-extra" / "x.pdparams"))
    assert "paddlenlp-extra/x.pdparams" in str(watch.problem("t", rec))


# -- with Paddle: the families through the mirror ----------------------------------------
# families_root: tests/conftest.py, built once per session and shared with
# tests/test_capture_families.py.
@pytest.fixture(scope="module")
def server(families_root: Path) -> Iterator[mirror.MirrorServer]:
    with mirror.start(families_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def online_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("online") / "home"


@pytest.fixture(scope="module")
def fetched(server: mirror.MirrorServer, online_home: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """The four plain families in one fetch, then each task: name -> (bundle, process)."""
    out = tmp_path_factory.mktemp("stick")
    runs = {
        "plain": [*PLAIN],
        "m3e": ["--task", "feature_extraction", M3E],
        "uie": ["--task", "information_extraction", UIE, "--task-arg", f"schema={SCHEMA}",
                "--task-arg", "precision=float32"],
    }
    return {name: (out / f"{name}.tar.zst",
                   fetch_cli(server.endpoint, online_home, out / f"{name}.tar.zst", *args))
            for name, args in runs.items()}


def _bundle(fetched: dict[str, tuple[Path, Any]], name: str) -> dict[str, Any]:
    bundle, proc = fetched[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return manifest_of(bundle)


def _absent(manifest: dict[str, Any], model_id: str) -> set[str]:
    return {n for m in manifest["models"] if m["id"] == model_id for n in m["absent_upstream"]}


@pytest.mark.paddle
def test_plain_fetch_carries_the_fast_tokenizer_files(fetched: dict[str, tuple[Path, Any]],
                                                      families_root: Path) -> None:
    manifest = _bundle(fetched, "plain")
    assert [m["id"] for m in manifest["models"]] == list(PLAIN)
    for model_id in PLAIN:  # every file upstream has is one some ordinary load needs
        assert bundled(manifest, model_id) == upstream(families_root, model_id), model_id
    # the sentencepiece Llama: use_fast=True reads tokenizer.model, and the server has no
    # tokenizer.json -- recorded, so offline answers "not there" as the server did
    assert {"tokenizer.model", "sentencepiece.bpe.model"} <= set(bundled(manifest, LLAMA))
    assert "tokenizer.json" in _absent(manifest, LLAMA)
    for model_id in (BERT, QWEN2):  # the fast tokenizer's own file, not a rebuild
        assert "tokenizer.json" in bundled(manifest, model_id)
    assert sum(n.endswith(".safetensors") for n in bundled(manifest, T5)) == 3
    assert "model.safetensors.index.json" in bundled(manifest, T5)


@pytest.mark.paddle
def test_task_fetch_carries_the_weights_the_task_loads(
        fetched: dict[str, tuple[Path, Any]], families_root: Path, online_home: Path) -> None:
    """Before, feature_extraction bundled 3 tokenizer files and exited 0."""
    m3e = _bundle(fetched, "m3e")
    assert [m["id"] for m in m3e["models"]] == [M3E]
    files = bundled(m3e, M3E)
    assert files["model_state.pdparams"] == upstream(families_root, M3E)["model_state.pdparams"]
    assert {"config.json", "vocab.txt", "tokenizer_config.json"} <= set(files)
    assert not any("/static/" in f["path"] for f in m3e["files"])  # derived by Taskflow
    assert (online_home / "taskflow" / M3E / "static" / "inference.pdiparams").is_file()
    assert m3e["origin"]["command"][2:] == [M3E, "--task", "feature_extraction"]

    uie = _bundle(fetched, "uie")
    assert bundled(uie, UIE) == {k: v for k, v in upstream(families_root, UIE).items()
                                 if k != "tokenizer.json"}  # the slow tokenizer's task
    assert uie["origin"]["command"][-4:] == ["--task-arg", f"schema={SCHEMA}", "--task-arg",
                                             "precision=float32"]


@pytest.mark.paddle
def test_a_task_without_its_required_argument_is_a_usage_error(
        server: mirror.MirrorServer, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    proc = fetch_cli(server.endpoint, tmp_path / "home", out, "--task",
                     "information_extraction", UIE)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs schema=" in lines[0] and "--task-arg schema=" in lines[0]
    assert not out.exists() and not out.with_name(out.name + ".sha256").exists()
    assert not (tmp_path / "home" / "models" / UIE).exists()  # asked before any download


@pytest.mark.paddle
def test_a_task_reading_weights_fetch_cannot_bundle_fails_with_no_bundle(
        fetched: dict[str, tuple[Path, Any]], server: mirror.MirrorServer, online_home: Path,
        tmp_path: Path) -> None:
    """A static model exported earlier, given as task_path: Taskflow reads its weights from
    there, so a bundle of what PaddleNLP downloaded could not run it offline."""
    _bundle(fetched, "m3e")
    exported = tmp_path / "exported"
    shutil.copytree(online_home / "taskflow" / M3E / "static", exported)
    out = tmp_path / "b.tar.zst"
    proc = fetch_cli(server.endpoint, tmp_path / "home", out, "--task", "feature_extraction",
                     M3E, "--task-arg", f"task_path={exported}", "--task-arg",
                     "is_static_model=true")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"read its weights from {exported / 'inference.pdiparams'}" in lines[0]
    assert not out.exists() and not out.with_name(out.name + ".sha256").exists()


OFFLINE_LOADS = AUDIT_RECORDER + f"""
    import os
    sys.path.insert(0, "tools")
    import tiny_models as t
    from paddlenlp.utils.download import resolve_file_path

    def run(name, call):
        try:
            RESULT[name] = call()
        except Exception as exc:
            RESULT[name] = {{"error": type(exc).__name__ + ": " + str(exc)[:500]}}

    run("llama", lambda: t.run_llama_fast({LLAMA!r}))
    run("qwen2", lambda: t.run_qwen2_chat({QWEN2!r}))
    run("bert", lambda: t.run_bert_fp16({BERT!r}))
    run("t5", lambda: t.run_t5({T5!r}))
    run("m3e", lambda: t.run_feature_extraction({M3E!r}))
    run("uie", lambda: t.run_information_extraction({UIE!r}))
    RESULT["resolved"] = {{name: resolve_file_path(model_id, "tokenizer.json") is not None
                          for name, model_id in (("llama", {LLAMA!r}), ("bert", {BERT!r}))}}
    RESULT["net"] = NET
    RESULT["blocked"] = [list(b) for b in sys.modules["bundler.offline"].blocked_attempts()]
    print("RESULT " + json.dumps(RESULT))
"""


@pytest.fixture(scope="module")
def offline(fetched: dict[str, tuple[Path, Any]],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Install the three bundles and load everything by name, all under ``unshare -n``."""
    if not have_unshare():
        pytest.skip("unshare -n is not permitted here")
    work = tmp_path_factory.mktemp("offline")
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("PPNLP_ENDPOINT",
                                                           "COMMUNITY_MODEL_PREFIX")}
    env["PPNLP_HOME"] = str(home)
    for name in ("plain", "m3e", "uie"):
        bundle, proc = fetched[name]
        assert proc.returncode == 0, proc.stderr[-3000:]
        inst = subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "bundler",
                               "install", str(bundle), "--home", str(home), "-q"],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert inst.returncode == 0, inst.stderr
    script = work / "app.py"
    script.write_text(textwrap.dedent(OFFLINE_LOADS), encoding="utf-8")
    env.update({"PADDLE_BUNDLE_OFFLINE": "1", "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH"))
                                              if p)})
    proc = subprocess.run(["unshare", "-n", "--", sys.executable, str(script)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=900)
    result = script_result(proc)
    assert result["net"] == [], "PaddleNLP looked up or connected to a host"
    assert result["blocked"] == [], "offline mode's guard had to refuse a network access"
    return result


def _ok(result: dict[str, Any], name: str) -> dict[str, Any]:
    value: dict[str, Any] = result[name]
    assert "error" not in value, value.get("error")
    return value


@pytest.mark.paddle
@needs_unshare
def test_offline_llama_fast_tokenizer_by_name(offline: dict[str, Any]) -> None:
    """Before: ValueError: Either model_file or model_proto must be specified."""
    llama = _ok(offline, "llama")
    assert llama["tokenizer"] == "LlamaTokenizerFast" and len(llama["ids"]) == 4
    assert offline["resolved"] == {"llama": False, "bert": True}


@pytest.mark.paddle
@needs_unshare
def test_offline_qwen2_chat_template_and_generate(offline: dict[str, Any]) -> None:
    qwen2 = _ok(offline, "qwen2")
    assert qwen2["tokenizer"] == "Qwen2TokenizerFast"
    assert qwen2["prompt"] == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert len(qwen2["ids"]) == 4


@pytest.mark.paddle
@needs_unshare
def test_offline_bert_float16_and_sharded_t5(offline: dict[str, Any]) -> None:
    bert = _ok(offline, "bert")
    assert bert["tokenizer"] == "BertTokenizerFast" and bert["dtype"] == "paddle.float16"
    assert bert["shape"][-1] == 32
    t5 = _ok(offline, "t5")
    assert t5["tokenizer"] == "T5Tokenizer" and len(t5["ids"]) == 4


@pytest.mark.paddle
@needs_unshare
def test_offline_taskflow_tasks_run(offline: dict[str, Any]) -> None:
    """Before: feature_extraction's bundle had no weights ("Can't load model")."""
    assert _ok(offline, "m3e")["shape"] == [1, 32]
    uie = _ok(offline, "uie")
    assert uie["type"] == "list" and uie["len"] == 1
