"""A local stand-in for PaddleNLP's BOS model server, for tests and demos.

PaddleNLP downloads community models from
``{PPNLP_ENDPOINT}/models/community/<org>/<name>/<file>`` (default endpoint
``https://bj.bcebos.com/paddlenlp``), probing optional files with ``HEAD`` and
fetching with ``GET``.  Serving a tree built by ``tools/tiny_models.py`` with
Python's ``http.server`` on 127.0.0.1 reproduces that protocol closely enough
to test "fetch online" without internet.

The server runs in a *subprocess* (this file re-executed with ``_child``) rather
than a thread, because tests need to kill it abruptly in the middle of a
response (``MirrorServer.kill``) -- a thread cannot be killed, and a process
kill closes the socket exactly like a network failure does.  The child picks a
free port itself (binding port 0) and reports it, so there is no
find-a-port-then-bind race.  Its access log (the standard ``http.server``
format) goes to a file that ``MirrorServer.requests()`` parses, so tests can
assert which URLs PaddleNLP asked for and which got 404.

Two knobs make "mid-download" reproducible with tiny files:

* ``rate``: throttle bodies to N bytes/s, so a kill lands mid-transfer;
* ``faults``: ``"drop:BYTES[:SUFFIX]"`` closes the connection after BYTES of the
  first matching GET; ``"stall:BYTES[:SUFFIX]"`` sends BYTES and then goes silent
  for ``stall_seconds`` (PaddleNLP's read timeout is 10 s).

Unlike ``python -m http.server`` the handler answers ``Range: bytes=A-[B]``
with 206, as BOS does, because PaddleNLP relies on it when it resumes a stalled
download: against a Range-ignoring server it appends the whole file to the
partial one and caches the corrupt result (see FINDINGS-paddlenlp.md).
``honor_range=False`` (CLI ``--ignore-range``) restores the plain
``http.server`` behaviour to reproduce that.

The same tree also serves PaddleNLP's *fixed* URLs: built-in models' resources
(``https://bj.bcebos.com/paddlenlp/models/transformers/...``) and Taskflow's static files
(``https://paddlenlp.bj.bcebos.com/taskflow/...``) live in one BOS bucket, ``paddlenlp``,
addressed path-style or host-style, and ``ROOT/paddlenlp/`` is that bucket: put a file at
``bucket_path(root, url)`` and ``paddle-bundle fetch --mirror <server.endpoint>`` (which
rewrites both spellings of the bucket to the mirror) downloads it from here. Community models
are in the same bucket, below ``models/community/``, so one mirror URL serves all three.

Library use::

    from tools.mirror import serve, start, paddlenlp_env
    with serve(root) as endpoint:          # endpoint = http://127.0.0.1:PORT/paddlenlp
        env = {**os.environ, **paddlenlp_env(endpoint), "PPNLP_HOME": home}
        subprocess.run([...], env=env)

    with start(root, rate=20_000) as srv:  # MirrorServer: .endpoint .requests() .kill()
        ...

CLI::

    python tools/mirror.py serve ROOT [--port N] [--rate BPS]   # foreground, Ctrl-C stops
    python tools/mirror.py start ROOT --state FILE [...]        # background; prints env lines
    python tools/mirror.py stop --state FILE
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

#: Path prefix (below the server root) that stands for https://bj.bcebos.com/paddlenlp.
#: Must match tools/tiny_models.py ENDPOINT_SUBDIR.
ENDPOINT_SUBDIR = "paddlenlp"

_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


#: The two spellings of PaddleNLP's BOS bucket (bundler/_bucket.py; this tool stays stdlib-only).
BUCKET_PREFIXES = ("https://bj.bcebos.com/paddlenlp/", "http://bj.bcebos.com/paddlenlp/",
                   "https://paddlenlp.bj.bcebos.com/", "http://paddlenlp.bj.bcebos.com/")


def bucket_path(root: Path | str, url: str) -> Path:
    """Where the mirror of ``root`` serves the fixed URL ``url`` of PaddleNLP's bucket."""
    for prefix in BUCKET_PREFIXES:
        if url.startswith(prefix):
            rel = url[len(prefix):]
            if not rel or any(p in ("", ".", "..") for p in rel.split("/")):
                break
            return Path(root) / ENDPOINT_SUBDIR / rel
    raise ValueError(f"{url!r} is not a file URL of PaddleNLP's bucket")


@dataclass(frozen=True)
class Request:
    """One line of the server's access log."""

    method: str
    path: str
    status: int


