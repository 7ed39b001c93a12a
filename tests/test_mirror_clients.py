"""The fleet mirror with real PaddleNLP clients and a real nginx (issue 11, done-when).

* plain PaddleNLP (no offline mode, no paddle-bundle import) in a network namespace with only
  loopback loads the tiny CodeGen and the sharded ERNIE by name through ``PPNLP_ENDPOINT`` from
  nginx started in the same namespace, and nginx's log shows only GET/HEAD below the root;
* offline mode with ``PADDLE_BUNDLE_MIRROR`` loads a built-in name, and downloads a Taskflow
  static file, from the mirror; the socket guard lets only the mirror through; a model on
  neither the cache nor the mirror fails fast naming the mirror;
* 32 client processes load CodeGen while a new version is published: each ends with the whole
  old or the whole new model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bundler.cli import _main
from bundler.mirror import publish
from tests.conftest import ROOT, have_unshare, run_cli, script_result
from tests.test_mirror import _cli, nginx, nginx_binary, nginx_files
from tools import tiny_models

pytestmark = [pytest.mark.paddle, pytest.mark.slow]

CODEGEN = tiny_models.CODEGEN_ID
ERNIE = tiny_models.ERNIE_SHARDED_ID
BUILTIN = tiny_models.BUILTIN_ERNIE_ID

#: Builds, in one Python: CodeGen v1 and v2 (other weights, config and tokenizer config), the
#: sharded ERNIE, and the built-in ERNIE's files at their fixed URLs; prints what the
#: publishing side's registry look-up (bundler.mirror.layout) finds for the built-in name.
BUILD = """
import json, sys
from pathlib import Path
import tools.tiny_models as t
from bundler.manifest import ModelEntry
from bundler.mirror.layout import paddlenlp_urls

out = Path(sys.argv[1])
t.build_codegen(out / "v1/models" / t.CODEGEN_ID)
t.build_ernie_sharded(out / "v1/models" / t.ERNIE_SHARDED_ID)
seed = t._seed_everything
t._seed_everything = lambda s=0: seed(4242)
v2 = t.build_codegen(out / "v2/models" / t.CODEGEN_ID)
for name in ("config.json", "tokenizer_config.json"):
    data = json.loads((v2 / name).read_text())
    data["paddle_bundle_test_version"] = 2
    (v2 / name).write_text(json.dumps(data, indent=2))
placed = t.build_builtin_ernie(out / "bucket")
home = out / "builtin/models" / t.BUILTIN_ERNIE_ID
home.mkdir(parents=True)
urls = {}
for url, path in placed.items():
    name = "model_state.pdparams" if url.endswith(".pdparams") else url.rsplit("/", 1)[-1]
    (home / name).write_bytes(path.read_bytes())
    urls[name] = url
