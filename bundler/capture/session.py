"""The parent side of a capture: the environment, the start-up hook, running, merging reports.

Nothing here imports Paddle. The command runs as the user typed it, in the current directory,
with its output and exit code passing through; only its environment changes:

* ``PADDLE_BUNDLE_CAPTURE=<folder>``: each recording process writes
  ``<folder>/<pid>-<random>.json``;
* ``PYTHONPATH=<hook folder>:...``: the hook folder holds a ``sitecustomize.py`` that every
  Python imports at start-up (unless started with ``-S``, ``-I`` or ``-E``) and a link to the
  ``bundler`` package (only that package, not the site-packages around it), so a Python
  without paddle-bundle installed is recorded too;
* ``PPNLP_HOME=<home>``; with a mirror, ``PPNLP_ENDPOINT=<mirror>`` and
  ``PADDLE_BUNDLE_FETCH_MIRROR=<mirror>``; never ``PADDLE_BUNDLE_OFFLINE``;
* the running paddle-bundle's virtual environment first on ``PATH``, as ``paddle-bundle run``
  does, so ``python`` is the Python paddle-bundle was installed with.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from bundler._offline import venv_first_on_path
from bundler.capture import ENV_CAPTURE
from bundler.capture.recorder import ENV_MIRROR, KIND_COMMUNITY, REPORT_VERSION
from bundler.errors import BundleError, UsageError

#: The start-up hook, written as ``sitecustomize.py`` into a folder first on ``PYTHONPATH``.
#: The folder holds nothing else importable: paddle-bundle's own package sits one level down
#: (:data:`PRIVATE_DIR`), put on ``sys.path`` only while the hook imports it, so a package of
#: the user's that is also called ``bundler`` is not shadowed by a folder on PYTHONPATH. A
#: failing hook says so in one line and never keeps the user's sitecustomize from running.
HOOK_SOURCE = '''\
"""paddle-bundle: switch fetch's recorder (or offline mode) on in every Python the command
starts, then run the sitecustomize this file shadows, if there is one."""


def _paddle_bundle_start():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    private = os.path.join(here, "_paddle_bundle_private")
    try:
        offline = os.environ.get("PADDLE_BUNDLE_OFFLINE", "").strip().lower() not in (
            "", "0", "false", "no", "off")
        if os.environ.get("PADDLE_BUNDLE_CAPTURE") or offline:
            sys.path.insert(0, private)
            try:
                if os.environ.get("PADDLE_BUNDLE_CAPTURE"):
                    import bundler.capture.hook

                    bundler.capture.hook.activate()
                else:
                    import bundler.offline  # noqa: F401
            finally:
                sys.path[:] = [p for p in sys.path if p != private]
    except Exception as exc:  # noqa: BLE001 - one line, and the program still starts
        sys.stderr.write("paddle-bundle: the start-up hook failed (%s: %s); PaddleNLP is "
                         "not switched %s in this process\\n"
                         % (type(exc).__name__, exc,
                            "to recording" if os.environ.get("PADDLE_BUNDLE_CAPTURE")
                            else "offline"))
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_paddle_bundle_start()
'''

#: The folder, inside the hook folder, that holds the link to the ``bundler`` package.
PRIVATE_DIR = "_paddle_bundle_private"

#: Variables a command must not inherit from the capture into its proof, or the other way.
_PADDLE_BUNDLE_SWITCHES = (ENV_CAPTURE, ENV_MIRROR, "PADDLE_BUNDLE_OFFLINE",
                           "PADDLE_BUNDLE_OFFLINE_REPORT")


def write_hook(folder: Path) -> Path:
    """Write the start-up hook into ``folder`` (created), with the ``bundler`` package in its
    private subfolder (a symbolic link, or a copy where links cannot be made); return the
    folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK_SOURCE, encoding="utf-8")
    package = Path(__file__).resolve().parent.parent
    private = folder / PRIVATE_DIR
    private.mkdir(exist_ok=True)
    try:
        (private / "bundler").symlink_to(package, target_is_directory=True)
    except OSError:
        shutil.copytree(package, private / "bundler",
                        ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def base_environment(hook_folder: Path, base: Mapping[str, str] | None = None
                     ) -> dict[str, str]:
    """``base`` (default: this process's environment) without paddle-bundle's switches, with
    the hook folder first on ``PYTHONPATH`` and this venv first on ``PATH``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in _PADDLE_BUNDLE_SWITCHES}
    entries = [str(hook_folder), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(e for e in entries if e)
    venv_first_on_path(env)
    return env


def capture_environment(home: Path, reports: Path, hook_folder: Path,
                        mirror: str | None = None) -> dict[str, str]:
    env = base_environment(hook_folder)
    env[ENV_CAPTURE] = str(reports)
    env["PPNLP_HOME"] = str(home)
    if mirror:
        env[ENV_MIRROR] = mirror
        env["PPNLP_ENDPOINT"] = mirror.rstrip("/")
    return env


def run_command(command: Sequence[str], env: Mapping[str, str], *,
                stdout: IO[Any] | None = None, stderr: IO[Any] | None = None,
                cwd: Path | None = None, interrupt_fails: bool = True) -> int:
    """Run ``command`` and return its exit code (128 + N when killed by signal N, as shells
    report it). Ctrl-C reaches the command too and is waited out; then, with
    ``interrupt_fails`` (fetch's capture and proof), :class:`KeyboardInterrupt` is raised
    whatever the command's exit code: a server stopped by Ctrl-C that exits 0 did not prove
    anything. Without it (``paddle-bundle run``) the command's exit decides."""
    if not command:
        raise UsageError("no command given", hint="paddle-bundle fetch -o OUT -- python app.py")
    try:
        proc = subprocess.Popen(list(command), env=dict(env), stdin=None, stdout=stdout,
                                stderr=stderr, cwd=cwd)
    except FileNotFoundError:
        raise BundleError(f"command not found: {command[0]}",
                          hint="check its spelling, or give its full path") from None
    except PermissionError:
        raise BundleError(f"cannot run {command[0]}: permission denied",
                          hint="make it executable, or run it through its interpreter") from None
    interrupted = False
    while True:
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            continue
        except BaseException:  # SIGTERM / SIGHUP made into SystemExit: the command goes too
            _terminate(proc)
            raise
        if interrupted and interrupt_fails:
            raise KeyboardInterrupt
        return 128 - code if code < 0 else code


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Pass SIGTERM on to the command and every process it started that is still its
    descendant (``sh run.sh``'s Python went on running, orphaned, after the shell was
    stopped); kill the command if it has not exited after ``grace`` s."""
    import signal

    if proc.poll() is None:
        family = _descendants(proc.pid)  # before the shell goes and its children re-parent
        proc.terminate()
        for pid in family:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, theirs, ...), from ``/proc``; none elsewhere."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def capture(command: Sequence[str], home: Path, work: Path,
            mirror: str | None = None) -> tuple[int, Path]:
    """Run ``command`` with the recorder in every Python it starts; its exit code and the
    folder of the reports of every process that recorded something (:func:`merge` them:
    only after looking at the exit code, which a damaged report must not hide)."""
    reports = work / "reports"
    reports.mkdir(parents=True)
    env = capture_environment(home, reports, write_hook(work / "hook"), mirror)
    code = run_command(command, env)
    return code, reports


def merge(reports: Path) -> dict[str, Any]:
    """One report (the format :func:`bundler.fetch.parse_report` reads) from every process's:
    files united (downloaded wins over cached, a built-in or Taskflow kind over community),
    absent names united per model folder, failures in order."""
    files: dict[str, dict[str, str]] = {}
    absent: dict[str, set[str]] = {}
    failures: list[dict[str, str]] = []
    merged: dict[str, Any] = {"version": REPORT_VERSION, "endpoint": "", "paddlenlp": "",
                              "paddle": "", "processes": 0}
    for path in sorted(reports.glob("*.json"), key=lambda p: p.name):  # not *.tmp: unfinished
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"fetch: cannot read the recorder's report {path.name}: {exc}",
                              hint="please report this with PADDLE_BUNDLE_DEBUG=1") from None
        if not isinstance(raw, dict) or raw.get("version") != REPORT_VERSION or not (
                isinstance(raw.get("files", []), list)
                and isinstance(raw.get("absent") or {}, dict)
                and isinstance(raw.get("failures", []), list)):
            raise BundleError(f"fetch: the recorder's report {path.name} is malformed",
                              hint="please report this with PADDLE_BUNDLE_DEBUG=1")
        merged["processes"] += 1
        for key in ("endpoint", "paddlenlp", "paddle"):
            if not merged[key] and isinstance(raw.get(key), str):
                merged[key] = raw[key]
        for item in raw.get("files", []):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                continue
            entry = files.setdefault(item["path"], {k: str(item.get(k) or "") for k in
                                                    ("root", "how", "kind", "url")})
            if item.get("how") == "downloaded":
                entry["how"] = "downloaded"
            if item.get("kind") not in (None, "", KIND_COMMUNITY):
                entry["kind"] = str(item["kind"])
            if item.get("url") and not entry["url"]:
                entry["url"] = str(item["url"])
        for root, names in (raw.get("absent") or {}).items():
            if isinstance(names, list):
                absent.setdefault(str(root), set()).update(str(n) for n in names)
        failures.extend(f for f in raw.get("failures", []) if isinstance(f, dict))
    merged["files"] = [{"path": p, **v} for p, v in sorted(files.items())]
    merged["absent"] = {root: sorted(names) for root, names in sorted(absent.items())}
    merged["failures"] = failures
    merged["error"] = first_failure(failures)
    return merged


#: The order in which failures explain a failed capture (see ``_fetch_child.judge``).
FAILURE_ORDER = ("unsupported", "network", "download", "http", "probe")


def first_failure(failures: Sequence[Mapping[str, str]]) -> dict[str, str] | None:
    for kind in FAILURE_ORDER:
        for failure in failures:
            if failure.get("kind") == kind:
                return {"kind": kind, "message": str(failure.get("message", "")),
                        "url": str(failure.get("url", "")), "model": ""}
    return None