def paddlenlp_env(endpoint: str) -> dict[str, str]:
    """Environment that points PaddleNLP at a mirror ``endpoint``.

    ``PPNLP_ENDPOINT`` drives the current download code
    (``paddlenlp/utils/download/bos_download.py``); ``COMMUNITY_MODEL_PREFIX``
    drives the older ``paddlenlp_hub_download`` in ``transformers/utils.py``.
    Both are read once, when paddlenlp is imported, so they must be set in the
    environment of the process *before* ``import paddlenlp``.
    """
    endpoint = endpoint.rstrip("/")
    return {
        "PPNLP_ENDPOINT": endpoint,
        "COMMUNITY_MODEL_PREFIX": f"{endpoint}/models/community",
    }


@dataclass
class MirrorServer:
    """Handle on a running mirror subprocess."""

    root: Path
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    _owns_log: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Value for ``PPNLP_ENDPOINT``, and for ``paddle-bundle fetch --mirror``."""
        return f"{self.base_url}/{ENDPOINT_SUBDIR}"

    def env(self) -> dict[str, str]:
        return paddlenlp_env(self.endpoint)

    def requests(self) -> list[Request]:
        """Requests served so far, in order, parsed from the access log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [
            Request(m["method"], m["path"], int(m["status"]))
            for m in (_LOG_LINE.search(line) for line in text.splitlines())
            if m
        ]

    def wait_for_request(
        self, path_suffix: str, method: str = "GET", timeout: float = 30.0
    ) -> Request:
        """Block until a request for a path ending in ``path_suffix`` was logged.

        ``http.server`` logs a request when it sends the status line, i.e. before
        the body, so with ``rate`` set this returns while the body is in flight.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for req in self.requests():
                if req.method == method and req.path.endswith(path_suffix):
                    return req
            if self.process.poll() is not None:
                raise RuntimeError(f"mirror exited with {self.process.returncode}")
            time.sleep(0.02)
        raise TimeoutError(f"no {method} ...{path_suffix} within {timeout}s")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server: open connections are cut like a network failure."""
        if self.alive():
            self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate politely, escalating to kill."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._owns_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> MirrorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    root: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rate: int | None = None,
    faults: Sequence[str] = (),
    stall_seconds: float = 30.0,
    honor_range: bool = True,
    log_path: Path | str | None = None,
    startup_timeout: float = 10.0,
    detach: bool = False,
) -> MirrorServer:
    """Start a mirror of ``root`` in a subprocess and return once it listens.

    ``port=0`` lets the child pick a free port.  If ``log_path`` is None a
    temporary file is used and removed by ``stop()``; ``"-"`` leaves the access
    log on this process's stderr (then ``requests()`` is empty).  An existing
    log file is truncated so ``requests()`` only sees this server.  ``detach`` puts the child
    in its own session so it outlives the CLI ``start`` command and its
    terminal's Ctrl-C.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"mirror root {root} is not a directory")
    for spec in faults:
        _parse_fault(spec)  # fail in the parent, with a traceback that makes sense
    owns_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="mirror-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    cmd = [
        sys.executable,
        "-u",
        str(Path(__file__).resolve()),
        "_child",
        str(root),
        "--host",
        host,
        "--port",
        str(port),
        "--stall-seconds",
        str(stall_seconds),
    ]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    if not honor_range:
        cmd.append("--ignore-range")
    for spec in faults:
        cmd += ["--fault", spec]
    with contextlib.ExitStack() as stack:
        log = None if str(log_path) == "-" else stack.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    assert proc.stdout is not None
    line = _readline(proc.stdout, startup_timeout)
    if not line.startswith(b"PORT "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"mirror did not start (got {line!r}); see {log_path}")
    proc.stdout.close()
    return MirrorServer(root, host, int(line.split()[1]), log_path, proc, owns_log)


@contextlib.contextmanager
def serve(root: Path | str, **kwargs: Any) -> Iterator[str]:
    """Run a mirror for the duration of the block; yields the PPNLP_ENDPOINT URL.

    Use ``start()`` instead when the test needs the access log or ``kill()``.
    """
    with start(root, **kwargs) as server:
        yield server.endpoint


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return b""
        return stream.readline()
    finally:
        sel.close()


# --------------------------------------------------------------------------- #
# Child process: the HTTP server itself (standard library only).
# --------------------------------------------------------------------------- #


@dataclass
class _Fault:
    kind: str  # "drop" | "stall"
    after: int
    suffix: str
    fired: bool = False


def _parse_fault(spec: str) -> _Fault:
    kind, _, rest = spec.partition(":")
    after, _, suffix = rest.partition(":")
    if kind not in ("drop", "stall") or not after.isdigit():
        raise ValueError(f"fault must be drop:BYTES[:SUFFIX] or stall:BYTES[:SUFFIX], got {spec!r}")
    return _Fault(kind, int(after), suffix)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with optional throttling and injected faults."""

    rate: int | None = None
    faults: list[_Fault] = []
    stall_seconds: float = 30.0
    honor_range: bool = False
    _lock = threading.Lock()
    _remaining: int | None = None  # body bytes left to send for a 206 answer

    def send_head(self) -> Any:
        """Answer ``Range: bytes=A-[B]`` with 206 when ``honor_range`` is set."""
        self._remaining = None
        spec = self.headers.get("Range", "")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", spec.strip())
        path = self.translate_path(self.path)
        if not (self.honor_range and m and os.path.isfile(path)):
            return super().send_head()
        size = os.path.getsize(path)
        first = int(m[1])
        last = min(int(m[2]), size - 1) if m[2] else size - 1
        if first >= size or last < first:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by SimpleHTTPRequestHandler
        f.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = last - first + 1
        return f

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        super().log_message(format, *args)
        sys.stderr.flush()

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.fired and self.path.endswith(fault.suffix):
                    fault.fired = True
                    return fault
        return None

    def copyfile(self, source: Any, outputfile: Any) -> None:
        fault = self._take_fault() if self.command == "GET" else None
        if self.rate is None and fault is None and self._remaining is None:
            super().copyfile(source, outputfile)
            return
        chunk = max(1, min(8192, self.rate // 20)) if self.rate else 8192
        sent = 0
        while True:
            if fault is not None and sent >= fault.after:
                self._fire(fault, outputfile)
                return
            size = chunk if fault is None else min(chunk, fault.after - sent)
            if self._remaining is not None:
                size = min(size, self._remaining - sent)
                if size <= 0:
                    return
            data = source.read(size)
            if not data:
                return
            outputfile.write(data)
            outputfile.flush()
            sent += len(data)
            if self.rate:
                time.sleep(len(data) / self.rate)

    def _fire(self, fault: _Fault, outputfile: Any) -> None:
        self.log_message("fault %s after %d bytes on %s", fault.kind, fault.after, self.path)
        if fault.kind == "stall":
            outputfile.flush()
            time.sleep(self.stall_seconds)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)  # socket.SHUT_RDWR


def _child(args: argparse.Namespace) -> int:
    _Handler.rate = args.rate
    _Handler.faults = [_parse_fault(s) for s in args.fault]
    _Handler.stall_seconds = args.stall_seconds
    _Handler.honor_range = not args.ignore_range
    handler = partial(_Handler, directory=str(args.root))
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="mirror root (contains paddlenlp/models/community/...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--rate", type=int, default=None, help="throttle bodies to this many bytes/s")
    p.add_argument(
        "--fault", action="append", default=[], help="drop:BYTES[:SUFFIX] or stall:BYTES[:SUFFIX]"
    )
    p.add_argument("--stall-seconds", type=float, default=30.0)
    p.add_argument(
        "--ignore-range",
        action="store_true",
        help="answer Range requests with the whole file (plain http.server behaviour)",
    )


