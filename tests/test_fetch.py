"""``paddle-bundle fetch``: PaddleNLP downloads through a local mirror, the bundle holds exactly
what its loaders used, failures leave no bundle, and the result installs and runs offline.

Never the internet: tiny real models (tools/tiny_models.py) are served by tools/mirror.py on
127.0.0.1 and PaddleNLP is pointed at it with PPNLP_ENDPOINT. The models are built once and
one mirror serves the module; Paddle is imported only in subprocesses. The first half of the
file needs no Paddle: report parsing, path mapping and error wording, on hand-made reports.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bundler import _fetch_child
from bundler.errors import BundleError, ModelNotFoundError, NetworkError, UsageError
from bundler.fetch import ChildReport, UsedFile, error_for, parse_report, plan_from_report
from tests.conftest import ROOT, have_unshare, run_cli
from tools import mirror, tiny_models

CODEGEN = tiny_models.CODEGEN_ID
ERNIE = tiny_models.ERNIE_SHARDED_ID
EP = "http://127.0.0.1:1/paddlenlp"


# -- no Paddle: the report and the path mapping ----------------------------------------
def _report(home: Path, files: dict[str, str], absent: dict[str, list[str]] | None = None,
            root: str = f"models/{CODEGEN}") -> ChildReport:
    return ChildReport(endpoint=EP, paddlenlp="3.0.0b4", paddle="3.3.1",
                       files=tuple(UsedFile(str(home / p), root, how)
                                   for p, how in files.items()),
                       absent=absent or {}, error=None)


def _touch(home: Path, rel: str, data: bytes = b"x") -> Path:
    path = home / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_used_files_map_to_models_with_their_absent_names(tmp_path: Path) -> None:
    base = f"models/{CODEGEN}"
    for name in ("config.json", "model_state.pdparams", "sub/vocab.json", "unrelated.bin"):
        _touch(tmp_path, f"{base}/{name}")
    report = _report(tmp_path, {f"{base}/config.json": "downloaded",
                                f"{base}/model_state.pdparams": "cached",
                                f"{base}/sub/vocab.json": "downloaded"},
                     {base: ["added_tokens.json", "chat_template.json", "sub/vocab.json"],
                      "models/other/unused": ["config.json"]})
    models, files = plan_from_report(tmp_path, report, [CODEGEN])
    assert [m.id for m in models] == [CODEGEN]
    # a name that was later found (flaky 404) is not "absent"; unrelated roots are dropped
    assert models[0].absent_upstream == ("added_tokens.json", "chat_template.json")
    assert sorted(f.arcname for f in files) == [f"{base}/config.json",
                                                f"{base}/model_state.pdparams",
                                                f"{base}/sub/vocab.json"]


def test_paths_outside_the_model_folder_are_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "models/Other/model/config.json")
    elsewhere = _touch(tmp_path.parent / f"{tmp_path.name}-elsewhere", "config.json")
    bad = [
        _report(tmp_path, {"models/Other/model/config.json": "cached"}),  # another model
        ChildReport(EP, "", "", (UsedFile(str(elsewhere), f"models/{CODEGEN}", "cached"),),
                    {}, None),  # outside the home (cache_dir=...)
        _report(tmp_path, {f"models/{CODEGEN}/../../../etc/passwd": "cached"}),
        _report(tmp_path, {"datasets/x/y.json": "cached"}, root="datasets/x"),
    ]
    for report in bad:
        with pytest.raises(BundleError) as info:
            plan_from_report(tmp_path, report, [CODEGEN])
        assert "\n" not in str(info.value)


def test_symlinked_and_vanished_files_are_refused(tmp_path: Path) -> None:
    base = f"models/{CODEGEN}"
    target = _touch(tmp_path, f"{base}/real.json")
    (tmp_path / base / "link.json").symlink_to(target.name)
    with pytest.raises(BundleError, match="not a regular file"):
        plan_from_report(tmp_path, _report(tmp_path, {f"{base}/link.json": "cached"}), [CODEGEN])
    with pytest.raises(BundleError, match="gone"):
        plan_from_report(tmp_path, _report(tmp_path, {f"{base}/gone.json": "cached"}), [CODEGEN])


def test_a_requested_model_without_files_is_not_found(tmp_path: Path) -> None:
    _touch(tmp_path, f"models/{CODEGEN}/config.json")
    report = _report(tmp_path, {f"models/{CODEGEN}/config.json": "downloaded"})
    with pytest.raises(ModelNotFoundError, match="Org/missing is not on"):
        plan_from_report(tmp_path, report, [CODEGEN, "Org/missing"])


def test_taskflow_folders_and_extra_models_come_along(tmp_path: Path) -> None:
    _touch(tmp_path, "taskflow/information_extraction/uie-base/model_state.pdparams")
    _touch(tmp_path, "models/ernie-3.0-base-zh/vocab.txt")
    report = ChildReport(EP, "", "", (
        UsedFile(str(tmp_path / "taskflow/information_extraction/uie-base/model_state.pdparams"),
                 "taskflow/information_extraction/uie-base", "downloaded"),
        UsedFile(str(tmp_path / "models/ernie-3.0-base-zh/vocab.txt"),
                 "models/ernie-3.0-base-zh", "cached")), {}, None)
    models, _ = plan_from_report(tmp_path, report, ["uie-base"], task="information_extraction")
    assert [(m.id, m.kind) for m in models] == [
        ("ernie-3.0-base-zh", "community"),
        ("taskflow:information_extraction/uie-base", "taskflow")]


def test_malformed_reports_are_one_line_errors() -> None:
    for raw in (None, {"version": 99}, {"version": 1, "error": None, "files": [{"path": 1}]},
                {"version": 1, "error": "boom"}):
        with pytest.raises(BundleError) as info:
            parse_report(raw)
        assert "\n" not in str(info.value)
    ok = parse_report({"version": 1, "endpoint": EP, "error": None, "files": [
        {"path": "/h/models/a/b/c", "root": "models/a/b", "how": "cached"}],
        "absent": {"models/a/b": ["added_tokens.json"]}})
    assert ok.files[0].root == "models/a/b" and ok.absent == {"models/a/b": ("added_tokens.json",)}


@pytest.mark.parametrize(("kind", "cls", "words"), [
    ("not_found", ModelNotFoundError, ["Org/x is not on"]),
    ("network", NetworkError, ["cannot reach", EP, "PPNLP_ENDPOINT"]),
    ("download", NetworkError, ["Salesforce/codegen-350M-mono/model_state.pdparams", "run fetch "
                                "again"]),
    ("http", NetworkError, ["403", "added_tokens.json"]),
    ("usage", UsageError, ["not in task"]),
    ("loader", BundleError, ["could not load"]),
    ("crash", BundleError, ["PADDLE_BUNDLE_DEBUG"]),
])
def test_child_errors_map_to_one_line_exceptions(kind: str, cls: type[BundleError],
                                                 words: list[str]) -> None:
    message = {"not_found": f"model Org/x is not on {EP}", "network": "connection refused",
               "download": "connection broken mid-transfer",
               "http": "403 Client Error: Forbidden for url",
               "usage": "The models name: x is not in task:[code_generation]",
               "loader": "AutoModel failed\n for x", "crash": "KeyError: 'x'"}[kind]
    url = {"download": f"{EP}/models/community/{CODEGEN}/model_state.pdparams",
           "http": f"{EP}/models/community/{CODEGEN}/added_tokens.json"}.get(kind, "")
    report = ChildReport(EP, "", "", (), {}, {"kind": kind, "message": message, "url": url,
                                              "model": "Org/x"})
    error = error_for(report, EP)
    assert type(error) is cls
    text = str(error)
    assert "\n" not in text
    for word in words:
        assert word in text, text


def test_the_child_judges_failures_before_absence() -> None:
    """A network failure explains the silence after it: never "not found" then."""
    steps = [{"model": "Org/x", "step": "AutoModel", "ok": False, "required": True,
              "error": "Can't load", "error_type": "OSError"}]
    report: dict[str, Any] = {"endpoint": EP, "files": [], "steps": steps, "failures": [
        {"kind": "http", "message": "403", "url": "u1"},
        {"kind": "network", "message": "connection refused", "url": "u2"}]}
    assert _fetch_child.judge(["Org/x"], None, report)["kind"] == "network"
    report["failures"] = []
    assert _fetch_child.judge(["Org/x"], None, report)["kind"] == "not_found"
    report["files"] = [{"path": "/h/models/Org/x/config.json", "root": "models/Org/x",
                        "how": "cached"}]
    assert _fetch_child.judge(["Org/x"], None, report)["kind"] == "loader"
    steps[0]["ok"] = True
    assert _fetch_child.judge(["Org/x"], None, report) is None


def test_network_reasons_are_short() -> None:
    assert _fetch_child._reason(OSError("HTTPConnectionPool(host=...): Max retries exceeded "
                                        "(Caused by NewConnectionError(... [Errno 111] "
                                        "Connection refused))")) == "connection refused"
    assert _fetch_child._reason(OSError("[Errno -2] Name or service not known")) == \
        "name resolution failed"
    assert _fetch_child._reason(OSError("('Connection broken: IncompleteRead(10 bytes read, "
                                        "90 more expected)')")) == \
        "connection broken mid-transfer"


def test_fetch_refuses_bad_arguments_before_starting_paddle(tmp_path: Path) -> None:
    rc, _, err = run_cli("fetch", "taskflow:x/y", "-o", tmp_path / "b.tar.zst", "--home",
                         tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("fetch", "Org/m", "-o", tmp_path / "no" / "b.tar.zst", "--home",
                         tmp_path)
    assert rc == 1 and "does not exist" in err
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "fetch" in out


# -- with Paddle, through the mirror ---------------------------------------------------
@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    proc = subprocess.run([sys.executable, "tools/tiny_models.py", "mirror-tree", str(root)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def server(mirror_root: Path) -> Iterator[mirror.MirrorServer]:
    with mirror.start(mirror_root) as srv:
        yield srv


def upstream(mirror_root: Path, model_id: str) -> dict[str, str]:
    folder = tiny_models.community_dir(mirror_root, model_id)
    return {p.name: _sha(p) for p in folder.iterdir() if p.is_file()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_cli(endpoint: str, home: Path, out: Path, *args: str,
              background: bool = False) -> Any:
    env = {**os.environ, **mirror.paddlenlp_env(endpoint)}
    env.pop("PPNLP_HOME", None)
    cmd = [sys.executable, "-m", "bundler", "fetch", *args, "-o", str(out), "--home", str(home)]
    if background:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def manifest_of(bundle: Path) -> dict[str, Any]:
    rc, out, err = run_cli("inspect", bundle, "--json")
    assert rc == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def bundled(manifest: dict[str, Any], model_id: str) -> dict[str, str]:
    prefix = f"models/{model_id}/"
    return {f["path"][len(prefix):]: f["sha256"] for f in manifest["files"]
            if f["path"].startswith(prefix)}


def leftovers(home: Path) -> list[str]:
    """Partial downloads: PaddleNLP's tmpXXXX temp files and the legacy <name>_tmp."""
    return sorted(str(p) for p in (home / "models").rglob("*")
                  if p.is_file() and (p.name.startswith("tmp") or p.name.endswith("_tmp")))


