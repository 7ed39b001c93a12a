"""The machinery of offline mode; :mod:`bundler.offline` switches it on when imported.

Why it exists: on an air-gapped machine PaddleNLP's ``from_pretrained("org/name")`` and
``Taskflow(...)`` reach for the network even when every file is in the cache. PaddleNLP asks
its server (``HEAD``) about every optional file that is not cached (``added_tokens.json``,
``chat_template.json``...), and a failed request becomes "Can't load the model". Taskflow also
sends a usage ping. With no route out that fails; with a DNS server that never answers it
hangs for tens of seconds first.

What it patches, and why there: every name-based load in PaddleNLP 3.0.0b4 and 2.8.x goes
through ``paddlenlp.utils.download.resolve_file_path``, which looks up its helpers in its own
module globals at call time. Replacing those helpers once, in that one module, covers every
caller (Auto classes, concrete classes, configs, generation configs, tokenizers, sharded
checkpoints, Taskflow's model-based tasks) without touching the ~15 modules that import
``resolve_file_path`` by value (see tools/FINDINGS-internals.md §5):

* ``paddlenlp.utils.download.bos_aistudio_hf_try_to_load_from_cache`` (the cache lookup):
  unchanged for cached files; for a model with no folder in the cache it raises
  :class:`ModelNotInstalledError`;
* ``paddlenlp.utils.download.bos_aistudio_hf_file_exist`` (the HEAD probe): answered from the
  install record and the model folder, never from the server;
* ``paddlenlp.utils.download.bos_download``: cache only (built-in models' URL resources);
* ``paddlenlp.utils.download.{aistudio_hub,hf_hub}_download``: refuse (unreachable once the
  probe says absent; insurance);
* ``paddlenlp.utils.downloader._download``: refuse with a clear error (Taskflow's static files,
  legacy URL downloads);
* ``DOWNLOAD_CHECK = True`` in ``paddlenlp.utils.downloader`` and ``paddlenlp.taskflow.utils``:
  the usage ping counts as already sent.

The rules for a file that is not in the cache (documented in docs/offline.md):

1. the model has no folder ``<home>/models/<id>`` -> :class:`ModelNotInstalledError`, naming the
   id and how to bring it;
2. the file is known to exist upstream (listed in the model's install record, named by a
   checkpoint index in the folder, or a built-in model's resource URL) ->
   :class:`MissingFromBundleError` naming the file;
3. anything else (recorded as absent upstream, or simply not known) -> absent, exactly what
   PaddleNLP concludes online from a 404: the optional file is skipped.

With ``PADDLE_BUNDLE_MIRROR`` set (a paddle-bundle mirror, docs/fleet.md), a file that is
not in the cache comes from the mirror instead, for any model not installed here from a bundle:
the mirror's served list (each model pinned to the generation it was first decided from)
stands in for the server's answers, and every download is checked against it.

Importing PaddleNLP takes seconds, so nothing here imports it: a ``sys.meta_path`` finder
patches each of the three modules right after it has executed, and modules already imported
are patched at once. Before patching, the PaddleNLP version and the shape of every patched
function are checked; an unknown version is refused loudly (:class:`UnsupportedPaddleNLPError`)
rather than patched blindly, unless ``PADDLE_BUNDLE_OFFLINE_ANY_VERSION=1`` says to try.

Paths nobody patched (ModelScope, Paddle's own downloader, user code) are covered by an audit
hook that refuses every non-loopback DNS lookup and connect before it happens, so nothing can
hang on DNS (``PADDLE_BUNDLE_OFFLINE_GUARD=0`` leaves sockets alone).
"""

from __future__ import annotations

import os
import sys

from bundler.errors import (
    BundleError,
    IntegrityError,
    MissingFromBundleError,
    ModelNotInstalledError,
    NotOnMirrorError,
    OfflineBlockedError,
    UnsupportedPaddleNLPError,
    UsageError,
)

# Importing this module must cost a few milliseconds (it runs at interpreter start under
# PADDLE_BUNDLE_OFFLINE=1), so everything not needed at import is imported where it is used:
# logging, pathlib, subprocess and typing alone would take longer than all of this.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from importlib.machinery import ModuleSpec
    from pathlib import Path
    from types import ModuleType
    from typing import Any

    from bundler.cache import InstallRecord


def _log(level: str, message: str, *args: object) -> None:
    import logging

    getattr(logging.getLogger("bundler.offline"), level)(message, *args)


#: Set to 1 (true, yes, on) in the environment to switch offline mode on at interpreter start.
ENV_OFFLINE = "PADDLE_BUNDLE_OFFLINE"
#: Set to 1 to patch a PaddleNLP version offline mode has not been checked against.
ENV_ANY_VERSION = "PADDLE_BUNDLE_OFFLINE_ANY_VERSION"
#: Set to 0 to leave sockets alone (the PaddleNLP patches still apply).
ENV_GUARD = "PADDLE_BUNDLE_OFFLINE_GUARD"
#: The start-up hook the package installs into site-packages (see setup.py).
PTH_NAME = "paddle_bundle_offline.pth"

#: PaddleNLP versions whose download code offline mode has been checked against.
SUPPORTED_PADDLENLP = ("3.0.0b4", "2.8.x")

_FALSE = ("", "0", "false", "no", "off")

MOD_DOWNLOAD = "paddlenlp.utils.download"
MOD_DOWNLOADER = "paddlenlp.utils.downloader"
MOD_TASKFLOW_UTILS = "paddlenlp.taskflow.utils"
_MARK = "_paddle_bundle_offline"


def env_flag(name: str, default: str = "") -> bool:
    """True unless the variable is unset or one of ``0 false no off`` (any case)."""
    return os.environ.get(name, default).strip().lower() not in _FALSE


#: Set to a folder: every refusal of offline mode (a model not installed, a file missing from
#: the bundle, a blocked network access) is also appended there, one JSON line per refusal, to
#: ``<pid>.jsonl``. ``fetch``'s proof reads it to say what the offline run needed.
ENV_REPORT = "PADDLE_BUNDLE_OFFLINE_REPORT"


def refused(error: BaseException) -> BaseException:
    """Note ``error`` in the refusal report (:data:`ENV_REPORT`), if asked for; return it."""
    folder = os.environ.get(ENV_REPORT)
    if folder:
        import json

        line = json.dumps({"error": type(error).__name__, "message": str(error),
                           "model": getattr(error, "model_id", "")})
        try:
            with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a",
                      encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError:
            pass
    return error


_NOTED_HOMES: set[str] = set()


def note_resolved_home(folder: str) -> None:
    """Note (once per folder and process) a folder offline mode resolved models in, in the
    refusal report's folder (:data:`ENV_REPORT`) as ``<pid>.homes``: fetch's proof fails when
    the program loaded from anywhere but the scratch home it installed the bundle into."""
    report = os.environ.get(ENV_REPORT)
    folder = os.path.abspath(str(folder))
    if not report or folder in _NOTED_HOMES:
        return
    _NOTED_HOMES.add(folder)
    try:
        with open(os.path.join(report, f"{os.getpid()}.homes"), "a", encoding="utf-8") as fh:
            fh.write(folder + "\n")
    except OSError:
        pass


def read_resolved_homes(report: Path) -> list[str]:
    """Every folder :func:`note_resolved_home` noted in ``report``, sorted, once each."""
    found: set[str] = set()
    for path in report.glob("*.homes"):
        try:
            found.update(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln)
        except (OSError, UnicodeDecodeError):
            continue
    return sorted(found)


# -- which PaddleNLP ------------------------------------------------------------------------
def is_supported_version(version: str) -> bool:
    """``3.0.0b4`` and every ``2.8.x`` release, with or without PaddleNLP's ``.post`` suffix.

    Parsed by hand: this module must import in a few milliseconds, and ``re`` is not
    always loaded at interpreter start.
    """
    core = version.strip().split("+", 1)[0].split(".post", 1)[0]
    if core == "3.0.0b4":
        return True
    parts = core.split(".")
    return len(parts) == 3 and parts[:2] == ["2", "8"] and parts[2].isdigit()


_VERSIONS_ACCEPTED: set[str] = set()


def check_version(version: str) -> None:
    """Refuse a PaddleNLP version offline mode does not know (see :data:`SUPPORTED_PADDLENLP`).

    Silently patching functions that may have moved would look like offline mode working
    while PaddleNLP still reaches for the network, so the default is to fail at import.
    """
    if version in _VERSIONS_ACCEPTED or is_supported_version(version):
        return
    if env_flag(ENV_ANY_VERSION):
        import warnings

        warnings.warn(f"paddle-bundle offline mode has not been checked against paddlenlp "
                      f"{version} (checked: {', '.join(SUPPORTED_PADDLENLP)}); patching it "
                      f"anyway because {ENV_ANY_VERSION} is set", RuntimeWarning, stacklevel=2)
        _VERSIONS_ACCEPTED.add(version)
        return
    raise UnsupportedPaddleNLPError(
        f"paddle-bundle offline mode does not know paddlenlp {version} "
        f"(it supports {' and '.join(SUPPORTED_PADDLENLP)})",
        hint=f"install paddlenlp==3.0.0b4, or set {ENV_ANY_VERSION}=1 to try anyway "
             f"(its download functions are still checked), or unset {ENV_OFFLINE}")


