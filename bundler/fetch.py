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
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bundler.cache import LocalFile, hub_capture
from bundler.capture import session
from bundler.capture.recorder import ENV_MIRROR
from bundler.errors import (
    BundleError,
    CommandFailedError,
    ModelNotFoundError,
    NetworkError,
    ProofFailedError,
    UsageError,
)
from bundler.manifest import (
    HUB_KINDS,
    KIND_BUILTIN,
    KIND_COMMUNITY,
    TASKFLOW_PREFIX,
    ModelEntry,
    Proof,
    parse_model_ids,
)
from bundler.pack import PackOptions, PackResult, check_output, write_bundle
from bundler.paths import is_within, unsafe_reason
from bundler.wheels import Target, attach_to_bundle

log = logging.getLogger(__name__)

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
    kind: str = KIND_COMMUNITY  # "community" | "builtin" | "taskflow" | "hf" | "aistudio"
    url: str = ""  # where it was downloaded from (after --mirror), when known


@dataclass(frozen=True)
class ChildReport:
    """What the child saw: files used, names upstream lacks, versions, and the error if any."""

    endpoint: str
    paddlenlp: str
    paddle: str
    files: tuple[UsedFile, ...]
    absent: Mapping[str, tuple[str, ...]]
    error: Mapping[str, str] | None
    #: (model, loader step, worked) of ``fetch MODEL``'s loads
    steps: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True)
class FetchResult:
    pack: PackResult
    endpoint: str
    downloaded: tuple[str, ...]  # arcnames transferred from the server in this run
    cached: tuple[str, ...]  # arcnames the loaders found already cached
    proof: Proof | None = None  # how the bundle was proven offline, if it was
    processes: int = 1  # Python processes that recorded (fetch -- CMD)


# -- what is recorded and printed: no credentials ------------------------------------------
#: ``KEY=VALUE`` arguments (and ``--KEY VALUE`` pairs) whose value is a secret.
_SECRET_KEY = re.compile(r"(?i)^(--?)?[\w.-]*(token|passw(or)?d|passwd|secret|api[_-]?key|"
                         r"access[_-]?key|auth|credential)[\w.-]*$")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_SECRET_WORD = (r"[\w.-]*(?:token|passw(?:or)?d|passwd|secret|api[_-]?key|access[_-]?key|auth|"
                r"credential)[\w.-]*")
#: ``?access_token=VALUE`` / ``&password=VALUE`` in a URL's query
_URL_QUERY_SECRET = re.compile(rf"(?i)([?&;]{_SECRET_WORD}=)[^&#\s]*")
#: inside one argument that holds several words (``sh -c "python app.py --token X"``,
#: ``-H "Authorization: Bearer X"``): ``--token X``, ``token=X``, ``Authorization: Bearer X``
_TEXT_SECRETS = (
    re.compile(rf"(?i)(?<![\w.-])(--?{_SECRET_WORD}\s+)(?!-)[^\s'\"]+"),
    re.compile(rf"(?i)(?<![\w.-])({_SECRET_WORD}[\"']?\s*[=:]\s*[\"']?"
               r"(?:(?:bearer|basic|token|digest)\s+)?)(?!\*\*\*)[^\s'\"]+"),
)
REDACTED = "***"


def redact_url(text: str) -> str:
    """``text`` with the user and password of every URL in it removed
    (``https://user:pw@host/p`` -> ``https://***@host/p``), and the value of a secret-named
    query parameter (``?access_token=X`` -> ``?access_token=***``)."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _URL_QUERY_SECRET.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _redact_text(text: str) -> str:
    """One argument's text with the secrets :data:`_TEXT_SECRETS` finds in it replaced."""
    text = redact_url(text)
    for pattern in _TEXT_SECRETS:
        text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


def redact_command(command: Sequence[str]) -> tuple[str, ...]:
    """``command`` as the manifest records it and messages print it: URLs without their
    credentials, the value of ``token=...`` / ``password=...`` / ``--api-key VALUE``-like
    arguments replaced by ``***``. Obvious secrets only: docs/fetch.md says so."""
    out: list[str] = []
    hide_next = False
    for arg in command:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        key, sep, _ = arg.partition("=")
        if sep and _SECRET_KEY.match(key) and not any(c.isspace() for c in arg):
            out.append(f"{key}={REDACTED}")
            continue
        if arg.startswith("-") and _SECRET_KEY.match(arg):
            hide_next = True
        out.append(_redact_text(arg))
    return tuple(out)


