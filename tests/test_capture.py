"""``paddle-bundle fetch -- CMD``: the user's own program, unchanged, recorded in every Python it
starts, proven offline from a scratch install before the bundle is written; ``--mirror`` for
PaddleNLP's fixed URLs; the ``builtin`` kind.

Never the internet: tiny real models (tools/tiny_models.py) served by tools/mirror.py on
127.0.0.1, one of them at a built-in name's fixed URL path. Paddle is imported only in
subprocesses. The offline checks run under ``unshare -n`` with an audit recorder in every
Python (a sitecustomize) that must see no DNS lookup and no connect.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.capture import session
from bundler.capture.recorder import (
    Recorder,
    mirrored,
    patch_downloader,
    patch_taskflow_utils,
)
from bundler.errors import CommandFailedError
from bundler.fetch import ChildReport, error_for, fetch_command, parse_report
from bundler.manifest import KIND_BUILTIN, Manifest, ModelEntry, root_for
from tests.conftest import ROOT, have_unshare, run_cli
from tools import mirror, tiny_models

CODEGEN = tiny_models.CODEGEN_ID
ERNIE = tiny_models.ERNIE_SHARDED_ID
BUILTIN = tiny_models.BUILTIN_ERNIE_ID
VOCAB_URL = ("https://bj.bcebos.com/paddlenlp/models/transformers/ernie_3.0/"
             "ernie_3.0_nano_zh_vocab.txt")

needs_unshare = pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted "
                                   "here, so 'no network' cannot be proven")


# -- no Paddle --------------------------------------------------------------------------
def test_mirror_rewrites_both_spellings_of_the_bucket_only() -> None:
    m = "http://mirror.local/pnlp"
    assert mirrored(VOCAB_URL, m) == \
        "http://mirror.local/pnlp/models/transformers/ernie_3.0/ernie_3.0_nano_zh_vocab.txt"
    assert mirrored("https://paddlenlp.bj.bcebos.com/taskflow/x/y.pdparams", m + "/") == \
        "http://mirror.local/pnlp/taskflow/x/y.pdparams"
    assert mirrored("http://bj.bcebos.com/paddlenlp/models/a.pdparams", m) == \
        "http://mirror.local/pnlp/models/a.pdparams"
    other = "https://bj.bcebos.com/paddle-hapi/models/bert/vocab.txt"
    assert mirrored(other, m) == other and mirrored(VOCAB_URL, None) == VOCAB_URL
    assert mirror.bucket_path("/r", VOCAB_URL) == \
        Path("/r/paddlenlp/models/transformers/ernie_3.0/ernie_3.0_nano_zh_vocab.txt")


def test_a_failed_fixed_url_download_names_that_url_not_the_endpoint() -> None:
    """Regression: the message said the download failed "from" PPNLP_ENDPOINT."""
    endpoint = "http://127.0.0.1:1/paddlenlp"
    report = ChildReport(endpoint, "", "", (), {}, {
        "kind": "download", "message": "network is unreachable", "url": VOCAB_URL,
        "model": ""})
    text = str(error_for(report, endpoint))
    assert VOCAB_URL in text and endpoint not in text


def test_taskflow_static_downloads_go_to_the_mirror_and_are_recorded(tmp_path: Path) -> None:
    """The legacy downloader and Taskflow's download_file, wrapped on stand-in modules."""
    calls: list[str] = []

    def _download(url: str, path: str, md5sum: Any = None) -> str:
        calls.append(url)
        target = Path(path) / url.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"weights")
        return str(target)

    downloader = types.SimpleNamespace(_download=_download, DOWNLOAD_CHECK=False)

    def download_file(save_dir: str, filename: str, url: str, md5: Any = None) -> str:
        return str(downloader._download(url, save_dir, md5))

    tfu = types.SimpleNamespace(download_file=download_file, DOWNLOAD_CHECK=False)
    rec = Recorder(str(tmp_path), mirror="http://m/p")
    patch_downloader(rec, downloader)
    patch_taskflow_utils(rec, tfu)
    url = "https://paddlenlp.bj.bcebos.com/taskflow/text_similarity/simbert/model.pdparams"
    tfu.download_file(str(tmp_path / "taskflow/text_similarity/simbert"), "model.pdparams", url)
    assert calls == ["http://m/p/taskflow/text_similarity/simbert/model.pdparams"]
    assert downloader.DOWNLOAD_CHECK is True and tfu.DOWNLOAD_CHECK is True  # no usage ping
    [(path, entry)] = rec.files.items()
    assert path.endswith("taskflow/text_similarity/simbert/model.pdparams")
    assert entry == {"root": "taskflow/text_similarity/simbert", "how": "downloaded",
                     "kind": "taskflow", "url": calls[0]}