def _paddlenlp_version() -> str:
    """The version of the PaddleNLP being imported: its ``__version__`` (set before it
    imports anything), else its distribution metadata."""
    pkg = sys.modules.get("paddlenlp")
    version = getattr(pkg, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    try:
        return metadata.version("paddlenlp")
    except metadata.PackageNotFoundError:
        return "unknown"


def _params(func: Any) -> tuple[str, ...]:
    """Names of a function's parameters, positional first, without importing inspect."""
    code = getattr(func, "__code__", None)
    if code is None:
        return ()
    count = code.co_argcount + code.co_kwonlyargcount
    names: tuple[str, ...] = code.co_varnames[:count]
    return names


#: The helpers ``resolve_file_path`` calls, with the parameters it passes them. The cache
#: lookup is called positionally, so its order must match exactly.
_EXPECTED_DOWNLOAD: dict[str, tuple[str, ...]] = {
    "bos_aistudio_hf_try_to_load_from_cache": (
        "repo_id", "filename", "cache_dir", "subfolder", "revision", "repo_type", "from_bos",
        "from_aistudio", "from_hf_hub"),
    "bos_aistudio_hf_file_exist": (
        "repo_id", "filename", "subfolder", "repo_type", "revision", "token", "endpoint",
        "from_bos", "from_aistudio", "from_hf_hub"),
}


def _refuse_shape(module: str, what: str) -> UnsupportedPaddleNLPError:
    return UnsupportedPaddleNLPError(
        f"paddle-bundle offline mode cannot patch {module} of paddlenlp "
        f"{_paddlenlp_version()}: {what}",
        hint=f"use paddlenlp 3.0.0b4 (or 2.8.x), or unset {ENV_OFFLINE}")


def check_download_module(mod: ModuleType) -> None:
    """The functions of ``paddlenlp.utils.download`` are where and what offline mode expects,
    and ``resolve_file_path`` really calls them through its module globals."""
    resolve = getattr(mod, "resolve_file_path", None)
    names = getattr(getattr(resolve, "__code__", None), "co_names", ())
    for helper in ("bos_aistudio_hf_try_to_load_from_cache", "bos_aistudio_hf_file_exist",
                   "bos_download"):
        if helper not in names:
            raise _refuse_shape(MOD_DOWNLOAD, f"resolve_file_path no longer calls {helper}")
    for name, expected in _EXPECTED_DOWNLOAD.items():
        got = _params(getattr(mod, name, None))
        if got != expected:
            raise _refuse_shape(MOD_DOWNLOAD, f"{name}{got or ' is missing'} is not {name}"
                                              f"({', '.join(expected)})")
    got = _params(getattr(mod, "bos_download", None))
    for needed in ("repo_id", "filename", "subfolder", "cache_dir", "url"):
        if needed not in got:
            raise _refuse_shape(MOD_DOWNLOAD, f"bos_download has no parameter {needed!r}")
    for name in ("aistudio_hub_download", "hf_hub_download", "LocalEntryNotFoundError"):
        if not hasattr(mod, name):
            raise _refuse_shape(MOD_DOWNLOAD, f"{name} is missing")


def check_downloader_module(mod: ModuleType) -> None:
    got = _params(getattr(mod, "_download", None))
    if got[:3] != ("url", "path", "md5sum"):
        raise _refuse_shape(MOD_DOWNLOADER, f"_download{got or ' is missing'} is not "
                                            "_download(url, path, md5sum)")
    if not hasattr(mod, "DOWNLOAD_CHECK"):
        raise _refuse_shape(MOD_DOWNLOADER, "DOWNLOAD_CHECK (the usage-ping flag) is missing")


def check_taskflow_utils_module(mod: ModuleType) -> None:
    if not hasattr(mod, "DOWNLOAD_CHECK") or not hasattr(mod, "download_check"):
        raise _refuse_shape(MOD_TASKFLOW_UTILS,
                            "DOWNLOAD_CHECK/download_check (the usage ping) are missing")


# -- the rules -------------------------------------------------------------------------------
_WEIGHT_SUFFIXES = (".safetensors", ".pdparams", ".bin", ".pdiparams", ".pdmodel")


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _fetch_hint(model_id: str, *, force: bool = False) -> str:
    install = "paddle-bundle install --force BUNDLE" if force else "paddle-bundle install BUNDLE"
    return (f"on a machine with internet run 'paddle-bundle fetch {model_id}', carry the "
            f"bundle over, and run '{install}' here")


class OfflineResolver:
    """Decides, for one PaddleNLP home, what an uncached file means (the three rules above).

    ``model_home`` is read at every call because PaddleNLP fixes ``MODEL_HOME`` only when it
    is imported; install records live in the home above it (``<home>/.paddle-bundle``).
    """

    def __init__(self, model_home: Callable[[], str]) -> None:
        self.model_home = model_home
        # No lock: two threads racing here at worst read the same small record twice.
        self._records: dict[tuple[str, str], InstallRecord | None] = {}
        self._down_warned: set[str] = set()  # models loaded from the cache, mirror down

    # -- facts ---------------------------------------------------------------------------
    def record(self, model_id: str) -> InstallRecord | None:
        """The install record of ``model_id`` in this home, read once per process."""
        from pathlib import Path

        home = str(Path(self.model_home()).parent)
        key = (home, model_id)
        if key not in self._records:
            self._records[key] = _read_record(Path(home), model_id)
        return self._records[key]

    def model_folder(self, model_id: str, cache_dir: Any = None) -> Path:
        from pathlib import Path

        base = str(cache_dir) if cache_dir else self.model_home()
        note_resolved_home(base)  # fetch's proof: was it the scratch home?
        return Path(base) / model_id

    def _recover(self, folder: Path) -> bool:
        """Finish an install killed in the home that holds ``folder`` (it may have moved the
        model aside for a moment); True when there was such a home to look at."""
        from pathlib import Path

        from bundler.cache import STATE_DIRNAME, Cache

        for home in Path(os.path.abspath(folder)).parents:
            if (home / STATE_DIRNAME).is_dir():
                Cache(home).recover()
                return True
        return False

    # -- rule 1 --------------------------------------------------------------------------
    def require_installed(self, model_id: str, cache_dir: Any = None) -> None:
        """Raise unless ``<cache>/<model_id>`` is a folder: the model is not installed."""
        if _is_url(model_id):
            raise refused(OfflineBlockedError(
                f"offline mode cannot download {model_id}",
                hint="download the file on a machine with internet and pass its local path"))
        folder = self.model_folder(model_id, cache_dir)
        if folder.is_dir() or (self._recover(folder) and folder.is_dir()):
            return
        hub = next((kind for kind in _HUB_FLAGS if _hub_folder(kind, model_id).is_dir()), None)
        if hub is not None:
            # PaddleNLP 3.0.0b4's AutoTokenizer asks BOS for tokenizer_config.json even with
            # from_hf_hub/from_aistudio (get_tokenizer_config drops the flag); online BOS
            # answers 404 for a repo it does not hold, so that is what this answers.
            _log("debug", "offline: %s is installed as %s:%s only; BOS lookup absent",
                 model_id, hub, model_id)
            return
        if os.path.isabs(model_id) or model_id.startswith((".", "~")):
            raise refused(ModelNotInstalledError(
                model_id, f"{model_id!r} is not a folder, and offline mode loads models only "
                          "from folders and from the cache", hint="check the path"))
        raise refused(ModelNotInstalledError(
            model_id, f"model {model_id!r} is not installed: {folder} does not exist "
                      "(paddle-bundle offline mode)", hint=_fetch_hint(model_id)))

    def from_mirror(self, model_id: str) -> bool:
        """Whether an uncached file of ``model_id`` comes from the site's mirror
        (:data:`ENV_MIRROR`): a community model the mirror serves, unless it was installed
        here from a bundle (then its install record, not the mirror, says what exists)."""
        if mirror_endpoint() is None or _is_url(model_id) or self.record(model_id) is not None:
            return False
        try:
            return community_on_mirror(model_id)
        except NotOnMirrorError as exc:
            # the mirror is down: a model whose folder is here loads from the cache alone,
            # as without a mirror (an optional file PaddleNLP probes is then absent)
            if not self.model_folder(model_id).is_dir():
                raise
            if model_id not in self._down_warned:
                self._down_warned.add(model_id)
                _log("warning", "offline: %s; loading %s from the cache alone", exc, model_id)
            return False

    def require_installed_or_mirrored(self, model_id: str, filename: str,
                                      cache_dir: Any = None) -> None:
        """Rule 1 with a mirror set: a fixed URL, or a model the mirror serves, is left to
        the download; a model on neither the cache nor the mirror fails at once, naming the
        mirror."""
        if _is_url(filename) or self.from_mirror(model_id):
            return
        try:
            self.require_installed(model_id, cache_dir)
        except ModelNotInstalledError:
            raise refused(_not_on_mirror(model_id, "its file list has no such model")) from None

    def require_hub_installed(self, kind: str, repo_id: str, cache_dir: Any = None) -> None:
        """Rule 1 for the hubs: raise unless the hub cache has ``models--org--name/snapshots``
        (``kind`` is ``hf`` or ``aistudio``)."""
        from pathlib import Path

        folder = _hub_folder(kind, repo_id, cache_dir)
        if (folder / "snapshots").is_dir():
            return
        # an install killed in this home may have moved it aside in the hub cache's trash
        # (which belongs to the home, not to the hub cache)
        if self._recover(Path(self.model_home()) / repo_id) and (folder / "snapshots").is_dir():
            return
        ref = f"{kind}:{repo_id}"
        raise ModelNotInstalledError(
            ref, f"model {ref!r} is not installed: {folder}/snapshots does not exist "
                 f"(paddle-bundle offline mode; {_HUB_CACHE_VARS[kind]})",
            hint=f"on a machine with internet load it once ({_HUB_FLAG_NAMES[kind]}=True) and "
                 f"run 'paddle-bundle pack {ref} -o BUNDLE', carry the bundle over, and run "
                 "'paddle-bundle install BUNDLE' here with the same cache variables")

    def hub_absent(self, kind: str, repo_id: str, filename: str, subfolder: str | None) -> bool:
        """Rules 2 and 3 for a file the hub cache does not have: absent, unless the model's
        install record lists it in a snapshot (then it was deleted since)."""
        rel = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
        ref = f"{kind}:{repo_id}"
        record = self.record(ref)
        if record is not None:
            prefix = f"{record.model.root}/snapshots/"
            for entry in record.files:
                if entry.path.startswith(prefix) and entry.path[len(prefix):].partition(
                        "/")[2] == rel:
                    raise MissingFromBundleError(
                        f"{rel} of model {ref} was installed but is missing from "
                        f"{_hub_folder(kind, repo_id)}",
                        hint=f"run 'paddle-bundle check {ref}', then install its bundle "
                             f"({record.bundle}) again with --force")
        _log("debug", "offline: %s/%s not in the hub cache; treated as absent", ref, rel)
        return False

    # -- rules 2 and 3 -------------------------------------------------------------------
    def absent(self, model_id: str, filename: str, subfolder: str | None) -> bool:
        """What the HEAD probe would have answered for an uncached file: ``False``
        (absent) unless the file is known to exist upstream, which raises instead."""
        rel = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
        folder = self.model_folder(model_id)
        record = self.record(model_id)
        if record is not None:
            wanted = f"{record.model.root}/{rel}"
            if any(f.path == wanted for f in record.files):
                raise refused(MissingFromBundleError(
                    f"{rel} of model {model_id} was installed but is missing from {folder}",
                    hint=f"run 'paddle-bundle check {model_id}', then install its bundle "
                         f"({record.bundle}) again with --force"))
        if filename.endswith(_WEIGHT_SUFFIXES):
            index = _index_naming(folder / subfolder if subfolder else folder, filename)
            if index is not None:
                raise refused(MissingFromBundleError(
                    f"{rel} of model {model_id} is missing from the bundle: {index} names "
                    f"it but it is not in {folder}",
                    hint=_fetch_hint(model_id, force=True)))
        if record is not None and rel in record.model.absent_upstream:
            _log("debug", "offline: %s/%s recorded as absent upstream", model_id, rel)
        else:
            _log("debug", "offline: %s/%s not in the cache; treated as absent", model_id, rel)
        return False

    def missing_resource(self, model_id: str, filename: str, url: str | None,
                         cache_dir: Any) -> MissingFromBundleError:
        """A built-in model's resource (a URL in PaddleNLP's registry) is not cached."""
        folder = self.model_folder(model_id, cache_dir)
        source = f" (from {url})" if url else ""
        return MissingFromBundleError(
            f"{filename} of model {model_id} is not in {folder}{source}",
            hint=_fetch_hint(model_id, force=True))

    def taskflow_id(self, path: str) -> str | None:
        """``taskflow:<task>/<model>`` for a folder below this home's ``taskflow``."""
        from pathlib import Path

        taskflow = Path(self.model_home()).parent / "taskflow"
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(taskflow)).as_posix()
        except ValueError:
            return None
        return None if rel in ("", ".") else f"taskflow:{rel}"

    def legacy_download(self, url: str, path: str, md5sum: str | None) -> BundleError:
        """The error for a download through ``paddlenlp.utils.downloader`` (Taskflow's
        static files, datasets): name the file, the Taskflow folder if it is one, and why."""
        from pathlib import Path

        name = url.rsplit("/", 1)[-1]
        target = Path(path) / name
        taskflow = Path(self.model_home()).parent / "taskflow"
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(taskflow)).as_posix()
        except ValueError:
            rel = ""
        if not rel or rel == ".":
            return OfflineBlockedError(
                f"offline mode cannot download {url} into {path}",
                hint=f"download it on a machine with internet and copy it to {target}")
        model_id = f"taskflow:{rel}"
        bring = (f"run the task once on a machine with internet, 'paddle-bundle pack "
                 f"{model_id} -o BUNDLE' there, and 'paddle-bundle install BUNDLE' here")
        if not Path(path).is_dir():
            return ModelNotInstalledError(
                model_id, f"Taskflow model {model_id} is not installed: {path} does not exist "
                          "(paddle-bundle offline mode)", hint=bring)
        if target.exists():
            return MissingFromBundleError(
                f"{target} of {model_id} differs from what paddlenlp {_paddlenlp_version()} "
                f"expects (md5 {md5sum})",
                hint=f"pack it on a machine with the same paddlenlp version: {bring}")
        return MissingFromBundleError(f"{name} of {model_id} is missing from {path}",
                                      hint=bring)


