"""The recorder: wrappers around PaddleNLP's download helpers that note every file it obtains.

Used in two ways, with the same wrappers:

* by ``python -m bundler._fetch_child`` (``fetch MODEL``), which imports PaddleNLP itself and
  calls :func:`install` before running its loaders;
* by the start-up hook (:mod:`bundler.capture.hook`) in every Python a captured command
  starts (``fetch -- CMD``), which patches each module right after PaddleNLP imports it,
  through offline mode's import machinery (:class:`bundler._offline.PatchOnImport`) and after
  offline mode's version and shape checks.

What is wrapped, in the modules where the functions are defined (tools/FINDINGS-internals.md
section 4), and what it records:

* ``paddlenlp.utils.download.bos_aistudio_hf_try_to_load_from_cache``: cache hits;
* ``paddlenlp.utils.download.bos_download`` + ``bos_download.http_get``: downloads from the
  community server and from built-in models' fixed resource URLs (kind ``builtin``); progress;
  partial files; the size check;
* ``paddlenlp.utils.download.bos_aistudio_hf_file_exist`` +
  ``bos_download.get_bos_file_metadata``: names the server answered 404 for; any other answer
  (403, 5xx) is a failure, never "absent";
* ``paddlenlp.utils.download.hf_hub_download`` / ``aistudio_hub_download`` (and the cache
  look-up above with ``from_hf_hub`` / ``from_aistudio``): files from the Hugging Face hub and
  AI Studio, kinds ``hf`` / ``aistudio``, reported with the path in the hub's own cache
  (``<cache>/models--org--name/snapshots/<rev>/<file>``) and the hub root
  ``hf/models--org--name``; the probes' answers come from ``huggingface_hub.hf_api.
  get_hf_file_metadata`` and ``...aistudio_hub_download.get_aistudio_file_metadata``, since both
  ``file_exists`` helpers turn every "no" into ``False``: only a 404 is "absent", a 401/403/5xx
  is a failure;
* ``paddlenlp.utils.downloader._download``, ``paddlenlp.taskflow.utils.download_file``,
  ``paddlenlp.taskflow.task.Task._check_task_files``: Taskflow's static files under
  ``taskflow/<task>/<model>``.

With a mirror (``--mirror``, :data:`ENV_MIRROR`), fixed URLs on PaddleNLP's bucket
(``https://bj.bcebos.com/paddlenlp/...`` and ``https://paddlenlp.bj.bcebos.com/...``, the same
bucket addressed two ways) are rewritten to ``<mirror>/<path in the bucket>`` before the
request; community downloads follow ``PPNLP_ENDPOINT``, which the caller sets to the mirror.

This module never imports PaddleNLP itself; everything is passed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bundler._bucket import BUCKET_PREFIXES

REPORT_VERSION = 1

#: Set to a mirror of PaddleNLP's bucket: fixed-URL downloads go there instead.
ENV_MIRROR = "PADDLE_BUNDLE_FETCH_MIRROR"


KIND_COMMUNITY = "community"
KIND_BUILTIN = "builtin"
KIND_TASKFLOW = "taskflow"
KIND_HF = "hf"
KIND_AISTUDIO = "aistudio"

#: Exception class names that mean "the network is not there" rather than "the server said no".
_NETWORK_ERRORS = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout",
                   "OfflineModeIsEnabled", "ProxyError", "SSLError")


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` on ``mirror`` when it is a file of PaddleNLP's bucket, else ``url``."""
    if not mirror:
        return url
    for prefix in BUCKET_PREFIXES:
        if url.startswith(prefix):
            return f"{mirror.rstrip('/')}/{url[len(prefix):]}"
    return url


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reason(exc: BaseException) -> str:
    """A short human reason for a network failure, without requests' nested reprs."""
    text = str(exc).lower()
    for needle, why in (("connection refused", "connection refused"),
                        ("name or service not known", "name resolution failed"),
                        ("temporary failure in name resolution", "name resolution failed"),
                        ("failed to resolve", "name resolution failed"),
                        ("network is unreachable", "network is unreachable"),
                        ("no route to host", "no route to host"),
                        ("timed out", "timed out"), ("read timeout", "timed out"),
                        ("incompleteread", "connection broken mid-transfer"),
                        ("connection broken", "connection broken mid-transfer"),
                        ("connection reset", "connection reset"),
                        ("remotedisconnected", "server closed the connection"),
                        ("offline", "offline mode is enabled")):
        if needle in text:
            return why
    return f"{type(exc).__name__}: {one_line(exc, 160)}"