def test_builtin_kind_lives_where_a_community_id_does() -> None:
    assert root_for(BUILTIN, KIND_BUILTIN) == (KIND_BUILTIN, f"models/{BUILTIN}")
    assert root_for(BUILTIN) == ("community", f"models/{BUILTIN}")
    with pytest.raises(ValueError):
        root_for("a/b/c", KIND_BUILTIN)
    entry = ModelEntry.for_id(BUILTIN, kind=KIND_BUILTIN)
    raw = {"schema_version": 1, "origin": {"tool_version": "t", "created": "2026-01-01T00:00:00Z",
                                           "proof": {"command": ["python", "app.py"],
                                                     "isolation": "socket guard",
                                                     "tool_version": "t"}},
           "models": [entry.to_dict()],
           "files": [{"path": f"models/{BUILTIN}/vocab.txt", "type": "file", "size": 1,
                      "sha256": "0" * 63 + "1", "mode": "0644"}]}
    manifest = Manifest.from_dict(raw)
    assert manifest.models[0].kind == KIND_BUILTIN
    assert manifest.origin.proof is not None and manifest.origin.proof.command == (
        "python", "app.py")
    raw["origin"]["proof"] = {"command": "python app.py"}
    with pytest.raises(Exception, match="invalid"):
        Manifest.from_dict(raw)


def test_reports_of_every_process_are_merged(tmp_path: Path) -> None:
    def report(pid: int, files: list[dict[str, str]], absent: dict[str, list[str]],
               failures: list[dict[str, str]] | None = None) -> None:
        (tmp_path / f"{pid}.json").write_text(json.dumps({
            "version": 1, "pid": pid, "endpoint": "http://m/p", "paddlenlp": "3.0.0b4",
            "paddle": "3.3.1", "files": files, "absent": absent,
            "failures": failures or []}))

    a = {"path": "/h/models/A/b/config.json", "root": "models/A/b", "how": "cached",
         "kind": "community", "url": ""}
    report(10, [a], {"models/A/b": ["added_tokens.json"]})
    report(11, [{**a, "how": "downloaded"},
                {"path": "/h/models/ernie/v.txt", "root": "models/ernie", "how": "cached",
                 "kind": "builtin", "url": "http://m/p/v.txt"}],
           {"models/A/b": ["chat_template.json"]})
    merged = session.merge(tmp_path)
    assert merged["processes"] == 2 and merged["error"] is None
    parsed = parse_report(merged)
    by_path = {f.path: f for f in parsed.files}
    assert by_path["/h/models/A/b/config.json"].how == "downloaded"
    assert by_path["/h/models/ernie/v.txt"].kind == "builtin"
    assert parsed.absent == {"models/A/b": ("added_tokens.json", "chat_template.json")}
    report(12, [], {}, [{"kind": "http", "message": "403 Forbidden", "url": "u"},
                        {"kind": "network", "message": "refused", "url": "v"}])
    assert session.merge(tmp_path)["error"]["kind"] == "network"


