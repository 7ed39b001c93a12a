"""mirror publish / list / check / remove / nginx-config, served by a real nginx (issue 11).

No Paddle here: bundles of hand-made model folders, nginx started from the configuration
``mirror nginx-config`` prints, and plain HTTP clients. The PaddleNLP clients are in
tests/test_mirror_clients.py. nginx comes from the project's set-up (``make setup-nginx``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bundler.cli import _main
from bundler.errors import IntegrityError, LockedError, ModelNotFoundError, UsageError
from bundler.manifest import ModelEntry
from bundler.mirror import Mirror, publish, remove, server_config
from bundler.mirror.layout import bucket_path, kind_of
from tests.conftest import make_model

MODEL = "Org/small"
URL_DIR = f"paddlenlp/models/community/{MODEL}"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found is None:
        pytest.fail("nginx is not installed: run 'make setup-nginx' (apt-get install "
                    "nginx-light), which 'make test' does")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx_files(prefix: Path, server_conf: str) -> Path:
    """A whole nginx.conf around the server block: its own prefix, pid and logs, in the
    foreground, workers as root (the test's tmp folders are private to root)."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "server.conf").write_text(server_conf)
    conf = prefix / "nginx.conf"
    temp = "\n".join(f"  {name}_temp_path {prefix}/tmp_{name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""daemon off;
worker_processes 2;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format pb '$request_method $request_uri $status $request_filename';
  access_log {prefix}/access.log pb;
{temp}
  include {prefix}/server.conf;
}}
""")
    return conf


@dataclass
class Nginx:
    prefix: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/paddlenlp"

    def log(self) -> list[tuple[str, str, int, str]]:
        """(method, uri, status, file) of every request so far."""
        lines = (self.prefix / "access.log").read_text().splitlines()
        return [(p[0], p[1], int(p[2]), p[3]) for p in (line.split(" ") for line in lines)]


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextlib.contextmanager
def nginx(root: Path, prefix: Path, *extra: str,
          edit: Callable[[str], str] | None = None) -> Iterator[Nginx]:
    """nginx serving ``root`` with the configuration ``mirror nginx-config`` prints (with
    ``extra`` options), changed by ``edit`` when given."""
    port = free_port()
    rc, out, err = _cli("mirror", "nginx-config", "--root", str(root), "--listen",
                        f"127.0.0.1:{port}", *extra)
    assert rc == 0, err
    conf = nginx_files(prefix, edit(out) if edit else out)
    process = subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", str(conf)],
                               stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        yield Nginx(prefix, port, process)
    finally:
        process.terminate()
        process.wait(10)


def _cli(*args: str) -> tuple[int, str, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = _main(list(args))
    return rc, out.getvalue(), err.getvalue()


def make_bundle(tmp: Path, name: str, files: dict[str, bytes | str], model: str = MODEL
                ) -> Path:
    home = tmp / f"home-{name}"
    shutil.rmtree(home, ignore_errors=True)
    make_model(home, model, files)
    out = tmp / f"{name}.tar.zst"
    assert _main(["pack", model, "-o", str(out), "--home", str(home), "-q"]) == 0
    return out


V1: dict[str, bytes | str] = {"config.json": '{"v": 1}', "tokenizer_config.json": "{}",
                              "model_state.pdparams": b"one" * 50_000}
V2: dict[str, bytes | str] = {"config.json": '{"v": 2}', "tokenizer_config.json": "{}",
                              "model_state.pdparams": b"two" * 50_000}


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# -- publish, list, check, remove ------------------------------------------------------------
def test_publish_lays_out_community_models_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    b1 = make_bundle(tmp_path, "v1", V1)
    result = publish([b1], root)
    assert [o.status for o in result.outcomes] == ["published"]
    for name, content in V1.items():
        assert sha((root / URL_DIR / name).read_bytes()) == sha(content)
    again = publish([b1], root)  # same bundle: nothing changes, no new generation
    assert [o.status for o in again.outcomes] == ["unchanged"]
    assert again.index.generation == result.index.generation == 1
    model = Mirror(root).index().model(MODEL)
    assert model is not None and model.bundle == "v1.tar.zst" and model.signer is None
    rc, out, _ = _cli("mirror", "list", "--root", str(root))
    assert rc == 0 and MODEL in out and "v1.tar.zst" in out and "unsigned" in out


def test_a_new_version_is_a_new_generation_and_old_files_are_never_rewritten(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    weights = root / URL_DIR / "model_state.pdparams"
    with open(weights, "rb") as reader:  # a client in the middle of a download
        inode = os.fstat(reader.fileno()).st_ino
        result = publish([make_bundle(tmp_path, "v2", V2)], root)
        assert [o.status for o in result.outcomes] == ["replaced"]
        assert reader.read() == V1["model_state.pdparams"]  # the old bytes, whole
    assert os.stat(weights).st_ino != inode
    assert weights.read_bytes() == V2["model_state.pdparams"]
    gens = sorted(p.name for p in (root / ".paddle-bundle" / "generations").iterdir())
    assert gens == ["1", "2"]  # the old one stays for clients pinned to it
    mirror = Mirror(root)
    assert mirror.prune(keep_seconds=0) == [1]
    # blobs only generation 1 used are gone; generation 2's are kept
    assert sorted(p.name for p in mirror.blobs.iterdir()) == sorted(
        sha(c) for c in V2.values())


def test_a_damaged_bundle_publishes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    bad = make_bundle(tmp_path, "v2", V2)
    data = bytearray(bad.read_bytes())
    data[-2000] ^= 0xFF
    bad.write_bytes(bytes(data))
    bad.with_name(bad.name + ".sha256").unlink(missing_ok=True)
    with pytest.raises(IntegrityError):
        publish([bad], root)
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'
    assert Mirror(root).index().generation == 1
    assert not list(Mirror(root).tmp.iterdir())  # no partial blob left behind
    rc, _, err = _cli("mirror", "publish", str(bad), "--root", str(root), "-q")
    assert rc == 3 and "v2.tar.zst" in err and "Traceback" not in err


def test_check_rehashes_and_remove_stops_serving(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1),
             make_bundle(tmp_path, "other", V1, model="Org/other")], root)
    rc, out, _ = _cli("mirror", "check", "--root", str(root))
    assert rc == 0 and f"{MODEL}: ok" in out
    blob = Mirror(root).blob(sha(V1["config.json"]))
    blob.write_text('{"v": 9}')  # damage on the disk (same inode as the served file)
    rc, _, err = _cli("mirror", "check", "--root", str(root), MODEL)
    assert rc == 3 and "config.json: sha256 differs" in err
    index = remove(root, [MODEL])
    assert [m.id for m in index.models] == ["Org/other"]
    assert not (root / URL_DIR).exists() and (root / "paddlenlp/models/community/Org/other")
    with pytest.raises(ModelNotFoundError):
        remove(root, [MODEL])
    rc, _, err = _cli("mirror", "remove", MODEL, "--root", str(root))
    assert rc == 1 and "not published" in err


def test_one_publish_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "root"
    mirror = Mirror(root)
    with mirror.locked(), pytest.raises(LockedError):
        publish([make_bundle(tmp_path, "v1", V1)], root)


def test_a_killed_publish_leaves_nothing_served_and_is_cleaned_up(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    mirror = Mirror(root)
    (mirror.tmp / "blob-123-0-abc").write_bytes(b"partial")  # as a kill leaves them
    (mirror.generations / "7").mkdir()  # built, never flipped to
    publish([make_bundle(tmp_path, "v2", V2)], root)
    assert not (mirror.tmp / "blob-123-0-abc").exists()
    assert sorted(p.name for p in mirror.generations.iterdir()) == ["1", "2"]


def test_layout_of_builtin_and_taskflow_files_follows_their_fixed_urls(tmp_path: Path) -> None:
    home = tmp_path / "h"
    make_model(home, "ernie-3.0-nano-zh", {"vocab.txt": "a\n", "model_state.pdparams": b"w",
                                           "config.json": "{}"})
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "ernie-3.0-nano-zh", "-o", str(out), "--home", str(home), "-q"]) == 0
    urls = {"vocab.txt": "https://bj.bcebos.com/paddlenlp/models/transformers/ernie_3.0/"
                         "ernie_3.0_nano_zh_vocab.txt",
            "model_state.pdparams": "https://paddlenlp.bj.bcebos.com/models/transformers/"
                                    "ernie_3.0/ernie_3.0_nano_zh.pdparams"}
    result = publish([out], tmp_path / "root", lookup=lambda model: urls)
    served = {f.url_path for f in result.outcomes[0].model.files}
    assert served == {"paddlenlp/models/transformers/ernie_3.0/ernie_3.0_nano_zh_vocab.txt",
                      "paddlenlp/models/transformers/ernie_3.0/ernie_3.0_nano_zh.pdparams"}
    assert any("config.json" in s for s in result.outcomes[0].model.skipped)
    assert kind_of(ModelEntry.for_id("taskflow:information_extraction/uie-base")) == "taskflow"
    assert bucket_path("https://paddlenlp.bj.bcebos.com/taskflow/a/b.pdparams") == \
        "paddlenlp/taskflow/a/b.pdparams"
    assert bucket_path("https://bj.bcebos.com/paddlenlp/../etc/passwd") is None
    assert bucket_path("https://example.com/paddlenlp/x") is None


def test_nginx_config_refuses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "a b").mkdir()
    with pytest.raises(UsageError):
        server_config(tmp_path / "a b", listen="127.0.0.1:80")
    rc, _, err = _cli("mirror", "nginx-config", "--root", str(tmp_path / "typo"))
    assert rc == 2 and "is not a folder" in err  # not a config for a root that is not there
    with pytest.raises(UsageError):
        server_config(tmp_path, listen="localhost")
    with pytest.raises(UsageError):
        server_config(tmp_path, allow=["10.0.0.0/33"])
    text = server_config(tmp_path, listen="0.0.0.0:8080", allow=["10.0.0.0/8", "192.168.1.7"])
    assert "allow 10.0.0.0/8;" in text and "allow 192.168.1.7/32;" in text
    assert "deny all;" in text and "autoindex off;" in text and "sendfile on;" in text
    six = server_config(tmp_path, listen="[::1]:8080")  # the TLS line, once uncommented, too
    assert "listen [::1]:8080;" in six and "listen [::1]:443 ssl;" in six
    rc, _, err = _cli("mirror", "nginx-config", "--root", str(tmp_path), "--listen", "x")
    assert rc == 2 and "ADDR:PORT" in err


# -- a real nginx ------------------------------------------------------------------------------
def test_nginx_serves_get_and_head_only_404_for_absent_and_no_listing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    with nginx(root, tmp_path / "nginx") as server:
        base = f"{server.endpoint}/models/community/{MODEL}"
        got = requests.get(f"{base}/model_state.pdparams", timeout=10)
        assert got.status_code == 200 and got.content == V1["model_state.pdparams"]
        assert got.headers["Cache-Control"] == "no-cache" and got.headers.get("ETag")
        head = requests.head(f"{base}/config.json", timeout=10)
        assert head.status_code == 200 and head.headers["Content-Length"] == "8"
        for url in (f"{base}/added_tokens.json", f"{base}/", f"{server.endpoint}/models",
                    f"http://127.0.0.1:{server.port}/.paddle-bundle/index.json",
                    f"{server.endpoint}/../.paddle-bundle/index.json",
                    f"http://127.0.0.1:{server.port}/"):
            assert requests.get(url, timeout=10, allow_redirects=False).status_code == 404, url
        assert requests.post(f"{base}/config.json", timeout=10).status_code == 403
        assert requests.put(f"{base}/config.json", data=b"x", timeout=10).status_code == 403
        assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'


def test_nginx_refuses_networks_not_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    with nginx(root, tmp_path / "nginx", "--allow", "10.0.0.0/8") as server:
        url = f"{server.endpoint}/models/community/{MODEL}/config.json"
        assert requests.get(url, timeout=10).status_code == 403


def test_nginx_pins_a_client_session_to_one_generation_across_a_publish(
        tmp_path: Path) -> None:
    """What makes a model load atomic across a publish: PaddleNLP's session sends the cookie
    back, so its next requests come from the same generation; a new client gets the new one."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    with nginx(root, tmp_path / "nginx") as server:
        base = f"{server.endpoint}/models/community/{MODEL}"
        loading = requests.Session()
        assert loading.head(f"{base}/config.json", timeout=10).status_code == 200
        assert loading.cookies.get("pb_generation") == "1"
        publish([make_bundle(tmp_path, "v2", V2)], root)
        assert loading.get(f"{base}/config.json", timeout=10).text == '{"v": 1}'
        assert loading.get(f"{base}/model_state.pdparams", timeout=10).content == \
            V1["model_state.pdparams"]
        fresh = requests.Session()
        assert fresh.get(f"{base}/config.json", timeout=10).text == '{"v": 2}'
        assert fresh.cookies.get("pb_generation") == "2"
        # once the old generation is pruned, a pinned client moves to the current one
        Mirror(root).prune(keep_seconds=0)
        assert loading.get(f"{base}/config.json", timeout=10).text == '{"v": 2}'
        assert {m for m, *_ in server.log()} <= {"GET", "HEAD"}