#: from_* flag name -> kind, and the variables that say where each hub cache is.
_HUB_FLAGS = ("hf", "aistudio")
_HUB_FLAG_NAMES = {"hf": "from_hf_hub", "aistudio": "from_aistudio"}
_HUB_CACHE_VARS = {"hf": "the Hugging Face cache is $HF_HUB_CACHE, else $HF_HOME/hub",
                   "aistudio": "the AI Studio cache is $AISTUDIO_HUB_CACHE"}


def _hub_folder(kind: str, repo_id: str, cache_dir: Any = None) -> Path:
    """``<hub cache>/models--org--name``: the cache the client library fixed when it was
    imported (its module constant), else computed from the environment by the same rule."""
    from pathlib import Path

    if cache_dir:
        base = str(cache_dir)
    else:
        if kind == "hf":
            found = getattr(sys.modules.get("huggingface_hub.constants"), "HF_HUB_CACHE", None)
        else:
            found = getattr(sys.modules.get(f"{MOD_DOWNLOAD}.aistudio_hub_download"),
                            "AISTUDIO_HUB_CACHE", None)
        if isinstance(found, str):
            base = found
        else:
            from bundler.cache import aistudio_hub_cache, hf_hub_cache

            base = str(hf_hub_cache() if kind == "hf" else aistudio_hub_cache())
    note_resolved_home(base)  # fetch's proof: was it the scratch cache?
    return Path(base) / "--".join(["models", *repo_id.split("/")])


def _read_record(home: Path, model_id: str) -> InstallRecord | None:
    from bundler.cache import Cache
    from bundler.manifest import ModelEntry

    try:
        model = ModelEntry.for_id(model_id)
    except ValueError:
        return None
    try:
        return Cache(home).record(model)
    except (OSError, ValueError) as exc:  # a damaged record must not break loading
        _log("warning", "offline: ignoring the unreadable install record of %s: %s",
             model_id, exc)
        return None


def _index_naming(folder: Path, filename: str) -> str | None:
    """Name of a checkpoint index (``*.index.json``) in ``folder`` that lists ``filename``."""
    import json

    try:
        indexes = sorted(folder.glob("*.index.json"))
    except OSError:
        return None
    for index in indexes:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if isinstance(weight_map, dict) and filename in weight_map.values():
            return index.name
    return None