def is_404(exc: BaseException) -> bool:
    """PaddleNLP's ``raise_for_status`` turns a 404, and only a 404, into EntryNotFoundError
    (by name: huggingface_hub moved the class between versions)."""
    return any(cls.__name__ == "EntryNotFoundError" for cls in type(exc).__mro__)


def is_network(exc: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (huggingface_hub wraps a refused connection in
    LocalEntryNotFoundError)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_network_chain(exc: BaseException) -> bool:
    return any(is_network(e) for e in _chain(exc))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a hub client's error carries, if it kept the response."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_hub_404(exc: BaseException) -> bool:
    """A hub's "no such file / repo / revision": status 404, or (PaddleNLP's AI Studio client,
    which drops the response) EntryNotFoundError, which it raises for a 404 only. A 401 that
    huggingface_hub reports as RepositoryNotFoundError is not one."""
    status = status_of(exc)
    if status is not None:
        return status == 404
    return is_404(exc)


def hub_root(kind: str, repo_id: str) -> str:
    """The bundle root of a hub model: ``hf/models--org--name`` (manifest.root_for's rule)."""
    return f"{kind}/models--{repo_id.replace('/', '--')}"


def modelscope_on() -> bool:
    """PaddleNLP's own switch (``os.environ["from_modelscope"]``, read by
    ``resolve_file_path`` with ``strtobool`` at every uncached file)."""
    return os.environ.get("from_modelscope", "").strip().lower() in (  # noqa: SIM112 - PaddleNLP spells it so
        "y", "yes", "t", "true", "on", "1")


def refuse_modelscope(rec: Recorder, repo_id: str) -> Exception:
    """Record and return the refusal of a ModelScope download: PaddleNLP would fetch it with
    the modelscope package into that package's own cache, which a bundle does not carry."""
    from bundler.errors import BundleError

    message = (f"from_modelscope=True: {repo_id} would be downloaded from ModelScope, which "
               "fetch cannot record or bundle")
    rec.fail("unsupported", message)
    return BundleError(message, hint="load it by name from PaddleNLP's community server, the "
                                     "Hugging Face hub (from_hf_hub=True) or AI Studio "
                                     "(from_aistudio=True) instead")


class SizeMismatch(OSError):
    """A download ended without error but not at the size the server announced."""


class Recorder:
    """What PaddleNLP used, what upstream lacks, and what went wrong, in one process.

    With ``report_dir`` the recorder rewrites its report file there (named after the process
    id at the time plus a random part, so a forked child writes its own and a reused pid
    never overwrites an earlier report) after every change: a process that ends
    with ``os._exit`` or a signal has still reported everything it obtained.
    """

    def __init__(self, home: str, events_fd: int | None = None, *,
                 report_dir: str | None = None, mirror: str | None = None) -> None:
        self.home = os.path.abspath(home)
        self.files: dict[str, dict[str, str]] = {}  # abs path -> {root, how, kind, url}
        self.absent: dict[str, set[str]] = {}  # root -> names the server answered 404 for
        self.failures: list[dict[str, str]] = []
        self.head_sizes: dict[str, int] = {}
        self.last_probe: dict[str, BaseException | None] = {}
        self.transferred = False
        self.task_root: str | None = None
        self.mirror = mirror or os.environ.get(ENV_MIRROR) or None
        self.report_dir = report_dir
        self.versions: dict[str, str] = {}
        self._events = os.fdopen(events_fd, "w", buffering=1) if events_fd is not None else None
        self._pid = 0
        self._name = ""
        self._lock = threading.Lock()

    # -- recording ----------------------------------------------------------------------
    def use(self, root: str, path: str, how: str, kind: str = KIND_COMMUNITY,
            url: str = "") -> None:
        path = os.path.abspath(path)
        entry = self.files.setdefault(path, {"root": root, "how": how, "kind": kind, "url": url})
        if how == "downloaded":
            entry["how"] = how
        if url and not entry.get("url"):
            entry["url"] = url
        if kind != KIND_COMMUNITY:
            entry["kind"] = kind
        self.save()

    def mark_absent(self, root: str, name: str) -> None:
        self.absent.setdefault(root, set()).add(name)
        self.save()

    def fail(self, kind: str, message: str, url: str = "") -> None:
        self.failures.append({"kind": kind, "message": message, "url": url})
        self.save()

    def event(self, **data: Any) -> None:
        if self._events is None:
            return
        try:
            self._events.write(json.dumps(data) + "\n")
        except OSError:  # the parent stopped listening; downloading matters more
            self._events = None

    def rel(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self.home).replace(os.sep, "/")

    # -- reporting ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """This process's report (the format :func:`bundler.capture.merge.merge` reads)."""
        bmod = sys.modules.get("paddlenlp.utils.download.bos_download")
        return {"version": REPORT_VERSION, "pid": os.getpid(), "argv": list(sys.argv[:20]),
                "endpoint": str(getattr(bmod, "ENDPOINT", "") or ""), **self.versions,
                "files": [{"path": p, **v} for p, v in sorted(self.files.items())],
                "absent": {root: sorted(names) for root, names in sorted(self.absent.items())},
                "failures": list(self.failures)}

    def save(self) -> None:
        """Rewrite this process's report atomically (a temporary file renamed over it), under
        a lock (threads record too). The name is ``<pid>-<random>.json``, drawn again in a
        forked child: a later process that reuses the pid never overwrites this one's."""
        if not self.report_dir:
            return
        pid = os.getpid()
        if self._pid != pid:  # first save, or a forked child: its own name and lock
            self._pid, self._name = pid, f"{pid}-{uuid.uuid4().hex}"
            self._lock = threading.Lock()
        with self._lock:
            path = os.path.join(self.report_dir, f"{self._name}.json")
            tmp = f"{path}.{threading.get_ident()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    json.dump(self.report(), fh)
                os.replace(tmp, path)
            except OSError:  # the parent's folder is gone: it stopped listening
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


class _CountingFile:
    """Stands in for the temp file ``http_get`` writes, to report bytes as they arrive."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self._pending = 0
        self._last = time.monotonic()

    def write(self, data: bytes) -> int:
        n: int = self._inner.write(data)
        self._pending += len(data)
        now = time.monotonic()
        if now - self._last >= 0.25:
            self.flush_events()
            self._last = now
        return n

    def flush_events(self) -> None:
        if self._pending:
            self._recorder.event(event="bytes", amount=self._pending)
            self._pending = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_MARK = "_paddle_bundle_capture"


def _marked(func: Callable[..., Any]) -> Callable[..., Any]:
    setattr(func, _MARK, True)
    return func


def _is_marked(func: Any) -> bool:
    return bool(getattr(func, _MARK, False))


# -- paddlenlp.utils.download --------------------------------------------------------------
def patch_download(rec: Recorder, dl: Any) -> None:
    """Wrap the helpers ``resolve_file_path`` calls (in ``dl``) and its BOS submodule."""
    if _is_marked(dl.bos_download):
        return
    _note_versions(rec)
    # The package attribute ``bos_download`` is the function; the submodule is shadowed.
    bmod: Any = sys.modules["paddlenlp.utils.download.bos_download"]

    # -- HEAD probes: the size announced, and why a probe said "no" ---------------------
    orig_meta = bmod.get_bos_file_metadata

    def get_bos_file_metadata(url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            meta = orig_meta(url, *args, **kwargs)
        except BaseException as exc:
            rec.last_probe["exc"] = exc
            raise
        rec.last_probe["exc"] = None
        if isinstance(getattr(meta, "size", None), int):
            rec.head_sizes[url] = meta.size
        return meta

    bmod.get_bos_file_metadata = get_bos_file_metadata

    orig_exist = dl.bos_aistudio_hf_file_exist

    def file_exist(repo_id: str, filename: str, **kwargs: Any) -> Any:
        rec.last_probe.clear()
        hub = (KIND_AISTUDIO if kwargs.get("from_aistudio")
               else KIND_HF if kwargs.get("from_hf_hub") else None)
        rel = "/".join(p for p in (kwargs.get("subfolder") or "", filename) if p)
        if hub is None:
            url = bmod.bos_url(repo_id, filename, subfolder=kwargs.get("subfolder") or None,
                               endpoint=kwargs.get("endpoint"))
        else:
            url = _hub_url(hub, repo_id, rel, kwargs.get("revision"))
        try:
            ok = orig_exist(repo_id, filename, **kwargs)
        except BaseException as exc:
            kind = "network" if is_network_chain(exc) else "probe"
            rec.fail(kind, reason(exc) if kind == "network" else one_line(exc), url)
            raise
        if not ok:
            why = rec.last_probe.get("exc")
            if hub is not None:
                if why is not None and is_network_chain(why):
                    rec.fail("network", reason(why), url)
                elif why is None or is_hub_404(why):
                    rec.mark_absent(hub_root(hub, repo_id), rel)
                else:  # AI Studio's client takes any HTTP error for "absent"
                    rec.fail("http", one_line(why, 200), url)
            elif why is None or is_404(why):
                rec.mark_absent(f"models/{repo_id}", rel)
            else:  # PaddleNLP takes a 403 or a 500 for "absent"; a bundle must not
                rec.fail("http", one_line(why, 200), url)
        return ok

    dl.bos_aistudio_hf_file_exist = file_exist

    # -- cache hits -----------------------------------------------------------------------
    orig_cache = dl.bos_aistudio_hf_try_to_load_from_cache

    def try_cache(repo_id: str, filename: str, cache_dir: Any = None,
                  subfolder: str | None = None, revision: str | None = None,
                  repo_type: str | None = None, from_bos: bool = True,
                  from_aistudio: bool = False, from_hf_hub: bool = False) -> Any:
        found = orig_cache(repo_id, filename, cache_dir, subfolder, revision, repo_type,
                           from_bos, from_aistudio, from_hf_hub)
        kind = KIND_AISTUDIO if from_aistudio else KIND_HF if from_hf_hub else None
        if found is None and modelscope_on() and not filename.startswith(("http://",
                                                                           "https://")):
            raise refuse_modelscope(rec, repo_id)
        if kind is None:
            if isinstance(found, str):
                rec.use(f"models/{repo_id}", found, "cached")
        elif isinstance(found, str):
            rec.use(hub_root(kind, repo_id), found, "cached", kind)
        elif found is not None:  # huggingface_hub's _CACHED_NO_EXIST: a 404 remembered
            rel = "/".join(p for p in (subfolder or "", filename) if p)
            rec.mark_absent(hub_root(kind, repo_id), rel)
        return found

    dl.bos_aistudio_hf_try_to_load_from_cache = try_cache

    # -- downloads: the transfer itself, then the file handed to the loader --------------
    orig_http_get = bmod.http_get

    community = f"{bmod.ENDPOINT}/models/community/"

    def http_get(url: str, temp_file: Any, *args: Any, **kwargs: Any) -> Any:
        rec.transferred = True
        name = f"models/{url[len(community):]}" if url.startswith(community) else url
        rec.event(event="start", name=name, size=rec.head_sizes.get(url))
        counting = _CountingFile(temp_file, rec)
        try:
            result = orig_http_get(url, counting, *args, **kwargs)
            counting.flush_events()
            temp_file.flush()
            got = os.fstat(temp_file.fileno()).st_size
            want = rec.head_sizes.get(url)
            if want is not None and got != want:
                raise SizeMismatch(f"it arrived with {got} bytes, the server announced {want}")
            return result
        except BaseException as exc:
            if isinstance(exc, SizeMismatch):
                rec.fail("download", str(exc), url)
            elif is_network(exc) or "ChunkedEncodingError" in type(exc).__name__:
                rec.fail("download", reason(exc), url)
            else:
                rec.fail("download", one_line(exc), url)
            # PaddleNLP leaves its temp file behind (renaming it into place only on
            # success); remove it so a failed fetch leaves no partial download at all.
            partial = getattr(temp_file, "name", None)
            if isinstance(partial, str):
                with contextlib.suppress(OSError):
                    temp_file.close()
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            raise
        finally:
            rec.event(event="done")

    bmod.http_get = http_get

    orig_bos_download = dl.bos_download

    def bos_download(*args: Any, **kwargs: Any) -> Any:
        rec.transferred = False
        repo_id = kwargs.get("repo_id") or (args[0] if args else None)
        url = kwargs.get("url")
        kind = KIND_COMMUNITY
        if isinstance(url, str):
            # A built-in model's resource: a fixed URL, whatever PPNLP_ENDPOINT says.
            kind = KIND_BUILTIN
            if repo_id is None:  # PaddleNLP's own rule, on the URL as registered
                for endpoint in (bmod.ENDPOINT, bmod.ENDPOINT_v2):
                    if url.startswith(endpoint):
                        repo_id = "/".join(url[len(endpoint) + 1:].split("/")[:-1])
                        break
                kwargs["repo_id"] = repo_id
            if kwargs.get("filename") is None:
                kwargs["filename"] = url.rsplit("/", 1)[-1]
            kwargs["url"] = mirrored(url, rec.mirror)
        path = orig_bos_download(*args, **kwargs)
        if isinstance(path, str) and repo_id:
            rec.use(f"models/{repo_id}", path, "downloaded" if rec.transferred else "cached",
                    kind, str(kwargs.get("url") or ""))
        return path

    dl.bos_download = _marked(bos_download)

    patch_hubs(rec, dl)


def _hub_url(kind: str, repo_id: str, rel: str, revision: str | None) -> str:
    """The URL a hub client asks for ``rel`` of ``repo_id`` (for messages only)."""
    if kind == KIND_HF:
        hub = sys.modules.get("huggingface_hub")
        make = getattr(hub, "hf_hub_url", None)
        if make is not None:
            with contextlib.suppress(Exception):
                return str(make(repo_id, rel, revision=revision))
        return f"hf:{repo_id}/{rel}"
    amod: Any = sys.modules.get("paddlenlp.utils.download.aistudio_hub_download")
    make = getattr(amod, "aistudio_hub_url", None)
    if make is not None:
        with contextlib.suppress(Exception):
            return str(make(repo_id=repo_id, filename=rel, revision=revision))
    return f"aistudio:{repo_id}/{rel}"


def patch_hubs(rec: Recorder, dl: Any) -> None:
    """Record what ``hf_hub_download`` / ``aistudio_hub_download`` return (kinds ``hf`` and
    ``aistudio``), and note why a hub probe said "no" (see the module docstring)."""

    def noting(func: Callable[..., Any]) -> Callable[..., Any]:
        def metadata(*args: Any, **kwargs: Any) -> Any:
            try:
                meta = func(*args, **kwargs)
            except BaseException as exc:
                rec.last_probe["exc"] = exc
                raise
            rec.last_probe["exc"] = None
            return meta
        return _marked(metadata)

    hf_api: Any = sys.modules.get("huggingface_hub.hf_api")
    if hf_api is not None and callable(getattr(hf_api, "get_hf_file_metadata", None)) \
            and not _is_marked(hf_api.get_hf_file_metadata):
        hf_api.get_hf_file_metadata = noting(hf_api.get_hf_file_metadata)
    amod: Any = sys.modules.get("paddlenlp.utils.download.aistudio_hub_download")
    if amod is not None and callable(getattr(amod, "get_aistudio_file_metadata", None)) \
            and not _is_marked(amod.get_aistudio_file_metadata):
        amod.get_aistudio_file_metadata = noting(amod.get_aistudio_file_metadata)

    def recording(kind: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def hub_download(*args: Any, **kwargs: Any) -> Any:
            repo_id = str(kwargs.get("repo_id") or (args[0] if args else ""))
            filename = str(kwargs.get("filename") or (args[1] if len(args) > 1 else ""))
            rel = "/".join(p for p in (kwargs.get("subfolder") or "", filename) if p)
            url = _hub_url(kind, repo_id, rel, kwargs.get("revision"))
            rec.event(event="start", name=f"{kind}:{repo_id}/{rel}", size=None)
            try:
                path = func(*args, **kwargs)
            except BaseException as exc:
                if is_network_chain(exc):
                    rec.fail("network", reason(next(e for e in _chain(exc) if is_network(e))),
                             url)
                else:
                    rec.fail("download", one_line(exc), url)
                raise
            finally:
                rec.event(event="done")
            if isinstance(path, str) and repo_id:
                # resolve_file_path asks the cache first: what reaches here was downloaded
                rec.use(hub_root(kind, repo_id), path, "downloaded", kind, url)
            return path
        return _marked(hub_download)

    dl.hf_hub_download = recording(KIND_HF, dl.hf_hub_download)
    dl.aistudio_hub_download = recording(KIND_AISTUDIO, dl.aistudio_hub_download)


# -- paddlenlp.utils.downloader (the legacy URL downloader: Taskflow's static files) -------
def patch_downloader(rec: Recorder, downloader: Any) -> None:
    if _is_marked(downloader._download):
        return
    orig_download = downloader._download

    def _download(url: str, path: str, md5sum: Any = None) -> Any:
        rec.transferred = True
        name = url.rsplit("/", 1)[-1]
        rec.event(event="start", name=rec.rel(os.path.join(path, name)), size=None)
        used = mirrored(url, rec.mirror)
        try:
            return orig_download(used, path, md5sum)
        except BaseException as exc:
            rec.fail("network" if is_network(exc) else "download", reason(exc), used)
            with contextlib.suppress(OSError):  # written as <name>_tmp, then moved
                os.unlink(os.path.join(path, name) + "_tmp")
            raise
        finally:
            rec.event(event="done")

    downloader._download = _marked(_download)
    downloader.DOWNLOAD_CHECK = True  # True means "already sent": no telemetry request


# -- paddlenlp.taskflow.utils and paddlenlp.taskflow.task ----------------------------------
def patch_taskflow_utils(rec: Recorder, tfu: Any) -> None:
    """Record the files ``download_file`` hands to a task; no usage ping."""
    tfu.DOWNLOAD_CHECK = True
    if _is_marked(tfu.download_file):
        return
    orig_download_file = tfu.download_file

    def download_file(save_dir: str, filename: str, url: str, md5: Any = None) -> Any:
        rec.transferred = False
        path = orig_download_file(save_dir, filename, url, md5)
        root = rec.task_root
        if root is None or not rec.rel(path).startswith(root + "/"):
            root = rec.rel(save_dir)
        if os.path.isfile(path):
            rec.use(root, path, "downloaded" if rec.transferred else "cached", KIND_TASKFLOW,
                    mirrored(url, rec.mirror))
        return path

    tfu.download_file = _marked(download_file)
    # Task modules imported before this patch bound the original by value.
    for name, module in list(sys.modules.items()):
        if name.startswith("paddlenlp.taskflow") and \
                getattr(module, "download_file", None) is orig_download_file:
            setattr(module, "download_file", tfu.download_file)  # noqa: B010 - typed Module


def patch_task(rec: Recorder, task_module: Any) -> None:
    """Note each task's folder, and the static files it already had (cache hits)."""
    task_cls = task_module.Task
    if _is_marked(task_cls.__init__):
        return
    orig_init = task_cls.__init__

    def task_init(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        rec.task_root = rec.rel(self._task_path)

    task_cls.__init__ = _marked(task_init)

    orig_check = task_cls._check_task_files

    def check_task_files(self: Any) -> None:
        orig_check(self)
        dygraph = (["model_state.pdparams"] if self.task == "information_extraction"
                   else ["model_state.pdparams", "config.json"])
        urls = (getattr(self, "resource_files_urls", None) or {}).get(
            getattr(self, "model", None), {})
        for file_id, file_name in self.resource_files_names.items():
            if self.is_static_model and file_name in dygraph:
                continue  # PaddleNLP skips these too
            path = os.path.join(self._task_path, file_name)
            if os.path.isfile(path):
                url = (urls.get(file_id) or [""])[0] if isinstance(urls, dict) else ""
                rec.use(rec.rel(self._task_path), path, "cached", KIND_TASKFLOW,
                        mirrored(str(url or ""), rec.mirror))

    task_cls._check_task_files = check_task_files


def _note_versions(rec: Recorder) -> None:
    pnlp = sys.modules.get("paddlenlp")
    paddle = sys.modules.get("paddle")
    rec.versions = {"paddlenlp": str(getattr(pnlp, "__version__", "") or ""),
                    "paddle": str(getattr(paddle, "__version__", "") or "")}


MOD_DOWNLOAD = "paddlenlp.utils.download"
MOD_DOWNLOADER = "paddlenlp.utils.downloader"
MOD_TASKFLOW_UTILS = "paddlenlp.taskflow.utils"
MOD_TASK = "paddlenlp.taskflow.task"


def patches(rec: Recorder) -> dict[str, Callable[[Any], None]]:
    """Module name -> the function that patches it, each after offline mode's checks that
    the PaddleNLP version is known and the functions still have the expected shape."""
    from bundler import _offline

    def checked(check: Callable[[Any], None] | None,
                patch: Callable[[Recorder, Any], None]) -> Callable[[Any], None]:
        def apply(module: Any) -> None:
            try:
                _offline.check_version(_offline._paddlenlp_version())
                if check is not None:
                    check(module)
            except Exception as exc:
                rec.fail("unsupported", one_line(exc))
                raise
            patch(rec, module)
        return apply

    return {MOD_DOWNLOAD: checked(_offline.check_download_module, patch_download),
            MOD_DOWNLOADER: checked(_offline.check_downloader_module, patch_downloader),
            MOD_TASKFLOW_UTILS: checked(_offline.check_taskflow_utils_module,
                                        patch_taskflow_utils),
            MOD_TASK: checked(None, patch_task)}


def install(rec: Recorder, *, task_mode: bool) -> None:
    """Import PaddleNLP's download modules (and with ``task_mode`` Taskflow's) and patch
    them now: for a process that drives PaddleNLP itself (``bundler._fetch_child``)."""
    import importlib

    table = patches(rec)
    names = [MOD_DOWNLOAD, MOD_DOWNLOADER]
    if task_mode:
        importlib.import_module("paddlenlp.taskflow")  # imports every task module
        names += [MOD_TASKFLOW_UTILS, MOD_TASK]
    for name in names:
        table[name](importlib.import_module(name))