def _print_env(server: MirrorServer) -> None:
    for key, value in server.env().items():
        print(f"export {key}={value}")
    print(f"# access log: {server.log_path}  pid: {server.process.pid}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="run in the foreground until Ctrl-C; access log on stderr")
    _add_server_args(p)
    p = sub.add_parser("start", help="start in the background and record it in --state")
    _add_server_args(p)
    p.add_argument("--state", type=Path, required=True, help="JSON file recording pid/port/log")
    p.add_argument("--log", type=Path, default=None, help="access log (default: STATE with .log)")
    p = sub.add_parser("stop", help="stop a server started with `start`")
    p.add_argument("--state", type=Path, required=True)
    p = sub.add_parser("_child", help=argparse.SUPPRESS)
    _add_server_args(p)
    args = parser.parse_args(argv)

    if args.cmd == "_child":
        return _child(args)
    if args.cmd == "stop":
        state = json.loads(args.state.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGTERM)
        args.state.unlink()
        print(f"stopped pid {state['pid']}")
        return 0

    common = dict(
        host=args.host,
        port=args.port,
        rate=args.rate,
        faults=args.fault,
        stall_seconds=args.stall_seconds,
        honor_range=not args.ignore_range,
    )
    if args.cmd == "start":
        log = args.log or args.state.with_suffix(".log")
        server = start(args.root, log_path=log, detach=True, **common)
        args.state.write_text(
            json.dumps(
                {
                    "pid": server.process.pid,
                    "port": server.port,
                    "endpoint": server.endpoint,
                    "log": str(log),
                }
            )
        )
        _print_env(server)
        return 0

    server = start(args.root, log_path="-", **common)
    _print_env(server)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