def test_index_is_readable_json_with_who_and_when(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    raw = json.loads((root / ".paddle-bundle" / "index.json").read_text())
    assert raw["generation"] == 1
    (model,) = raw["models"]
    assert model["id"] == MODEL and model["bundle"] == "v1.tar.zst"
    assert model["published_at"].endswith("Z") and "signer" in model
    assert {f["path"] for f in model["files"]} == {f"{URL_DIR}/{n}" for n in V1}


def test_two_models_serving_different_files_at_one_url_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = "https://bj.bcebos.com/paddlenlp/models/transformers/shared/vocab.txt"
    bundles = []
    for name, text in (("ernie-a", "a\n"), ("ernie-b", "b\n")):
        home = tmp_path / f"h-{name}"
        make_model(home, name, {"vocab.txt": text})
        bundles.append(tmp_path / f"{name}.tar.zst")
        assert _main(["pack", name, "-o", str(bundles[-1]), "--home", str(home), "-q"]) == 0
    publish([bundles[0]], root, lookup=lambda model: {"vocab.txt": url})
    from bundler.errors import InstallConflictError

    with pytest.raises(InstallConflictError, match="ernie-a and ernie-b"):
        publish([bundles[1]], root, lookup=lambda model: {"vocab.txt": url})
    served = root / "paddlenlp/models/transformers/shared/vocab.txt"
    assert served.read_text() == "a\n"  # the first stays served, unchanged


# -- review (rv11): what an administrator's machine looks like -------------------------------
def test_a_root_reached_through_a_symlink_serves_every_request_of_a_pinned_client(
        tmp_path: Path) -> None:
    """/srv/mirror -> /data/mirror: the configuration has disable_symlinks on, so the pinned
    generation's path must be the real one, or a client's second request is refused."""
    real = tmp_path / "data" / "mirror"
    real.mkdir(parents=True)
    link = tmp_path / "srv-mirror"
    link.symlink_to(real)
    publish([make_bundle(tmp_path, "v1", V1)], link)
    with nginx(link, tmp_path / "nginx") as server:
        client = requests.Session()
        base = f"{server.endpoint}/models/community/{MODEL}"
        assert client.head(f"{base}/config.json", timeout=10).status_code == 200
        assert client.cookies.get("pb_generation") == "1"
        got = client.get(f"{base}/config.json", timeout=10)  # pinned by the cookie
        assert got.status_code == 200 and got.text == '{"v": 1}'


def test_a_strict_umask_leaves_the_served_tree_readable_by_the_web_server(
        tmp_path: Path) -> None:
    """A hardened root shell (umask 077) publishes; nginx's worker is another user."""
    bundle = make_bundle(tmp_path, "v1", V1)
    old = os.umask(0o077)
    try:
        publish([bundle], tmp_path / "root")
    finally:
        os.umask(old)
    served = (tmp_path / "root" / URL_DIR / "config.json").resolve()
    for path in [served, *served.parents]:
        if path == tmp_path:
            break
        wanted = 0o005 if path.is_dir() else 0o004  # others may search folders, read files
        assert path.stat().st_mode & wanted == wanted, oct(path.stat().st_mode)
    assert (tmp_path / "root/.paddle-bundle/index.json").stat().st_mode & 0o004  # mirror list


def test_publishing_again_repairs_a_file_check_found_damaged(tmp_path: Path) -> None:
    """A blob damaged on the disk was reused by every later publish ("already published"),
    so the mirror kept serving the damaged bytes with no way to repair them."""
    root = tmp_path / "root"
    bundle = make_bundle(tmp_path, "v1", V1)
    publish([bundle], root)
    served = root / URL_DIR / "config.json"
    served.write_text('{"v": 9}')  # bit rot, or a stray edit: the blob's inode too
    rc, _, err = _cli("mirror", "check", "--root", str(root))
    assert rc == 3 and "publish the bundles of the damaged models again" in err
    result = publish([bundle], root)
    assert [o.status for o in result.outcomes] == ["replaced"]
    assert result.index.generation == 2
    assert served.read_text() == '{"v": 1}'
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    again = publish([bundle], root)  # intact now: nothing to do
    assert [o.status for o in again.outcomes] == ["unchanged"]
    assert again.index.generation == 2


def test_a_removed_model_stops_being_served_to_crafted_cookies_once_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After 'mirror remove' the old generation stays for pinned clients; without a later
    publish nothing ever deleted it, so a client sending pb_generation=1 could fetch the
    removed model indefinitely. 'mirror prune' (cron) ends that after KEEP_SECONDS."""
    import bundler.mirror.tree as tree

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1),
             make_bundle(tmp_path, "other", V1, model="Org/other")], root)
    remove(root, [MODEL])
    with nginx(root, tmp_path / "nginx") as server:
        url = f"{server.endpoint}/models/community/{MODEL}/config.json"
        assert requests.get(url, timeout=10).status_code == 404
        crafted = {"pb_generation": "1"}
        assert requests.get(url, cookies=crafted, timeout=10).status_code == 200
        rc, out, _ = _cli("mirror", "prune", "--root", str(root))
        assert rc == 0 and "nothing to remove" in out  # still within KEEP_SECONDS
        later = time.time() + tree.KEEP_SECONDS + 1
        monkeypatch.setattr(tree.time, "time", lambda: later)
        rc, out, _ = _cli("mirror", "prune", "--root", str(root))
        assert rc == 0 and "removed generation(s) 1" in out
        assert requests.get(url, cookies=crafted, timeout=10).status_code == 404
    assert _cli("mirror", "prune", "--root", str(tmp_path / "absent"))[0] == 2
    with Mirror(root).locked():  # a publish running when cron prunes: neither fails
        rc, out, _ = _cli("mirror", "prune", "--root", str(root))
    assert rc == 0 and "prunes when it finishes" in out


def test_publishing_again_restores_a_served_file_deleted_on_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    bundle = make_bundle(tmp_path, "v1", V1)
    publish([bundle], root)
    (root / URL_DIR / "model_state.pdparams").unlink()  # a stray clean-up
    assert _cli("mirror", "check", "--root", str(root))[0] == 3
    result = publish([bundle], root)
    assert [o.status for o in result.outcomes] == ["replaced"]
    assert (root / URL_DIR / "model_state.pdparams").read_bytes() == V1["model_state.pdparams"]
    assert _cli("mirror", "check", "--root", str(root))[0] == 0


def test_a_root_without_hard_links_is_named_and_serves_what_it_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlinked .paddle-bundle/blobs on another disk, or a file system without hard links:
    one line saying so (was a bare 'Invalid cross-device link: <temporary file>')."""
    import errno

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)

    def no_links(src: object, dst: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))

    monkeypatch.setattr(os, "link", no_links)
    rc, _, err = _cli("mirror", "publish", str(make_bundle(tmp_path, "v2", V2)), "--root",
                      str(root), "-q")
    assert rc == 2 and "one file system that supports hard links" in err, err
    monkeypatch.undo()
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'
    assert publish([make_bundle(tmp_path, "v2", V2)], root).index.generation == 2


