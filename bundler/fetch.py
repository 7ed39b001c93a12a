"""Fetch: have PaddleNLP download what loading a model needs, then bundle exactly those files.

The online half of the air gap for a machine that does not have the model yet. PaddleNLP's
own loaders do the resolving (its file names, its candidate lists, its server), so the cache
holds what PaddleNLP would load, byte for byte, and the bundle holds exactly the cache files
the loaders were handed -- downloaded now or already cached -- not the whole folder and not a
guess from file names.

The loaders run in a child process (:mod:`bundler._fetch_child`) because PaddleNLP reads
``PPNLP_HOME`` and ``PPNLP_ENDPOINT`` once, at import, and because Paddle's memory then dies
with the child. This module imports nothing from Paddle: it starts the child, reads its JSON
report, checks that every reported path lies inside its model folder under the home, and
hands the files to :func:`bundler.pack.write_bundle`. Any failure in the child means no
bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bundler.cache import LocalFile
from bundler.errors import BundleError, ModelNotFoundError, NetworkError, UsageError
from bundler.manifest import KIND_COMMUNITY, TASKFLOW_PREFIX, ModelEntry, parse_model_ids
from bundler.pack import PackOptions, PackResult, check_output, write_bundle
from bundler.paths import is_within, unsafe_reason

#: PaddleNLP's default server, used in messages when the child could not say which it used.
DEFAULT_ENDPOINT = "https://bj.bcebos.com/paddlenlp"
REPORT_VERSION = 1
#: How long a child gets to clean up its partial download after Ctrl-C before it is killed.
INTERRUPT_GRACE = 10.0


@dataclass(frozen=True)
class DownloadEvent:
    """Progress of one download in the child: ``start`` (name, size if announced), ``bytes``
    (amount since the last event), ``done``."""

    kind: str
    name: str = ""
    size: int | None = None
    amount: int = 0


@dataclass(frozen=True)
class UsedFile:
    """One file a PaddleNLP loader was handed, as the child reported it."""

    path: str
    root: str
    how: str  # "downloaded" | "cached"


@dataclass(frozen=True)
class ChildReport:
    """What the child saw: files used, names upstream lacks, versions, and the error if any."""

    endpoint: str
    paddlenlp: str
    paddle: str
    files: tuple[UsedFile, ...]
    absent: Mapping[str, tuple[str, ...]]
    error: Mapping[str, str] | None


@dataclass(frozen=True)
class FetchResult:
    pack: PackResult
    endpoint: str
    downloaded: tuple[str, ...]  # arcnames transferred from the server in this run
    cached: tuple[str, ...]  # arcnames the loaders found already cached


# -- the report ------------------------------------------------------------------------------
def parse_report(raw: Any) -> ChildReport:
    """Validate the child's JSON report. A malformed one is a bug, reported as one line."""

    def bad(what: str) -> BundleError:
        return BundleError(f"fetch: the PaddleNLP process wrote a malformed report ({what})",
                           hint="please report this with PADDLE_BUNDLE_DEBUG=1 output")

    if not isinstance(raw, dict) or raw.get("version") != REPORT_VERSION:
        raise bad("wrong version")
    error = raw.get("error")
    if error is not None and not (isinstance(error, dict) and
                                  all(isinstance(v, str) for v in error.values())):
        raise bad("error")
    files: list[UsedFile] = []
    absent: dict[str, tuple[str, ...]] = {}
    if error is None:
        for item in raw.get("files", []):
            if not (isinstance(item, dict) and all(
                    isinstance(item.get(k), str) for k in ("path", "root", "how"))):
                raise bad("files")
            files.append(UsedFile(item["path"], item["root"], item["how"]))
        for root, names in raw.get("absent", {}).items():
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise bad("absent")
            absent[root] = tuple(names)
    return ChildReport(endpoint=str(raw.get("endpoint") or ""),
                       paddlenlp=str(raw.get("paddlenlp") or ""),
                       paddle=str(raw.get("paddle") or ""), files=tuple(files),
                       absent=absent, error=error)


def error_for(report: ChildReport, endpoint: str) -> BundleError:
    """The exception a failed child report stands for, with a one-line message."""
    error = report.error or {}
    kind = error.get("kind", "")
    message = " ".join(error.get("message", "").split())
    url = error.get("url", "")
    endpoint = report.endpoint or endpoint
    if kind == "not_found":
        return ModelNotFoundError(message or f"model {error.get('model')} is not on {endpoint}",
                                  hint="check the id (as PaddleNLP spells it) and "
                                       "PPNLP_ENDPOINT; nothing was packed")
    if kind == "network":
        where = endpoint
        if url and not url.startswith(endpoint.rstrip("/") + "/"):
            parts = urlsplit(url)  # Taskflow's static files come from fixed URLs
            where = f"{parts.scheme}://{parts.netloc}"
        return NetworkError(f"cannot reach {where} ({message})",
                            hint="check the network or set PPNLP_ENDPOINT to a reachable "
                                 "mirror; nothing was packed")
    if kind == "download":
        return NetworkError(f"download of {_short(url, endpoint)} from {endpoint} failed "
                            f"({message})",
                            hint="nothing was packed and the partial file was removed; run "
                                 "fetch again, finished files are reused")
    if kind in ("http", "probe"):
        status = message.split(" for url", 1)[0]
        return NetworkError(f"{endpoint} answered {status} when PaddleNLP probed "
                            f"{_short(url, endpoint)}",
                            hint="only a 404 means 'absent upstream'; fix access to the server "
                                 "and run fetch again; nothing was packed")
    if kind == "usage":
        return UsageError(message)
    if kind == "loader":
        return BundleError(f"PaddleNLP could not load the model: {message}",
                           hint="nothing was packed")
    return BundleError(f"fetch failed inside PaddleNLP: {message or 'no reason given'}",
                       hint="set PADDLE_BUNDLE_DEBUG=1 to see PaddleNLP's output")


