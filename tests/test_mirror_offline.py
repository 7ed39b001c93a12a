"""Offline mode's mirror setting, PADDLE_BUNDLE_MIRROR, without Paddle (issue 11).

The download patches run on the fake PaddleNLP modules of tests/test_offline.py against a real
nginx serving a published root; the socket guard is called as the audit hook calls it.
"""

from __future__ import annotations

import subprocess
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import _offline
from bundler.errors import (
    BundleError,
    IntegrityError,
    MissingFromBundleError,
    NotOnMirrorError,
    OfflineBlockedError,
    UsageError,
)
from bundler.mirror import publish
from tests import test_offline
from tests.conftest import make_model
from tests.test_mirror import _main, free_port, nginx, sha
from tests.test_offline import FAKE_DOWNLOADER, fake_module

home = test_offline.home  # the fixtures of the fake PaddleNLP
patched = test_offline.patched


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test starts with no mirror client in this process, and leaves none (clients are
    per process and per mirror URL; a test may change one's clock or its server may be gone)."""
    _offline._CLIENTS.clear()
    yield
    _offline._CLIENTS.clear()

VOCAB_URL = "https://bj.bcebos.com/paddlenlp/models/transformers/ernie-tiny/vocab.txt"
TASK_URL = "https://paddlenlp.bj.bcebos.com/taskflow/text_similarity/simbert/model.pdparams"


def _builtin_and_task_bundle(online: Path, vocab: str, weights: bytes, out: Path) -> Path:
    """A bundle of the built-in name ernie-tiny (vocab.txt) and the Taskflow folder
    text_similarity/simbert (model.pdparams), packed from the home ``online``."""
    make_model(online, "ernie-tiny", {"vocab.txt": vocab})
    task = online / "taskflow" / "text_similarity" / "simbert"
    task.mkdir(parents=True)
    (task / "model.pdparams").write_bytes(weights)
    assert _main(["pack", "ernie-tiny", "taskflow:text_similarity/simbert", "-o", str(out),
                  "--home", str(online), "-q"]) == 0
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A mirror serving a built-in name's vocab.txt and a Taskflow file at their fixed URLs."""
    bundle = _builtin_and_task_bundle(tmp_path / "mirror-online", "[PAD]\n[UNK]\n",
                                      b"simbert weights", tmp_path / "b.tar.zst")
    root = tmp_path / "root"
    publish([bundle], root, lookup=lambda model: {"vocab.txt": VOCAB_URL}
            if model.id == "ernie-tiny" else {"model.pdparams": TASK_URL})
    return root


def test_built_in_resources_come_from_the_mirror_and_absent_ones_fail_fast(
        patched: types.ModuleType, home: Path, root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        got = patched.resolve_file_path("ernie-tiny", [VOCAB_URL])
        assert got == str(home / "models" / "ernie-tiny" / "vocab.txt")
        assert Path(got).read_text() == "[PAD]\n[UNK]\n"
        assert not list((home / "models" / "ernie-tiny").glob(".paddle-bundle-mirror-*"))
        start = time.perf_counter()
        with pytest.raises(NotOnMirrorError) as info:
            patched.resolve_file_path("ernie-other", [VOCAB_URL.replace("ernie-tiny",
                                                                        "ernie-other")])
        assert time.perf_counter() - start < 5
        assert server.endpoint in str(info.value)
        assert "does not serve models/transformers/ernie-other/vocab.txt" in str(info.value)
        assert not isinstance(info.value, OSError)  # PaddleNLP would re-word an OSError
        assert not (home / "models" / "ernie-other" / "vocab.txt").exists()
        assert {m for m, *_ in server.log()} <= {"GET", "HEAD"}
        # decided from the mirror's file list: the absent file was never requested
        assert not [uri for _, uri, *_ in server.log() if "ernie-other" in uri]
    # without the variable, the cache alone answers (offline mode as before)
    monkeypatch.delenv(_offline.ENV_MIRROR)
    with pytest.raises(Exception, match="is not installed|not in"):
        patched.resolve_file_path("ernie-third", [VOCAB_URL.replace("ernie-tiny", "x")])


def test_taskflow_static_files_come_from_the_mirror(
        home: Path, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_module("paddlenlp.utils.downloader", FAKE_DOWNLOADER)
    resolver = _offline.OfflineResolver(lambda: str(home / "models"))
    _offline.patch_module(_offline.MOD_DOWNLOADER, mod, resolver, version="3.0.0b4")
    task_dir = home / "taskflow" / "text_similarity" / "simbert"
    import hashlib

    md5 = hashlib.md5(b"simbert weights").hexdigest()
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        path = mod._download(TASK_URL, str(task_dir), md5)
        assert Path(path) == task_dir / "model.pdparams"
        assert Path(path).read_bytes() == b"simbert weights"
        with pytest.raises(NotOnMirrorError, match="md5"):  # not what PaddleNLP expects
            mod._download(TASK_URL, str(tmp_path / "elsewhere"), "0" * 32)
        with pytest.raises(NotOnMirrorError, match="taskflow:text_similarity/other is not "
                           "installed here and not on the mirror .* does not serve"):
            mod._download(TASK_URL.replace("simbert", "other"),
                          str(home / "taskflow" / "text_similarity" / "other"), None)
        # a URL outside PaddleNLP's bucket is still refused
        with pytest.raises(OfflineBlockedError):
            mod._download("https://x.invalid/d.zip", str(home / "datasets"), None)


def test_an_unreachable_mirror_is_named(patched: types.ModuleType,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/paddlenlp"  # nothing listens there
    monkeypatch.setenv(_offline.ENV_MIRROR, endpoint)
    with pytest.raises(NotOnMirrorError, match="could not serve") as info:
        patched.resolve_file_path("ernie-tiny", [VOCAB_URL])
    assert endpoint in str(info.value)


def test_the_guard_lets_exactly_the_mirror_host_and_port_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    tcp = socket.socket()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    monkeypatch.setenv(_offline.ENV_MIRROR, "http://10.9.8.7:8080/paddlenlp")
    _offline._audit("socket.connect", (tcp, ("10.9.8.7", 8080)))  # allowed: no exception
    _offline._audit("socket.getaddrinfo", ("10.9.8.7", 8080, 0, 1, 6, 0))
    for event, args in (("socket.connect", (None, ("10.9.8.7", 8081))),
                        ("socket.connect", (None, ("10.9.8.8", 8080))),
                        ("socket.getaddrinfo", ("bj.bcebos.com", 443, 0, 0, 0, 0)),
                        ("socket.sendto", (None, ("10.9.8.7", 8080))),
                        ("socket.connect", (udp, ("10.9.8.7", 8080))),  # UDP: not HTTP
                        ("socket.getaddrinfo", (b"\xff.example", 80, 0, 0, 0, 0))):
        with pytest.raises(OfflineBlockedError):
            _offline._audit(event, args)
    monkeypatch.setenv(_offline.ENV_MIRROR, "https://mirror.example/paddlenlp")
    monkeypatch.setitem(_offline._MIRROR_IPS, "mirror.example", frozenset({"10.1.1.1"}))
    _offline._audit("socket.getaddrinfo", ("mirror.example", 443, 0, 1, 6, 0))
    _offline._audit("socket.connect", (tcp, ("10.1.1.1", 443)))
    with pytest.raises(OfflineBlockedError):
        _offline._audit("socket.connect", (tcp, ("10.1.1.1", 80)))
    with pytest.raises(OfflineBlockedError):
        _offline._audit("socket.getaddrinfo", ("mirror.example.evil", 443, 0, 1, 6, 0))
    monkeypatch.delenv(_offline.ENV_MIRROR)
    with pytest.raises(OfflineBlockedError):  # no mirror: nothing remote at all
        _offline._audit("socket.connect", (tcp, ("10.9.8.7", 8080)))
    tcp.close()
    udp.close()


@pytest.mark.parametrize("value", ["ftp://m/paddlenlp", "mirror:8080", "http://:80/x",
                                   "http://m:99999/x"])
def test_a_malformed_mirror_setting_is_a_usage_error(value: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_offline.ENV_MIRROR, value)
    with pytest.raises(UsageError, match=_offline.ENV_MIRROR):
        _offline.mirror_endpoint()



@pytest.mark.parametrize("value", ["http://m:8080/paddlenlp?x=1", "http://m:8080/paddlenlp#f",
                                   "http://m:0/paddlenlp", "http://m x:80/paddlenlp"])
def test_a_mirror_setting_that_would_build_wrong_urls_is_a_usage_error(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_offline.ENV_MIRROR, value)
    with pytest.raises(UsageError, match=_offline.ENV_MIRROR):
        _offline.mirror_endpoint()


def test_a_mirror_behind_basic_auth_is_reached_and_its_password_never_printed(
        patched: types.ModuleType, home: Path, root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/fleet.md puts the mirror behind basic auth with the credentials in the URL: urllib
    took 'user:pass@host' for the host name (a DNS look-up of the password) and every message
    quoted the password."""
    users = tmp_path / "htpasswd"
    users.write_text("fleet:{PLAIN}s3cret-pw\n")

    def with_auth(conf: str) -> str:
        return conf.replace("    server_tokens off;",
                            f'    auth_basic "mirror";  auth_basic_user_file {users};\n'
                            "    server_tokens off;")

    with nginx(root, tmp_path / "nginx", edit=with_auth) as server:
        port = server.port
        monkeypatch.setenv(_offline.ENV_MIRROR, f"http://fleet:s3cret-pw@127.0.0.1:{port}/paddlenlp")
        got = patched.resolve_file_path("ernie-tiny", [VOCAB_URL])
        assert Path(got).read_text() == "[PAD]\n[UNK]\n"
        monkeypatch.setenv(_offline.ENV_MIRROR, f"http://fleet:wrong-pw@127.0.0.1:{port}/paddlenlp")
        with pytest.raises(NotOnMirrorError) as info:
            patched.resolve_file_path("ernie-two", [VOCAB_URL.replace("tiny", "two")])
        assert "401" in str(info.value) and "wrong-pw" not in str(info.value)
        assert "fleet:***@127.0.0.1" in str(info.value)
    monkeypatch.setenv(_offline.ENV_MIRROR, "ftp://fleet:s3cret-pw@m/paddlenlp")
    with pytest.raises(UsageError) as bad:
        _offline.mirror_endpoint()
    assert "s3cret-pw" not in str(bad.value)


# -- community models, the served list, one generation per process --------------------------
REMOTE = "Org/remote"
R1: dict[str, bytes | str] = {"config.json": '{"v": 1}', "tokenizer_config.json": '{"t": 1}',
                              "model_state.pdparams": b"one" * 20_000}
R2: dict[str, bytes | str] = {"config.json": '{"v": 2}', "tokenizer_config.json": '{"t": 2}',
                              "model_state.pdparams": b"two" * 20_000}


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def test_community_models_come_from_the_mirror_and_installed_ones_never_ask_it(
        patched: types.ModuleType, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode with PADDLE_BUNDLE_MIRROR served only fixed URLs: a community model that
    is not installed here failed with ModelNotInstalledError, so a program (or a Taskflow
    task) needing one built-in name and one community model could use neither way alone."""
    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    # Org/tok is installed here from a bundle; the mirror's copy differs and must not be read
    publish([make_bundle(tmp_path, "r1", R1, REMOTE),
             make_bundle(tmp_path, "tok", {"config.json": '{"other": 1}',
                                           "chat_template.json": "{}"}, "Org/tok")], root)
    resolve = patched.resolve_file_path
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        got = resolve(REMOTE, ["config.json"])
        assert got == str(home / "models" / REMOTE / "config.json")
        assert Path(got).read_text() == R1["config.json"]
        assert resolve(REMOTE, "model_state.pdparams") and \
            (home / "models" / REMOTE / "model_state.pdparams").read_bytes() == \
            R1["model_state.pdparams"]
        assert resolve(REMOTE, "added_tokens.json") is None  # absent on the mirror
        assert resolve("Org/tok", "chat_template.json") is None  # the install record says
        start = time.perf_counter()
        with pytest.raises(NotOnMirrorError) as info:
            resolve("Nobody/model", ["config.json"])
        assert time.perf_counter() - start < 5
        assert server.endpoint in str(info.value) and "Nobody/model" in str(info.value)
        with pytest.raises(Exception, match="model-2-of-2"):  # copied in by hand: as before
            resolve("Org/sharded", "model-2-of-2.safetensors")
        uris = [uri for _, uri, *_ in server.log()]
    # one list per process, and one more for each model it does not have (Nobody/model and
    # Org/sharded, which may have been published since): not one per probe
    assert uris.count("/paddlenlp/.paddle-bundle/files.json") == 3
    assert not [u for u in uris if "Org/tok" in u or "Nobody" in u or "added_tokens" in u]
    assert sorted(u.rsplit("/", 1)[-1] for u in uris if REMOTE in u) == \
        ["config.json", "model_state.pdparams"]


def test_one_process_reads_one_generation_and_starts_over_once_it_is_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download of a process comes from the generation of its first request (the
    cookie): without it a model's config could come from one version and its weights from
    the next; and a generation pruned under a long-running process is not a failure for a
    file the newer version serves unchanged."""
    from bundler.mirror import Mirror
    from tests.test_mirror import make_bundle

    same = {"special_tokens_map.json": "{}"}
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", {**R1, **same}, REMOTE)], root)
    dest = tmp_path / "client"
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        client = _offline._MirrorClient(server.endpoint)
        client.fetch(f"models/community/{REMOTE}/config.json", str(dest / "config.json"), REMOTE)
        publish([make_bundle(tmp_path, "r2", {**R2, **same}, REMOTE)], root)  # a new version
        client.fetch(f"models/community/{REMOTE}/model_state.pdparams",
                     str(dest / "model_state.pdparams"), REMOTE)
        assert (dest / "model_state.pdparams").read_bytes() == R1["model_state.pdparams"]
        mirror = Mirror(root)
        with mirror.locked():
            assert mirror.prune(keep_seconds=0)  # the client's generation leaves the disk
        # a file both versions serve unchanged: the mirror answers from the current one,
        # the same bytes, and nothing needs a fresh list (a changed one: the test below)
        client.fetch(f"models/community/{REMOTE}/special_tokens_map.json",
                     str(dest / "special_tokens_map.json"), REMOTE)
        assert (dest / "special_tokens_map.json").read_text() == "{}"
        assert not list(dest.glob(".paddle-bundle-mirror-*"))
        assert [uri for _, uri, *_ in server.log()].count(
            "/paddlenlp/.paddle-bundle/files.json") == 1


@pytest.mark.parametrize("damage", ["same size", "longer", "shorter"])
def test_a_file_that_is_not_what_the_list_says_is_refused_and_nothing_is_left(
        damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode checked only Content-Length: a damaged blob on the mirror (or a proxy
    serving something else) reached PaddleNLP's cache, and a mirror sending an endless body
    filled the client's disk."""
    from bundler.mirror import Mirror
    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    weights = _as_bytes(R1["model_state.pdparams"])
    blob = Mirror(root).blob(sha(weights))
    blob.write_bytes({"same size": b"x" * len(weights), "longer": weights + b"x" * 5_000_000,
                      "shorter": weights[:-1]}[damage])
    dest = tmp_path / "client"
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        client = _offline._MirrorClient(server.endpoint)
        with pytest.raises(NotOnMirrorError) as info:
            client.fetch(f"models/community/{REMOTE}/model_state.pdparams",
                         str(dest / "model_state.pdparams"), REMOTE)
    assert {"same size": "sha256", "longer": "more than", "shorter": "received"}[damage] in \
        str(info.value)
    assert list(dest.iterdir()) == []


def test_a_server_that_is_not_a_paddle_bundle_mirror_is_named(
        patched: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import http.server
    import threading

    served = tmp_path / "plain"
    (served / "paddlenlp").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/paddlenlp"
        monkeypatch.setenv(_offline.ENV_MIRROR, endpoint)
        with pytest.raises(UsageError, match="is not a paddle-bundle mirror"):
            patched.resolve_file_path(REMOTE, "config.json")
        (served / "paddlenlp" / ".paddle-bundle").mkdir()
        (served / "paddlenlp" / ".paddle-bundle" / "files.json").write_text("[1, 2]")
        _offline._CLIENTS.clear()
        with pytest.raises(UsageError, match="is not a paddle-bundle file list"):
            patched.resolve_file_path(REMOTE, "config.json")
    finally:
        server.shutdown()
        server.server_close()


# -- a hostile mirror ---------------------------------------------------------------------------
class Hostile:
    """A web server that answers exactly what a test says (``routes``: path below the mirror
    URL -> (status, headers, body)), and records what it was asked."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.trickle: dict[str, float] = {}  # path -> seconds between bytes
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                outer.asked.append(self.path)
                rel = self.path.removeprefix("/paddlenlp/")
                status, headers, body = outer.routes.get(rel, (404, {}, b"no"))
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if rel in outer.trickle:  # a byte at a time
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            time.sleep(outer.trickle[rel])
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/paddlenlp"

    def serve(self, files: dict[str, bytes], models: dict[str, str],
              listed: dict[str, object] | None = None) -> None:
        """Serve ``files`` and a served list naming them (``listed`` overrides entries)."""
        import json

        entries: dict[str, object] = {rel: [sha(body), len(body)] for rel, body in files.items()}
        entries.update(listed or {})
        self.routes.update({rel: (200, {}, body) for rel, body in files.items()})
        self.list_bytes(json.dumps({"version": 1, "generation": 1, "models": models,
                                    "files": entries}).encode())

    def list_bytes(self, data: bytes) -> None:
        self.routes[".paddle-bundle/files.json"] = (200, {}, data)


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    server = Hostile()
    server.thread.start()
    monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


EVIL = "Org/evil"


@pytest.mark.parametrize("name", [
    pytest.param("../../../../escaped.txt", id="dot-dot"),
    pytest.param("ABSOLUTE", id="absolute"),
    pytest.param("sub/./../../../../../escaped.txt", id="dot-then-dot-dot"),
])
def test_a_file_name_from_the_mirror_never_leaves_the_model_folder(
        name: str, patched: types.ModuleType, home: Path, tmp_path: Path,
        hostile: Hostile) -> None:
    """A sharded checkpoint's index (served by the mirror) names the shards PaddleNLP then
    asks for: a hostile mirror named '../../../../x' (or an absolute path) in it, listed that
    path, and offline mode wrote the file there, outside the cache (a .pth file in
    site-packages would run at the next interpreter start)."""
    target = tmp_path / "escaped.txt"
    if name == "ABSOLUTE":
        name = str(target)
    hostile.serve({f"models/community/{EVIL}/config.json": b"{}",
                   f"models/community/{EVIL}/{name}": b"import os  # pwned"},
                  {EVIL: "community"})
    with pytest.raises(IntegrityError, match="leaves the model's folder") as info:
        patched.resolve_file_path(EVIL, [name])
    assert not target.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".paddle-bundle-mirror-")]
    assert "\n" not in str(info.value)
    assert not [uri for uri in hostile.asked if "escaped" in uri]
    # the model's own files still come
    assert Path(patched.resolve_file_path(EVIL, ["config.json"])).read_bytes() == b"{}"


def test_built_in_and_taskflow_models_installed_from_a_bundle_never_ask_the_mirror(
        patched: types.ModuleType, home: Path, tmp_path: Path, hostile: Hostile) -> None:
    """Only community models checked their install record: a built-in name or a Taskflow
    folder installed here from a bundle had a missing file downloaded from the mirror, and a
    Taskflow file whose md5 PaddleNLP did not expect was replaced by the mirror's copy."""
    import hashlib

    from bundler.install import install

    bundle = _builtin_and_task_bundle(tmp_path / "online-bundled", "[PAD]\n",
                                      b"bundled weights", tmp_path / "bundled.tar.zst")
    install(bundle, home=home)
    (home / "models" / "ernie-tiny" / "vocab.txt").unlink()  # damaged since
    theirs = b"the mirror's weights"
    hostile.serve({bucket_rel(VOCAB_URL): b"[MIRROR]\n", bucket_rel(TASK_URL): theirs},
                  {"ernie-tiny": "builtin", "taskflow:text_similarity/simbert": "taskflow"})
    with pytest.raises(MissingFromBundleError, match="vocab.txt"):
        patched.resolve_file_path("ernie-tiny", [VOCAB_URL])
    assert not (home / "models" / "ernie-tiny" / "vocab.txt").exists()
    mod = fake_module("paddlenlp.utils.downloader", FAKE_DOWNLOADER)
    resolver = _offline.OfflineResolver(lambda: str(home / "models"))
    _offline.patch_module(_offline.MOD_DOWNLOADER, mod, resolver, version="3.0.0b4")
    task_dir = home / "taskflow" / "text_similarity" / "simbert"
    with pytest.raises(MissingFromBundleError, match="differs"):
        mod._download(TASK_URL, str(task_dir), hashlib.md5(theirs).hexdigest())
    assert (task_dir / "model.pdparams").read_bytes() == b"bundled weights"
    assert hostile.asked == []


def bucket_rel(url: str) -> str:
    from bundler._bucket import bucket_rel as below_bucket

    rel = below_bucket(url)
    assert rel is not None
    return rel


GOOD_SHA = "ab" * 32


@pytest.mark.parametrize("data", [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(b'{"models": {"Org/remote": "community"}, "files": {"models/community/Org/'
                 b'remote/config.json": ["' + GOOD_SHA.encode() + b'", 1e400]}}', id="huge-size"),
    pytest.param(b'{"models": {"Org/remote": "community"}, "files": {"models/community/Org/'
                 b'remote/config.json": ["' + GOOD_SHA.encode() + b'", -5]}}', id="negative"),
    pytest.param(b'{"models": {"Org/remote": "community"}, "files": {"models/community/Org/'
                 b'remote/config.json": ["' + GOOD_SHA.encode() + b'", true]}}', id="bool"),
    pytest.param(b'{"models": {"Org/remote": "community"}, "files": {"models/community/Org/'
                 b'remote/config.json": ["\\u001b[31mnot-hex", 2]}}', id="not-hex"),
    pytest.param(b'{"models": {"Org/remote": "community"}, "files": {"models/community/Org/'
                 b'remote/config.json": ["' + GOOD_SHA.encode() + b'", 2.5]}}', id="fraction"),
])
def test_a_malformed_file_list_is_one_clear_error(
        data: bytes, patched: types.ModuleType, hostile: Hostile) -> None:
    """A file list from a broken or hostile mirror escaped as a RecursionError (deep
    nesting) or an OverflowError (1e400) traceback, or was taken as it was (a negative size,
    a sha256 that is not one) so every download failed later, twice, as a 'mismatch'."""
    hostile.list_bytes(data)
    with pytest.raises(UsageError, match="is not a paddle-bundle file list") as info:
        patched.resolve_file_path(REMOTE, "config.json")
    assert "\x1b" not in str(info.value)
    assert info.value.__cause__ is None
    assert [uri for uri in hostile.asked if "config.json" in uri] == []


def test_a_cache_that_cannot_be_written_is_named_not_blamed_on_the_mirror(
        patched: types.ModuleType, home: Path, hostile: Hostile) -> None:
    """A cache folder offline mode cannot write in (read-only, or a file in the way)
    escaped as a bare OSError, which PaddleNLP turned into "Can't load the model"; an error
    while writing was reported as 'the mirror could not serve' it."""
    hostile.serve({f"models/community/{REMOTE}/config.json": b"{}"}, {REMOTE: "community"})
    blocked = home / "models" / REMOTE
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the model's folder goes")
    with pytest.raises(BundleError) as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    message = str(info.value)
    assert not isinstance(info.value, OSError) and "Can't load" not in message
    assert f"cannot store config.json of {REMOTE} from the mirror in {blocked}" in message
    assert "could not serve" not in message
    # a write that fails half-way (a full disk; here a file size limit) is named the same way
    import resource
    import signal

    blocked.unlink()
    hostile.serve({f"models/community/{REMOTE}/model_state.pdparams": b"w" * 200_000},
                  {REMOTE: "community"})
    _offline._CLIENTS.clear()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, old_limit[1]))
    try:
        with pytest.raises(BundleError) as info:
            patched.resolve_file_path(REMOTE, ["model_state.pdparams"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert "cannot store model_state.pdparams" in str(info.value)
    assert "could not serve" not in str(info.value)
    assert not list(blocked.glob(".paddle-bundle-mirror-*"))


def test_a_downloaded_file_is_readable_as_the_umask_says(
        patched: types.ModuleType, home: Path, hostile: Hostile) -> None:
    """Files from the mirror were created by mkstemp, so 0600 whatever the umask: in a cache
    shared by several users (PPNLP_HOME=/opt/ppnlp) only the first could read them, unlike
    what PaddleNLP itself downloads."""
    import os
    import stat

    hostile.serve({f"models/community/{REMOTE}/config.json": b"{}"}, {REMOTE: "community"})
    old = os.umask(0o022)
    try:
        got = Path(patched.resolve_file_path(REMOTE, ["config.json"]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(got.stat().st_mode) == 0o644


@pytest.mark.parametrize("value", [
    pytest.param("http://t0ken-secret@127.0.0.1:{port}/paddlenlp", id="token-as-user"),
    pytest.param("http://fleet:pa/ss-secret@127.0.0.1:{port}/paddlenlp", id="slash-in-password"),
    pytest.param("http://fleet:pa?ss-secret@127.0.0.1:{port}/paddlenlp", id="query-in-password"),
    pytest.param("http://fleet:s3cret@pass-secret@127.0.0.1:{port}/paddlenlp", id="two-ats"),
])
def test_no_credential_reaches_a_message_or_the_refusal_report(
        value: str, patched: types.ModuleType, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The redaction kept a user name (the secret when a token is passed as the user) and
    left the whole URL as it was when the password held a '/' (not a URL urllib can read,
    so refused, quoting it)."""
    report = tmp_path / "report"
    report.mkdir()
    monkeypatch.setenv(_offline.ENV_REPORT, str(report))
    monkeypatch.setenv(_offline.ENV_MIRROR, value.format(port=free_port()))
    with pytest.raises(BundleError) as info:
        patched.resolve_file_path("ernie-tiny", [VOCAB_URL])
    assert "secret" not in str(info.value)
    assert "secret" not in "".join(p.read_text() for p in report.iterdir())
    assert "127.0.0.1" in str(info.value)


def test_the_guard_lets_a_mirror_named_with_a_trailing_dot_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fully qualified mirror name ('mirror.example.', legal in a URL and what some sites
    write to skip the resolver's search list) had its own look-up refused by the guard: the
    name was compared with the dot stripped on one side only."""
    import socket

    tcp = socket.socket()
    monkeypatch.setenv(_offline.ENV_MIRROR, "http://Mirror.Example.:8080/paddlenlp")
    monkeypatch.setitem(_offline._MIRROR_IPS, "mirror.example.", frozenset({"10.1.1.1"}))
    try:
        _offline._audit("socket.getaddrinfo", ("Mirror.Example.", 8080, 0, 1, 6, 0))
        _offline._audit("socket.getaddrinfo", ("mirror.example", 8080, 0, 1, 6, 0))
        _offline._audit("socket.connect", (tcp, ("10.1.1.1", 8080)))
        with pytest.raises(OfflineBlockedError):
            _offline._audit("socket.getaddrinfo", ("mirror.example..evil", 8080, 0, 1, 6, 0))
    finally:
        tcp.close()


def test_a_model_in_the_cache_still_loads_while_the_mirror_is_down(
        patched: types.ModuleType, home: Path, hostile: Hostile,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every optional file PaddleNLP probes (added_tokens.json, chat_template.json...) asked
    the mirror's list first: with the mirror down, a model downloaded from it yesterday, with
    every file it needs in the cache, failed to load with NotOnMirrorError."""
    hostile.serve({f"models/community/{REMOTE}/config.json": b"{}"}, {REMOTE: "community"})
    got = patched.resolve_file_path(REMOTE, ["config.json"])
    hostile.server.shutdown()
    hostile.server.server_close()  # the mirror goes down; a new process starts
    _offline._CLIENTS.clear()
    with caplog.at_level("WARNING", logger="bundler.offline"):
        assert patched.resolve_file_path(REMOTE, ["config.json"]) == got
        assert patched.resolve_file_path(REMOTE, "added_tokens.json") is None
    assert "could not serve" in caplog.text and REMOTE in caplog.text
    with pytest.raises(NotOnMirrorError, match="could not serve"):  # not here: said at once
        patched.resolve_file_path("Org/elsewhere", ["config.json"])
    # and the mirror is asked once for all those probes, not once each (a blackholed one
    # would make each wait for the time-out)
    opened: list[str] = []
    real_open = _offline._MirrorClient._open

    def counting(self: _offline._MirrorClient, rel: str, *rest: object) -> object:
        opened.append(rel)
        return real_open(self, rel, *rest)  # type: ignore[arg-type]

    _offline._CLIENTS.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_offline._MirrorClient, "_open", counting)
        for name in ("added_tokens.json", "chat_template.json", "special_tokens_map.json"):
            assert patched.resolve_file_path(REMOTE, name) is None
    assert opened == [".paddle-bundle/files.json"]


def test_a_forget_in_another_thread_never_breaks_a_download(
        tmp_path: Path, hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    """_open read the shared opener twice (is it None? then use it): a forget() in another
    thread between the two (a Taskflow thread whose generation was pruned) made the download
    fail with a bare AttributeError ('NoneType' object has no attribute 'open'). The forget()
    is injected where _open builds the request, between reading the opener and using it."""
    hostile.serve({f"models/community/{REMOTE}/config.json": b"{}"}, {REMOTE: "community"})
    client = _offline._MirrorClient(hostile.endpoint)
    client.listing()
    import urllib.parse

    real_quote = urllib.parse.quote
    forgotten: list[str] = []

    def quote_then_forget(text: str, safe: str = "/") -> str:
        if not forgotten:  # what the other thread does, at the worst moment
            forgotten.append(text)
            client.forget()
        return real_quote(text, safe=safe)

    monkeypatch.setattr(urllib.parse, "quote", quote_then_forget)
    dest = tmp_path / "client" / "config.json"
    client.fetch(f"models/community/{REMOTE}/config.json", str(dest), REMOTE)
    assert dest.read_bytes() == b"{}" and forgotten


@pytest.mark.parametrize("what", ["file", "list"])
def test_a_mirror_that_trickles_bytes_is_given_up(
        what: str, patched: types.ModuleType, hostile: Hostile,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The 30 s socket time-out applies to each read, so a mirror (or a proxy) sending one
    byte every 29 s held PaddleNLP, and with the list every thread waiting for it, forever."""
    body = b"x" * 100
    hostile.serve({f"models/community/{REMOTE}/config.json": body}, {REMOTE: "community"})
    hostile.trickle[f"models/community/{REMOTE}/config.json" if what == "file"
                    else ".paddle-bundle/files.json"] = 0.02
    monkeypatch.setattr(_offline, "_STALL_SECONDS", 0.3, raising=False)
    monkeypatch.setattr(_offline, "_STALL_BYTES", 1000, raising=False)
    with pytest.raises(NotOnMirrorError, match="too slow") as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    assert "could not serve" in str(info.value)


@pytest.fixture
def raw_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bytes]]:
    """A TCP server answering each path below the mirror URL with raw bytes (not HTTP)."""
    import socket
    import threading

    answers: dict[str, bytes] = {}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def run() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536).decode("latin-1")
                path = request.split(" ")[1].removeprefix("/paddlenlp/") if " " in request \
                    else ""
                conn.sendall(answers.get(path, b"HTTP/1.1 404 Not Found\r\n\r\n"))

    threading.Thread(target=run, daemon=True).start()
    monkeypatch.setenv(_offline.ENV_MIRROR,
                       f"http://127.0.0.1:{listener.getsockname()[1]}/paddlenlp")
    try:
        yield answers
    finally:
        listener.close()


@pytest.mark.parametrize("where", ["list", "file"])
@pytest.mark.parametrize("answer", [
    pytest.param(b"garbage\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", id="huge-header"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 id="broken-chunks"),
])
def test_a_mirror_that_does_not_speak_http_is_named(
        where: str, answer: bytes, patched: types.ModuleType,
        raw_server: dict[str, bytes]) -> None:
    """http.client's own errors (BadStatusLine, LineTooLong, IncompleteRead) are not
    OSErrors: they escaped as tracebacks from PaddleNLP's loading."""
    import json

    rel = f"models/community/{REMOTE}/config.json"
    listing = json.dumps({"models": {REMOTE: "community"},
                          "files": {rel: [sha(b"{}"), 2]}}).encode()
    raw_server[".paddle-bundle/files.json"] = answer if where == "list" else \
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(listing), listing)
    raw_server[rel] = answer
    with pytest.raises(NotOnMirrorError, match="could not serve") as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    assert info.value.__cause__ is None


@pytest.mark.parametrize(("status", "hint"), [
    pytest.param(401, "check the user and password", id="401"),
    pytest.param(403, "--allow", id="403"),
    pytest.param(500, "check that the mirror is up", id="500"),
])
def test_a_refusal_by_the_mirror_says_what_to_fix(
        status: int, hint: str, patched: types.ModuleType, hostile: Hostile) -> None:
    """Every failure said 'the mirror's file list is not installed here' and hinted 'check
    that the mirror is up': wrong for a wrong password (401) or a machine outside the
    mirror's allow list (403)."""
    hostile.routes[".paddle-bundle/files.json"] = (status, {}, b"no")
    with pytest.raises(NotOnMirrorError) as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    message = str(info.value)
    assert hint in message and f"HTTP Error {status}" in message
    assert "file list is not installed" not in message
    assert "could not read the mirror's file list" in message


def test_a_damaged_file_on_the_mirror_says_to_check_the_mirror(
        patched: types.ModuleType, hostile: Hostile) -> None:
    """A file that did not match the list twice was reported with the hint 'check that the
    mirror is up': it is up, and serving a damaged file."""
    rel = f"models/community/{REMOTE}/config.json"
    hostile.serve({rel: b"{}"}, {REMOTE: "community"}, listed={rel: [sha(b"[]"), 2]})
    with pytest.raises(NotOnMirrorError, match="sha256") as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    assert "paddle-bundle mirror check" in str(info.value)
    assert "check that the mirror is up" not in str(info.value)


def test_the_guard_follows_the_mirror_to_a_new_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard resolved the mirror's name once per process and kept the answer: after a
    fail-over (the name now points at the standby), or with DNS that rotates through a
    subset of the mirror's addresses, urllib's own look-up gave an address the guard had not
    seen, and a long-running process was refused the mirror for the rest of its life."""
    import socket

    monkeypatch.setenv(_offline.ENV_MIRROR, "http://mirror.example:8080/paddlenlp")
    monkeypatch.setitem(_offline._MIRROR_IPS, "mirror.example", frozenset({"10.1.1.1"}))

    def resolve(host: str, port: object, *args: object) -> list[tuple[object, ...]]:
        assert host == "mirror.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.2.2.2", 8080))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    tcp = socket.socket()
    try:
        _offline._audit("socket.connect", (tcp, ("10.2.2.2", 8080)))  # the standby: allowed
        with pytest.raises(OfflineBlockedError):
            _offline._audit("socket.connect", (tcp, ("10.3.3.3", 8080)))
    finally:
        tcp.close()


@pytest.mark.parametrize("where", ["list", "file"])
def test_a_compressing_proxy_is_named(where: str, patched: types.ModuleType,
                                      hostile: Hostile) -> None:
    """A proxy in front of the mirror that gzips what it forwards (offline mode never asks
    for it) was reported as a damaged file ('sha256 ... run mirror check') after two
    downloads, or as 'not a paddle-bundle file list'."""
    import gzip

    rel = f"models/community/{REMOTE}/config.json"
    hostile.serve({rel: b"{}"}, {REMOTE: "community"})
    key = rel if where == "file" else ".paddle-bundle/files.json"
    status, _, body = hostile.routes[key]
    hostile.routes[key] = (status, {"Content-Encoding": "gzip"}, gzip.compress(body))
    with pytest.raises(NotOnMirrorError, match="Content-Encoding: gzip") as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    assert "compress" in str(info.value)
    assert [uri for uri in hostile.asked if uri.endswith(key)] == [f"/paddlenlp/{key}"]


def test_a_file_name_with_url_characters_is_fetched_as_named(
        patched: types.ModuleType, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The path went into the URL as it was: a file name with a space was an InvalidURL
    ('could not serve'), one with '#' or '%' asked nginx for another path."""
    from tests.test_mirror import make_bundle

    names = ["my vocab.txt", "notes#1.json", "100%.json"]
    files: dict[str, bytes | str] = {"config.json": "{}", **{n: n.upper() for n in names}}
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "odd", files, REMOTE)], root)
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        for name in names:
            got = patched.resolve_file_path(REMOTE, [name])
            assert got is not None and Path(got).read_text() == name.upper()


def test_a_model_stays_on_its_version_past_the_cookie_and_new_models_are_found(
        patched: types.ModuleType, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ways a long-running process went wrong. With the server's cookie deciding, a model
    whose downloads outlast the cookie's life (5 minutes after a response starts: one large
    shard on a slow link) got its remaining files from a version published meanwhile; and
    with the first list kept for good, a model published after it was 'not on the mirror'
    until the process restarted. Now each model is pinned to the generation of the list its
    first decision came from (offline mode sends that generation's cookie itself), and a model
    the list does not have means one fresh list."""
    from bundler.mirror.nginx import COOKIE, COOKIE_SECONDS
    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    with nginx(root, tmp_path / "nginx",  # the cookie's 5 minutes, shortened
               edit=lambda conf: conf.replace(f"Max-Age={COOKIE_SECONDS}", "Max-Age=1")
               ) as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        got = patched.resolve_file_path(REMOTE, ["config.json"])  # REMOTE starts loading
        assert got is not None and Path(got).read_text() == R1["config.json"]
        publish([make_bundle(tmp_path, "r2", R2, REMOTE),
                 make_bundle(tmp_path, "later", {"config.json": '{"later": 1}'}, "Org/later")],
                root)
        time.sleep(2.5)  # longer than the cookie lives
        got = patched.resolve_file_path(REMOTE, ["model_state.pdparams"])
        assert got is not None and Path(got).read_bytes() == R1["model_state.pdparams"]
        got = patched.resolve_file_path("Org/later", ["config.json"])  # published since
        assert got is not None and Path(got).read_text() == '{"later": 1}'
    assert getattr(_offline, "_COOKIE", None) == COOKIE  # the cookie the server reads


def test_a_redirect_is_not_followed_and_says_where_it_went(
        patched: types.ModuleType, hostile: Hostile) -> None:
    """A mirror behind a proxy that redirects http to https answered 301, reported with the
    hint 'check that the mirror is up' (it is): the fix is the URL, which the Location says."""
    hostile.routes[".paddle-bundle/files.json"] = (
        301, {"Location": "https://user:pw@mirror.example/paddlenlp/.paddle-bundle/"
                          "files.json\x1b[2J"}, b"")
    with pytest.raises(NotOnMirrorError) as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    message = str(info.value)
    assert "redirect" in message and "https://user:***@mirror.example/paddlenlp" in message
    assert "\x1b" not in message and ":pw@" not in message
    assert "check that the mirror is up" not in message
    assert len(hostile.asked) == 1  # not followed


def test_an_https_mirror_with_the_sites_ca_in_requests_ca_bundle(
        patched: types.ModuleType, hostile: Hostile, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/fleet.md tells sites to put their CA in REQUESTS_CA_BUNDLE (what PaddleNLP's
    requests reads); offline mode's client (urllib) ignored it, so an https mirror with the
    site's own CA failed 'certificate verify failed' with the hint 'check the mirror is up'."""
    import ssl

    cert, key = tmp_path / "mirror.crt", tmp_path / "mirror.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=mirror",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    hostile.server.socket = context.wrap_socket(hostile.server.socket, server_side=True)
    hostile.serve({f"models/community/{REMOTE}/config.json": b"{}"}, {REMOTE: "community"})
    monkeypatch.setenv(_offline.ENV_MIRROR, hostile.endpoint.replace("http:", "https:"))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(NotOnMirrorError, match="REQUESTS_CA_BUNDLE"):  # not trusted: said how
        patched.resolve_file_path(REMOTE, ["config.json"])
    _offline._CLIENTS.clear()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    got = patched.resolve_file_path(REMOTE, ["config.json"])
    assert got is not None and Path(got).read_bytes() == b"{}"


@pytest.mark.parametrize("where", ["list", "file"])
def test_no_credential_in_the_frames_of_a_mirror_failure(
        where: str, patched: types.ModuleType, hostile: Hostile,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Error reporters (Sentry's default, rich's show_locals) send the local variables of
    every frame of an exception's traceback: the client's URLs were built from the endpoint
    with its user:password, so a mirror failure carried the password in 'url'."""
    rel = f"models/community/{REMOTE}/config.json"
    hostile.serve({rel: b"{}"}, {REMOTE: "community"})
    hostile.routes[".paddle-bundle/files.json" if where == "list" else rel] = (500, {}, b"")
    monkeypatch.setenv(_offline.ENV_MIRROR,
                       hostile.endpoint.replace("http://", "http://fleet:s3cret-pw@"))
    with pytest.raises(NotOnMirrorError) as info:
        patched.resolve_file_path(REMOTE, ["config.json"])
    exc: BaseException | None = info.value
    while exc is not None:
        assert "s3cret-pw" not in repr(exc) + str(exc)
        tb = exc.__traceback__
        while tb is not None:
            for name, value in tb.tb_frame.f_locals.items():
                assert "s3cret-pw" not in repr(value), (tb.tb_frame.f_code.co_name, name)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


def _list_reads(server: object) -> int:
    return [uri for _, uri, *_ in server.log()].count(  # type: ignore[attr-defined]
        "/paddlenlp/.paddle-bundle/files.json")


def test_two_models_the_list_lacks_asked_in_turn_read_it_once_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'One fresh list per model the list does not have, not one per probe' held for one such
    model at a time: a model asked again after another one's fresh list read the list again,
    so two models copied in by hand (or two threads loading them) probed in turn read the
    whole list once per probe (11 reads for these 10 probes)."""
    from tests.test_mirror import make_bundle

    monkeypatch.setattr(_offline, "_ASK_AGAIN_SECONDS", 3600.0, raising=False)
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    with nginx(root, tmp_path / "nginx") as server:
        client = _offline._MirrorClient(server.endpoint)
        for _ in range(5):
            assert not client.has_model("Hand/one")
            assert not client.has_model("Hand/two")
        assert client.has_model(REMOTE)
        assert _list_reads(server) == 3  # the first list, and one fresh list for each



def test_a_pinned_version_outlives_the_lists_other_models_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the last four lists were kept, and dropping one dropped the pins on it: a model
    whose download outlasted four fresh lists (other models asked for while new versions were
    published) got its next file from the newest version, v1's config with v2's weights."""
    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    dest = tmp_path / "client"
    with nginx(root, tmp_path / "nginx") as server:
        client = _offline._MirrorClient(server.endpoint)
        client.fetch(f"models/community/{REMOTE}/config.json", str(dest / "config.json"), REMOTE)
        publish([make_bundle(tmp_path, "r2", R2, REMOTE)], root)
        for i in range(_offline._KEEP_LISTS):  # each a new version, and a fresh list
            publish([make_bundle(tmp_path, f"n{i}", {"config.json": "{}"}, f"New/m{i}")], root)
            assert client.has_model(f"New/m{i}")
        client.fetch(f"models/community/{REMOTE}/model_state.pdparams",
                     str(dest / "model_state.pdparams"), REMOTE)
        assert (dest / "model_state.pdparams").read_bytes() == R1["model_state.pdparams"]


def test_a_model_left_idle_moves_to_its_new_version_once_its_folder_is_removed(
        patched: types.ModuleType, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """'To move a client to a new version of a model, remove that model's folder from its
    cache' (docs/fleet.md) did not hold in a long-running process: the model stayed pinned to
    the generation of its first decision for the life of the process, so its files came back
    as the old version until that generation was pruned (15 minutes after the publish at the
    soonest, never without a prune). A pin now ends once the model has been idle for 5
    minutes (as the server's cookie did), never while one of its downloads runs."""
    import shutil

    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    with nginx(root, tmp_path / "nginx") as server:
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        got = patched.resolve_file_path(REMOTE, ["config.json"])
        assert got is not None and Path(got).read_text() == R1["config.json"]
        client = _offline.mirror_client()
        assert client is not None
        now = [time.monotonic()]
        client._clock = lambda: now[0]  # type: ignore[attr-defined]
        publish([make_bundle(tmp_path, "r2", R2, REMOTE)], root)
        now[0] += 60  # still loading: v1
        got = patched.resolve_file_path(REMOTE, ["model_state.pdparams"])
        assert got is not None and Path(got).read_bytes() == R1["model_state.pdparams"]
        shutil.rmtree(home / "models" / REMOTE)  # to move it to the new version
        now[0] += 301
        got = patched.resolve_file_path(REMOTE, ["config.json"])
        assert got is not None and Path(got).read_text() == R2["config.json"]
        got = patched.resolve_file_path(REMOTE, ["model_state.pdparams"])
        assert got is not None and Path(got).read_bytes() == R2["model_state.pdparams"]


def test_a_load_whose_version_is_pruned_under_it_fails_clearly_rather_than_mix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's download after its generation was pruned (a load outlasting the 15 minutes a
    superseded version stays) was retried on the newest version whatever it held: v1's config
    and weights with v2's tokenizer_config.json, silently. The retry now goes ahead only for a
    file the newer version serves unchanged; otherwise the load fails, saying why and what to
    do, and the next load comes whole from the newer version."""
    from bundler.mirror import Mirror
    from tests.test_mirror import make_bundle

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "r1", R1, REMOTE)], root)
    dest = tmp_path / "client"
    rel = f"models/community/{REMOTE}/tokenizer_config.json"
    with nginx(root, tmp_path / "nginx") as server:
        client = _offline._MirrorClient(server.endpoint)
        monkeypatch.setenv(_offline.ENV_MIRROR, server.endpoint)
        client.fetch(f"models/community/{REMOTE}/config.json", str(dest / "config.json"), REMOTE)
        publish([make_bundle(tmp_path, "r2", R2, REMOTE)], root)
        mirror = Mirror(root)
        with mirror.locked():
            assert mirror.prune(keep_seconds=0)
        with pytest.raises(NotOnMirrorError, match="changed on the mirror .* while it was "
                           "loading") as info:
            client.fetch(rel, str(dest / "tokenizer_config.json"), REMOTE)
        assert "load it again" in str(info.value.hint)
        assert not (dest / "tokenizer_config.json").exists()
        (dest / "config.json").unlink()  # the next load, its folder removed
        client.fetch(f"models/community/{REMOTE}/config.json", str(dest / "config.json"), REMOTE)
        client.fetch(rel, str(dest / "tokenizer_config.json"), REMOTE)
        assert (dest / "config.json").read_text() == R2["config.json"]
        assert (dest / "tokenizer_config.json").read_text() == R2["tokenizer_config.json"]