def test_the_index_remembers_only_generations_still_on_the_disk(tmp_path: Path) -> None:
    """history grew by one entry per publish forever (an hourly publish: 26,000 entries in
    three years, rewritten and parsed by every command)."""
    root = tmp_path / "root"
    mirror = Mirror(root)
    for n, files in enumerate((V1, V2, V1, V2), start=1):
        publish([make_bundle(tmp_path, f"b{n}", files)], root)
        mirror.prune(keep_seconds=0)
    index = mirror.index()
    assert index.generation == 4 and sorted(index.history) == [3, 4]


# -- review (tree): a compromised model, a lost 'current' link, symlinked state folders -------
def test_two_models_serving_the_same_file_at_one_url_are_published_together(
        tmp_path: Path) -> None:
    """Two built-in models may share a fixed URL with the same content (the clash check lets
    them); building the generation linked it twice and failed with a bare FileExistsError."""
    root = tmp_path / "root"
    url = "https://bj.bcebos.com/paddlenlp/models/transformers/shared/vocab.txt"
    bundles = []
    for name in ("ernie-a", "ernie-b"):
        home = tmp_path / f"h-{name}"
        make_model(home, name, {"vocab.txt": "a\n"})
        bundles.append(tmp_path / f"{name}.tar.zst")
        assert _main(["pack", name, "-o", str(bundles[-1]), "--home", str(home), "-q"]) == 0
    result = publish(bundles, root, lookup=lambda model: {"vocab.txt": url})
    assert [m.id for m in result.index.models] == ["ernie-a", "ernie-b"]
    assert (root / "paddlenlp/models/transformers/shared/vocab.txt").read_text() == "a\n"