def _short(url: str, endpoint: str) -> str:
    """``org/name/file`` for a community URL below ``endpoint``, the URL itself otherwise."""
    prefix = endpoint.rstrip("/") + "/models/community/"
    if url.startswith(prefix):
        return url[len(prefix):]
    return url or "a file"


def _model_for_root(root: str) -> ModelEntry:
    top, _, rel = root.partition("/")
    model_id = rel if top == "models" else f"{TASKFLOW_PREFIX}{rel}"
    try:
        model = ModelEntry.for_id(model_id)
    except ValueError:
        model = None
    if model is None or top not in ("models", "taskflow") or model.root != root:
        raise BundleError(f"cannot bundle files of {root!r}: not a model folder under the home",
                          hint="PaddleNLP used a cache outside models/ and taskflow/")
    return model


def _local_file(home: Path, root: str, path: str) -> LocalFile:
    """The used file at ``path`` as a :class:`LocalFile`, refusing anything outside ``root``.

    The check is lexical on purpose: a model folder that is itself a symlink to another disk
    is packed as it appears under the home, like ``pack`` does.
    """
    where = Path(os.path.abspath(path))
    try:
        arcname = where.relative_to(home).as_posix()
    except ValueError:
        arcname = ""
    if not arcname or unsafe_reason(arcname) or arcname == root or not is_within(arcname, root):
        raise BundleError(f"cannot bundle {where}: it is outside the model folder {home / root}",
                          hint="PaddleNLP was pointed at another cache (cache_dir?); "
                               "nothing was packed")
    try:
        st = where.lstat()
    except FileNotFoundError:
        raise BundleError(f"cannot bundle {where}: PaddleNLP used it but it is gone",
                          hint="is another process cleaning the cache? run fetch again") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise BundleError(f"cannot bundle {where}: not a regular file",
                          hint="replace it with the file it stands for and run fetch again")
    return LocalFile.regular(arcname, where, st)


def plan_from_report(home: Path, report: ChildReport, model_ids: Sequence[str],
                     task: str | None = None) -> tuple[list[ModelEntry], list[LocalFile]]:
    """Models (with what upstream lacks) and files to bundle, from a successful report.

    Every requested model must have files (for ``--task``: the run as a whole); a model the
    loaders touched besides the requested ones (a task's own folder, a built-in tokenizer)
    comes along as a model of its own, because loading needs it.
    """
    by_root: dict[str, list[LocalFile]] = {}
    for used in report.files:
        model = _model_for_root(used.root)
        by_root.setdefault(model.root, []).append(_local_file(home, model.root, used.path))
    if task is None:
        for model_id in model_ids:
            if ModelEntry.for_id(model_id).root not in by_root:
                raise ModelNotFoundError(
                    f"model {model_id} is not on {report.endpoint or DEFAULT_ENDPOINT}",
                    hint="PaddleNLP resolved no file for it; nothing was packed")
    elif not by_root:
        raise BundleError(f"Taskflow({task!r}) used no file from the cache: nothing to bundle")
    wanted = [ModelEntry.for_id(m).root for m in model_ids]
    order = [r for r in wanted if r in by_root] + sorted(r for r in by_root if r not in wanted)
    models: list[ModelEntry] = []
    files: list[LocalFile] = []
    for root in order:
        mine = by_root[root]
        present = {f.arcname[len(root) + 1:] for f in mine}
        absent = [n for n in report.absent.get(root, ()) if n not in present
                  and not unsafe_reason(n)]
        base = _model_for_root(root)
        models.append(ModelEntry.for_id(base.id, absent))
        files.extend(mine)
    return models, files


# -- the child ---------------------------------------------------------------------------
def _child_env(home: Path) -> dict[str, str]:
    """The loaders' environment: this home, and never offline mode (an exported
    ``PADDLE_BUNDLE_OFFLINE=1`` would forbid the very downloads fetch is asked for)."""
    env = {k: v for k, v in os.environ.items() if k != "PADDLE_BUNDLE_OFFLINE"}
    env["PPNLP_HOME"] = str(home)
    src = str(Path(__file__).resolve().parent.parent)  # bundler importable even uninstalled
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _read_events(fd: int, on_download: Callable[[DownloadEvent], None] | None) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            if on_download is None:
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            size = data.get("size")
            on_download(DownloadEvent(kind=str(data.get("event", "")),
                                      name=str(data.get("name", "")),
                                      size=size if isinstance(size, int) else None,
                                      amount=int(data.get("amount") or 0)))