# -- the patches -----------------------------------------------------------------------------
def patch_download(mod: ModuleType, resolver: OfflineResolver) -> None:
    """Make ``resolve_file_path`` (in ``mod``) resolve from the cache only."""
    check_download_module(mod)
    original_try = mod.bos_aistudio_hf_try_to_load_from_cache
    if getattr(original_try, _MARK, False):
        return
    local_entry_not_found: type[Exception] = mod.LocalEntryNotFoundError

    def bos_aistudio_hf_try_to_load_from_cache(
        repo_id: str, filename: str, cache_dir: Any = None, subfolder: str | None = None,
        revision: str | None = None, repo_type: str | None = None, from_bos: bool = True,
        from_aistudio: bool = False, from_hf_hub: bool = False,
    ) -> Any:
        # Called before PaddleNLP's try/except, so a not-installed error reaches the caller
        # intact; an uncached file of an installed model falls through to the probe.
        found = original_try(repo_id, filename, cache_dir, subfolder, revision, repo_type,
                             from_bos, from_aistudio, from_hf_hub)
        if isinstance(found, str):
            return found
        if from_aistudio or from_hf_hub:
            resolver.require_hub_installed("aistudio" if from_aistudio else "hf", repo_id,
                                           cache_dir)
        elif found is None and mirror_endpoint():
            resolver.require_installed_or_mirrored(repo_id, filename, cache_dir)
        elif found is None:
            resolver.require_installed(repo_id, cache_dir)
        return found

    def bos_aistudio_hf_file_exist(
        repo_id: str, filename: str, *, subfolder: str | None = None,
        repo_type: str | None = None, revision: str | None = None, token: Any = None,
        endpoint: str | None = None, from_bos: bool = True, from_aistudio: bool = False,
        from_hf_hub: bool = False,
    ) -> bool:
        if from_aistudio or from_hf_hub:
            return resolver.hub_absent("aistudio" if from_aistudio else "hf", repo_id,
                                       filename, subfolder)
        if resolver.from_mirror(repo_id):  # what the mirror's HEAD would answer, from its list
            client = mirror_client()
            assert client is not None
            rel = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
            return client.has_file(repo_id, community_rel(repo_id, rel))
        return resolver.absent(repo_id, filename, subfolder)

    def bos_download(
        repo_id: str | None = None, filename: str | None = None, subfolder: str | None = None,
        repo_type: str | None = None, revision: str | None = None,
        library_name: str | None = None, library_version: str | None = None,
        cache_dir: Any = None, local_dir: Any = None, local_dir_use_symlinks: Any = "auto",
        user_agent: Any = None, force_download: bool = False, proxies: Any = None,
        etag_timeout: float = 10, resume_download: bool = False, token: Any = None,
        local_files_only: bool = False, endpoint: str | None = None, url: str | None = None,
        **kwargs: Any,
    ) -> str:
        # PaddleNLP's path arithmetic (utils/download/bos_download.py), minus the network,
        # the lock files and the mkdirs, so a read-only cache works too.
        if url is not None:
            if repo_id is None:
                repo_id = _repo_from_url(url)
            if filename is None:
                filename = url.rsplit("/", 1)[-1]
            subfolder = None
        if repo_id is None or filename is None:
            raise local_entry_not_found(f"offline: cannot place {url or filename} in the cache")
        rel = f"{subfolder.rstrip('/')}/{filename}" if subfolder else filename
        path = os.path.join(str(cache_dir or resolver.model_home()), repo_id, rel)
        if os.path.exists(path):
            return path
        if url is not None and mirror_endpoint() and resolver.record(repo_id) is None:
            # a fixed URL of a model not installed here from a bundle: from the site's mirror
            return mirror_fetch(url, path, repo_id)
        if url is None and resolver.from_mirror(repo_id):  # a community model on the mirror
            client = mirror_client()
            assert client is not None
            return client.fetch(community_rel(repo_id, rel), path, repo_id)
        raise refused(resolver.missing_resource(repo_id, rel, url, cache_dir))

    def refuse_hub_download(*args: Any, **kwargs: Any) -> str:
        # PaddleNLP reports this as "Cannot find the requested files in the cached path
        # and outgoing traffic has been disabled", which is the truth.
        raise local_entry_not_found("paddle-bundle offline mode: not in the cache")

    for func in (bos_aistudio_hf_try_to_load_from_cache, bos_aistudio_hf_file_exist,
                 bos_download, refuse_hub_download):
        setattr(func, _MARK, True)
    vars(mod).update({
        "bos_aistudio_hf_try_to_load_from_cache": bos_aistudio_hf_try_to_load_from_cache,
        "bos_aistudio_hf_file_exist": bos_aistudio_hf_file_exist,
        "bos_download": bos_download,
        "aistudio_hub_download": refuse_hub_download,
        "hf_hub_download": refuse_hub_download,
    })
    _log("debug", "offline: patched %s", mod.__name__)


def _repo_from_url(url: str) -> str | None:
    """The model name in a BOS URL, as PaddleNLP's own ``bos_download`` derives it."""
    bmod = sys.modules.get(f"{MOD_DOWNLOAD}.bos_download")
    for endpoint in (getattr(bmod, "ENDPOINT", None), getattr(bmod, "ENDPOINT_v2", None)):
        if isinstance(endpoint, str) and url.startswith(endpoint):
            return "/".join(url[len(endpoint) + 1:].split("/")[:-1]) or None
    return None


def patch_downloader(mod: ModuleType, resolver: OfflineResolver) -> None:
    """Refuse legacy URL downloads with a clear error; mark the usage ping as sent."""
    check_downloader_module(mod)
    vars(mod)["DOWNLOAD_CHECK"] = True
    if getattr(mod._download, _MARK, False):
        return

    def _download(url: str, path: str, md5sum: str | None = None) -> str:
        from bundler._bucket import bucket_rel

        # Taskflow's static files: from the mirror, unless the folder was installed here
        # from a bundle (its install record, not the mirror, says what it holds)
        model_id = resolver.taskflow_id(path)
        if mirror_endpoint() and bucket_rel(url) is not None and \
                (model_id is None or resolver.record(model_id) is None):
            return mirror_fetch(url, os.path.join(path, url.rsplit("/", 1)[-1]),
                                model_id or url, md5sum)
        raise refused(resolver.legacy_download(url, path, md5sum))

    setattr(_download, _MARK, True)
    vars(mod)["_download"] = _download
    _log("debug", "offline: patched %s", mod.__name__)


def patch_taskflow_utils(mod: ModuleType, resolver: OfflineResolver) -> None:
    """Taskflow's usage ping (a request to paddlepaddle.org.cn per process) counts as sent."""
    check_taskflow_utils_module(mod)
    vars(mod)["DOWNLOAD_CHECK"] = True
    _log("debug", "offline: patched %s", mod.__name__)


_PATCHES: dict[str, Callable[[ModuleType, OfflineResolver], None]] = {
    MOD_DOWNLOAD: patch_download,
    MOD_DOWNLOADER: patch_downloader,
    MOD_TASKFLOW_UTILS: patch_taskflow_utils,
}


def _paddlenlp_model_home() -> str:
    env = sys.modules.get("paddlenlp.utils.env")
    home = getattr(env, "MODEL_HOME", None)
    if isinstance(home, str):
        return home
    from bundler.cache import default_home

    return str(default_home() / "models")


_RESOLVER = OfflineResolver(_paddlenlp_model_home)


def patch_module(name: str, module: ModuleType,
                 resolver: OfflineResolver | None = None, version: str | None = None) -> None:
    """Check the PaddleNLP version, then apply the patch for ``name`` to ``module``."""
    check_version(version if version is not None else _paddlenlp_version())
    _PATCHES[name](module, resolver or _RESOLVER)