@pytest.mark.parametrize("folder", ["blobs", "generations"])
def test_a_symlinked_state_folder_is_refused_before_anything_is_written(
        tmp_path: Path, folder: str) -> None:
    """An administrator moves .paddle-bundle/blobs (or generations) to a bigger disk behind
    a symlink: nginx (disable_symlinks on) refuses every pinned request through it, and hard
    links fail across file systems. Refused with one line, exit 2, nothing changed."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1),
             make_bundle(tmp_path, "other", V2, model="Org/other")], root)
    state = root / ".paddle-bundle"
    moved = tmp_path / "bigger-disk" / folder
    moved.parent.mkdir()
    shutil.move(str(state / folder), moved)
    (state / folder).symlink_to(moved)
    (Mirror(root).tmp / "blob-1-0-partial").write_bytes(b"left by a killed publish")

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(tmp_path)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
                for base in (root, moved) for p in [base, *base.rglob("*")]}

    before = snapshot()
    bundle = make_bundle(tmp_path, "v2", V2)
    for args in (("publish", str(bundle), "-q"), ("remove", MODEL), ("remove", MODEL, "--purge"),
                 ("prune",)):
        rc, _, err = _cli("mirror", *args, "--root", str(root))
        assert rc == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and f".paddle-bundle/{folder} is a symlink" \
            in err and "move the whole --root" in err and "nginx-config" in err, err
        assert snapshot() == before, args
    with pytest.raises(UsageError):
        remove(root, [MODEL], purge=True)


def test_a_deleted_current_link_is_restored_and_no_model_is_dropped(tmp_path: Path) -> None:
    """rm .paddle-bundle/current: the next publish merged into an empty index and silently
    stopped serving every other model. Now the link is restored (under the lock, first) to
    the newest generation, and readers say it is missing instead of 'nothing published'."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "other", V2, model="Org/other")], root)
    mirror = Mirror(root)
    mirror.current_link.unlink()
    rc, out, err = _cli("mirror", "list", "--root", str(root))
    assert rc == 0 and "Org/other" in out and "nothing published" not in out
    assert len(err.splitlines()) == 1 and "current is missing" in err
    assert "mirror prune --root DIR" in err
    rc, out, err = _cli("mirror", "check", "--root", str(root))
    assert rc == 3 and "Org/other: ok" in out
    assert "current is missing" in err and "'paddle-bundle mirror prune --root DIR'" in err
    with nginx(root, tmp_path / "nginx") as server:
        url = f"{server.endpoint}/models/community/{MODEL}/config.json"
        publish([make_bundle(tmp_path, "v1", V1)], root)
        assert requests.get(url, timeout=10).text == '{"v": 1}'
        got = requests.get(f"{server.endpoint}/models/community/Org/other/config.json",
                           timeout=10)
        assert got.status_code == 200 and got.text == '{"v": 2}'
    assert [m.id for m in mirror.index().models] == ["Org/other", MODEL]
    assert mirror.index().generation == 2 and mirror.link_problem() is None
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    mirror.current_link.unlink()
    rc, out, _ = _cli("mirror", "prune", "--root", str(root))  # cron restores it too
    assert rc == 0 and "restored" in out and "generation 2" in out
    assert os.readlink(mirror.current_link) == "generations/2"


