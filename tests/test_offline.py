"""Offline mode: PaddleNLP loads models by name from the installed cache with zero network.

Nothing here may touch the network, and every test proves it:

* the tests that run PaddleNLP do so in a subprocess under ``unshare -n`` (no network
  interface at all) *and* with an audit hook recording every DNS lookup and connect, which
  must stay empty; offline mode's own guard must have refused nothing either;
* the fast tests run against a fake PaddleNLP whose download functions fail the test if they
  are ever called, with :func:`no_sockets` making any socket use in this process a failure;
  their subprocesses all run with offline mode's guard on, and the test of the guard itself
  (which tries real lookups and connects) runs under ``unshare -n``.

Paddle is imported only in subprocesses: it takes seconds and reads ``PPNLP_HOME`` once.
The tiny real models are built once per module, packed and installed as paddle-bundle would,
so the install records offline mode reads are real.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from bundler import _offline
from bundler.errors import (
    MissingFromBundleError,
    ModelNotInstalledError,
    OfflineBlockedError,
    UnsupportedPaddleNLPError,
)
from tests.conftest import AUDIT_RECORDER, ROOT, have_unshare
from tests.conftest import script_result as _result

CODEGEN = "Salesforce/codegen-350M-mono"
ERNIE = "paddle-bundle-test/tiny-ernie-sharded"
DAMAGED = "paddle-bundle-test/tiny-ernie-damaged"  # an installed copy the test then damages
ABSENT = ("added_tokens.json", "chat_template.json")  # what fetch records for CodeGen

needs_unshare = pytest.mark.skipif(
    not have_unshare(), reason="unshare -n is not permitted here, so 'no network' cannot be "
    "proven for PaddleNLP itself")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any DNS lookup or connect from this process fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"network access from the test process: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# -- a fake PaddleNLP: the shape of the real download functions, no network, no Paddle --------
FAKE_DOWNLOAD = '''
import os
MODEL_HOME = os.environ["FAKE_MODEL_HOME"]

class LocalEntryNotFoundError(OSError):
    pass

def resolve_file_path(repo_id=None, filenames=None, subfolder=None, cache_dir=None, url=None):
    """PaddleNLP's control flow and error wrapping, in short (utils/download/__init__.py)."""
    if isinstance(filenames, str):
        filenames = [filenames]
    for filename in filenames:
        found = bos_aistudio_hf_try_to_load_from_cache(
            repo_id, filename, cache_dir, subfolder, None, None, True, False, False)
        if found is not None:
            return found
    try:
        if filenames[0].startswith("http"):
            return bos_download(repo_id=repo_id, filename=None, cache_dir=cache_dir,
                                url=filenames[0])
        for filename in filenames:
            if bos_aistudio_hf_file_exist(repo_id, filename, subfolder=subfolder):
                return bos_download(repo_id=repo_id, filename=filename, subfolder=subfolder,
                                    cache_dir=cache_dir)
    except LocalEntryNotFoundError:
        raise EnvironmentError("Cannot find the requested files in the cached path")
    except EnvironmentError:
        raise EnvironmentError(f"Can't load the model for {repo_id!r}")
    return None

def bos_aistudio_hf_try_to_load_from_cache(repo_id, filename, cache_dir=None, subfolder=None,
        revision=None, repo_type=None, from_bos=True, from_aistudio=False, from_hf_hub=False):
    path = os.path.join(cache_dir or MODEL_HOME, repo_id, subfolder or "", filename)
    return path if os.path.isfile(path) else None

def bos_aistudio_hf_file_exist(repo_id, filename, *, subfolder=None, repo_type=None,
        revision=None, token=None, endpoint=None, from_bos=True, from_aistudio=False,
        from_hf_hub=False):
    raise AssertionError("NETWORK: HEAD probe of " + filename)

def bos_download(repo_id=None, filename=None, subfolder=None, repo_type=None, revision=None,
        library_name=None, library_version=None, cache_dir=None, url=None, **kwargs):
    raise AssertionError("NETWORK: download of " + str(url or filename))

def aistudio_hub_download(*a, **k):
    raise AssertionError("NETWORK: aistudio")

def hf_hub_download(*a, **k):
    raise AssertionError("NETWORK: hf hub")
'''

FAKE_DOWNLOADER = '''
DOWNLOAD_CHECK = False