def test_hook_switches_the_recorder_on_and_chains_the_users_sitecustomize(
        tmp_path: Path) -> None:
    """Any Python the command starts gets the recorder, and a sitecustomize of the user's
    (here one more entry on PYTHONPATH) still runs."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITE = 1\n")
    env = session.capture_environment(tmp_path / "home", tmp_path / "reports",
                                      session.write_hook(tmp_path / "hook"),
                                      mirror="http://m/p")
    env["PYTHONPATH"] += os.pathsep + str(user)
    code = ("import builtins, sys\n"
            "from bundler._offline import PatchOnImport\n"
            "finders = [f for f in sys.meta_path if isinstance(f, PatchOnImport)]\n"
            "print(getattr(builtins, 'USER_SITE', 0), len(finders),\n"
            "      sorted(finders[0].patches) if finders else [])\n")
    pythons = ["python"]  # the venv's, first on PATH
    bare = Path(sys.base_prefix) / "bin" / "python3"
    if bare.is_file():
        pythons.append(str(bare))  # a Python without paddle-bundle installed
    for python in pythons:
        proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split(None, 2)[:2] == ["1", "1"], (python, proc.stdout)
        assert "paddlenlp.utils.download" in proc.stdout
    assert env["PPNLP_ENDPOINT"] == "http://m/p" and "PADDLE_BUNDLE_OFFLINE" not in env


def test_a_failing_command_writes_nothing_and_its_exit_code_passes_through(
        tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    rc, stdout, stderr = run_cli("fetch", "--home", tmp_path / "home", "-o", out, "--",
                                 sys.executable, "-c",
                                 "import sys; print('from the app'); sys.exit(7)")
    assert rc == 7
    assert "from the app" in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "exited with code 7" in lines[0] and "no bundle" in lines[0]
    assert not out.exists() and not out.with_name(out.name + ".sha256").exists()
    with pytest.raises(CommandFailedError) as info:
        fetch_command([sys.executable, "-c", "raise SystemExit(3)"], out, home=tmp_path)
    assert info.value.exit_code == 3


def test_a_command_that_loads_nothing_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    rc, _, stderr = run_cli("fetch", "--home", tmp_path / "home", "-o", out, "--",
                            sys.executable, "-c", "print('hello')")
    assert rc == 1 and "nothing to bundle" in stderr and not out.exists()


@pytest.mark.parametrize("args", [
    ["-o", "b.tar.zst", "--"],  # no command
    ["Org/m", "-o", "b.tar.zst", "--", "python", "app.py"],  # both
    ["--task", "code_generation", "-o", "b.tar.zst", "--", "python", "app.py"],
    ["-o", "b.tar.zst", "--mirror", "ftp://x", "--", "python", "app.py"],
    ["-o", "b.tar.zst", "--exclude-installed", "state.json", "--", "python", "app.py"],
])
def test_fetch_usage_errors(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "state.json").write_text('{"home": "/x", "models": []}')
    proc = subprocess.run([sys.executable, "-m", "bundler", "fetch", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "b.tar.zst").exists()


# -- with Paddle, through the mirror -----------------------------------------------------
@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'tools')\n"
            "import tiny_models as t\n"
            "root = Path(sys.argv[1]); t.build_mirror_tree(root); t.build_builtin_ernie(root)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def server(mirror_root: Path) -> Iterator[mirror.MirrorServer]:
    with mirror.start(mirror_root) as srv:
        yield srv


AUDIT_SITE = """
import atexit, json, os, sys
NET = []
def _record(event, args):
    if event in ("socket.getaddrinfo", "socket.connect", "socket.gethostbyname",
                 "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto",
                 "socket.sendmsg"):
        NET.append([event, repr(args)[:200]])
sys.addaudithook(_record)
def _dump():
    with open(os.path.join(os.environ["AUDIT_DIR"], f"{os.getpid()}.json"), "w") as fh:
        json.dump(NET, fh)
atexit.register(_dump)
"""

APP = f"""
import json, subprocess, sys
import paddle
from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({CODEGEN!r})
model = AutoModelForCausalLM.from_pretrained({CODEGEN!r})
model.eval()
ids = tok("def add(a, b):", return_tensors="pd")["input_ids"]
with paddle.no_grad():
    out, _ = model.generate(input_ids=ids, max_new_tokens=4, decode_strategy="greedy_search")
