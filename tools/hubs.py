"""Local stand-ins for the Hugging Face hub and AI Studio, for tests and demos.

PaddleNLP 3.0.0b4 loads ``from_pretrained(ID, from_hf_hub=True)`` through huggingface_hub
and ``from_pretrained(ID, from_aistudio=True)`` through its own AI Studio client
(``paddlenlp/utils/download/aistudio_hub_download.py``; aistudio-sdk's ``hub.download`` is not
on that path). One HTTP server on 127.0.0.1 speaks exactly the requests those two clients
send, read from their code:

Hugging Face hub (``HF_ENDPOINT=<base>/hf``), huggingface_hub's ``get_hf_file_metadata`` and
``http_get``::

    HEAD|GET /hf/{repo_id}/resolve/{revision}/{path}
        200: X-Repo-Commit (40 hex), ETag ("<sha256>", the blob's name), Content-Length
        404: X-Error-Code RepoNotFound | RevisionNotFound | EntryNotFound

AI Studio (``AISTUDIO_ENDPOINT=<base>/aistudio``), PaddleNLP's ``get_aistudio_file_metadata``
and ``http_get``::

    GET /aistudio/api/v1/repos/{org}/{name}/contents/{path}[?ref=REV]
        200: {"last_commit_sha", "sha" (the blob's name), "git_url", "size"}; 404 otherwise
    GET /aistudio/api/v1/repos/{org}/{name}/media/{path}[?ref=REV]   the bytes

Models are served from ``ROOT/hf/<repo_id>/...`` and ``ROOT/aistudio/<org>/<name>/...``
(:func:`place` copies a folder there). Both endpoint variables are read when the client
libraries are imported, so set them (:meth:`HubServer.env`) in the environment of the process
before it imports paddlenlp.

The server runs in a thread of the calling process; :meth:`HubServer.requests` lists what was
asked, so a test can assert that a load really went through the stand-in.

CLI::

    python tools/hubs.py serve ROOT [--port N]      # prints the env lines, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HF_PREFIX = "/hf"
AISTUDIO_PREFIX = "/aistudio"
DEFAULT_BRANCH = {"hf": "main", "aistudio": "master"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


def place(root: Path, kind: str, repo_id: str, folder: Path) -> Path:
    """Copy the model folder ``folder`` to where the stand-in serves ``kind:repo_id``."""
    if kind not in DEFAULT_BRANCH:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_BRANCH)}, not {kind!r}")
    dest = Path(root) / kind / repo_id
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest)
    return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def repo_commit(folder: Path) -> str:
    """A stable 40-hex commit id for a served repository: a digest of its names and bytes."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(_sha256(path).encode())
    return digest.hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        return None  # recorded in .requests instead

    def _send(self, status: int, headers: dict[str, str], body: bytes | Path = b"") -> None:
        self.server.log.append(Request(self.command, self.path, status))
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        if isinstance(body, Path):
            with open(body, "rb") as fh:
                shutil.copyfileobj(fh, self.wfile)
        else:
            self.wfile.write(body)

    def _missing(self, code: str) -> None:
        self._send(404, {"X-Error-Code": code, "X-Error-Message": code})

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if path.startswith(HF_PREFIX + "/") and "/resolve/" in path:
            self._hf(path[len(HF_PREFIX) + 1:])
        elif path.startswith(AISTUDIO_PREFIX + "/api/v1/repos/") and self.command == "GET":
            query = urllib.parse.parse_qs(url.query)
            self._aistudio(path[len(AISTUDIO_PREFIX + "/api/v1/repos/"):],
                           query.get("ref", ["master"])[0])
        else:
            self._send(404, {}, b"not found")

    def _repo(self, kind: str, repo_id: str, revision: str) -> Path | None:
        """The served folder of ``repo_id`` when ``revision`` names its only revision."""
        if ".." in repo_id.split("/"):
            return None
        folder = self.server.root / kind / repo_id
        if not folder.is_dir():
            self._missing("RepoNotFound")
            return None
        if revision not in (DEFAULT_BRANCH[kind], repo_commit(folder)):
            self._missing("RevisionNotFound")
            return None
        return folder

    def _file(self, folder: Path, rel: str) -> Path | None:
        parts = rel.split("/")
        path = folder.joinpath(*parts)
        if not rel or ".." in parts or not path.is_file():
            self._missing("EntryNotFound")
            return None
        return path

    def _hf(self, rest: str) -> None:
        repo_id, _, tail = rest.partition("/resolve/")
        revision, _, rel = tail.partition("/")
        folder = self._repo("hf", repo_id, revision)
        if folder is None:
            return
        path = self._file(folder, rel)
        if path is None:
            return
        self._send(200, {"X-Repo-Commit": repo_commit(folder), "ETag": f'"{_sha256(path)}"',
                         "Content-Type": "application/octet-stream"}, path)

    def _aistudio(self, rest: str, revision: str) -> None:
        parts = rest.split("/", 3)
        if len(parts) < 4 or parts[2] not in ("contents", "media"):
            self._send(404, {}, b"not found")
            return
        org, name, what, rel = parts
        folder = self._repo("aistudio", f"{org}/{name}", revision)
        if folder is None:
            return
        path = self._file(folder, rel)
        if path is None:
            return
        if what == "media":
            self._send(200, {"Content-Type": "application/octet-stream"}, path)
            return
        meta = {"last_commit_sha": repo_commit(folder), "sha": _sha256(path),
                "git_url": f"{self.server.base_url}{AISTUDIO_PREFIX}/api/v1/repos/{org}/{name}"
                           f"/media/{rel}",
                "size": path.stat().st_size, "name": rel.rsplit("/", 1)[-1], "path": rel}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(meta).encode())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.root = root
        self.log: list[Request] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@dataclass
class HubServer:
    """A running stand-in; use as a context manager, or call :meth:`stop`."""

    root: Path
    _server: _Server
    _thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def hf_endpoint(self) -> str:
        return self.base_url + HF_PREFIX

    @property
    def aistudio_endpoint(self) -> str:
        return self.base_url + AISTUDIO_PREFIX

    def env(self) -> dict[str, str]:
        """Environment that points huggingface_hub and PaddleNLP's AI Studio client here."""
        return {"HF_ENDPOINT": self.hf_endpoint, "AISTUDIO_ENDPOINT": self.aistudio_endpoint,
                "HF_HUB_DISABLE_TELEMETRY": "1"}

    def requests(self) -> list[Request]:
        return list(self._server.log)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(root: Path | str, *, host: str = "127.0.0.1", port: int = 0) -> HubServer:
    """Serve ``root`` (see the module docstring for its layout) on ``host:port``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"hub root {root} is not a directory")
    server = _Server(root, host, port)
    thread = threading.Thread(target=server.serve_forever, name="hubs", daemon=True)
    thread.start()
    return HubServer(root, server, thread)


def _serve_forever(root: Path, port: int) -> Iterator[str]:
    with start(root, port=port) as hub:
        for key, value in hub.env().items():
            yield f"export {key}={value}"
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="serve ROOT until Ctrl-C; prints the env lines")
    p.add_argument("root", type=Path)
    p.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    for line in _serve_forever(args.root, args.port):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