found = paddlenlp_urls(ModelEntry.for_id(t.BUILTIN_ERNIE_ID))
print("RESULT " + json.dumps({"urls": urls, "registry": found}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mirror-models")
    proc = subprocess.run([sys.executable, "-c", BUILD, str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)
    result = script_result(proc)
    bundles = {}
    for name, home, ids in (("v1", "v1", [CODEGEN, ERNIE]), ("v2", "v2", [CODEGEN]),
                            ("builtin", "builtin", [BUILTIN])):
        bundles[name] = out / f"{name}.tar.zst"
        assert _main(["pack", *ids, "-o", str(bundles[name]), "--home", str(out / home),
                      "-q"]) == 0
    return {"out": out, "bundles": bundles, **result}


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CLIENT = """
import json, sys
import tools.tiny_models as t
codegen = t.run_codegen(t.CODEGEN_ID)
ernie = t.run_ernie(t.ERNIE_SHARDED_ID)
loaded = sorted(m for m in sys.modules if m == "bundler" or m.startswith("bundler."))
print("RESULT " + json.dumps({"codegen": codegen, "ernie": ernie, "bundler": loaded}))
"""


def test_plain_paddlenlp_loads_by_name_from_nginx_in_a_loopback_only_namespace(
        built: dict[str, Any], tmp_path: Path) -> None:
    if not have_unshare():
        pytest.skip("unshare -n is not permitted here")
    root = tmp_path / "root"
    rc, _, err = _cli("mirror", "publish", str(built["bundles"]["v1"]), "--root", str(root),
                      "-q")
    assert rc == 0, err
    port = 8080  # a fresh namespace: nothing else listens there
    rc, conf_text, err = _cli("mirror", "nginx-config", "--root", str(root), "--listen",
                              f"127.0.0.1:{port}")
    assert rc == 0, err
    prefix = tmp_path / "nginx"
    conf = nginx_files(prefix, conf_text)
    home = tmp_path / "client-home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PADDLE_BUNDLE_", "PPNLP_", "HTTP_PROXY", "HTTPS_PROXY",
                                "http_proxy", "https_proxy"))}
    env.update({"PPNLP_HOME": str(home), "PPNLP_ENDPOINT": f"http://127.0.0.1:{port}/paddlenlp",
                "PYTHONPATH": str(ROOT)})
    scenario = textwrap.dedent(f"""\
        set -e
        ip link set lo up
        {nginx_binary()} -p {prefix} -c {conf} &
        NGINX=$!
        trap 'kill $NGINX' EXIT
        {sys.executable} -c 'import sys; sys.path.insert(0, "{ROOT}"); \
from tests.test_mirror import wait_for_port; wait_for_port({port})'
        ip -o link | grep -v ' lo:' | grep -c . > {tmp_path}/interfaces || true
        {sys.executable} -c '{CLIENT}'
        """)
    proc = subprocess.run(["unshare", "-n", "bash", "-c", scenario], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)
    result = script_result(proc)
    assert result["bundler"] == []  # a plain PaddleNLP client: nothing of ours imported
    assert len(result["codegen"]) > 0 and result["ernie"][0] == 1
    assert (tmp_path / "interfaces").read_text().strip() == "0"  # only loopback
    log = [line.split(" ") for line in (prefix / "access.log").read_text().splitlines()]
    assert log and {entry[0] for entry in log} <= {"GET", "HEAD"}
    gens = str(root / ".paddle-bundle" / "generations")
    served = [entry for entry in log if entry[2] == "200"]
    assert all(entry[3].startswith(gens) for entry in served)  # nothing outside the root
    assert any(entry[1].endswith(".safetensors") for entry in served)  # the shards
    # and what the clients cached is what the bundle holds
    for model in (CODEGEN, ERNIE):
        cached = file_hashes(home / "models" / model)
        source = file_hashes(built["out"] / "v1" / "models" / model)
        assert {k: v for k, v in cached.items() if k in source} == \
            {k: v for k, v in source.items() if k in cached}
        assert "config.json" in cached