def shown(command: Sequence[str]) -> str:
    """The command as one shell line, secrets redacted (for messages)."""
    return shlex.join(redact_command(command))


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
            files.append(UsedFile(item["path"], item["root"], item["how"],
                                  str(item.get("kind") or KIND_COMMUNITY),
                                  str(item.get("url") or "")))
        for root, names in raw.get("absent", {}).items():
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise bad("absent")
            absent[root] = tuple(names)
    steps = tuple((str(s.get("model")), str(s.get("step")), bool(s.get("ok")))
                  for s in raw.get("steps", []) if isinstance(s, dict))
    return ChildReport(endpoint=str(raw.get("endpoint") or ""),
                       paddlenlp=str(raw.get("paddlenlp") or ""),
                       paddle=str(raw.get("paddle") or ""), files=tuple(files),
                       absent=absent, error=error, steps=steps)


def error_for(report: ChildReport, endpoint: str) -> BundleError:
    """The exception a failed child report stands for, with a one-line message."""
    error = report.error or {}
    kind = error.get("kind", "")
    message = redact_url(" ".join(error.get("message", "").split()))
    url = redact_url(error.get("url", ""))
    endpoint = redact_url(report.endpoint or endpoint)
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
        short = _short(url, endpoint)
        where = f"{short} from {endpoint}" if short != url else (url or "a file")
        return NetworkError(f"download of {where} failed ({message})",
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
    if kind == "weights":
        return BundleError(message, hint="a bundle must hold the weights the task loads; "
                                         "nothing was packed")
    if kind == "loader":
        return BundleError(f"PaddleNLP could not load the model: {message}",
                           hint="nothing was packed")
    if kind == "unsupported":
        return BundleError(f"fetch cannot record this: {message}", hint="nothing was packed")
    return BundleError(f"fetch failed inside PaddleNLP: {message or 'no reason given'}",
                       hint="set PADDLE_BUNDLE_DEBUG=1 to see PaddleNLP's output")


def _short(url: str, endpoint: str) -> str:
    """``org/name/file`` for a community URL below ``endpoint``, the URL itself otherwise."""
    prefix = endpoint.rstrip("/") + "/models/community/"
    if url.startswith(prefix):
        return url[len(prefix):]
    return url or "a file"


def _model_for_root(root: str, kind: str | None = None) -> ModelEntry:
    top, _, rel = root.partition("/")
    model_id = rel if top == "models" else f"{TASKFLOW_PREFIX}{rel}"
    try:
        model = ModelEntry.for_id(model_id, kind=kind)
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


def _hub_files(used: Sequence[UsedFile], env: Mapping[str, str] | None
               ) -> dict[str, tuple[ModelEntry, list[LocalFile]]]:
    """Hub root -> (model, files) for the files PaddleNLP got from the Hugging Face hub or AI
    Studio: the snapshot entries it was handed, the blobs they lead to and the refs naming
    their revision (:func:`bundler.cache.hub_capture`), found in the hub caches ``env`` names
    (the environment the command ran with)."""
    if not used:
        return {}
    try:
        captured = hub_capture([u.path for u in used], env=env)
    except ValueError as exc:
        raise BundleError(f"cannot bundle a file PaddleNLP got from a hub: {exc}",
                          hint="PaddleNLP was pointed at another cache (cache_dir?); load by "
                               "name with HF_HOME / HF_HUB_CACHE / AISTUDIO_HUB_CACHE "
                               "naming the cache instead; nothing was packed") from None
    except OSError as exc:
        raise BundleError(f"cannot bundle a file PaddleNLP got from a hub: {exc}",
                          hint="is another process cleaning the cache? run fetch again"
                          ) from None
    return {model.root: (model, files) for model, files in captured.items()}


def _hub_present(root: str, files: Sequence[LocalFile]) -> set[str]:
    """File names (as the model's absent names spell them) a hub model's snapshots hold."""
    names: set[str] = set()
    for f in files:
        rel = f.arcname[len(root) + 1:]
        if rel.startswith("snapshots/"):
            names.add(rel.split("/", 2)[2] if rel.count("/") >= 2 else "")
    return names


def plan_from_report(home: Path, report: ChildReport, model_ids: Sequence[str],
                     task: str | None = None, *, command: bool = False,
                     env: Mapping[str, str] | None = None
                     ) -> tuple[list[ModelEntry], list[LocalFile]]:
    """Models (with what upstream lacks) and files to bundle, from a successful report.

    Every requested model must have files (for ``--task``: the run as a whole; for a
    ``command``: there is nothing requested, every folder used is a model); a model the
    loaders touched besides the requested ones (a task's own folder, a built-in tokenizer)
    comes along as a model of its own, because loading needs it. A folder whose files came
    from built-in resource URLs is a ``builtin`` model; files from the Hugging Face hub or AI
    Studio make ``hf:org/name`` / ``aistudio:org/name`` models of their caches' folders, as
    found in the caches ``env`` (default: this process's environment) names.
    """
    by_root: dict[str, list[LocalFile]] = {}
    kinds: dict[str, str] = {}
    hubs = _hub_files([u for u in report.files if u.kind in HUB_KINDS], env)
    for root, (_, hub_files) in hubs.items():
        by_root[root] = hub_files
    for used in report.files:
        if used.kind in HUB_KINDS:
            continue
        model = _model_for_root(used.root)
        by_root.setdefault(model.root, []).append(_local_file(home, model.root, used.path))
        if used.kind == KIND_BUILTIN:
            kinds[model.root] = KIND_BUILTIN
    if command:
        if not by_root:
            raise BundleError("the command obtained no model file through PaddleNLP: "
                              "nothing to bundle",
                              hint="does it load a model by name? (a local path needs no "
                                   "bundle)")
    elif task is None:
        for model_id in model_ids:
            if ModelEntry.for_id(model_id).root not in by_root:
                raise ModelNotFoundError(
                    f"model {model_id} is not on "
                    f"{redact_url(report.endpoint or DEFAULT_ENDPOINT)}",
                    hint="PaddleNLP resolved no file for it; nothing was packed")
    elif not by_root:
        raise BundleError(f"Taskflow({task!r}) used no file from the cache: nothing to bundle")
    wanted = [ModelEntry.for_id(m).root for m in model_ids]
    order = [r for r in wanted if r in by_root] + sorted(r for r in by_root if r not in wanted)
    models: list[ModelEntry] = []
    files: list[LocalFile] = []
    for root in order:
        mine = by_root[root]
        present = (_hub_present(root, mine) if root in hubs
                   else {f.arcname[len(root) + 1:] for f in mine})
        absent = [n for n in report.absent.get(root, ()) if n not in present
                  and not unsafe_reason(n)]
        base = hubs[root][0] if root in hubs else _model_for_root(root, kinds.get(root))
        models.append(ModelEntry.for_id(base.id, absent, kind=base.kind))
        files.extend(mine)
    return models, files


# -- the child ---------------------------------------------------------------------------
def _child_env(home: Path, mirror: str | None = None) -> dict[str, str]:
    """The loaders' environment: this home, the mirror if any, and never offline mode (an
    exported ``PADDLE_BUNDLE_OFFLINE=1`` would forbid the very downloads fetch is asked for)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PADDLE_BUNDLE_OFFLINE", ENV_MIRROR)}
    env["PPNLP_HOME"] = str(home)
    if mirror:
        env[ENV_MIRROR] = mirror
        env["PPNLP_ENDPOINT"] = mirror
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
              on_download: Callable[[DownloadEvent], None] | None = None,
              task_args: Mapping[str, Any] | None = None,
              mirror: str | None = None) -> ChildReport:
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
        request = {"models": list(model_ids), "task": task, "task_args": dict(task_args or {}),
                   "report": str(work / "report.json"), "events_fd": write_fd}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        log = work / "child.log"
        with open(log, "wb") as log_fh:
            out: Any = None if debug else log_fh
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bundler._fetch_child", str(work / "request.json")],
                    cwd=work / "cwd", env=_child_env(home, mirror), stdin=subprocess.DEVNULL,
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
def parse_task_args(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to Taskflow keyword arguments: VALUE as JSON when it parses
    (``schema=["时间","人物"]``, ``batch_size=2``, ``use_fast=true``), else as the string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--task-arg {pair!r} is not KEY=VALUE",
                             hint="e.g. --task-arg 'schema=[\"时间\", \"人物\"]' "
                                  "--task-arg precision=float32")
        if key in ("task", "model"):
            raise UsageError(f"--task-arg {key}=... is not allowed: give "
                             f"{'--task TASK' if key == 'task' else 'MODEL'} instead")
        if key in args:
            raise UsageError(f"--task-arg {key} is given twice")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def _check_prove(prove: bool, options: PackOptions) -> None:
    if prove and options.exclude_installed:
        raise UsageError("a delta bundle (--exclude-installed) cannot be proven in a scratch "
                         "home: it lacks the files the target already has",
                         hint="add --no-prove")


def fetch(model_ids: Sequence[str], out: Path, *, home: Path, task: str | None = None,
          task_args: Mapping[str, Any] | None = None,
          options: PackOptions | None = None,
          progress: Callable[[int], None] | None = None,
          on_start: Callable[[int], None] | None = None,
          on_download: Callable[[DownloadEvent], None] | None = None,
          prove: bool = False, mirror: str | None = None,
          scratch: Path | None = None, python: Target | None = None) -> FetchResult:
    """Download with PaddleNLP what loading ``model_ids`` needs into ``home``, then pack it.

    Without ``task`` each model is resolved the way ``AutoConfig``, ``AutoTokenizer`` (slow
    and ``use_fast=True``), ``AutoModel`` and ``GenerationConfig`` resolve it by name; with
    ``task`` through ``Taskflow(task, model=..., **task_args)``, constructed for real and run
    once on a short input (no model: the task's default). The manifest records, per model, the
    optional files the server answered 404 for, plus the endpoint and the PaddleNLP and Paddle
    versions.
    ``progress``/``on_start`` are as for :func:`bundler.pack.pack` (the packing part);
    ``on_download`` receives the child's download progress. With ``prove`` the same loads
    must work offline from a scratch install of the bundle (under ``scratch``, default
    ``$TMPDIR``) before it is written (:func:`write_proven`); ``mirror`` stands in for
    PaddleNLP's bucket.
    """
    home = Path(os.path.abspath(os.path.expanduser(home)))
    if not model_ids and task is None:
        raise UsageError("fetch needs a MODEL (or --task TASK)")
    if task_args and task is None:
        raise UsageError("--task-arg needs --task", hint="e.g. --task information_extraction")
    models = parse_model_ids(model_ids) if model_ids else []
    if task is not None and any(m.kind != KIND_COMMUNITY for m in models):
        raise UsageError("with --task, MODEL is a name Taskflow knows, not 'taskflow:...'")
    if any(m.kind != KIND_COMMUNITY for m in models):
        raise UsageError("fetch takes model ids (org/name); Taskflow folders come with --task",
                         hint="e.g. paddle-bundle fetch uie-base --task information_extraction")
    out = Path(os.path.abspath(out))
    options = options or PackOptions()
    _check_prove(prove, options)
    mirror = mirror_setting(mirror)
    # before any download: an -o that pack would refuse (see pack.check_output)
    check_output(out, home=home, models=models, split=bool(options.split_size))
    ids = [m.id for m in models]
    report = run_child(home, ids, task, on_download, task_args, mirror=mirror)
    endpoint = report.endpoint or os.environ.get("PPNLP_ENDPOINT") or DEFAULT_ENDPOINT
    if report.error is not None:
        raise error_for(report, endpoint)
    entries, files = plan_from_report(home, report, ids, task)
    endpoint = redact_url(endpoint)
    options = replace(options, endpoint=endpoint, command=redact_command(options.command))
    prover = None
    if prove:
        expect = [[m, step] for m, step, ok in report.steps if ok]
        prover = _LoaderProof(ids, task, expect, task_args)
        options = replace(options, proof=_proof(prover.describe(), report))
    result = write_proven(entries, files, out, home=home, options=options, prover=prover,
                          progress=progress, on_start=on_start, scratch=scratch)
    if python is not None:  # OUT.python/ and its lines in OUT.sha256, before any signature
        attach_to_bundle(out, python)
    return _result(result, report, files, endpoint, options.proof)


def fetch_command(command: Sequence[str], out: Path, *, home: Path,
                  options: PackOptions | None = None, prove: bool = True,
                  mirror: str | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None,
                  scratch: Path | None = None, python: Target | None = None) -> FetchResult:
    """Run ``command`` with the recorder in every Python it starts, then bundle every file
    PaddleNLP obtained for it (:mod:`bundler.capture`); with ``prove`` (the default) only
    once the same command has run offline from a scratch install of the bundle.

    A command that exits non-zero means no bundle: :class:`CommandFailedError` carries its
    exit code.
    """
    if not command:
        raise UsageError("no command given", hint="paddle-bundle fetch -o OUT -- python app.py")
    home = Path(os.path.abspath(os.path.expanduser(home)))
    out = Path(os.path.abspath(out))
    options = options or PackOptions()
    _check_prove(prove, options)
    mirror = mirror_setting(mirror)
    check_output(out, home=home, models=[], split=bool(options.split_size))
    with _terminate_raises(), tempfile.TemporaryDirectory(prefix="paddle-bundle-capture-") as tmp:
        code, reports = session.capture(command, home, Path(tmp), mirror)
        try:
            raw = session.merge(reports)
            report: ChildReport | None = parse_report(raw)
        except BundleError:
            if code == 0:
                raise
            report = None  # the command's own failure comes first
    if code != 0 or report is None:
        # A download PaddleNLP failed at is the likely reason: name it (and its URL).
        endpoint = (report.endpoint if report else "") or os.environ.get(
            "PPNLP_ENDPOINT") or DEFAULT_ENDPOINT
        why = (f" ({error_for(report, endpoint).message})" if report and report.error
               else "")
        raise CommandFailedError(code, f"{shown(command)} exited with code {code}{why}: "
                                       "no bundle was written",
                                 hint="fix the command so it succeeds online first")
    endpoint = report.endpoint or os.environ.get("PPNLP_ENDPOINT") or DEFAULT_ENDPOINT
    if report.error is not None:
        raise error_for(report, endpoint)
    entries, files = plan_from_report(home, report, [], command=True, env=os.environ)
    endpoint = redact_url(endpoint)
    options = replace(options, endpoint=endpoint, command=redact_command(options.command))
    prover = None
    if prove:
        prover = _CommandProof(tuple(command))
        options = replace(options, proof=_proof(prover.describe(), report))
    result = write_proven(entries, files, out, home=home, options=options, prover=prover,
                          progress=progress, on_start=on_start, scratch=scratch)
    if python is not None:  # OUT.python/ and its lines in OUT.sha256, before any signature
        attach_to_bundle(out, python)
    return replace(_result(result, report, files, endpoint, options.proof),
                   processes=int(raw.get("processes") or 0))


def mirror_setting(mirror: str | None) -> str | None:
    """``--mirror``, else ``$PADDLE_BUNDLE_FETCH_MIRROR``; an http(s) URL or nothing."""
    value = mirror if mirror is not None else os.environ.get(ENV_MIRROR) or None
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--mirror {value!r} is not an http(s) URL",
                         hint="give the URL that serves PaddleNLP's bucket, e.g. "
                              "http://mirror.example.com/paddlenlp")
    return value.rstrip("/")


def _result(result: PackResult, report: ChildReport, files: Sequence[LocalFile],
            endpoint: str, proof: Proof | None) -> FetchResult:
    how = {os.path.abspath(u.path): u.how for u in report.files}
    for u in report.files:  # a hub snapshot entry is a link: its blob came the same way
        if u.kind in HUB_KINDS:
            how.setdefault(os.path.realpath(u.path), u.how)
    downloaded = tuple(sorted(f.arcname for f in files
                              if "downloaded" in (how.get(str(f.path)),
                                                  how.get(os.path.realpath(f.path)))))
    cached = tuple(sorted(f.arcname for f in files if f.arcname not in downloaded))
    return FetchResult(pack=result, endpoint=endpoint, downloaded=downloaded, cached=cached,
                       proof=proof)


def _proof(command: tuple[str, ...], report: ChildReport) -> Proof:
    from bundler import __version__
    from bundler.capture.prove import isolation

    return Proof(command=command, isolation=isolation()[0], tool_version=__version__,
                 paddlenlp=report.paddlenlp or None, paddlepaddle=report.paddle or None)


# -- the proof -----------------------------------------------------------------------------
class _CommandProof:
    """``fetch -- CMD``: the same command, offline."""

    def __init__(self, command: tuple[str, ...]) -> None:
        self.command = command

    def describe(self) -> tuple[str, ...]:
        return redact_command(self.command)

    def run(self, bundle: Path, scratch_parent: Path | None, hide: Sequence[Path]) -> None:
        from bundler.capture.prove import run_offline

        debug = bool(os.environ.get("PADDLE_BUNDLE_DEBUG"))
        outcome = run_offline(bundle, self.command, scratch_parent=scratch_parent, hide=hide,
                              debug=debug)
        _check_started(outcome)
        _check_homes(outcome.foreign_homes, outcome.isolation)
        if outcome.returncode != 0:
            raise _proof_failed(outcome.refusals, outcome.isolation,
                                f"{shown(self.command)} exited with code "
                                f"{outcome.returncode} offline", outcome.tail)


class _LoaderProof:
    """``fetch MODEL`` / ``fetch --task``: the same loads by name, offline."""

    def __init__(self, ids: Sequence[str], task: str | None,
                 expect: Sequence[Sequence[str]],
                 task_args: Mapping[str, Any] | None = None) -> None:
        self.ids = list(ids)
        self.task = task
        self.expect = [list(e) for e in expect]
        self.task_args = dict(task_args or {})

    def describe(self) -> tuple[str, ...]:
        """What ran offline, for the manifest: the loads by name of ``fetch MODEL``."""
        if self.task:
            return ("Taskflow", self.task, *self.ids)
        return ("from_pretrained", *self.ids)

    def run(self, bundle: Path, scratch_parent: Path | None, hide: Sequence[Path]) -> None:
        from bundler.capture.prove import run_offline

        raw: dict[str, Any] = {}
        argv = [sys.executable, "-m", "bundler._fetch_child"]

        def prepare(scratch: Path, env: dict[str, str]) -> None:
            request = {"models": self.ids, "task": self.task, "task_args": self.task_args,
                       "prove": True,
                       "expect": self.expect, "report": str(scratch / "proof.json")}
            (scratch / "request.json").write_text(json.dumps(request), encoding="utf-8")
            argv.append(str(scratch / "request.json"))
            src = str(Path(__file__).resolve().parent.parent)  # bundler, even uninstalled
            env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), src) if p)
            (scratch / "cwd").mkdir()  # an empty cwd, as for the fetch child

        def collect(scratch: Path) -> None:
            with contextlib.suppress(OSError, ValueError):
                raw.update(json.loads((scratch / "proof.json").read_text(encoding="utf-8")))

        outcome = run_offline(bundle, argv, scratch_parent=scratch_parent, hide=hide,
                              debug=bool(os.environ.get("PADDLE_BUNDLE_DEBUG")),
                              prepare=prepare, collect=collect, cwd="cwd")
        _check_started(outcome)
        _check_homes(outcome.foreign_homes, outcome.isolation)
        error = raw.get("error") if isinstance(raw.get("error"), dict) else None
        if outcome.returncode != 0 or error is not None or not raw:
            detail = str((error or {}).get("message") or "")
            raise _proof_failed(outcome.refusals, outcome.isolation,
                                detail or f"the offline loads exited with code "
                                          f"{outcome.returncode}", outcome.tail)


def _check_started(outcome: Any) -> None:
    """A namespace that could not be set up is not the program's failure: say so."""
    if not outcome.started:
        raise ProofFailedError(
            f"the offline proof could not start its {outcome.isolation} "
            f"({_redact_text(outcome.tail) or 'unshare failed'}); the command did not run "
            "offline; no bundle was written",
            hint="use --no-prove, or set PADDLE_BUNDLE_PROVE_NO_NAMESPACE=1 to prove under "
                 "the socket guard alone")


def _check_homes(homes: Sequence[str], isolation_name: str) -> None:
    """The proof tests the bundle only if the program loaded from the scratch home."""
    if homes:
        raise ProofFailedError(
            f"the offline proof failed ({isolation_name}): the program loaded models from "
            f"{homes[0]}, not from the scratch home the bundle was installed into, so the "
            "bundle was not tested; no bundle was written",
            hint="let the program use PPNLP_HOME as it finds it (do not set PPNLP_HOME or "
                 "cache_dir inside it), or use --no-prove")


def _proof_failed(refusals: Sequence[Mapping[str, str]], isolation_name: str, what: str,
                  tail: str) -> ProofFailedError:
    """What the offline run needed that the capture did not get, as one line."""
    if refusals:
        first = refusals[0]
        more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        detail = f"offline mode refused: {first['message']}{more}"
    else:
        detail = f"{what}" + (f": {_redact_text(tail)}" if tail else "")  # its own output
    return ProofFailedError(
        f"the offline proof failed ({isolation_name}): {detail}; no bundle was written",
        hint="the program needs something the capture did not see (a file read outside "
             "PaddleNLP, a path in the cache); run it so it loads what it needs by name, or "
             "use --no-prove")


def write_proven(entries: Sequence[ModelEntry], files: Sequence[LocalFile], out: Path, *,
                 home: Path, options: PackOptions,
                 prover: _CommandProof | _LoaderProof | None,
                 progress: Callable[[int], None] | None = None,
                 on_start: Callable[[int], None] | None = None,
                 scratch: Path | None = None) -> PackResult:
    """Write the bundle under a temporary folder beside ``out``, prove it (if ``prover``)
    from a scratch install under ``scratch`` (default ``$TMPDIR``: not beside ``out``, which
    may be a USB stick), and only then move it (volumes first, sidecar last) to ``out``.

    ``out`` is checked as ``pack`` checks it (:func:`bundler.pack.check_output`): only an
    earlier bundle of that name (its file, volumes and sidecar) is replaced or removed.
    """
    target = check_output(out, home=home, models=entries, split=bool(options.split_size))
    remove_stale(out.parent, STAGING_PREFIX)
    remove_stale(out.parent, ".paddle-bundle-proof-")  # where older versions proved
    with _terminate_raises():
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                        dir=out.parent))
        try:
            result = write_bundle(entries, files, staging / out.name, home=home,
                                  options=options, progress=progress, on_start=on_start)
            if prover is not None:
                from bundler.capture.prove import PROOF_PREFIX

                remove_stale(Path(scratch or tempfile.gettempdir()), PROOF_PREFIX)
                prover.run(result.path, scratch, [home])
            return _move_into_place(result, out, target.replaceable)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