def test_a_dangling_current_link_is_restored_to_the_newest_readable_generation(
        tmp_path: Path) -> None:
    """current -> a generation no longer on the disk: the clean-up of never-flipped
    generations deleted every newer one, the live ones, and publish dropped every model."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "other", V2, model="Org/other")], root)  # 1
    publish([make_bundle(tmp_path, "v1", V1)], root)  # 2: both
    mirror = Mirror(root)
    assert mirror.prune(keep_seconds=0) == [1]
    (mirror.generations / "3").mkdir()  # its index.json does not read: not restored to
    (mirror.generations / "3" / "index.json").write_text("{broken")
    tmp_link = mirror.tmp / "dangling"
    os.symlink("generations/1", tmp_link)
    os.rename(tmp_link, mirror.current_link)
    assert mirror.index().generation == 2  # readers: the newest that reads
    assert "points to generations/1" in (mirror.link_problem() or "")
    publish([make_bundle(tmp_path, "v2", V2)], root)
    index = mirror.index()
    assert [m.id for m in index.models] == ["Org/other", MODEL]
    # the unreadable 3 was never served: cleared like a generation built but never flipped
    assert index.generation == 3 and os.readlink(mirror.current_link) == "generations/3"
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 2}'
    assert (root / "paddlenlp/models/community/Org/other/config.json").read_text() == \
        '{"v": 2}'


def test_a_lost_current_link_with_no_readable_generation_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    mirror = Mirror(root)
    mirror.current_link.unlink()
    (mirror.generation_dir(1) / "index.json").unlink()
    with pytest.raises(IntegrityError, match="no generation"):
        publish([make_bundle(tmp_path, "other", V2, model="Org/other")], root)
    assert sorted(p.name for p in mirror.generations.iterdir()) == ["1"]
    assert _cli("mirror", "list", "--root", str(root))[0] == 3


def test_remove_purge_unlinks_a_compromised_model_from_every_older_generation(
        tmp_path: Path) -> None:
    """Plain 'mirror remove' keeps the superseded generations whole for pinned clients, so
    anyone sending pb_generation=N fetched a compromised model for up to 15 minutes.
    '--purge' unlinks its files there at once; the other models stay served to pinned
    clients, and blobs no generation links any more leave the disk."""
    root = tmp_path / "root"
    other = "paddlenlp/models/community/Org/other"
    publish([make_bundle(tmp_path, "v1", V1),  # generation 1
             make_bundle(tmp_path, "other", V2, model="Org/other")], root)
    publish([make_bundle(tmp_path, "v2", V2)], root)  # 2: MODEL v2, and Org/other
    remove(root, [MODEL])  # 3: Org/other only; MODEL stays in 1 and 2 for pinned clients
    mirror = Mirror(root)
    with nginx(root, tmp_path / "nginx") as server:
        def get(path: str, generation: str) -> requests.Response:
            return requests.get(f"http://127.0.0.1:{server.port}/{path}",
                                cookies={"pb_generation": generation}, timeout=10)

        assert get(f"{URL_DIR}/config.json", "1").text == '{"v": 1}'  # the existing behaviour
        assert get(f"{URL_DIR}/config.json", "2").text == '{"v": 2}'
        rc, out, err = _cli("mirror", "remove", MODEL, "--purge", "--root", str(root))
        assert rc == 0 and "purged" in out, err  # a model already removed: only purged
        for generation in ("1", "2"):
            for name in V1:
                assert get(f"{URL_DIR}/{name}", generation).status_code == 404, (generation,
                                                                                 name)
            pinned = get(f"{other}/config.json", generation)  # the others stay served
            assert pinned.status_code == 200 and pinned.text == '{"v": 2}'
            assert pinned.cookies.get("pb_generation") == generation
        assert mirror.index().generation == 3  # nothing new to serve: no new generation
        blobs = {p.name for p in mirror.blobs.iterdir()}
        assert sha(V1["model_state.pdparams"]) not in blobs
        assert sha(V1["config.json"]) not in blobs
        assert blobs == {sha(c) for c in V2.values()}  # what Org/other serves

        # a model still served: a new generation without it, and every older one purged
        publish([make_bundle(tmp_path, "v1-again", V1)], root)  # 4
        assert get(f"{URL_DIR}/config.json", "4").text == '{"v": 1}'
        assert remove(root, [MODEL], purge=True).generation == 5
        assert get(f"{URL_DIR}/config.json", "4").status_code == 404
        assert get(f"{URL_DIR}/config.json", "5").status_code == 404
        assert get(f"{other}/config.json", "4").status_code == 200
    assert sha(V1["model_state.pdparams"]) not in {p.name for p in mirror.blobs.iterdir()}
    assert remove(root, [MODEL], purge=True).generation == 5  # again: nothing left to do


def test_remove_purge_keeps_a_url_another_model_of_that_generation_serves(
        tmp_path: Path) -> None:
    """Two built-in models may serve one fixed URL (same content): purging one must not take
    the file from the other's pinned clients; purging both takes it."""
    root = tmp_path / "root"
    shared = "https://bj.bcebos.com/paddlenlp/models/transformers/shared/vocab.txt"

    def lookup(model: ModelEntry) -> dict[str, str]:
        return {"vocab.txt": shared, "model_state.pdparams":
                f"https://bj.bcebos.com/paddlenlp/models/transformers/{model.id}/w.pdparams"}

    bundles = []
    for name in ("ernie-a", "ernie-b", "ernie-c"):
        home = tmp_path / f"h-{name}"
        make_model(home, name, {"vocab.txt": "a\n", "model_state.pdparams": name * 100})
        bundles.append(tmp_path / f"{name}.tar.zst")
        assert _main(["pack", name, "-o", str(bundles[-1]), "--home", str(home), "-q"]) == 0
    publish(bundles, root, lookup=lookup)  # generation 1
    old = Mirror(root).generation_dir(1)
    vocab = old / "paddlenlp/models/transformers/shared/vocab.txt"
    remove(root, ["ernie-a"], purge=True)  # 2
    assert not (old / "paddlenlp/models/transformers/ernie-a").exists()
    assert vocab.read_text() == "a\n"  # ernie-b and ernie-c serve it in generation 1 too
    assert (old / "paddlenlp/models/transformers/ernie-b/w.pdparams").exists()
    remove(root, ["ernie-b", "ernie-c"], purge=True)  # 3: nothing served
    assert not vocab.exists()  # only purged models served it in generations 1 and 2
    assert not any(Mirror(root).blobs.iterdir())