def run_child(home: Path, model_ids: Sequence[str], task: str | None,
              on_download: Callable[[DownloadEvent], None] | None = None) -> ChildReport:
    """Run the PaddleNLP loaders in a child process and return its report.

    The child's output goes to a log file (shown only through ``PADDLE_BUNDLE_DEBUG=1``): the
    library never prints. On Ctrl-C the child, in the same process group, gets the signal too
    and removes its partial download; it is killed only if it does not exit in time.
    """
    debug = bool(os.environ.get("PADDLE_BUNDLE_DEBUG"))
    with tempfile.TemporaryDirectory(prefix="paddle-bundle-fetch-") as tmp:
        work = Path(tmp)
        # An empty working directory: PaddleNLP takes an id that names a folder in the cwd
        # for a local path, which would silently bypass the cache.
        (work / "cwd").mkdir()
        read_fd, write_fd = os.pipe()
        request = {"models": list(model_ids), "task": task,
                   "report": str(work / "report.json"), "events_fd": write_fd}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        log = work / "child.log"
        with open(log, "wb") as log_fh:
            out: Any = None if debug else log_fh
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bundler._fetch_child", str(work / "request.json")],
                    cwd=work / "cwd", env=_child_env(home), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=out, pass_fds=(write_fd,))
            finally:
                os.close(write_fd)
            try:
                _read_events(read_fd, on_download)
                proc.wait()
            except BaseException:
                _stop(proc)
                raise
        report_path = work / "report.json"
        if not report_path.is_file():
            reason = _last_line(log) if not debug else "see the output above"
            raise BundleError(f"fetch failed: the PaddleNLP process exited with code "
                              f"{proc.returncode} without a report ({reason or 'no output'})",
                              hint="set PADDLE_BUNDLE_DEBUG=1 to see its output; nothing was "
                                   "packed")
        try:
            raw = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"fetch: cannot read the PaddleNLP process's report: {exc}") from None
        report = parse_report(raw)
        if report.error and report.error.get("kind") == "crash" and not debug:
            error = dict(report.error)
            error["message"] = f"{error.get('message', '')} ({_last_line(log)})"
            report = replace(report, error=error)
        return report


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Let an interrupted child clean up (it got the same SIGINT), then make sure it is gone."""
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        proc.wait(INTERRUPT_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the whole command ---------------------------------------------------------------------
def fetch(model_ids: Sequence[str], out: Path, *, home: Path, task: str | None = None,
          options: PackOptions | None = None,
          progress: Callable[[int], None] | None = None,
          on_start: Callable[[int], None] | None = None,
          on_download: Callable[[DownloadEvent], None] | None = None) -> FetchResult:
    """Download with PaddleNLP what loading ``model_ids`` needs into ``home``, then pack it.

    Without ``task`` each model is resolved the way ``AutoConfig``, ``AutoTokenizer``,
    ``AutoModel`` and ``GenerationConfig`` resolve it by name; with ``task`` through
    ``Taskflow(task, model=...)``. The manifest records, per model, the optional files the
    server answered 404 for, plus the endpoint and the PaddleNLP and Paddle versions.
    ``progress``/``on_start`` are as for :func:`bundler.pack.pack` (the packing part);
    ``on_download`` receives the child's download progress.
    """
    home = Path(os.path.abspath(os.path.expanduser(home)))
    models = parse_model_ids(model_ids)
    if task is not None and any(m.kind != KIND_COMMUNITY for m in models):
        raise UsageError("with --task, MODEL is a name Taskflow knows, not 'taskflow:...'")
    if any(m.kind != KIND_COMMUNITY for m in models):
        raise UsageError("fetch takes model ids (org/name); Taskflow folders come with --task",
                         hint="e.g. paddle-bundle fetch uie-base --task information_extraction")
    out = Path(os.path.abspath(out))
    # before any download: an -o that pack would refuse (see pack.check_output)
    check_output(out, home=home, models=models,
                 split=bool(options is not None and options.split_size))
    ids = [m.id for m in models]
    report = run_child(home, ids, task, on_download)
    endpoint = report.endpoint or os.environ.get("PPNLP_ENDPOINT") or DEFAULT_ENDPOINT
    if report.error is not None:
        raise error_for(report, endpoint)
    entries, files = plan_from_report(home, report, ids, task)
    options = replace(options or PackOptions(), endpoint=endpoint)
    result = write_bundle(entries, files, out, home=home, options=options,
                          progress=progress, on_start=on_start)
    home_rel = {os.path.abspath(u.path): u.how for u in report.files}
    downloaded = tuple(sorted(f.arcname for f in files
                              if home_rel.get(str(f.path)) == "downloaded"))
    cached = tuple(sorted(f.arcname for f in files if f.arcname not in downloaded))
    return FetchResult(pack=result, endpoint=endpoint, downloaded=downloaded, cached=cached)