#: The bundle's staging folder beside ``out``: ``<prefix><pid>-<random>``.
STAGING_PREFIX = ".paddle-bundle-fetch-"
#: A leftover folder whose name carries no pid (an older version's) is stale after this long.
STALE_AFTER = 24 * 3600.0


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove ``folder``'s ``<prefix><pid>-...`` folders whose process is gone (a fetch
    killed by SIGKILL or a power cut); the ones removed. A live pid's folder is kept (it may
    be another fetch at work), and one without a pid only once older than a day."""
    import time

    removed: list[Path] = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in entries:
        named = _OURS.fullmatch(path.name[len(prefix):])
        try:
            st = path.lstat()
            # only a folder as mkdtemp names ours, made by this user: never a user's own
            # folder that happens to start like ours ("...-2024-backup"), never another's
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if named is not None:
                if int(named.group(1)) == os.getpid() or _alive(int(named.group(1))):
                    continue
            elif (_LEGACY.fullmatch(path.name[len(prefix):]) is None
                  or time.time() - st.st_mtime < STALE_AFTER):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(path)
        except OSError:
            continue
    return removed


#: what follows the prefix in a folder fetch made: ``<pid>-`` and mkdtemp's 8 characters
_OURS = re.compile(r"([0-9]+)-[a-z0-9_]{8}")
#: an older version's folder: mkdtemp's 8 characters, no pid
_LEGACY = re.compile(r"[a-z0-9_]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`SystemExit` (128 + N) while a fetch writes and proves,
    so its ``finally`` blocks remove the staging and scratch folders, as Ctrl-C does; in the
    main thread only (elsewhere the signals keep their handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _move_into_place(result: PackResult, out: Path, replaceable: frozenset[str]) -> PackResult:
    """Rename the proven files over ``out``; of what was there, remove only the files of an
    earlier bundle of that name that the new one does not overwrite."""
    from bundler.install import _signals_held

    parts = [out.parent / p.name for p in result.parts]
    sidecar = out.parent / result.sidecar.name
    # Ctrl-C, SIGTERM, SIGHUP wait until every rename is done: never a new volume beside an
    # old sidecar, or an old bundle's volume left to shadow the new one
    with _signals_held() as received:
        for src, dst in zip(result.parts, parts):
            os.replace(src, dst)
        for name in sorted(replaceable - {p.name for p in parts} - {sidecar.name}):
            with contextlib.suppress(FileNotFoundError):
                (out.parent / name).unlink()  # an earlier bundle's file or volume: would shadow
        os.replace(result.sidecar, sidecar)
    if received:
        log.warning("%s arrived while the bundle was moved into place; the move was "
                    "completed first", ", ".join(signal.Signals(s).name
                                                 for s in dict.fromkeys(received)))
    return replace(result, path=out, parts=tuple(parts), sidecar=sidecar)