def test_offline_mode_loads_a_builtin_name_and_taskflow_files_from_the_mirror(
        built: dict[str, Any], tmp_path: Path) -> None:
    assert built["registry"] == built["urls"]  # publish finds the URLs PaddleNLP uses
    root = tmp_path / "root"
    taskflow_url = ("https://paddlenlp.bj.bcebos.com/taskflow/information_extraction/"
                    "uie_tiny/inference.pdiparams")
    bucket_file = tmp_path / "taskflow-home" / "taskflow/information_extraction/uie-tiny" / \
        "inference.pdiparams"
    bucket_file.parent.mkdir(parents=True)
    bucket_file.write_bytes(b"static weights" * 100)
    task_bundle = tmp_path / "task.tar.zst"
    assert _main(["pack", "taskflow:information_extraction/uie-tiny", "-o", str(task_bundle),
                  "--home", str(tmp_path / "taskflow-home"), "-q"]) == 0
    result = publish([built["bundles"]["builtin"], task_bundle], root,
                     lookup=lambda model: built["urls"] if model.id == BUILTIN
                     else {"inference.pdiparams": taskflow_url})
    served = {o.model.id: {f.url_path for f in o.model.files} for o in result.outcomes}
    assert served[BUILTIN] == {"paddlenlp/" + url.split("/paddlenlp/", 1)[-1]
                               for url in built["urls"].values()}
    assert served["taskflow:information_extraction/uie-tiny"] == {
        "paddlenlp/taskflow/information_extraction/uie_tiny/inference.pdiparams"}
    md5 = hashlib.md5(bucket_file.read_bytes()).hexdigest()
    with nginx(root, tmp_path / "nginx") as server:
        script = textwrap.dedent(f"""
            import json, sys, time, socket
            import paddle
            from paddlenlp.transformers import ErnieModel, ErnieTokenizer
            from paddlenlp.taskflow.utils import download_file
            from bundler._offline import blocked_attempts
            RESULT = {{}}
            tok = ErnieTokenizer.from_pretrained({BUILTIN!r})
            model = ErnieModel.from_pretrained({BUILTIN!r})
            model.eval()
            with paddle.no_grad():
                out = model(**tok("你好世界 hello", return_tensors="pd"))[0]
            RESULT["shape"] = list(out.shape)
            path = download_file(sys.argv[1], "inference.pdiparams", {taskflow_url!r}, {md5!r})
            RESULT["taskflow"] = open(path, "rb").read() == {bucket_file.read_bytes()!r}
            def fails(call):
                t = time.perf_counter()
                try:
                    call()
                except Exception as exc:
                    return [type(exc).__name__, str(exc), time.perf_counter() - t]
            RESULT["absent"] = fails(lambda: ErnieModel.from_pretrained("ernie-3.0-micro-zh"))
            RESULT["other_host"] = fails(
                lambda: socket.create_connection(("192.0.2.1", 80), timeout=5))
            RESULT["dns"] = fails(lambda: socket.getaddrinfo("bj.bcebos.com", 443))
            RESULT["blocked"] = blocked_attempts()
            print("RESULT " + json.dumps(RESULT))
            """)
        env = {**os.environ, "PADDLE_BUNDLE_OFFLINE": "1", "PPNLP_HOME": str(tmp_path / "h"),
               "PADDLE_BUNDLE_MIRROR": server.endpoint, "PYTHONPATH": str(ROOT)}
        env.pop("PPNLP_ENDPOINT", None)
        proc = subprocess.run([sys.executable, "-c", script,
                               str(tmp_path / "h" / "taskflow" / "information_extraction" /
                                   "uie-tiny")],
                              capture_output=True, text=True, env=env, timeout=900)
        out = script_result(proc)
        log = server.log()
    assert out["shape"][0] == 1 and out["taskflow"] is True
    name, message, seconds = out["absent"]
    assert name == "NotOnMirrorError" and server.endpoint in message and seconds < 10
    assert out["other_host"][0] == "OfflineBlockedError"
    assert out["dns"][0] == "OfflineBlockedError"
    assert {m for m, *_ in log} <= {"GET", "HEAD"}
    fetched = {uri for _, uri, status, _ in log if status == 200}
    for url in built["urls"].values():
        assert "/paddlenlp/" + url.split("/paddlenlp/", 1)[-1] in fetched