# -- patching on import ----------------------------------------------------------------------
class _PatchingLoader:
    """Runs the real loader, then the patch; everything else goes to the real loader."""

    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class PatchOnImport:
    """A ``sys.meta_path`` finder that wraps the loaders of the modules offline mode patches.

    It finds nothing itself: it asks the finders after it, so PaddleNLP is imported from
    wherever it would have been, and only the modules in ``patches`` (name -> function that
    patches the module once it has run; default: offline mode's) get the patching loader.
    The recorder of ``fetch -- CMD`` (:mod:`bundler.capture`) uses it with its own table;
    the two are never active in the same process.
    """

    def __init__(self, patches: Mapping[str, Callable[[ModuleType], None]] | None = None
                 ) -> None:
        self.patches = patches

    def _patch_for(self, fullname: str) -> Callable[[ModuleType], None] | None:
        if self.patches is not None:
            return self.patches.get(fullname)
        if fullname not in _PATCHES:
            return None

        def patch(module: ModuleType) -> None:
            patch_module(fullname, module)

        return patch

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        patch = self._patch_for(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, PatchOnImport):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            raise _refuse_shape(fullname, f"its loader {spec.loader!r} cannot be wrapped")
        spec.loader = _PatchingLoader(spec.loader, patch)  # type: ignore[assignment]
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached here; present because importlib calls it on every finder."""


# -- the socket guard ------------------------------------------------------------------------
_NET_EVENTS = frozenset({
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "socket.getnameinfo", "socket.connect", "socket.sendto", "socket.sendmsg",
})
_BLOCKED: list[tuple[str, str]] = []
_BLOCKED_KEEP = 100


def is_local_host(host: object) -> bool:
    """Loopback, ``localhost`` or the unspecified address: traffic that stays on this machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip().rstrip(".").lower()
    if name in ("", "localhost") or name.endswith(".localhost"):
        return True
    name = name.split("%", 1)[0].strip("[]")
    import ipaddress

    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _remote_target(event: str, args: tuple[Any, ...]) -> str | None:
    """The non-local host an audited socket event is about, or ``None``."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1] if len(args) > 1 else None
        if not isinstance(address, tuple) or not address:
            return None  # AF_UNIX paths, sendmsg without an address
        host = address[0]
        if not isinstance(host, (str, bytes)):
            return None  # AF_NETLINK and friends
    elif event == "socket.getnameinfo":
        sockaddr = args[0] if args else None
        host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else None
    else:
        host = args[0] if args else None
    if is_local_host(host):
        return None
    return host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _NET_EVENTS:
        return
    target = _remote_target(event, args)
    if target is None or mirror_allows(event, args):
        return
    if len(_BLOCKED) < _BLOCKED_KEEP:
        _BLOCKED.append((event, target))
    raise refused(OfflineBlockedError(
        f"paddle-bundle offline mode blocked network access to {target!r} ({event})",
        hint=f"set {ENV_GUARD}=0 to allow sockets while PaddleNLP stays offline"))


def blocked_attempts() -> tuple[tuple[str, str], ...]:
    """Network accesses the guard refused in this process: ``(audit event, host)``."""
    return tuple(_BLOCKED)


# -- the site's mirror (PADDLE_BUNDLE_MIRROR) --------------------------------------------------
#: Set to a paddle-bundle mirror (``http://mirror:8080/paddlenlp``, docs/fleet.md): offline
#: mode downloads what PaddleNLP fetches from fixed URLs of its bucket (built-in names'
#: resources, Taskflow's static files) from there, and the socket guard lets exactly that host
#: and port through.
ENV_MIRROR = "PADDLE_BUNDLE_MIRROR"
_MIRROR_IPS: dict[str, frozenset[str]] = {}


def mirror_endpoint() -> str | None:
    """The mirror's URL from :data:`ENV_MIRROR` (``http(s)://host[:port]/path``), or None;
    anything else is refused as a usage error naming the variable."""
    value = os.environ.get(ENV_MIRROR, "").strip().rstrip("/")
    if not value:
        return None
    mirror_address(value)
    return value


def mirror_address(value: str) -> tuple[str, int]:
    """``(host, port)`` of a mirror URL."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        parts, port = None, 0
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or \
            port == 0 or parts.query or parts.fragment or "?" in value or "#" in value or \
            any(ch.isspace() or ch in "/\\" for ch in parts.hostname):
        raise UsageError(f"{ENV_MIRROR}={redact_url(value)!r} is not a mirror URL",
                         hint=f"set {ENV_MIRROR}=http://HOST:PORT/paddlenlp (docs/fleet.md)")
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced, for messages.

    Everything up to the last ``@`` counts as credentials, even a malformed URL's (a ``/``
    in the password), and a user name alone is hidden too: it is often a token.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user + ':***' if colon else '***'}@{after}"


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and the ``Authorization`` header value
    for them (basic auth, as ``requests`` sends for a URL with credentials), or None."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    hostport = parts.netloc.rpartition("@")[2]
    plain = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return plain, "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def mirror_allows(event: str, args: tuple[Any, ...]) -> bool:
    """Whether the socket guard lets ``event`` through: a look-up of the mirror's host name,
    or a connection to one of its addresses on its port. Nothing else."""
    mirror = mirror_endpoint()
    if mirror is None:
        return False
    host, port = mirror_address(mirror)
    if event in ("socket.getaddrinfo", "socket.gethostbyname"):
        raw = args[0] if args else None
        name = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        wanted_port = args[1] if len(args) > 1 else None
        # 'host.' and 'host' are one name here (a site may write the mirror's fully
        # qualified name with its dot); the look-up below keeps the name as written
        return isinstance(name, str) and name.lower().rstrip(".") == host.rstrip(".") and \
            wanted_port in (None, port, str(port))
    if event == "socket.connect":
        import socket  # the look-up below is itself audited, and allowed above

        address = args[1] if len(args) > 1 else None
        if not (isinstance(address, tuple) and len(address) >= 2 and address[1] == port):
            return False
        if getattr(args[0], "type", None) != socket.SOCK_STREAM:
            return False  # HTTP to the mirror is TCP: a UDP "connection" to it is refused
        target = str(address[0]).split("%", 1)[0]
        ips = _MIRROR_IPS.get(host)
        if ips is None or target not in ips | {host}:
            # first connection, or an address not seen yet: the name may point elsewhere
            # now (a fail-over, DNS rotating through the mirror's addresses), so look again
            try:
                ips = frozenset(str(info[4][0]).split("%", 1)[0]
                                for info in socket.getaddrinfo(host, port))
            except OSError:
                ips = frozenset({host})  # not cached: the next connection looks it up again
            else:
                _MIRROR_IPS[host] = ips
        return target in ips | {host}
    return False


def _tls_context() -> Any:
    """The trust store for an https mirror: the CA bundle a site gives PaddleNLP's
    ``requests`` (``REQUESTS_CA_BUNDLE``, or curl's ``CURL_CA_BUNDLE``) when one is set, else
    Python's default (the system's, or ``SSL_CERT_FILE``)."""
    import ssl

    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
    return ssl.create_default_context(cafile=cafile)


def _untrusted_certificate(exc: BaseException) -> bool:
    import ssl

    return isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError)


#: ``what`` of a failure to read the served list (not a model).
_THE_LIST = "the mirror's file list"


def _mirror_failure(what: str, url: str, exc: BaseException, *,
                    hint: str | None = None) -> BundleError:
    """The mirror could not serve what offline mode asked of it: named, with the URL, and
    what to fix (the credentials for a 401, the allow list for a 403)."""
    mirror = redact_url(mirror_endpoint() or "")
    url = redact_url(url)
    code = getattr(exc, "code", None)
    if code == 404:
        return NotOnMirrorError(
            what, f"{what} is not installed here and not on the mirror {mirror} ({url} "
                  "answered 404; paddle-bundle offline mode)", hint=_publish_hint(what))
    detail = (f"the mirror {mirror} could not serve {url} "
              f"({type(exc).__name__}: {_printable(str(exc))[:200]})")
    if hint is None and _untrusted_certificate(exc):
        hint = ("the mirror's certificate is not trusted here: put the site's CA (a PEM "
                "file) in REQUESTS_CA_BUNDLE, as for PaddleNLP, or in the system's trust store")
    if hint is None and code in (301, 302, 303, 307, 308):
        headers = getattr(exc, "headers", None)
        location = str(headers.get("Location") or "") if headers is not None else ""
        hint = (f"offline mode never follows a redirect (it would carry the credentials "
                f"elsewhere): set {ENV_MIRROR} to the mirror's URL where it leads "
                f"(Location: {redact_url(_printable(location))[:200]})")
    if hint is None:
        hint = {401: f"check the user and password in {ENV_MIRROR} "
                     "(http://USER:PASSWORD@HOST:PORT/paddlenlp)",
                403: "the mirror refuses this machine: add its address to the mirror's allow "
                     "list ('paddle-bundle mirror nginx-config --allow CIDR')",
                }.get(code if isinstance(code, int) else 0,
                      f"check that the mirror is up and reachable from here, or unset "
                      f"{ENV_MIRROR}")
    message = f"offline mode could not read {what}: {detail}" if what == _THE_LIST else \
        f"{what} is not installed here and {detail}"
    return NotOnMirrorError(what, message, hint=hint)


def _not_on_mirror(what: str, detail: str) -> BundleError:
    """``what`` is on neither the local cache nor the mirror's served list: said at once."""
    return NotOnMirrorError(
        what, f"{what} is not installed here and not on the mirror "
              f"{redact_url(mirror_endpoint() or '')} ({detail}; paddle-bundle offline mode)",
        hint=_publish_hint(what))


def _publish_hint(what: str) -> str:
    return (f"publish its bundle on the mirror ('paddle-bundle mirror publish BUNDLE --root "
            f"DIR'), or install it here; {_fetch_hint(what)}")