print("CODEGEN", json.dumps(out[0].numpy().tolist()), flush=True)
# a second Python, started as a module: what it loads is recorded and proven too
sys.exit(subprocess.call([sys.executable, "-m", "ernie_part"]))
"""

ERNIE_PART = f"""
import json
import paddle
from paddlenlp.transformers import AutoModel, AutoTokenizer
tok = AutoTokenizer.from_pretrained({ERNIE!r})
model = AutoModel.from_pretrained({ERNIE!r})
model.eval()
with paddle.no_grad():
    out = model(**tok("你好世界 hello paddle", return_tensors="pd"))[0]
print("ERNIE", json.dumps(list(out.shape)), flush=True)
"""

BUILTIN_APP = f"""
import json
from paddlenlp.transformers import AutoModel, AutoTokenizer
tok = AutoTokenizer.from_pretrained({BUILTIN!r})
model = AutoModel.from_pretrained({BUILTIN!r})
weight = float(model.embeddings.layer_norm.weight.mean())
print("BUILTIN", json.dumps({{"ids": tok("你好世界")["input_ids"], "weight": weight}}),
      flush=True)
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def fetch_run(cwd: Path, home: Path, out: Path, *args: str,
              env_extra: dict[str, str] | None = None, unshare: bool = False
              ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": str(ROOT)}
    env.pop("PPNLP_HOME", None)
    cmd = [sys.executable, "-m", "bundler", "fetch", "--home", str(home), "-o", str(out), *args]
    if unshare:
        cmd = ["unshare", "-n", "--", *cmd]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def manifest_of(bundle: Path) -> dict[str, Any]:
    rc, out, err = run_cli("inspect", bundle, "--json")
    assert rc == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_offline_by_name(bundle: Path, cwd: Path, command: list[str],
                        work: Path) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """Install ``bundle`` into a fresh home and run ``command`` with offline mode under
    ``unshare -n``, an audit recorder in every Python; the run and every process's events."""
    home, audit = work / "offline-home", work / "audit"
    audit.mkdir(parents=True)
    _write(work / "auditsite", {"sitecustomize.py": AUDIT_SITE})
    rc, _, err = run_cli("install", bundle, "--home", home, "-q")
    assert rc == 0, err
    env = {**os.environ, "PPNLP_HOME": str(home), "PADDLE_BUNDLE_OFFLINE": "1",
           "AUDIT_DIR": str(audit), "PYTHONPATH": f"{work / 'auditsite'}{os.pathsep}{ROOT}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PPNLP_ENDPOINT", None)
    proc = subprocess.run(["unshare", "-n", "--", *command], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    events = [json.loads(p.read_text()) for p in sorted(audit.glob("*.json"))]
    return proc, events


def _lines(stdout: str, tag: str) -> Any:
    found = [ln for ln in stdout.splitlines() if ln.startswith(tag + " ")]
    assert found, stdout[-2000:]
    return json.loads(found[-1][len(tag) + 1:])


@pytest.mark.paddle
@needs_unshare
def test_fetch_python_app_is_proven_and_runs_offline_by_name(
        server: mirror.MirrorServer, mirror_root: Path, tmp_path: Path) -> None:
    app = _write(tmp_path / "app", {"app.py": APP, "ernie_part.py": ERNIE_PART})
    out = tmp_path / "stick" / "app.tar.zst"
    out.parent.mkdir()
    proc = fetch_run(app, tmp_path / "home", out, "--", "python", "app.py",
                     env_extra=mirror.paddlenlp_env(server.endpoint))
    assert proc.returncode == 0, proc.stderr[-3000:]
    online_ids = _lines(proc.stdout, "CODEGEN")
    assert _lines(proc.stdout, "ERNIE")[-1] == 32  # the command's output passes through
    summary = proc.stdout.strip().splitlines()[-1]
    assert "proven offline (network namespace)" in summary and "packed 2 model(s)" in summary
    assert sorted(p.name for p in out.parent.iterdir()) == ["app.tar.zst", "app.tar.zst.sha256"]

    manifest = manifest_of(out)
    assert [(m["id"], m["kind"]) for m in manifest["models"]] == [
        (CODEGEN, "community"), (ERNIE, "community")]  # the child's ERNIE is there too
    for model_id in (CODEGEN, ERNIE):
        upstream = {p.name: _sha(p) for p in tiny_models.community_dir(mirror_root, model_id)
                    .iterdir()}
        prefix = f"models/{model_id}/"
        got = {f["path"][len(prefix):]: f["sha256"] for f in manifest["files"]
               if f["path"].startswith(prefix)}
        assert got == upstream
    codegen = manifest["models"][0]
    assert {"added_tokens.json", "chat_template.json"} <= set(codegen["absent_upstream"])
    origin = manifest["origin"]
    assert origin["command"] == ["paddle-bundle", "fetch", "--", "python", "app.py"]
    assert origin["proof"]["command"] == ["python", "app.py"]
    assert origin["proof"]["isolation"] == "network namespace"
    assert origin["proof"]["paddlenlp"] == "3.0.0b4" and origin["proof"]["paddlepaddle"]
    rc, text, _ = run_cli("inspect", out)
    assert rc == 0 and "proven:   python app.py ran offline" in text

    run, events = run_offline_by_name(out, app, ["python", "app.py"], tmp_path / "offline")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _lines(run.stdout, "CODEGEN") == online_ids
    assert _lines(run.stdout, "ERNIE")[-1] == 32
    assert len(events) >= 2 and all(e == [] for e in events), events  # both processes


@pytest.mark.paddle
@needs_unshare
def test_a_builtin_name_through_the_mirror_from_a_shell_script(
        server: mirror.MirrorServer, mirror_root: Path, tmp_path: Path) -> None:
    app = _write(tmp_path / "app", {"builtin_app.py": BUILTIN_APP,
                                    "run.sh": "set -e\nexec python builtin_app.py\n"})
    out = tmp_path / "b.tar.zst"
    before = len(server.requests())
    # the env var instead of --mirror, and no PPNLP_ENDPOINT: the mirror alone
    proc = fetch_run(app, tmp_path / "home", out, "--", "sh", "run.sh",
                     env_extra={"PADDLE_BUNDLE_FETCH_MIRROR": server.endpoint})
    assert proc.returncode == 0, proc.stderr[-3000:]
    online = _lines(proc.stdout, "BUILTIN")
    assert online["weight"] == 0.5  # the weights file was really read
    manifest = manifest_of(out)
    assert [(m["id"], m["kind"], m["root"]) for m in manifest["models"]] == [
        (BUILTIN, "builtin", f"models/{BUILTIN}")]
    fixed = mirror.bucket_path(mirror_root, VOCAB_URL)
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert files[f"models/{BUILTIN}/ernie_3.0_nano_zh_vocab.txt"] == _sha(fixed)
    assert f"models/{BUILTIN}/model_state.pdparams" in files
    got = [r.path for r in server.requests()[before:] if r.method == "GET"]
    assert "/paddlenlp/models/transformers/ernie_3.0/ernie_3.0_nano_zh_vocab.txt" in got
    assert manifest["origin"]["endpoint"] == server.endpoint
    rc, text, _ = run_cli("inspect", out)
    assert f"model {BUILTIN} [builtin]" in text

    run, events = run_offline_by_name(out, app, ["python", "builtin_app.py"],
                                      tmp_path / "offline")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _lines(run.stdout, "BUILTIN") == online
    assert events and all(e == [] for e in events), events


@pytest.mark.paddle
@needs_unshare
def test_fixed_url_failures_name_the_url_actually_used(server: mirror.MirrorServer,
                                                       tmp_path: Path) -> None:
    app = _write(tmp_path / "app", {"builtin_app.py": BUILTIN_APP})
    # no mirror and no network: PaddleNLP's own fixed URL, not PPNLP_ENDPOINT
    out = tmp_path / "b.tar.zst"
    proc = fetch_run(app, tmp_path / "home", out, "--", "python", "builtin_app.py",
                     env_extra={"PPNLP_ENDPOINT": "http://127.0.0.1:9/paddlenlp"},
                     unshare=True)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert VOCAB_URL in last and "127.0.0.1:9" not in last, proc.stderr[-2000:]
    assert not out.exists()
    # a mirror that lacks the file: the mirror's URL
    bad_mirror = f"{server.base_url}/elsewhere"
    proc = fetch_run(app, tmp_path / "home2", out, "--mirror", bad_mirror, "--", "python",
                     "builtin_app.py")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{bad_mirror}/models/transformers/ernie_3.0/ernie_3.0_nano_zh_vocab.txt" in last, \
        proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.paddle
@needs_unshare
def test_a_failed_proof_writes_nothing_and_names_what_was_missing(
        server: mirror.MirrorServer, mirror_root: Path, tmp_path: Path) -> None:
    """The program loads ERNIE by its path in the cache, which the recorder cannot see (no
    download, no name): online it works, offline the scratch home lacks it."""
    home = tmp_path / "home"
    src = tiny_models.community_dir(mirror_root, ERNIE)
    dest = home / "models" / ERNIE
    dest.mkdir(parents=True)
    for path in src.iterdir():
        (dest / path.name).write_bytes(path.read_bytes())
    app = _write(tmp_path / "app", {"app.py": f"""
        import os
        from paddlenlp.transformers import AutoModel, AutoTokenizer
        AutoTokenizer.from_pretrained({CODEGEN!r})
        path = os.path.join(os.environ["PPNLP_HOME"], "models", {ERNIE!r})
        AutoModel.from_pretrained(path)
        print("loaded", path)
        """})
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    proc = fetch_run(app, home, out, "--", "python", "app.py",
                     env_extra=mirror.paddlenlp_env(server.endpoint))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "loaded" in proc.stdout  # it did work online
    last = proc.stderr.strip().splitlines()[-1]
    assert "offline proof failed (network namespace)" in last, proc.stderr[-2000:]
    assert f"models/{ERNIE}" in last and "no bundle was written" in last
    assert list(out.parent.iterdir()) == []  # no bundle, no sidecar, no staging, no scratch


@pytest.mark.paddle
def test_fetch_a_builtin_name_with_mirror_flag(server: mirror.MirrorServer, mirror_root: Path,
                                               tmp_path: Path) -> None:
    """``fetch MODEL`` of a built-in name: its loaders reach the fixed URLs through
    ``--mirror`` and its proof loads it by name offline."""
    out = tmp_path / "b.tar.zst"
    proc = fetch_run(tmp_path, tmp_path / "home", out, BUILTIN, "--mirror", server.endpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "proven offline" in proc.stdout
    manifest = manifest_of(out)
    assert [(m["id"], m["kind"]) for m in manifest["models"]] == [(BUILTIN, "builtin")]
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert files[f"models/{BUILTIN}/ernie_3.0_nano_zh_vocab.txt"] == _sha(
        mirror.bucket_path(mirror_root, VOCAB_URL))
    assert manifest["origin"]["proof"]["command"] == ["from_pretrained", BUILTIN]
    assert manifest["origin"]["command"][:3] == ["paddle-bundle", "fetch", BUILTIN]


def test_the_proof_environment_drops_proxy_settings(tmp_path: Path) -> None:
    """A proxy on 127.0.0.1 passes the socket guard (loopback) and would let the guard-only
    proof reach the internet: the proof must run without any proxy setting."""
    from bundler.capture.prove import offline_environment

    base = {"PATH": "/usr/bin", "http_proxy": "http://127.0.0.1:3128",
            "HTTPS_PROXY": "http://127.0.0.1:3128", "ALL_PROXY": "socks5://127.0.0.1:1080",
            "No_Proxy": "localhost", "KEEP_ME": "1"}
    env = offline_environment(tmp_path / "scratch", tmp_path / "hook", tmp_path / "refusals",
                              base)
    assert not [k for k in env if "proxy" in k.lower()], env
    assert env["KEEP_ME"] == "1" and env["PADDLE_BUNDLE_OFFLINE"] == "1"


@pytest.mark.parametrize("bad", [
    pytest.param({"files": 5}, id="files-not-a-list"),
    pytest.param({"absent": ["x"]}, id="absent-not-an-object"),
    pytest.param({"failures": "x"}, id="failures-not-a-list"),
])
def test_a_malformed_process_report_is_one_clear_error(tmp_path: Path,
                                                       bad: dict[str, object]) -> None:
    """A damaged per-process report was an 'unexpected AttributeError/TypeError' (review F10)."""
    from bundler.capture.recorder import REPORT_VERSION
    from bundler.capture.session import merge
    from bundler.errors import BundleError

    (tmp_path / "123.json").write_text(json.dumps({"version": REPORT_VERSION, **bad}))
    with pytest.raises(BundleError, match="123.json is malformed"):
        merge(tmp_path)


@pytest.mark.paddle
@needs_unshare
def test_a_program_that_sets_its_own_ppnlp_home_fails_the_proof(
        server: mirror.MirrorServer, tmp_path: Path) -> None:
    """The program points PPNLP_HOME at the real (populated) home itself: online that is the
    home fetch filled, but in the proof it would load from there, not from the bundle, and
    pass untested (review F2). It must fail: no bundle, one clear line."""
    home = tmp_path / "home"
    app = _write(tmp_path / "app", {"app.py": f"""
        import os
        os.environ["PPNLP_HOME"] = {str(home)!r}
        from paddlenlp.transformers import AutoTokenizer
        AutoTokenizer.from_pretrained({CODEGEN!r})
        print("loaded")
        """})
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    proc = fetch_run(app, home, out, "--", "python", "app.py",
                     env_extra=mirror.paddlenlp_env(server.endpoint))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "loaded" in proc.stdout  # online it worked
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("paddle-bundle")]
    assert len(ours) == 1, proc.stderr[-3000:]  # the rest is the app's own online output
    assert "offline proof failed (network namespace)" in ours[0]
    assert f"loaded models from {home / 'models'}" in ours[0]
    assert "no bundle was written" in ours[0]
    assert (home / "models" / CODEGEN).is_dir()  # the real home was only hidden
    assert list(out.parent.iterdir()) == []


@pytest.mark.paddle
def test_from_modelscope_is_refused_in_capture_mode(server: mirror.MirrorServer,
                                                    tmp_path: Path) -> None:
    """PaddleNLP's from_modelscope switch downloads with the modelscope package into its own
    cache: nothing the recorder sees. A program that tries it (and falls back when it fails)
    exits 0, and its bundle silently lacked that model (review F8)."""
    app = _write(tmp_path / "app", {"app.py": f"""
        import os
        from paddlenlp.transformers import AutoConfig, AutoTokenizer
        os.environ["from_modelscope"] = "True"
        try:
            AutoConfig.from_pretrained("Org/only-on-modelscope")
        except Exception as exc:
            print("fell back:", type(exc).__name__)
        os.environ["from_modelscope"] = "False"
        AutoTokenizer.from_pretrained({CODEGEN!r})
        """})
    out = tmp_path / "b.tar.zst"
    proc = fetch_run(app, tmp_path / "home", out, "--", "python", "app.py",
                     env_extra=mirror.paddlenlp_env(server.endpoint))
    assert proc.returncode == 1, proc.stderr[-3000:]
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("paddle-bundle")]
    assert len(ours) == 1 and "from_modelscope=True" in ours[0], proc.stderr[-3000:]
    assert "Org/only-on-modelscope" in ours[0]
    assert not out.exists()