CONCURRENT = """
import hashlib, json, os, sys, time
from pathlib import Path
from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer

model_id, out, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
go = out / "go"
children = []
for i in range(n):
    pid = os.fork()
    if pid:
        children.append(pid)
        continue
    result = {"ok": False}
    try:
        while not go.exists():
            time.sleep(0.005)
        time.sleep(0.1 * i)  # spread the clients over the publish
        started = time.time()
        cache = out / f"client{i}"
        tokenizer = AutoTokenizer.from_pretrained(model_id, cache_dir=str(cache))
        model = AutoModelForCausalLM.from_pretrained(model_id, cache_dir=str(cache))
        ids = tokenizer("def add(a, b):", return_tensors="pd")["input_ids"]
        model(input_ids=ids)
        folder = cache / model_id
        files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in folder.rglob("*") if p.is_file()}
        result = {"ok": True, "files": files, "started": started, "ended": time.time()}
    except BaseException as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    (out / f"result{i}.json").write_text(json.dumps(result))
    os._exit(0)
print("READY", flush=True)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_32_clients_loading_during_a_publish_each_get_one_whole_version(
        built: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([built["bundles"]["v1"]], root)
    versions = {name: file_hashes(built["out"] / name / "models" / CODEGEN)
                for name in ("v1", "v2")}
    assert all(versions["v1"][k] != versions["v2"][k] for k in
               ("config.json", "tokenizer_config.json", "model_state.pdparams"))
    work = tmp_path / "clients"
    work.mkdir()
    clients = 32
    with nginx(root, tmp_path / "nginx") as server:
        env = {**os.environ, "PPNLP_ENDPOINT": server.endpoint, "PPNLP_HOME": str(work / "h")}
        env = {k: v for k, v in env.items() if not k.startswith("PADDLE_BUNDLE_")}
        proc = subprocess.Popen([sys.executable, "-c", CONCURRENT, CODEGEN, str(work),
                                 str(clients)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read() if \
            proc.stderr else ""
        (work / "go").touch()
        deadline = time.monotonic() + 300
        while len(server.log()) < 60 and time.monotonic() < deadline:  # mid-way through
            time.sleep(0.01)
        publish([built["bundles"]["v2"]], root)
        flipped = time.time()
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        log = server.log()
    results = [json.loads((work / f"result{i}.json").read_text()) for i in range(clients)]
    failed = [r["error"] for r in results if not r["ok"]]
    assert not failed
    seen = []
    for r in results:
        got = r["files"]
        assert {"config.json", "model_state.pdparams", "tokenizer_config.json"} <= set(got)
        matches = [name for name, files in versions.items()
                   if all(files.get(path) == digest for path, digest in got.items())]
        assert len(matches) == 1, f"a mix of versions: {got}"
        seen.append(matches[0])
    # the publish really landed while clients were loading: both versions were served
    assert set(seen) == {"v1", "v2"}, seen
    straddling = [r for r in results if r["started"] < flipped < r["ended"]]
    assert straddling  # clients whose requests went on across the flip: still one version
    assert {m for m, *_ in log} <= {"GET", "HEAD"}


TASK_ONLINE = """
import json, sys
from pathlib import Path
import tools.tiny_models as t

home = Path(sys.argv[1])
md5 = t.build_text_similarity(home)
t.build_bert(home / "models" / t.M3E_ID)
# the online machine runs both tasks once (offline mode on the files just placed, so the
# static model Taskflow converts and the tokenizer files it writes are in the home, as after
# a real first run)
similarity = t.run_text_similarity(md5)
features = t.run_feature_extraction(t.M3E_ID)
print("RESULT " + json.dumps({"md5": md5, "similarity": similarity, "features": features}))
"""

TASK_CLIENT = """
import json, socket, sys
import tools.tiny_models as t
from bundler._offline import blocked_attempts

RESULT = {"similarity": t.run_text_similarity(json.loads(sys.argv[1])),
          "features": t.run_feature_extraction(t.M3E_ID)}
def fails(call):
    try:
        call()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
RESULT["other_host"] = fails(lambda: socket.create_connection(("192.0.2.1", 80), timeout=5))
RESULT["other_task"] = fails(lambda: __import__("paddlenlp").Taskflow(
    "text_similarity", model="rocketqa-zh-dureader-cross-encoder"))