@pytest.fixture(scope="module")
def fetched(server: mirror.MirrorServer, mirror_root: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """Two models in one fetch. The home already holds one real file of CodeGen (it must be
    bundled: the loader uses it) and one unrelated file (it must not be)."""
    work = tmp_path_factory.mktemp("fetched")
    home = work / "home"
    folder = home / "models" / CODEGEN
    folder.mkdir(parents=True)
    src = tiny_models.community_dir(mirror_root, CODEGEN)
    (folder / "vocab.json").write_bytes((src / "vocab.json").read_bytes())
    (folder / "unrelated.bin").write_bytes(b"not PaddleNLP's")
    out = work / "stick" / "models.tar.zst"
    out.parent.mkdir()
    proc = fetch_cli(server.endpoint, home, out, CODEGEN, ERNIE)
    return home, out, proc


@pytest.mark.paddle
def test_fetch_bundles_exactly_what_the_loaders_used(
        fetched: tuple[Path, Path, Any], server: mirror.MirrorServer,
        mirror_root: Path) -> None:
    home, out, proc = fetched
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.strip().splitlines()) == 1 and "packed 2 model(s)" in proc.stdout
    assert (out.parent / (out.name + ".sha256")).is_file()
    manifest = manifest_of(out)
    models = {m["id"]: m for m in manifest["models"]}
    assert list(models) == [CODEGEN, ERNIE]

    got = [r for r in server.requests() if r.method == "GET" and r.status == 200]
    downloaded = {r.path.rsplit("/", 1)[1] for r in got if f"/{CODEGEN}/" in r.path}
    codegen = bundled(manifest, CODEGEN)
    # byte for byte what upstream has, and exactly: downloads + the file already cached
    assert codegen == upstream(mirror_root, CODEGEN)
    assert set(codegen) == downloaded | {"vocab.json"} and "vocab.json" not in downloaded
    assert "unrelated.bin" not in codegen and (home / "models" / CODEGEN / "unrelated.bin").exists()
    assert "model_state.pdparams" in codegen and "generation_config.json" in codegen

    ernie = bundled(manifest, ERNIE)
    assert ernie == upstream(mirror_root, ERNIE)  # the index and every shard
    assert "model.safetensors.index.json" in ernie
    assert sum(name.endswith(".safetensors") for name in ernie) == 3

    for model in models.values():
        assert {"added_tokens.json", "chat_template.json"} <= set(model["absent_upstream"])
        assert not set(model["absent_upstream"]) & set(bundled(manifest, model["id"]))
    assert "generation_config.json" in models[ERNIE]["absent_upstream"]
    probed_404 = {r.path.rsplit("/", 1)[1] for r in server.requests()
                  if r.method == "HEAD" and r.status == 404 and f"/{CODEGEN}/" in r.path}
    assert set(models[CODEGEN]["absent_upstream"]) == probed_404

    origin = manifest["origin"]
    assert origin["endpoint"] == server.endpoint
    assert origin["command"] == ["paddle-bundle", "fetch", CODEGEN, ERNIE]
    # proven: the same loads by name ran offline from a scratch install before it was written
    assert origin["proof"]["command"] == ["from_pretrained", CODEGEN, ERNIE]
    assert origin["proof"]["isolation"] in ("network namespace", "socket guard")
    assert "proven offline" in proc.stdout
    assert origin["paddlenlp"] == "3.0.0b4" and origin["paddlepaddle"]
    assert leftovers(home) == []