# -- review (rvs): hostile bundles, hurried administrators, crashes ----------------------------
def test_a_root_spelled_with_a_tilde_still_applies_the_mirrors_trust_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'--root=~/mirror' (bash leaves the tilde after '=' alone): the mirror was the expanded
    ~/mirror, but its trust policy was looked up at ./~/mirror/.paddle-bundle, not found, and
    an unsigned bundle was published into a mirror whose policy requires a signature."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "home" / "mirror"
    root.parent.mkdir()
    publish([make_bundle(tmp_path, "v1", V1)], root)
    policy = root / ".paddle-bundle" / "allowed_signers"
    policy.write_text("admin@site ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKSi\n")
    os.chmod(policy, 0o644)
    unsigned = make_bundle(tmp_path, "v2", V2)
    rc, _, err = _cli("mirror", "publish", str(unsigned), "--root=~/mirror", "-q")
    assert rc == 3 and "not signed" in err and str(policy) in err, err
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'


def test_publishing_again_repairs_a_served_list_check_found_damaged(tmp_path: Path) -> None:
    """check says the served list differs and 'publish the bundles ... again': publish only
    asked whether the list existed, said 'already published', and the damaged list stayed
    what offline-mode clients read."""
    root = tmp_path / "root"
    bundle = make_bundle(tmp_path, "v1", V1)
    publish([bundle], root)
    listed = root / "paddlenlp/.paddle-bundle/files.json"
    listed.write_text('{"version":1,"generation":1,"models":{},"files":{}}\n')
    rc, _, err = _cli("mirror", "check", "--root", str(root))
    assert rc == 3 and "files.json: differs" in err and "publish the bundles" in err
    result = publish([bundle], root)
    assert result.index.generation == 2
    assert json.loads(listed.read_bytes())["models"] == {MODEL: "community"}
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    assert publish([bundle], root).index.generation == 2  # intact now: nothing to do


def test_a_lost_current_link_is_never_restored_to_serve_a_purged_model(tmp_path: Path) -> None:
    """'remove --purge' unlinks a model from the older generations but their index.json still
    names it. With the served generation then lost, current was restored to such an older
    one: list and the served list offered the compromised model again, check told the
    administrator to publish it again, and every later publish failed on its deleted blobs."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1),
             make_bundle(tmp_path, "other", V2, model="Org/other")], root)  # 1
    remove(root, [MODEL], purge=True)  # 2: Org/other; MODEL unlinked from 1
    mirror = Mirror(root)
    shutil.rmtree(mirror.generation_dir(2))  # the served generation lost (by hand)
    rc, out, _ = _cli("mirror", "list", "--root", str(root))
    assert rc == 0 and "Org/other" in out and MODEL not in out
    rc, out, err = _cli("mirror", "check", "--root", str(root))
    assert rc == 3 and "Org/other: ok" in out and MODEL not in out + err, err
    assert "files.json" not in err and "current points to" in err, err  # only the link
    rc, out, _ = _cli("mirror", "prune", "--root", str(root))
    assert rc == 0 and "restored" in out, out
    index = mirror.index()
    assert [m.id for m in index.models] == ["Org/other"]
    listed = json.loads((root / "paddlenlp/.paddle-bundle/files.json").read_bytes())
    assert list(listed["models"]) == ["Org/other"] and not any(
        MODEL in path for path in listed["files"])
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    result = publish([make_bundle(tmp_path, "x", {"config.json": "x"}, model="Org/x")], root)
    assert [m.id for m in result.index.models] == ["Org/other", "Org/x"]


def test_nginx_config_refuses_a_symlinked_state_folder(tmp_path: Path) -> None:
    """publish, remove and prune refused a .paddle-bundle/generations moved behind a
    symlink, but nginx-config printed a configuration for it in which every pinned
    request (disable_symlinks on) is refused: clients failed mid-load after the first file."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    state = root / ".paddle-bundle"
    moved = tmp_path / "bigger-disk" / "generations"
    moved.parent.mkdir()
    shutil.move(str(state / "generations"), moved)
    (state / "generations").symlink_to(moved)
    rc, out, err = _cli("mirror", "nginx-config", "--root", str(root))
    assert rc == 2 and not out, out
    assert len(err.strip().splitlines()) == 1 and ".paddle-bundle/generations is a symlink" \
        in err, err