RESULT["blocked"] = blocked_attempts()
print("RESULT " + json.dumps(RESULT))
"""


def test_offline_mode_runs_taskflow_tasks_from_the_mirror_with_an_empty_cache(
        tmp_path: Path) -> None:
    """Two Taskflow tasks run on a machine whose cache is empty, with offline mode and
    PADDLE_BUNDLE_MIRROR only: text_similarity (static files from Taskflow's fixed URLs, md5
    checked, plus the built-in tokenizer simbert-base-chinese) and feature_extraction with
    moka-ai/m3e-base (a community model). Publishing looks every URL up in PaddleNLP's own
    registries. The only change to PaddleNLP in the client: the md5s it pins for the real
    simbert weights are replaced by the tiny stand-in's (tools/tiny_models.py)."""
    online = tmp_path / "online"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDLE_BUNDLE_", "PPNLP_"))}
    built = script_result(subprocess.run(
        [sys.executable, "-c", TASK_ONLINE, str(online)], capture_output=True, text=True,
        cwd=ROOT, timeout=900, env={**env, "PPNLP_HOME": str(online),
                                    "PADDLE_BUNDLE_OFFLINE": "1", "PYTHONPATH": str(ROOT)}))
    bundle = tmp_path / "tasks.tar.zst"
    assert _main(["pack", f"taskflow:{tiny_models.SIMBERT_TASK}", tiny_models.SIMBERT_ID,
                  tiny_models.M3E_ID, "-o", str(bundle), "--home", str(online), "-q"]) == 0
    root = tmp_path / "root"
    # the command, in its own process: the URL look-up imports PaddleNLP (and with it
    # huggingface_hub, whose cache constants later tests set through the environment)
    rc, out, err = run_cli("mirror", "publish", bundle, "--root", root)
    assert rc == 0, err
    index = json.loads((root / ".paddle-bundle" / "index.json").read_text())
    served = {m["id"]: sorted(f["path"] for f in m["files"]) for m in index["models"]}
    assert served[f"taskflow:{tiny_models.SIMBERT_TASK}"] == [
        f"paddlenlp/taskflow/{tiny_models.SIMBERT_TASK}/model_config.json",
        f"paddlenlp/taskflow/{tiny_models.SIMBERT_TASK}/model_state.pdparams"]
    assert served[tiny_models.SIMBERT_ID] == ["paddlenlp/models/transformers/simbert/vocab.txt"]
    assert f"paddlenlp/models/community/{tiny_models.M3E_ID}/model_state.pdparams" in \
        served[tiny_models.M3E_ID]
    client_home = tmp_path / "client"
    with nginx(root, tmp_path / "nginx") as server:
        proc = subprocess.run(
            [sys.executable, "-c", TASK_CLIENT, json.dumps(built["md5"])], capture_output=True,
            text=True, cwd=tmp_path, timeout=900,
            env={**env, "PPNLP_HOME": str(client_home), "PADDLE_BUNDLE_OFFLINE": "1",
                 "PADDLE_BUNDLE_MIRROR": server.endpoint, "PYTHONPATH": str(ROOT)})
        result = script_result(proc)
        log = server.log()
    # the same answers as on the online machine, from files that came from the mirror
    assert result["similarity"] == pytest.approx(built["similarity"])
    assert result["features"] == built["features"]
    task_dir = client_home / "taskflow" / tiny_models.SIMBERT_TASK
    for name in ("model_state.pdparams", "model_config.json"):
        assert (task_dir / name).read_bytes() == (online / "taskflow" / tiny_models.SIMBERT_TASK
                                                  / name).read_bytes()
    assert result["other_host"][0] == "OfflineBlockedError"
    # a task the mirror does not serve fails naming the mirror
    assert result["other_task"][0] == "NotOnMirrorError"
    assert server.endpoint in result["other_task"][1]
    assert {m for m, *_ in log} <= {"GET", "HEAD"}
    fetched = {uri for _, uri, status, _ in log if status == 200}
    assert {f"/paddlenlp/taskflow/{tiny_models.SIMBERT_TASK}/model_state.pdparams",
            "/paddlenlp/models/transformers/simbert/vocab.txt",
            f"/paddlenlp/models/community/{tiny_models.M3E_ID}/model_state.pdparams"} <= fetched
    assert not [entry for entry in log if entry[2] != 200]  # nothing asked that is not there