def _printable(text: str) -> str:
    """``text`` with control characters replaced: an error from the mirror is untrusted."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


#: The served list of a paddle-bundle mirror (bundler.mirror.tree.SERVED_LIST), below the
#: mirror URL; and the most of it offline mode reads.
_LIST_PATH = ".paddle-bundle/files.json"
_LIST_LIMIT = 256 << 20
#: The cookie that pins a request to a generation (bundler.mirror.nginx.COOKIE; not imported:
#: the server side is heavy to import). Offline mode sends it itself, for the generation of
#: the list each model's decisions came from, so it never expires in the middle of a load.
_COOKIE = "pb_generation"
#: How long a failure to read the served list is answered from memory, not asked again.
_LIST_RETRY_SECONDS = 30.0
#: Lists kept in memory (the newest, and older generations for the models pinned to them);
#: a model pinned to a list no longer kept has it read again, with its generation's cookie.
_KEEP_LISTS = 4
#: How long a model the lists read so far lack is decided from them before it asks for a
#: fresh list again (so a long-running process still finds a model published later).
_ASK_AGAIN_SECONDS = 60.0
#: A model's pin ends once nothing was decided or downloaded for it in this long (what the
#: server's cookie lasts, bundler.mirror.nginx.COOKIE_SECONDS), never while one of its
#: downloads runs: a long-running process then moves to a newer version of a model whose
#: folder was removed from its cache, and remembers only the models it uses.
_PIN_IDLE_SECONDS = 300.0

Listing = tuple[dict[str, str], dict[str, tuple[str, int]]]  # (model -> kind, rel -> (sha, size))


class _MirrorClient:
    """One process's view of the mirror: the served lists it has read, and which generation
    each model is pinned to. The first decision about a model (is it on the mirror, is this
    optional file there) pins it to the newest list read; every later decision and download
    for it uses that generation (the nginx configuration answers a request from the generation
    its cookie names, docs/fleet.md), so a model loaded while a new version is published
    comes whole from one version, however long its downloads take. A model the pinned list
    does not have, or a listed file the mirror no longer serves (its generation was pruned),
    means one fresh list."""

    def __init__(self, endpoint: str) -> None:
        import threading
        import time

        # the credentials apart: no URL this client builds holds them (error reporters
        # send the local variables of a traceback's frames)
        self.endpoint, self._authorization = _split_credentials(endpoint)
        self.lock = threading.Lock()  # the lists and pins; taken before _opener_lock
        self._opener_lock = threading.Lock()
        self._lists: dict[int | None, Listing] = {}  # by generation, oldest first
        self._newest: list[int | None] = []  # [the newest list's generation] once read
        self._pins: dict[str, int | None] = {}  # model -> generation of its list
        self._used: dict[str, float] = {}  # pinned model -> when it was last decided or fetched
        self._busy: dict[str, int] = {}  # model -> its downloads running now
        self._loaded: dict[str, int | None] = {}  # pinned model -> generation it downloaded from
        self._asked: dict[str, float] = {}  # model -> when it last asked for a fresh list
        self._clock: Callable[[], float] = time.monotonic
        self._failed: tuple[float, BundleError] | None = None
        self._opener: Any = None

    def _open(self, rel: str, generation: int | None = None) -> Any:
        import urllib.request
        from urllib.parse import quote

        # read once, under its own lock: another thread may forget() it at any moment
        with self._opener_lock:
            if self._opener is None:
                # the mirror only: no proxy, and no redirect (nginx-config never redirects;
                # a redirect would carry the credentials elsewhere)
                handlers: list[Any] = [urllib.request.ProxyHandler({}), _no_redirect_handler()]
                if self.endpoint.lower().startswith("https:"):
                    handlers.append(urllib.request.HTTPSHandler(context=_tls_context()))
                self._opener = urllib.request.build_opener(*handlers)
            opener = self._opener
        # the path as a URL: a space, '#', '?' or '%' in a file name is that character
        request = urllib.request.Request(f"{self.endpoint}/{quote(rel, safe='/')}")
        if self._authorization is not None:
            request.add_unredirected_header("Authorization", self._authorization)
        if generation is not None:
            request.add_unredirected_header("Cookie", f"{_COOKIE}={generation}")
        return opener.open(request, timeout=30)

    # -- the lists (all under self.lock) ---------------------------------------------------
    def _newest_list(self, *, fresh: bool = False) -> tuple[int | None, Listing]:
        """The newest list read; ``fresh``: read it again first (kept as it was when the
        mirror cannot be reached). A failure with no list at all is remembered for
        :data:`_LIST_RETRY_SECONDS`: the probes of one load do not each wait for an
        unreachable mirror's time-out."""
        if self._newest and not fresh:
            return self._newest[0], self._lists[self._newest[0]]
        try:
            models, files, generation = self._read()
        except BundleError:
            if self._newest:
                return self._newest[0], self._lists[self._newest[0]]
            raise
        self._lists.pop(generation, None)
        self._lists[generation] = (models, files)
        self._newest[:] = [generation]
        self._trim()
        return generation, self._lists[generation]

    def _trim(self) -> None:
        """Keep :data:`_KEEP_LISTS` lists, the newest among them; the pins on a list let go
        stay (:meth:`_for_model` reads it again)."""
        while len(self._lists) > _KEEP_LISTS:
            del self._lists[next(g for g in self._lists if self._newest != [g])]

    def _pinned_list(self, generation: int) -> Listing | None:
        """The list of ``generation``, which models are pinned to, read again from the mirror
        with its cookie (it was let go to keep memory bounded); None when the mirror no longer
        has that generation (pruned): its pins are dropped."""
        models, files, got = self._read(generation)
        if got != generation:  # answered from another generation: this one is gone
            self._drop(generation)
            return None
        self._lists[generation] = (models, files)
        self._trim()
        return self._lists[generation]

    def _read(self, generation: int | None = None
              ) -> tuple[dict[str, str], dict[str, tuple[str, int]], int | None]:
        """:meth:`_read_listing`, with a failure remembered for :data:`_LIST_RETRY_SECONDS`
        (raised again meanwhile without asking)."""
        if self._failed is not None and \
                self._clock() - self._failed[0] < _LIST_RETRY_SECONDS:
            raise self._failed[1].with_traceback(None)
        try:
            read = self._read_listing(generation)
        except BundleError as exc:
            self._failed = (self._clock(), exc)
            raise
        self._failed = None
        return read

    def _drop(self, generation: int | None) -> None:
        """Forget a generation's list and its pins (its models take the newest list next)."""
        self._lists.pop(generation, None)
        if self._newest == [generation]:
            self._newest.clear()
        for model in [m for m, g in self._pins.items() if g == generation]:
            self._unpin(model)

    def _unpin(self, model: str) -> None:
        self._pins.pop(model, None)
        self._used.pop(model, None)
        self._loaded.pop(model, None)

    def _idle(self, model: str, now: float) -> bool:
        """Whether ``model``'s pin has ended (:data:`_PIN_IDLE_SECONDS`)."""
        return not self._busy.get(model) and \
            now - self._used.get(model, now) >= _PIN_IDLE_SECONDS

    def _for_model(self, what: str) -> tuple[int | None, Listing]:
        """The list ``what``'s decisions come from, pinning it on first use (and again, to a
        fresh list, once its pin has ended)."""
        now = self._clock()
        fresh = False
        if what in self._pins and self._idle(what, now):
            # only the models used lately stay pinned: the others are let go with it
            for model in [m for m in self._pins if self._idle(m, now)]:
                self._unpin(model)
            fresh = True  # a newer version may have been published since it was pinned
        generation = self._pins.get(what)
        listing = self._lists.get(generation) if what in self._pins else None
        if listing is None and what in self._pins and generation is not None:
            listing = self._pinned_list(generation)  # None: that generation is gone
        if listing is None:
            generation, listing = self._newest_list(fresh=fresh)
        self._pins[what], self._used[what] = generation, now
        return generation, listing

    def _repin(self, what: str, found: Callable[[Listing], bool]) -> tuple[int | None, Listing]:
        """``what``'s list, or a newer one when that list has not ``found`` what is asked for
        (published since it was read); ``what`` is then pinned to the newer one. A model asks
        for a fresh list at most once in :data:`_ASK_AGAIN_SECONDS`, whatever other models
        ask meanwhile (a model that is not on the mirror, probed for ten optional files in
        turn with another one, costs one request, not ten); a list another model read since
        is looked at without asking."""
        generation, listing = self._for_model(what)
        if found(listing):
            return generation, listing
        candidates = []
        if self._newest and self._newest[0] != generation:
            candidates.append(self._newest[0])  # read already, for another model
        now = self._clock()
        asked = self._asked.get(what)
        if asked is None or now - asked >= _ASK_AGAIN_SECONDS:
            # only the models that asked lately are remembered: a process asking about
            # thousands of models over its life does not keep them all
            self._asked = {m: t for m, t in self._asked.items()
                           if now - t < _ASK_AGAIN_SECONDS}
            self._asked[what] = now
            newer, _ = self._newest_list(fresh=True)
            candidates.append(newer)
        for newer in candidates:
            if newer in self._lists and found(self._lists[newer]):
                self._pins[what] = newer
                return newer, self._lists[newer]
        return generation, listing

    # -- what the patches ask ---------------------------------------------------------------
    def listing(self) -> Listing:
        """The newest list read (read now if none was)."""
        with self.lock:
            return self._newest_list()[1]

    def has_model(self, model_id: str, kind: str = "community") -> bool:
        """Whether the mirror serves ``model_id`` (as ``kind``), from its pinned list."""
        with self.lock:
            _, (models, _) = self._repin(model_id, lambda lst: lst[0].get(model_id) == kind)
            return models.get(model_id) == kind

    def has_file(self, what: str, rel: str) -> bool:
        """What the mirror's HEAD would answer for ``rel``, from ``what``'s pinned list (no
        fresh list: an optional file absent from it is absent in that version)."""
        with self.lock:
            return rel in self._for_model(what)[1][1]

    def forget(self) -> None:
        """Start over: every list and pin, and the connection."""
        with self.lock, self._opener_lock:
            self._lists.clear()
            self._newest.clear()
            self._pins.clear()
            self._used.clear()
            self._loaded.clear()
            self._asked.clear()
            self._opener, self._failed = None, None

    def fetch(self, rel: str, dest: str, what: str, md5sum: str | None = None) -> str:
        """Download the served file ``rel`` to ``dest``: written whole and checked against
        ``what``'s list (size, sha256; ``md5sum`` when given), then renamed into place, from
        that list's generation. A file that no longer matches (the generation was pruned, so
        the mirror answered from the current one) is tried once more with a fresh list, when
        nothing of ``what`` came from the pruned generation yet or the newer one serves the
        file unchanged; otherwise the model would mix two versions, and that is refused."""
        if not _clean_rel(rel):
            # the name came from PaddleNLP's arguments or from a file the mirror served
            # (a checkpoint index names the shards): it must stay inside the model's folder
            raise refused(IntegrityError(
                f"offline mode refuses to download {_printable(rel)!r} of {_printable(what)} "
                "from the mirror: the name leaves the model's folder",
                hint="check the model's checkpoint index and the arguments that name files"))
        pruned: tuple[str, int] | None = None  # the entry of a generation gone mid-load
        for attempt in (1, 2):
            with self.lock:
                generation, (_, files) = self._repin(what, lambda lst: rel in lst[1])
                self._busy[what] = self._busy.get(what, 0) + 1  # its pin lasts meanwhile
            try:
                entry = files.get(rel)
                if entry is None:
                    raise refused(_not_on_mirror(what, f"the mirror does not serve {rel}"))
                if pruned is not None and entry != pruned:
                    raise refused(NotOnMirrorError(
                        what, f"{what} changed on the mirror {redact_url(self.endpoint)} while "
                              f"it was loading: the version its first files came from is gone "
                              f"(pruned), and the newer one serves another {rel} (paddle-bundle "
                              "offline mode does not mix two versions of a model)",
                        hint=f"remove {what}'s folder from the cache and load it again"))
                got = self._download(rel, dest, entry, what, md5sum, generation)
                with self.lock:
                    if self._pins.get(what, -1) == generation:
                        self._loaded[what] = generation
                return got
            except _Stale as exc:
                if attempt == 2:
                    raise refused(_mirror_failure(
                        what, f"{self.endpoint}/{rel}", exc.cause,
                        hint="the mirror serves a file that does not match its own list: run "
                             "'paddle-bundle mirror check --root DIR' there, and publish the "
                             "model's bundle again")) from None
                with self.lock:
                    if what in self._loaded and self._loaded[what] == generation:
                        pruned = entry  # some of it came from there: the retry must match
                    self._drop(generation)
            finally:
                with self.lock:
                    self._busy[what] -= 1
                    if not self._busy[what]:
                        del self._busy[what]
                    if what in self._pins:
                        self._used[what] = self._clock()  # idle from the download's end
        raise AssertionError("unreachable")

    def _read_listing(self, generation: int | None = None
                      ) -> tuple[dict[str, str], dict[str, tuple[str, int]], int | None]:
        """The served list: the current generation's, or ``generation``'s while the mirror
        still has it."""
        import http.client  # its errors (BadStatusLine, IncompleteRead) are no OSErrors
        import urllib.error

        url = f"{self.endpoint}/{_LIST_PATH}"
        try:
            parts: list[bytes] = []
            with self._open(_LIST_PATH, generation) as response:
                _identity(response, _THE_LIST, url)
                if _stream(response, _LIST_LIMIT, parts.append) > _LIST_LIMIT:
                    raise ValueError(f"larger than {_LIST_LIMIT >> 20} MiB")
            return _parse_listing(b"".join(parts))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise refused(_mirror_failure(_THE_LIST, url, exc)) from None
            raise refused(UsageError(
                f"{redact_url(self.endpoint)} is not a paddle-bundle mirror ({_LIST_PATH} "
                f"answered 404), or nothing was published there by this version",
                hint=f"set {ENV_MIRROR} to the URL clients use as PPNLP_ENDPOINT "
                     "(http://HOST:PORT/paddlenlp), or publish a bundle there again")) \
                from None
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            raise refused(_mirror_failure(_THE_LIST, url, exc)) from None
        except ValueError as exc:
            raise refused(UsageError(
                f"{redact_url(url)} is not a paddle-bundle file list "
                f"({type(exc).__name__}: {_printable(str(exc))[:200]})",
                hint=f"check that {ENV_MIRROR} names a paddle-bundle mirror")) from None

    def _download(self, rel: str, dest: str, entry: tuple[str, int], what: str,
                  md5sum: str | None, generation: int | None) -> str:
        import hashlib
        import http.client
        import urllib.error

        sha256, size = entry
        url = f"{self.endpoint}/{rel}"
        folder = os.path.dirname(dest) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            # not mkstemp: its 0600 would keep the file from the cache's other users;
            # 0666 less the umask is what PaddleNLP's own downloads get
            temp = os.path.join(folder, f".paddle-bundle-mirror-{os.urandom(8).hex()}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise refused(_cannot_store(what, dest, exc)) from None
        try:
            # md5 only for Taskflow's files, which PaddleNLP pins by it (it halves throughput)
            digest, md5 = hashlib.sha256(), hashlib.md5() if md5sum else None
            with os.fdopen(fd, "wb") as out, self._open(rel, generation) as response:
                _identity(response, what, url)

                def take(chunk: bytes) -> None:
                    _write_local(out.write, chunk)
                    digest.update(chunk)
                    if md5 is not None:
                        md5.update(chunk)

                # never more than the list says: a broken mirror cannot fill the disk
                received = _stream(response, size, take)
                if received > size:
                    raise _Stale(OSError(f"the mirror sent more than the {size} bytes "
                                         "its file list gives"))
                _write_local(out.flush)
            if received != size:
                raise _Stale(OSError(f"received {received} of {size} bytes"))
            if digest.hexdigest() != sha256:
                raise _Stale(OSError(f"sha256 {digest.hexdigest()} is not the {sha256} of "
                                     "the mirror's file list"))
            if md5 is not None and md5.hexdigest() != md5sum:
                raise refused(_mirror_failure(what, url, OSError(
                    f"md5 {md5.hexdigest()} is not the {md5sum} PaddleNLP expects (the mirror "
                    "serves another version of this file than this PaddleNLP uses)"),
                    hint=f"publish a bundle made with paddlenlp {_paddlenlp_version()} on the "
                         "mirror, or install the model here from one"))
            _write_local(os.replace, temp, dest)
        except _Unwritable as exc:
            raise refused(_cannot_store(what, dest, exc.cause)) from None
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # listed, yet absent: this process's generation was pruned
                raise _Stale(exc) from None
            raise refused(_mirror_failure(what, url, exc)) from None
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            raise refused(_mirror_failure(what, url, exc)) from None
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return dest


#: A download that receives fewer than _STALL_BYTES in any _STALL_SECONDS is given up: the
#: socket time-out applies to each read, so a mirror (or proxy) trickling a byte at a time
#: would otherwise hold PaddleNLP forever.
_STALL_SECONDS = 60.0
_STALL_BYTES = 64 << 10


def _stream(response: Any, limit: int, take: Callable[[bytes], None]) -> int:
    """Hand ``response``'s body to ``take`` chunk by chunk, stopping once it is past
    ``limit`` bytes; the number of bytes received (``limit + 1`` at most)."""
    import time

    received = 0
    window_start, window_bytes = time.monotonic(), 0
    while received <= limit:
        chunk = response.read1(min(1 << 20, limit + 1 - received))
        if not chunk:
            break
        received += len(chunk)
        if received <= limit:
            take(chunk)
        window_bytes += len(chunk)
        now = time.monotonic()
        if now - window_start >= _STALL_SECONDS:
            if window_bytes < _STALL_BYTES:
                raise OSError(f"the mirror is too slow: {window_bytes} bytes in "
                              f"{now - window_start:.0f} s")
            window_start, window_bytes = now, 0
    return received


def _identity(response: Any, what: str, url: str) -> None:
    """Refuse a body that came compressed: offline mode never asks for it (no
    Accept-Encoding), so a proxy between here and the mirror added it, and the bytes would
    then match neither the size nor the sha256 of the list."""
    encoding = str(response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise refused(_mirror_failure(what, url, OSError(
            f"it came compressed (Content-Encoding: {_printable(encoding)[:40]})"),
            hint="serve the mirror uncompressed: nginx-config's server has 'gzip off', and a "
                 "proxy in front of it must not compress either"))


class _Unwritable(Exception):
    """Writing the download into the cache failed (a local problem, not the mirror's)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _write_local(func: Callable[..., object], *args: Any) -> None:
    try:
        func(*args)
    except OSError as exc:
        raise _Unwritable(exc) from None


def _cannot_store(what: str, dest: str, exc: OSError) -> BundleError:
    folder = os.path.dirname(dest) or "."
    return BundleError(
        f"offline mode cannot store {os.path.basename(dest)} of {_printable(what)} from the "
        f"mirror in {folder} ({type(exc).__name__}: {exc.strerror or exc})",
        hint="make that folder writable (PPNLP_HOME says where PaddleNLP's cache is), or "
             "install the model here from a bundle")


def _clean_rel(rel: str) -> bool:
    """Whether ``rel`` is a plain relative path, safe as :func:`bundler.paths.unsafe_reason`
    says of a bundle's paths (no ``..``, ``.`` or empty part, not absolute, no backslash,
    drive letter or control character), and printable. A download's target is the cache
    folder joined with the same parts, so it stays inside that folder."""
    from bundler.paths import unsafe_reason

    return unsafe_reason(rel) is None and rel.isprintable()


def _parse_listing(data: bytes) -> tuple[dict[str, str], dict[str, tuple[str, int]], int | None]:
    """The served list in ``data``, every entry checked (a sha256 is 64 hex digits, a size a
    non-negative integer): a broken or hostile mirror is refused as a whole, at once, with a
    :class:`ValueError` saying why, never a traceback (RecursionError, OverflowError)."""
    import json

    try:
        raw = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or \
            not isinstance(raw.get("files"), dict):
        raise ValueError("no 'models' and 'files' objects")
    models: dict[str, str] = {}
    for model_id, kind in raw["models"].items():
        if not isinstance(kind, str):
            raise ValueError(f"the kind of model {model_id!r} is not a string")
        models[model_id] = kind
    files: dict[str, tuple[str, int]] = {}
    hexdigits = frozenset("0123456789abcdef")
    for rel, entry in raw["files"].items():
        if not (isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], str)
                and len(entry[0]) == 64 and hexdigits.issuperset(entry[0])
                and type(entry[1]) is int and entry[1] >= 0):
            raise ValueError(f"the entry of {rel!r} is not [sha256, size]")
        files[rel] = (entry[0], entry[1])
    generation = raw.get("generation")
    if generation is not None and not (type(generation) is int and generation >= 0):
        raise ValueError("its generation is not a number")
    return models, files, generation


class _Stale(Exception):
    """A listed file the mirror no longer serves as listed."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


_CLIENTS: dict[str, _MirrorClient] = {}


def mirror_client() -> _MirrorClient | None:
    """This process's client of the mirror in :data:`ENV_MIRROR`, or None when none is set."""
    endpoint = mirror_endpoint()
    if endpoint is None:
        return None
    client = _CLIENTS.get(endpoint)
    if client is None:
        client = _CLIENTS.setdefault(endpoint, _MirrorClient(endpoint))
    return client


def _no_redirect_handler() -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx is then raised as an HTTPError: the mirror could not serve

    return NoRedirect()


def mirror_fetch(url: str, dest: str, what: str, md5sum: str | None = None) -> str:
    """Download the fixed URL ``url`` from the mirror to ``dest``, where PaddleNLP would have
    stored it (see :meth:`_MirrorClient.fetch`)."""
    from bundler._bucket import bucket_rel

    client, rel = mirror_client(), bucket_rel(url)
    if client is None or rel is None:
        raise refused(OfflineBlockedError(f"offline mode cannot download {url}",
                                          hint=f"only PaddleNLP's bucket is on {ENV_MIRROR}"))
    return client.fetch(rel, dest, what, md5sum)


def community_on_mirror(repo_id: str) -> bool:
    """Whether the mirror serves ``repo_id`` as a community model."""
    client = mirror_client()
    return client is not None and client.has_model(repo_id)


def community_rel(repo_id: str, rel: str) -> str:
    return f"models/community/{repo_id}/{rel}"


# -- switching it on -------------------------------------------------------------------------
_ACTIVE = False
_GUARDED = False


def activate() -> None:
    """Switch offline mode on for this process: idempotent, and cheap (no PaddleNLP import).

    PaddleNLP modules already imported are patched now (and an unknown version refused
    now); the others are patched as they are imported.
    """
    global _ACTIVE, _GUARDED
    if _ACTIVE:
        return
    _ACTIVE = True
    set_hub_offline()
    if env_flag(ENV_GUARD, "1"):
        sys.addaudithook(_audit)
        _GUARDED = True
    if not any(isinstance(f, PatchOnImport) and f.patches is None for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport())
    for name in _PATCHES:
        module = sys.modules.get(name)
        if module is not None:
            patch_module(name, module)
    install_load_guard()  # paddle.load refuses pickles naming globals off the allowlist


#: Set to 0 to let paddle.load unpickle without the allowlist under offline mode (warned).
ENV_LOAD_GUARD = "PADDLE_BUNDLE_LOAD_GUARD"
#: Paddle's modules that unpickle through their ``pickle`` name (bundler.scan.loadguard);
#: here so that switching offline mode on imports nothing of the scanner.
GUARDED_MODULES = ("paddle.framework.io", "paddle.framework.io_utils", "paddle.static.io",
                   "paddle.static.io_utils", "paddle.static.pir_io",
                   # paddle.jit.load unpickles *.pdiparams.info; paddle.Model.load *.pdparams
                   "paddle.jit.translated_layer", "paddle.hapi.model")


def _guard_paddle_module(module: ModuleType) -> None:
    from bundler.scan.loadguard import guard_module

    guard_module(module)


def install_load_guard() -> None:
    """The load-time pickle guard (:mod:`bundler.scan.loadguard`) for Paddle's loading
    modules: patched as they are imported, or now if they already are. Idempotent."""
    if not env_flag(ENV_LOAD_GUARD, "1"):
        _log("warning", "%s=0: paddle.load unpickles files without paddle-bundle's allowlist",
             ENV_LOAD_GUARD)
        return
    if not any(isinstance(f, PatchOnImport) and f.patches is not None
               and GUARDED_MODULES[0] in f.patches for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport({m: _guard_paddle_module
                                               for m in GUARDED_MODULES}))
    for name in GUARDED_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            _guard_paddle_module(module)


#: What the hub clients read to stay off the network: huggingface_hub's offline switch and
#: telemetry, PaddleNLP's AI Studio client's offline switch (paddlenlp/utils/download/common.py).
HUB_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "AISTUDIO_BOS_OFFLINE": "1"}