def test_check_and_remove_on_a_folder_where_nothing_was_published(tmp_path: Path) -> None:
    """A --root typo of an existing folder: check reported a damaged served list (exit 3)
    and told the administrator to publish 'the damaged models' again."""
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = _cli("mirror", "check", "--root", str(empty))
    assert rc == 0 and "nothing published" in out and not err, (out, err)
    typo = tmp_path / "typo"
    for root in (empty, typo):
        for args in (("remove", MODEL), ("remove", MODEL, "--purge")):
            rc, _, err = _cli("mirror", *args, "--root", str(root))
            assert rc in (1, 2) and len(err.strip().splitlines()) == 1, err
    assert not typo.exists() and not any(empty.iterdir())  # no mirror made by a failed remove


def test_a_delta_bundle_over_a_damaged_base_file_publishes_nothing(tmp_path: Path) -> None:
    """A delta bundle's base files are taken from the mirror's blobs: their existence was
    checked, not their content, so a damaged blob was served again in the new generation as
    'replaced' (install refuses a delta whose base changed; publish re-hashes the files it
    reuses from a bundle, but not these)."""
    root = tmp_path / "root"
    home = tmp_path / "home"
    make_model(home, MODEL, V1)
    full = tmp_path / "full.tar.zst"
    assert _main(["pack", MODEL, "-o", str(full), "--home", str(home), "-q"]) == 0
    publish([full], root)
    off = tmp_path / "off"
    assert _main(["install", str(full), "--home", str(off), "-q"]) == 0
    rc, state, _ = _cli("list", "--json", "--home", str(off))
    assert rc == 0
    (tmp_path / "state.json").write_text(state)
    (home / "models" / MODEL / "config.json").write_text('{"v": 3}')
    delta = tmp_path / "delta.tar.zst"
    assert _main(["pack", MODEL, "-o", str(delta), "--home", str(home), "--exclude-installed",
                  str(tmp_path / "state.json"), "-q"]) == 0
    weights = Mirror(root).blob(sha(V1["model_state.pdparams"]))
    weights.write_bytes(b"rot" * 50_000)  # damaged on the disk, as check would find it
    rc, _, err = _cli("mirror", "publish", str(delta), "--root", str(root), "-q")
    assert rc == 3 and "model_state.pdparams" in err and "Traceback" not in err, err
    assert Mirror(root).index().generation == 1
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'
    publish([full], root)  # the repair: the full bundle writes the damaged file anew
    assert [o.status for o in publish([delta], root).outcomes] == ["replaced"]
    assert (root / URL_DIR / "model_state.pdparams").read_bytes() == V1["model_state.pdparams"]
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 3}'


@pytest.mark.parametrize("command", [("publish", "BUNDLE", "-q"), ("list",), ("check",),
                                     ("remove", MODEL), ("prune",), ("nginx-config",)])
def test_an_empty_root_is_refused_not_taken_for_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]) -> None:
    """--root "$MIRROR" with the variable unset: the empty path was the current folder, and
    publish made a mirror there (cron's is / or the home), nginx-config served it."""
    bundle = make_bundle(tmp_path, "v1", V1)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = [str(bundle) if arg == "BUNDLE" else arg for arg in command]
    rc, out, err = _cli("mirror", *args, "--root", "")
    assert rc == 2 and "--root" in err and "empty" in err and not out, (out, err)
    assert not any(cwd.iterdir())


