"""``fetch -- python app.py`` for the model families of issue 8, proven, then run offline.

One unchanged user program loads all six families by name the way their users do: a
sentencepiece Llama with ``use_fast=True``, Qwen2 with ``apply_chat_template`` + ``generate``
(attention mask), BERT with ``dtype="float16"``, a sharded T5; then, in a second Python it
starts with ``python -m``, ``Taskflow("feature_extraction", model="moka-ai/m3e-base")`` and
``Taskflow("information_extraction", schema=[...], model="paddlenlp/PP-UIE-0.5B")``. The
tiny real models are tools/tiny_models.py's, served by the local mirror from the session's
``families_root`` (tests/conftest.py, shared with tests/test_fetch_families.py).

It is captured once (``fetch`` runs it online, then proves it offline under ``unshare -n``),
the bundle is installed into a fresh home and the same command runs offline under ``unshare
-n`` with an audit hook in every Python: zero DNS lookups or connects, the same outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, have_unshare, run_cli
from tests.test_capture import _lines, _write, fetch_run, manifest_of, run_offline_by_name
from tests.test_fetch import bundled, upstream
from tools import mirror, tiny_models

LLAMA = tiny_models.LLAMA_SP_ID
QWEN2 = tiny_models.QWEN2_CHAT_ID
BERT = tiny_models.BERT_ID
T5 = tiny_models.T5_SHARDED_ID
M3E = tiny_models.M3E_ID
UIE = tiny_models.PP_UIE_ID
FAMILIES = (LLAMA, QWEN2, BERT, T5, M3E, UIE)

needs_unshare = pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted "
                                   "here, so 'no network' cannot be proven")

#: The user's program: the four plain families through tools/tiny_models.py's loaders (the
#: same calls test_fetch_families.py checks), then the Taskflow part in a second Python.
APP = f"""
import json, os, subprocess, sys
# protobuf 4's C descriptors refuse PaddleNLP's old sentencepiece_model_pb2 (the Llama's
# fast-tokenizer conversion): what such a user's program sets before importing PaddleNLP
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
sys.path.insert(0, {str(ROOT / "tools")!r})
import tiny_models as t

out = {{"llama": t.run_llama_fast({LLAMA!r}), "qwen2": t.run_qwen2_chat({QWEN2!r}),
        "bert": t.run_bert_fp16({BERT!r}), "t5": t.run_t5({T5!r})}}
print("PLAIN", json.dumps(out, ensure_ascii=False), flush=True)
sys.exit(subprocess.call([sys.executable, "-m", "tasks"]))
"""

TASKS = f"""
import json
from paddlenlp import Taskflow

features = Taskflow("feature_extraction", model={M3E!r})(["2024年张三在北京测试飞桨"])
uie = Taskflow("information_extraction", schema={tiny_models.UIE_SCHEMA!r}, model={UIE!r},
               precision="float32")("2024年张三在北京测试飞桨")
print("TASKS", json.dumps({{
    "features": [round(float(x), 4) for x in features["features"][0][:8]],
    "shape": list(features["features"].shape),
    "uie": json.loads(json.dumps(uie, ensure_ascii=False, default=str)),
}}, ensure_ascii=False), flush=True)
"""


@pytest.fixture(scope="module")
def server(families_root: Path) -> Iterator[mirror.MirrorServer]:
    with mirror.start(families_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def captured(server: mirror.MirrorServer, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Any]:
    """One capture of the app (online run + offline proof), then one offline run of the
    installed bundle under ``unshare -n``."""
    if not have_unshare():
        pytest.skip("unshare -n is not permitted here")
    work = tmp_path_factory.mktemp("capture-families")
    app = _write(work / "app", {"app.py": APP, "tasks.py": TASKS})
    out = work / "stick" / "families.tar.zst"
    out.parent.mkdir()
    proc = fetch_run(app, work / "home", out, "--", "python", "app.py",
                     env_extra=mirror.paddlenlp_env(server.endpoint))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run, events = run_offline_by_name(out, app, ["python", "app.py"], work / "offline")
    return {"bundle": out, "fetch": proc, "offline": run, "events": events}


@pytest.mark.paddle
@needs_unshare
def test_capture_bundles_every_family_and_proves_it(captured: dict[str, Any],
                                                    families_root: Path) -> None:
    proc = captured["fetch"]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "proven offline (network namespace)" in summary, proc.stdout[-2000:]
    assert "packed 6 model(s)" in summary, summary
    manifest = manifest_of(captured["bundle"])
    assert sorted(m["id"] for m in manifest["models"]) == sorted(FAMILIES)
    assert all(m["kind"] == "community" for m in manifest["models"])
    proof = manifest["origin"]["proof"]
    assert proof["command"] == ["python", "app.py"]
    assert proof["isolation"] == "network namespace"
    rc, text, _ = run_cli("inspect", captured["bundle"])
    assert rc == 0 and "proven:   python app.py ran offline" in text

    for model_id in FAMILIES:  # every file bundled is the server's, byte for byte
        files, served = bundled(manifest, model_id), upstream(families_root, model_id)
        assert files and all(served.get(name) == sha for name, sha in files.items()), model_id
        weights = {n for n in served if n.endswith((".pdparams", ".safetensors"))}
        assert weights and weights <= set(files), (model_id, sorted(files))
    llama = bundled(manifest, LLAMA)
    assert "tokenizer.model" in llama  # use_fast=True reads it
    assert "tokenizer.json" in bundled(manifest, QWEN2)
    assert "tokenizer.json" in bundled(manifest, BERT)
    t5 = bundled(manifest, T5)
    assert sum(n.endswith(".safetensors") for n in t5) == 3
    assert "model.safetensors.index.json" in t5
    absent = {m["id"]: set(m["absent_upstream"]) for m in manifest["models"]}
    assert "tokenizer.json" in absent[LLAMA]  # offline answers "not there", as the server did
    # Taskflow's static export is derived on the offline side, never carried
    assert not any("/static/" in f["path"] or f["path"].startswith("taskflow/")
                   for f in manifest["files"])


@pytest.mark.paddle
@needs_unshare
def test_captured_app_runs_offline_by_name_with_no_network(captured: dict[str, Any]) -> None:
    online, run, events = captured["fetch"], captured["offline"], captured["events"]
    assert run.returncode == 0, run.stderr[-4000:]
    plain_online, plain_offline = _lines(online.stdout, "PLAIN"), _lines(run.stdout, "PLAIN")
    assert plain_offline == plain_online
    assert plain_offline["llama"]["tokenizer"] == "LlamaTokenizerFast"
    assert plain_offline["qwen2"]["prompt"].startswith("<|im_start|>user\nhello")
    assert plain_offline["bert"]["dtype"] == "paddle.float16"
    assert len(plain_offline["t5"]["ids"]) == 4
    tasks_online, tasks_offline = _lines(online.stdout, "TASKS"), _lines(run.stdout, "TASKS")
    assert tasks_offline == tasks_online
    assert tasks_offline["shape"] == [1, 32] and isinstance(tasks_offline["uie"], list)
    # both Pythons (app.py and its python -m child) ran under the audit hook, and saw nothing
    assert len(events) >= 2 and all(e == [] for e in events), json.dumps(events)[:2000]