def _download(url, path, md5sum=None):
    raise AssertionError("NETWORK: legacy download of " + url)
'''

FAKE_TASKFLOW_UTILS = '''
DOWNLOAD_CHECK = False

def download_check(task):
    raise AssertionError("NETWORK: usage ping")
'''


def fake_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<fake {name}>", "exec"), module.__dict__)
    return module


def write_fake_paddlenlp(root: Path, version: str, *, download: str = FAKE_DOWNLOAD) -> Path:
    """An importable fake ``paddlenlp`` package that, like the real one, imports its three
    patched modules when the package is imported."""
    files = {
        "paddlenlp/__init__.py": f"__version__ = {version!r}\n"
                                 "from .utils import env, download, downloader\n"
                                 "from .taskflow import utils as _tfu\n",
        "paddlenlp/utils/__init__.py": "",
        "paddlenlp/utils/env.py": "import os\nMODEL_HOME = os.environ['FAKE_MODEL_HOME']\n",
        "paddlenlp/utils/download/__init__.py": download,
        "paddlenlp/utils/downloader.py": FAKE_DOWNLOADER,
        "paddlenlp/taskflow/__init__.py": "",
        "paddlenlp/taskflow/utils.py": FAKE_TASKFLOW_UTILS,
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with one installed model (with an install record), one model copied in by
    hand (no record, a sharded checkpoint), and the fake PaddleNLP's MODEL_HOME there."""
    from bundler.install import install
    from bundler.pack import PackOptions, pack
    from tests.conftest import make_model

    online = tmp_path / "online"
    make_model(online, "Org/tok", {"config.json": "{}", "vocab.json": "{}", "merges.txt": ""})
    bundle = tmp_path / "b.tar.zst"
    pack(["Org/tok"], bundle, home=online,
         options=PackOptions(absent_upstream={"Org/tok": ("added_tokens.json",)}))
    home = tmp_path / "home"
    install(bundle, home=home)
    index = {"metadata": {}, "weight_map": {"a": "model-1-of-2.safetensors",
                                            "b": "model-2-of-2.safetensors"}}
    make_model(home, "Org/sharded", {"config.json": "{}",
                                     "model.safetensors.index.json": json.dumps(index),
                                     "model-1-of-2.safetensors": b"1"})
    monkeypatch.setenv("FAKE_MODEL_HOME", str(home / "models"))
    return home


@pytest.fixture
def patched(home: Path) -> types.ModuleType:
    """The fake download module, patched as offline mode patches the real one."""
    mod = fake_module("paddlenlp.utils.download", FAKE_DOWNLOAD)
    resolver = _offline.OfflineResolver(lambda: str(home / "models"))
    _offline.patch_module(_offline.MOD_DOWNLOAD, mod, resolver, version="3.0.0b4")
    return mod


# -- the rules, against the fake (fast) ---------------------------------------------------------
def test_cached_files_resolve_and_absent_ones_resolve_as_none(
        patched: types.ModuleType, home: Path) -> None:
    resolve = patched.resolve_file_path
    assert resolve("Org/tok", "vocab.json") == str(home / "models/Org/tok/vocab.json")
    assert resolve("Org/tok", ["tokenizer_config.json", "config.json"]) == str(
        home / "models/Org/tok/config.json")
    assert resolve("Org/tok", "added_tokens.json") is None  # recorded absent upstream
    assert resolve("Org/tok", "chat_template.json") is None  # not recorded: absent too
    assert resolve("Org/sharded", "added_tokens.json") is None  # no record at all
    assert resolve("Org/sharded", "model-1-of-2.safetensors").endswith("model-1-of-2.safetensors")


def test_not_installed_model_is_named_with_what_to_do(patched: types.ModuleType) -> None:
    with pytest.raises(ModelNotInstalledError) as info:
        patched.resolve_file_path("Nobody/model", ["config.json", "model_config.json"])
    message = str(info.value)
    assert isinstance(info.value, OSError)  # what PaddleNLP's callers expect
    assert info.value.model_id == "Nobody/model"
    assert "'Nobody/model' is not installed" in message
    assert "paddle-bundle fetch Nobody/model" in message
    assert "paddle-bundle install" in message
    assert "\n" not in message
    with pytest.raises(ModelNotInstalledError, match="is not a folder"):
        patched.resolve_file_path("/no/such/folder", "config.json")
    with pytest.raises(OfflineBlockedError, match="cannot download https://"):
        patched.resolve_file_path("https://example.invalid/w.pdparams", "config.json")


def test_required_files_missing_from_the_install_are_named(
        patched: types.ModuleType, home: Path) -> None:
    (home / "models/Org/tok/vocab.json").unlink()  # installed, listed in the record, gone
    with pytest.raises(MissingFromBundleError) as info:
        patched.resolve_file_path("Org/tok", "vocab.json")
    assert "vocab.json of model Org/tok was installed but is missing" in str(info.value)
    assert "paddle-bundle check Org/tok" in str(info.value)
    assert not isinstance(info.value, OSError)  # survives PaddleNLP's OSError re-wrapping

    with pytest.raises(MissingFromBundleError) as info:
        patched.resolve_file_path("Org/sharded", "model-2-of-2.safetensors")
    assert "model.safetensors.index.json names it" in str(info.value)
    # a weight file no index names is just absent, as a 404 would be
    assert patched.resolve_file_path("Org/sharded", "model_state.pdparams") is None


def test_built_in_resources_come_from_the_cache_only(patched: types.ModuleType,
                                                     home: Path) -> None:
    folder = home / "models" / "ernie-tiny"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n")
    url = "https://bj.bcebos.com/paddlenlp/models/transformers/ernie-tiny/vocab.txt"
    assert patched.resolve_file_path("ernie-tiny", [url]) == str(folder / "vocab.txt")
    missing = url.replace("vocab.txt", "spm.model")
    with pytest.raises(MissingFromBundleError, match="spm.model of model ernie-tiny"):
        patched.resolve_file_path("ernie-tiny", [missing])
    assert not list(home.glob("models/.locks*")), "offline mode must not write lock files"


def test_legacy_downloads_are_refused_with_the_taskflow_folder_named(home: Path) -> None:
    mod = fake_module("paddlenlp.utils.downloader", FAKE_DOWNLOADER)
    resolver = _offline.OfflineResolver(lambda: str(home / "models"))
    _offline.patch_module(_offline.MOD_DOWNLOADER, mod, resolver, version="2.8.1.post")
    assert mod.DOWNLOAD_CHECK is True  # the usage ping counts as sent
    url = "https://bj.bcebos.com/paddlenlp/taskflow/text_similarity/simbert/model_state.pdparams"
    task_dir = home / "taskflow" / "text_similarity" / "simbert"
    with pytest.raises(ModelNotInstalledError, match="taskflow:text_similarity/simbert is not"):
        mod._download(url, str(task_dir), "abc")
    task_dir.mkdir(parents=True)
    with pytest.raises(MissingFromBundleError, match="model_state.pdparams of taskflow:"):
        mod._download(url, str(task_dir), "abc")
    (task_dir / "model_state.pdparams").write_bytes(b"other version")
    with pytest.raises(MissingFromBundleError, match="differs from what paddlenlp"):
        mod._download(url, str(task_dir), "abc")
    with pytest.raises(OfflineBlockedError, match="cannot download https://x.invalid/d.zip"):
        mod._download("https://x.invalid/d.zip", str(home / "datasets"), None)

    tfu = fake_module("paddlenlp.taskflow.utils", FAKE_TASKFLOW_UTILS)
    _offline.patch_module(_offline.MOD_TASKFLOW_UTILS, tfu, resolver, version="3.0.0b4")
    assert tfu.DOWNLOAD_CHECK is True


# -- versions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version, known", [
    ("3.0.0b4", True), ("3.0.0b4.post", True), ("3.0.0b4.post20250101", True),
    ("2.8.0", True), ("2.8.1", True), ("2.8.1.post", True), ("2.8.12", True),
    ("3.0.0b3", False), ("3.0.0", False), ("2.7.2", False), ("2.9.0", False),
    ("2.8", False), ("unknown", False),
])
def test_known_versions(version: str, known: bool) -> None:
    assert _offline.is_supported_version(version) is known


def test_unknown_version_is_refused_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_offline.ENV_ANY_VERSION, raising=False)
    with pytest.raises(UnsupportedPaddleNLPError) as info:
        _offline.check_version("2.9.0")
    message = str(info.value)
    assert "does not know paddlenlp 2.9.0" in message
    assert "3.0.0b4 and 2.8.x" in message
    assert _offline.ENV_ANY_VERSION in message
    monkeypatch.setenv(_offline.ENV_ANY_VERSION, "1")
    with pytest.warns(RuntimeWarning, match="not been checked against paddlenlp 2.9.1"):
        _offline.check_version("2.9.1")


def test_changed_download_functions_are_refused_even_when_asked(home: Path) -> None:
    changed = FAKE_DOWNLOAD.replace("def bos_aistudio_hf_file_exist(repo_id, filename, *,",
                                    "def bos_aistudio_hf_file_exist(repo_id, filename, *, x=1,")
    mod = fake_module("paddlenlp.utils.download", changed)
    resolver = _offline.OfflineResolver(lambda: str(home / "models"))
    with pytest.raises(UnsupportedPaddleNLPError, match="bos_aistudio_hf_file_exist"):
        _offline.patch_module(_offline.MOD_DOWNLOAD, mod, resolver, version="3.0.0b4")
    moved = FAKE_DOWNLOAD.replace("if bos_aistudio_hf_file_exist(", "if probe(")
    mod = fake_module("paddlenlp.utils.download", moved)
    with pytest.raises(UnsupportedPaddleNLPError, match="no longer calls"):
        _offline.patch_module(_offline.MOD_DOWNLOAD, mod, resolver, version="3.0.0b4")


def _python(code: str, env: dict[str, str] | None = None, *, unshare: bool = False,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if unshare:
        cmd = ["unshare", "-n", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


IMPORT_HOOK_CHECK = """
    import json, sys, warnings
    warnings.simplefilter("always")
    import bundler.offline
    with warnings.catch_warnings(record=True) as caught:
        try:
            import paddlenlp
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
            sys.exit(0)
    dl = sys.modules["paddlenlp.utils.download"]
    print(json.dumps({"patched": getattr(dl.bos_download, "_paddle_bundle_offline", False),
                      "ping_off": sys.modules["paddlenlp.taskflow.utils"].DOWNLOAD_CHECK,
                      "warnings": [str(w.message) for w in caught],
                      "absent": dl.resolve_file_path("Org/x", "added_tokens.json")}))
"""


def test_import_hook_patches_on_import_and_refuses_unknown_versions(tmp_path: Path) -> None:
    """``import bundler.offline`` before PaddleNLP: each module is patched as it is imported;
    an unknown version fails the import of PaddleNLP itself, loudly."""
    models = tmp_path / "home" / "models"
    (models / "Org" / "x").mkdir(parents=True)
    env = {"FAKE_MODEL_HOME": str(models), "PYTHONPATH": os.pathsep.join(
        [str(write_fake_paddlenlp(tmp_path / "known", "3.0.0b4.post")), str(ROOT)])}
    proc = _python(IMPORT_HOOK_CHECK, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"patched": True, "ping_off": True, "warnings": [],
                                       "absent": None}

    env["PYTHONPATH"] = os.pathsep.join(
        [str(write_fake_paddlenlp(tmp_path / "unknown", "2.9.0")), str(ROOT)])
    proc = _python(IMPORT_HOOK_CHECK, env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["error"] == "UnsupportedPaddleNLPError"
    assert "does not know paddlenlp 2.9.0" in result["message"]

    proc = _python(IMPORT_HOOK_CHECK, {**env, _offline.ENV_ANY_VERSION: "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["patched"] is True
    assert any("2.9.0" in w for w in result["warnings"])


def test_modules_imported_before_are_patched_at_once(tmp_path: Path) -> None:
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    fake = write_fake_paddlenlp(tmp_path / "fake", "2.8.1.post")
    code = """
        import json, sys
        import paddlenlp
        import bundler.offline
        dl = sys.modules["paddlenlp.utils.download"]
        try:
            dl.resolve_file_path("Nobody/x", "config.json")
        except OSError as exc:
            print(json.dumps([type(exc).__name__, dl.bos_download._paddle_bundle_offline]))
    """
    proc = _python(code, {"FAKE_MODEL_HOME": str(models),
                          "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["ModelNotInstalledError", True]


# -- the socket guard and the import cost -------------------------------------------------------
GUARD_CHECK = """
    import json, socket, sys, time
    t = time.perf_counter()
    import bundler.offline
    import_ms = (time.perf_counter() - t) * 1000
    heavy = sorted(m for m in ("paddle", "paddlenlp") if m in sys.modules)
    out = {"import_ms": import_ms, "heavy": heavy, "guarded": bundler.offline.is_guarded()}
    for host in ("bj.bcebos.com", "192.0.2.1", b"paddlepaddle.org.cn"):
        t = time.perf_counter()
        try:
            socket.getaddrinfo(host, 443)
            out[str(host)] = "resolved"
        except OSError as exc:
            out[str(host)] = [type(exc).__name__, round(time.perf_counter() - t, 3)]
    for name, call in (("connect", lambda s: s.connect(("192.0.2.1", 9))),
                       ("sendto", lambda s: s.sendto(b"x", ("192.0.2.1", 53)))):
        kind = socket.SOCK_STREAM if name == "connect" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                call(sock)
                out[name] = "sent"
            except OSError as exc:
                out[name] = type(exc).__name__
    out["blocked"] = [list(b) for b in bundler.offline.blocked_attempts()]
    print(json.dumps(out))
"""


@needs_unshare
def test_guard_refuses_every_lookup_and_connect_before_it_happens(
        record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Under ``unshare -n``, so a broken guard would still send nothing anywhere."""
    proc = _python(GUARD_CHECK, unshare=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["guarded"] is True
    assert out["heavy"] == [], "importing bundler.offline must not import Paddle"
    for host in ("bj.bcebos.com", "192.0.2.1", "b'paddlepaddle.org.cn'"):
        kind, seconds = out[host]
        assert kind == "OfflineBlockedError" and seconds < 1
    assert out["connect"] == out["sendto"] == "OfflineBlockedError"
    assert out["blocked"] == [["socket.getaddrinfo", "bj.bcebos.com"],
                              ["socket.getaddrinfo", "192.0.2.1"],
                              ["socket.getaddrinfo", "paddlepaddle.org.cn"],
                              ["socket.connect", "192.0.2.1"],
                              ["socket.sendto", "192.0.2.1"]]
    record_property("import_bundler_offline_ms", round(out["import_ms"], 1))
    with capsys.disabled():
        print(f"\n[offline] import bundler.offline took {out['import_ms']:.1f} ms "
              "(in a fresh interpreter; see bench/bench_offline.py)")


def test_guard_lets_loopback_through_and_can_be_left_off() -> None:
    """Only traffic that stays on this machine (``unshare -n`` would take loopback down)."""
    code = """
        import socket, bundler.offline
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=5).close()  # numeric: no DNS
        print(bundler.offline.is_guarded(), bundler.offline.blocked_attempts())
    """
    proc = _python(code, timeout=60)
    assert proc.stdout.split() == ["True", "()"], proc.stderr
    code = """
        import bundler.offline
        print(bundler.offline.is_active(), bundler.offline.is_guarded())
    """
    proc = _python(code, {_offline.ENV_GUARD: "0"}, timeout=60)
    assert proc.stdout.split() == ["True", "False"], proc.stderr


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True), ("a.localhost", True), ("0.0.0.0", True),
    ("::ffff:127.0.0.1", True), (None, True), (b"127.0.0.1", True), ("", True),
    ("bj.bcebos.com", False), ("10.0.0.1", False), ("192.168.1.1", False), ("::2", False),
    ("localhost.example.com", False), (b"paddlepaddle.org.cn", False), (1234, False),
])
def test_what_counts_as_local(host: object, local: bool) -> None:
    assert _offline.is_local_host(host) is local


# -- paddle-bundle run (fast part) --------------------------------------------------------------
def test_run_sets_the_switch_and_returns_the_exit_code(tmp_path: Path) -> None:
    probe = ("import os, sys; "
             "sys.exit(7 if os.environ['PADDLE_BUNDLE_OFFLINE'] == '1' "
             f"and os.environ['PPNLP_HOME'] == {str(tmp_path)!r} "
             "and sys.modules['bundler.offline'].is_active() else 1)")
    proc = subprocess.run([sys.executable, "-m", "bundler", "run", "--home", str(tmp_path),
                           "--", "python", "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 7, proc.stderr

    proc = subprocess.run([sys.executable, "-m", "bundler", "run", "--", "no-such-command-x"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("paddle-bundle: error: command not found: no-such-command-x;"
                                   " check its spelling, or give its full path")

    proc = subprocess.run([sys.executable, "-m", "bundler", "run", "--home",
                           str(tmp_path / "nope"), "--", "true"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_environment() -> None:
    env = _offline.run_environment(Path("~/h"), base={"PATH": "/usr/bin"})
    assert env[_offline.ENV_OFFLINE] == "1"
    assert env["PPNLP_HOME"] == os.path.expanduser("~/h")
    if sys.prefix != sys.base_prefix:  # the venv's python comes first, as activate does
        assert env["PATH"] == f"{os.path.dirname(sys.executable)}{os.pathsep}/usr/bin"
    assert "PPNLP_HOME" not in _offline.run_environment(None, base={})


def test_the_start_up_hook_is_installed() -> None:
    """``make setup`` (pip install -e) put the .pth into site-packages; reinstall if not."""
    path = _offline.hook_path()
    assert path is not None, "paddle_bundle_offline.pth missing: run 'make setup' again"
    line = path.read_text(encoding="utf-8")
    assert line.startswith("import os;") and line.count("\n") == 1
    assert '__import__("bundler.offline")' in line


# -- the real PaddleNLP, by name, with no network ------------------------------------------------
RECORDER = AUDIT_RECORDER + """
    def report():
        offline = sys.modules.get("bundler.offline")
        RESULT["net"] = NET
        RESULT["blocked"] = [list(b) for b in offline.blocked_attempts()] if offline else None
        print("RESULT " + json.dumps(RESULT))
"""


def _assert_no_network(result: dict[str, Any]) -> None:
    assert result["net"] == [], "PaddleNLP looked up or connected to a host"
    assert result["blocked"] == [], "offline mode's guard had to refuse a network access"


@pytest.fixture(scope="module")
def installed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real models, built, packed with what fetch records as absent upstream, and
    installed into a fresh home, as on the offline machine."""
    from bundler.install import install
    from bundler.pack import PackOptions, pack

    online = tmp_path_factory.mktemp("online")
    code = f"""
        import sys; sys.path.insert(0, "tools")
        from pathlib import Path
        import tiny_models as t
        t.build_codegen(Path({str(online)!r}) / "models" / {CODEGEN!r})
        t.build_ernie_sharded(Path({str(online)!r}) / "models" / {ERNIE!r})
    """
    proc = _python(code, {"PPNLP_HOME": str(online)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(online / "models" / ERNIE, online / "models" / DAMAGED)
    bundle = tmp_path_factory.mktemp("stick") / "models.tar.zst"
    pack([CODEGEN, ERNIE, DAMAGED], bundle, home=online,
         options=PackOptions(absent_upstream={CODEGEN: ABSENT}))
    home = tmp_path_factory.mktemp("offline-home")
    install(bundle, home=home)
    return home


BY_NAME = RECORDER + f"""
    import bundler.offline  # the switch under test: an import
    import paddle
    from paddlenlp.transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                                        AutoTokenizer, CodeGenTokenizer)
    from paddlenlp.generation import GenerationConfig
    from paddlenlp.utils.download import resolve_file_path

    tok = AutoTokenizer.from_pretrained({CODEGEN!r})
    lm = AutoModelForCausalLM.from_pretrained({CODEGEN!r}); lm.eval()
    ids = tok("def add(a, b):", return_tensors="pd")
    out, _ = lm.generate(**ids, max_new_tokens=5, decode_strategy="greedy_search")
    RESULT["generated"] = out.shape[-1]
    RESULT["text"] = tok.decode(out[0].numpy().tolist())

    etok = AutoTokenizer.from_pretrained({ERNIE!r})
    em = AutoModel.from_pretrained({ERNIE!r}); em.eval()
    seq, pooled = em(**etok("你好世界 hello paddle", return_tensors="pd"))
    RESULT["ernie"] = [type(em).__name__, list(seq.shape)]

    RESULT["config"] = type(AutoConfig.from_pretrained({CODEGEN!r})).__name__
    RESULT["generation_eos"] = GenerationConfig.from_pretrained({CODEGEN!r}).eos_token_id
    RESULT["concrete"] = type(CodeGenTokenizer.from_pretrained({CODEGEN!r})).__name__
    RESULT["absent"] = [resolve_file_path({CODEGEN!r}, name)
                        for name in ("added_tokens.json", "chat_template.json", "x.json")]

    RESULT["not_installed"] = failure(lambda: AutoTokenizer.from_pretrained("Nobody/nothing"))
    RESULT["not_installed_model"] = failure(
        lambda: AutoModelForCausalLM.from_pretrained("Nobody/nothing"))

    import os
    damaged = os.path.join(os.environ["PPNLP_HOME"], "models", {DAMAGED!r})
    os.remove(os.path.join(damaged, "vocab.txt"))
    os.remove(os.path.join(damaged, "model-00002-of-00003.safetensors"))
    RESULT["missing_vocab"] = failure(lambda: AutoTokenizer.from_pretrained({DAMAGED!r}))
    RESULT["missing_shard"] = failure(lambda: AutoModel.from_pretrained({DAMAGED!r}))
    report()
"""


@pytest.mark.paddle
@needs_unshare
def test_by_name_loads_run_and_fail_clearly_with_no_network(installed_home: Path) -> None:
    proc = _python(BY_NAME, {"PPNLP_HOME": str(installed_home)}, unshare=True)
    result = _result(proc)
    _assert_no_network(result)
    assert result["generated"] == 5 and result["text"]
    assert result["ernie"] == ["ErnieModel", [1, result["ernie"][1][1], 32]]
    assert result["config"] == "CodeGenConfig"
    assert isinstance(result["generation_eos"], int)
    assert result["concrete"] == "CodeGenTokenizer"
    assert result["absent"] == [None, None, None]

    for key in ("not_installed", "not_installed_model"):
        kind, message, seconds = result[key]
        assert kind == "ModelNotInstalledError"
        assert "model 'Nobody/nothing' is not installed" in message
        assert "paddle-bundle fetch Nobody/nothing" in message
        assert "paddle-bundle install" in message
        assert seconds < 3, "a model that is not installed must fail at once"

    kind, message, _ = result["missing_vocab"]
    assert kind == "MissingFromBundleError"
    assert f"vocab.txt of model {DAMAGED} was installed but is missing" in message
    kind, message, _ = result["missing_shard"]
    assert kind == "MissingFromBundleError"
    assert "model-00002-of-00003.safetensors" in message and DAMAGED in message


TASKFLOW = RECORDER + f"""
    RESULT["switched_on_by_env"] = "bundler.offline" in sys.modules  # we imported nothing
    from paddlenlp import Taskflow
    flow = Taskflow("code_generation", model={CODEGEN!r}, max_length=8,
                    decode_strategy="greedy_search")
    RESULT["generated"] = flow("def hello():")
    RESULT["not_installed"] = failure(
        lambda: Taskflow("code_generation", model="Salesforce/codegen-2B-mono"))
    report()
"""


@pytest.mark.paddle
@needs_unshare
def test_env_var_switches_it_on_for_taskflow(installed_home: Path, tmp_path: Path) -> None:
    """PADDLE_BUNDLE_OFFLINE=1 and a script that imports nothing of ours: the start-up hook
    does it; Taskflow generates text and sends no usage ping."""
    script = tmp_path / "flow.py"
    script.write_text(textwrap.dedent(TASKFLOW), encoding="utf-8")
    proc = subprocess.run(["unshare", "-n", "--", sys.executable, str(script)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "PPNLP_HOME": str(installed_home),
                               "PADDLE_BUNDLE_OFFLINE": "1"})
    result = _result(proc)
    _assert_no_network(result)
    assert result["switched_on_by_env"] is True
    generated = result["generated"]
    assert isinstance(generated, list) and len(generated) == 1 and generated[0]
    kind, message, seconds = result["not_installed"]
    assert kind == "ModelNotInstalledError" and seconds < 3
    assert "paddle-bundle fetch Salesforce/codegen-2B-mono" in message


RUN_SCRIPT = RECORDER + f"""
    import os
    RESULT["home"] = os.environ["PPNLP_HOME"]
    from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained({CODEGEN!r})
    lm = AutoModelForCausalLM.from_pretrained({CODEGEN!r}); lm.eval()
    out, _ = lm.generate(**tok("def f():", return_tensors="pd"), max_new_tokens=3,
                         decode_strategy="greedy_search")
    RESULT["generated"] = out.shape[-1]
    report()
"""


@pytest.mark.paddle
@needs_unshare
def test_paddle_bundle_run(installed_home: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PPNLP_HOME", "PADDLE_BUNDLE_OFFLINE")}
    proc = subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "bundler", "run",
                           "--home", str(installed_home), "--", "python", str(script)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    result = _result(proc)
    _assert_no_network(result)
    assert result["home"] == str(installed_home)
    assert result["generated"] == 3