def test_a_pinned_client_finishes_its_model_while_current_is_lost(tmp_path: Path) -> None:
    """current deleted by hand while clients are loading: the configuration answered 404 to
    every request, pinned clients' included, so a load in progress failed half-way (the
    code said pinned clients were still served). Now only new clients get 404."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    with nginx(root, tmp_path / "nginx") as server:
        base = f"{server.endpoint}/models/community/{MODEL}"
        loading = requests.Session()
        assert loading.get(f"{base}/config.json", timeout=10).status_code == 200
        Mirror(root).current_link.unlink()
        got = loading.get(f"{base}/model_state.pdparams", timeout=10)
        assert got.status_code == 200 and got.content == V1["model_state.pdparams"]
        assert requests.get(f"{base}/config.json", timeout=10).status_code == 404
    rc, _, err = _cli("mirror", "check", "--root", str(root))
    assert rc == 3 and "nginx serves only clients pinned" in err, err


def test_a_served_file_deleted_on_the_disk_names_its_model_when_another_is_published(
        tmp_path: Path) -> None:
    """A served file deleted by hand: the next prune dropped its blob (no link left), and
    from then on every publish and remove of any other model failed with a bare 'No such
    file or directory: .../blobs/<sha>'. A blob deleted by hand while the served file is
    intact is put back from it; a file gone from both names its model and the repair."""
    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    mirror = Mirror(root)
    mirror.blob(sha(V1["config.json"])).unlink()  # blob gone, served file intact
    other = make_bundle(tmp_path, "other", {"config.json": "o"}, model="Org/other")
    assert publish([other], root).index.generation == 2
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    assert mirror.blob(sha(V1["config.json"])).read_text() == V1["config.json"]
    (root / URL_DIR / "model_state.pdparams").unlink()  # a stray clean-up: both gone
    mirror.prune(keep_seconds=0)
    third = make_bundle(tmp_path, "third", {"config.json": "3"}, model="Org/third")
    rc, _, err = _cli("mirror", "publish", str(third), "--root", str(root), "-q")
    assert rc == 3 and MODEL in err and "model_state.pdparams" in err, err
    assert "publish" in err and "mirror remove" in err and "blobs/" not in err, err
    assert mirror.index().generation == 2
    assert _cli("mirror", "publish", str(make_bundle(tmp_path, "v1", V1)), str(third),
                "--root", str(root), "-q")[0] == 0  # the repair
    assert _cli("mirror", "check", "--root", str(root))[0] == 0


def test_a_restore_to_a_purged_generation_with_a_file_gone_leaves_the_mirror_repairable(
        tmp_path: Path) -> None:
    """current restored to a generation a purge unlinked a model from, in which another
    model's file is gone from the disk too: building the generation without the purged
    model failed under the lock, before every command, the repairs included."""
    root = tmp_path / "root"
    other = make_bundle(tmp_path, "other", V2, model="Org/other")
    publish([make_bundle(tmp_path, "v1", V1), other], root)  # 1
    remove(root, [MODEL], purge=True)  # 2
    mirror = Mirror(root)
    shutil.rmtree(mirror.generation_dir(2))
    gone = "paddlenlp/models/community/Org/other/config.json"
    (mirror.generation_dir(1) / gone).unlink()
    mirror.blob(sha(V2["config.json"])).unlink()
    rc, out, err = _cli("mirror", "prune", "--root", str(root))
    assert rc == 0 and "restored" in out, err
    rc, out, _ = _cli("mirror", "list", "--root", str(root))
    assert rc == 0 and MODEL not in out and "Org/other" in out
    assert _cli("mirror", "publish", str(other), "--root", str(root), "-q")[0] == 0
    assert [m.id for m in mirror.index().models] == ["Org/other"]
    assert _cli("mirror", "check", "--root", str(root))[0] == 0


def test_a_bundles_html_is_never_served_as_a_page_of_the_mirrors_site(tmp_path: Path) -> None:
    """nginx.conf of Debian and most distributions includes mime.types at http level, which
    the server block inherited: a bundle's .html or .svg went out as text/html or
    image/svg+xml, a page (script included) on the mirror's origin, where a browser holds
    the basic-auth credentials. Every file is now bytes, never sniffed."""
    root = tmp_path / "root"
    page = "<html><script>alert(document.domain)</script></html>"
    publish([make_bundle(tmp_path, "v1", {"config.json": "{}", "index.html": page,
                                          "logo.svg": "<svg onload='alert(1)'/>"})], root)
    prefix = tmp_path / "nginx"
    port = free_port()
    conf = nginx_files(prefix, server_config(root, listen=f"127.0.0.1:{port}"))
    conf.write_text(conf.read_text().replace(
        "http {", "http {\n  types { text/html html; image/svg+xml svg; application/json json; }"))
    process = subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", str(conf)],
                               stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        base = f"http://127.0.0.1:{port}/{URL_DIR}"
        for name in ("index.html", "logo.svg", "config.json"):
            got = requests.get(f"{base}/{name}", timeout=10)
            assert got.status_code == 200, name
            assert got.headers["Content-Type"] == "application/octet-stream", (name, got.headers)
            assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert requests.get(f"{base}/index.html", timeout=10).text == page
    finally:
        process.terminate()
        process.wait(10)


def test_a_blob_at_the_file_systems_link_limit_is_copied_not_a_dead_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small file many models share (a '{}' tokenizer config) is linked once per model per
    generation kept: at ext4's 65,000 links (measured) every publish and remove failed with
    'the mirror root must be one file system that supports hard links', until enough
    generations were pruned, or for good. A blob at the limit is now copied to a fresh one."""
    import errno

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)
    mirror = Mirror(root)
    shared = mirror.blob(sha("{}"))
    real_link = os.link

    def limited(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if os.stat(str(src)).st_nlink >= 3:  # ext4 stops at 65,000: the same, sooner
            raise OSError(errno.EMLINK, os.strerror(errno.EMLINK), str(src), None, str(dst))
        real_link(str(src), str(dst))

    monkeypatch.setattr(os, "link", limited)
    other = make_bundle(tmp_path, "other", {"config.json": "o", "tokenizer_config.json": "{}"},
                        model="Org/other")
    rc, _, err = _cli("mirror", "publish", str(other), "--root", str(root), "-q")
    assert rc == 0, err
    assert _cli("mirror", "check", "--root", str(root))[0] == 0
    served = [root / URL_DIR / "tokenizer_config.json",
              root / "paddlenlp/models/community/Org/other/tokenizer_config.json"]
    assert all(p.read_text() == "{}" for p in served)
    assert shared.read_text() == "{}"
    assert (mirror.generation_dir(1) / URL_DIR / "tokenizer_config.json").read_text() == "{}"


def test_a_full_disk_while_publishing_is_named_and_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while a blob was written said only 'No space left on device' (no disk named;
    measured with strace -e inject), and left the partial blob and the half-built
    generation in .paddle-bundle/tmp, taking space until the next command."""
    import errno

    import bundler.mirror.tree as tree

    root = tmp_path / "root"
    publish([make_bundle(tmp_path, "v1", V1)], root)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tree, "atomic_write_bytes", full)
    rc, _, err = _cli("mirror", "publish", str(make_bundle(tmp_path, "v2", V2)), "--root",
                      str(root), "-q")
    assert rc == 1 and str(root) in err and "space" in err and "nothing" in err, err
    assert len(err.strip().splitlines()) == 1, err
    monkeypatch.undo()
    mirror = Mirror(root)
    assert not list(mirror.tmp.iterdir())
    assert (root / URL_DIR / "config.json").read_text() == '{"v": 1}'
    assert _cli("mirror", "check", "--root", str(root))[0] == 0


def test_the_served_list_names_only_models_with_something_served() -> None:
    """A model with nothing servable (a bundle of hub models) was listed in files.json, so an
    offline-mode client could take it for one the mirror serves."""
    from bundler.mirror.tree import Index, PublishedModel, ServedFile, served_list

    served = PublishedModel("Org/a", "community",
                            (ServedFile(f"{URL_DIR}/config.json", sha("{}"), 2),), "b", "m",
                            None, "t")
    empty = PublishedModel("hf:Org/b", "hf", (), "b", "m", None, "t",
                           ("hf:Org/b: nothing of it can be served",))
    listed = json.loads(served_list(Index(3, "t", (served, empty))))
    assert listed["models"] == {"Org/a": "community"}
    assert listed["files"] == {f"{URL_DIR}/config.json"[len("paddlenlp/"):]: [sha("{}"), 2]}