@pytest.mark.paddle
def test_fetch_through_taskflow_code_generation(server: mirror.MirrorServer, mirror_root: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "tf.tar.zst"
    proc = fetch_cli(server.endpoint, tmp_path / "home", out, CODEGEN, "--task",
                     "code_generation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = manifest_of(out)
    assert [m["id"] for m in manifest["models"]] == [CODEGEN]
    assert bundled(manifest, CODEGEN) == upstream(mirror_root, CODEGEN)
    absent = set(manifest["models"][0]["absent_upstream"])
    assert {"added_tokens.json", "chat_template.json"} <= absent
    assert manifest["origin"]["command"][-2:] == ["--task", "code_generation"]
    assert not (tmp_path / "home" / "taskflow").exists()  # code_generation keeps nothing there


@pytest.mark.paddle
def test_a_model_the_server_lacks_is_one_line_exit_1_and_no_bundle(
        server: mirror.MirrorServer, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    proc = fetch_cli(server.endpoint, tmp_path / "home", out, "nobody/no-such-model")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nobody/no-such-model is not on" in lines[0], proc.stderr
    assert server.endpoint in lines[0]
    assert not out.exists() and not out.with_name(out.name + ".sha256").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.paddle
def test_no_network_says_so_naming_the_endpoint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}/paddlenlp"
    out = tmp_path / "b.tar.zst"
    proc = fetch_cli(endpoint, tmp_path / "home", out, CODEGEN)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach {endpoint}" in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.paddle
def test_download_cut_midway_leaves_no_bundle_and_a_rerun_completes(
        mirror_root: Path, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "b.tar.zst"
    # 20 kB/s: the 140 kB weights take seconds, so the kill lands mid-body
    with mirror.start(mirror_root, rate=20_000) as slow:
        proc = fetch_cli(slow.endpoint, home, out, CODEGEN, background=True)
        try:
            slow.wait_for_request("model_state.pdparams", timeout=120)
            slow.kill()
            _, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "model_state.pdparams" in lines[0], stderr
    assert not out.exists()
    cached = home / "models" / CODEGEN
    assert not (cached / "model_state.pdparams").exists()  # never taken for complete
    assert leftovers(home) == []

    with mirror.start(mirror_root) as again:
        proc = fetch_cli(again.endpoint, home, out, CODEGEN)
        fetched_now = {r.path.rsplit("/", 1)[1] for r in again.requests()
                       if r.method == "GET"}
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert bundled(manifest_of(out), CODEGEN) == upstream(mirror_root, CODEGEN)
    assert "model_state.pdparams" in fetched_now and "config.json" not in fetched_now
    assert leftovers(home) == []


class _Refusing(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror but answers 403 for added_tokens.json, as a misconfigured proxy
    might: PaddleNLP takes that for "absent", fetch must not."""

    def send_head(self) -> Any:
        if self.path.endswith("/added_tokens.json"):
            self.send_error(403, "Forbidden")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.mark.paddle
def test_a_refused_probe_fails_instead_of_recording_absent(mirror_root: Path,
                                                           tmp_path: Path) -> None:
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Refusing, directory=str(mirror_root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}/paddlenlp"
        out = tmp_path / "b.tar.zst"
        proc = fetch_cli(endpoint, tmp_path / "home", out, CODEGEN)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "403" in lines[0] and "added_tokens.json" in lines[0], \
        proc.stderr
    assert not out.exists()


@pytest.mark.paddle
@pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here, so the "
                    "no-network claim cannot be proven")
def test_fetched_bundle_installs_and_runs_with_no_network(fetched: tuple[Path, Path, Any],
                                                          tmp_path: Path) -> None:
    _, bundle, proc = fetched
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = tmp_path / "offline-home"
    code = (
        "import json, os, sys\n"
        "from bundler.cli import _main\n"
        "assert _main(['install', os.environ['BUNDLE'], '-q']) == 0\n"
        "sys.path.insert(0, 'tools')\n"
        "import tiny_models as t\n"
        "home = os.environ['PPNLP_HOME']\n"
        f"ids = t.run_codegen(os.path.join(home, 'models', {CODEGEN!r}))\n"
        f"shape = t.run_ernie(os.path.join(home, 'models', {ERNIE!r}))\n"
        "print(json.dumps({'generated': len(ids), 'shape': shape}))\n"
    )
    env = {**os.environ, "PPNLP_HOME": str(offline), "BUNDLE": str(bundle)}
    env.pop("PPNLP_ENDPOINT", None)
    run = subprocess.run(["unshare", "-n", "--", sys.executable, "-c", code], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["generated"] > 0 and result["shape"][-1] == 32


def test_child_never_runs_in_offline_mode(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    from bundler.fetch import _child_env

    monkeypatch.setenv("PADDLE_BUNDLE_OFFLINE", "1")
    env = _child_env(tmp_path)
    assert "PADDLE_BUNDLE_OFFLINE" not in env and env["PPNLP_HOME"] == str(tmp_path)


@pytest.mark.paddle
def test_a_poisoned_weights_file_on_the_server_is_refused_not_run_by_a_task_fetch(
        mirror_root: Path, tmp_path: Path) -> None:
    """--task loads the weights it downloaded online: paddle.load goes through the scan's
    allowlist there too, so a pickle that would run code fails the fetch and never runs."""
    root = tmp_path / "poisoned"
    shutil.copytree(tiny_models.community_dir(mirror_root, CODEGEN),
                    tiny_models.community_dir(root, CODEGEN))
    canary = tmp_path / "CANARY"
    payload = f"cos\nsystem\n(S'touch {canary}'\ntR.".encode()
    (tiny_models.community_dir(root, CODEGEN) / "model_state.pdparams").write_bytes(payload)
    out = tmp_path / "b.tar.zst"
    with mirror.start(root) as srv:
        proc = fetch_cli(srv.endpoint, tmp_path / "home", out, CODEGEN, "--task",
                         "code_generation")
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert not canary.exists(), "the poisoned pickle ran during fetch"
    assert not out.exists()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