def set_hub_offline() -> None:
    """Switch the hub clients offline: in the environment (read when they are imported, and
    inherited by child processes) and in their modules if they are imported already."""
    os.environ.update(HUB_OFFLINE_ENV)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        vars(constants)["HF_HUB_OFFLINE"] = True
    common = sys.modules.get(f"{MOD_DOWNLOAD}.common")
    if common is not None and hasattr(common, "OFFLINE"):
        vars(common)["OFFLINE"] = True


def is_active() -> bool:
    return _ACTIVE


def is_guarded() -> bool:
    """True when the socket guard is on (it cannot be removed once added)."""
    return _GUARDED


# -- paddle-bundle run -----------------------------------------------------------------------
def run_environment(home: Path | None = None,
                    base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a command that should run in offline mode: ``base`` (default:
    this process's) plus ``PADDLE_BUNDLE_OFFLINE=1`` and, with ``home``, ``PPNLP_HOME``.

    When paddle-bundle runs from a virtual environment, that environment's ``bin`` goes first
    on ``PATH``, as its ``activate`` script would do: ``run -- python x.py`` must start the
    Python that has the start-up hook, not whichever ``python`` comes first, on which the
    variable would silently do nothing.
    """
    env = dict(os.environ if base is None else base)
    env[ENV_OFFLINE] = "1"
    if home is not None:
        env["PPNLP_HOME"] = os.path.abspath(os.path.expanduser(home))
    venv_first_on_path(env)
    return env


def venv_first_on_path(env: dict[str, str]) -> None:
    """Put the running virtual environment's ``bin`` first on ``env["PATH"]`` (as its
    ``activate`` would), so a command's ``python`` is the one paddle-bundle runs in."""
    if sys.prefix != sys.base_prefix:
        bin_dir = os.path.dirname(sys.executable)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[0] != bin_dir:
            env["PATH"] = f"{bin_dir}{os.pathsep}{path}" if path else bin_dir


def hook_path() -> Path | None:
    """Where this interpreter's start-up hook (:data:`PTH_NAME`) is installed, if anywhere."""
    import site
    from pathlib import Path

    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    for folder in dirs:
        candidate = Path(folder) / PTH_NAME
        if candidate.is_file():
            return candidate
    return None


def run_offline(command: Sequence[str], home: Path | None = None) -> int:
    """Run ``command`` with offline mode switched on in every Python it starts; its exit
    code (128 + N when killed by signal N, as shells report it).

    The switch is the environment variable plus the same start-up hook ``fetch``'s proof
    uses: a ``sitecustomize`` in a temporary folder first on ``PYTHONPATH``
    (:func:`bundler.capture.session.write_hook`), so a script that starts another Python
    (even one without paddle-bundle installed) behaves here as it did in the proof.
    """
    import tempfile
    from pathlib import Path

    if not command:
        raise UsageError("no command given", hint="paddle-bundle run -- python script.py")
    if home is not None and not Path(home).expanduser().is_dir():
        raise UsageError(f"--home {home} is not a directory",
                         hint="give the home the models were installed into")
    from bundler.cache import Cache, default_home

    # an install killed mid-swap is finished before the command looks at a model
    Cache(Path(home) if home is not None else default_home()).recover()
    # the same hook and the same runner as fetch -- CMD and its proof
    from bundler.capture.session import base_environment, run_command, write_hook

    with tempfile.TemporaryDirectory(prefix="paddle-bundle-run-") as tmp:
        env = run_environment(home, base_environment(write_hook(Path(tmp) / "hook")))
        return run_command(command, env, interrupt_fails=False)
