"""The PaddleNLP cache: where models live under a home, and paddle-bundle's own state there.

A home looks like PaddleNLP's (``$PPNLP_HOME`` or ``~/.paddlenlp``)::

    models/<org>/<name>/...          community models, as from_pretrained caches them
    taskflow/<task>/<model>/...      Taskflow's static models
    .paddle-bundle/                  ours: install records, staging, trash, lock

Models from the Hugging Face hub and AI Studio live in those libraries' own caches instead
(``hf/...`` and ``aistudio/...`` arcnames, see :func:`top_dirs`), which may be on another file
system; their install records still live in the home's ``.paddle-bundle/``.

Staging and trash sit on the same file system as the model they are for (:meth:`Cache.work_area`)
so that putting a model in place is a single atomic rename.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler._io import atomic_write_bytes, fsync_dir, sha256_file
from bundler.errors import BundleError, LockedError, ManifestError, ModelNotFoundError
from bundler.manifest import (
    HUB_KINDS,
    KIND_AISTUDIO,
    KIND_HF,
    FileEntry,
    Manifest,
    ModelEntry,
    hub_ref,
)
from bundler.paths import ALLOWED_TOPS, is_within, symlink_escape_reason, unsafe_reason

STATE_DIRNAME = ".paddle-bundle"
log = logging.getLogger(__name__)


def default_home() -> Path:
    """The home PaddleNLP itself would use: ``$PPNLP_HOME`` if set, else ``~/.paddlenlp``."""
    env = os.environ.get("PPNLP_HOME")
    return Path(env) if env else Path.home() / ".paddlenlp"


def _env_path(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return os.path.expanduser(value) if value else None


def hf_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The cache huggingface_hub (and so PaddleNLP's ``from_hf_hub=True``) reads and writes,
    by its own rule: ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, with
    ``HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``.
    Computed here rather than imported: huggingface_hub takes a second to import."""
    env = os.environ if env is None else env
    found = _env_path(env, "HF_HUB_CACHE") or _env_path(env, "HUGGINGFACE_HUB_CACHE")
    if found:
        return Path(os.path.abspath(found))
    xdg = _env_path(env, "XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = _env_path(env, "HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.abspath(hf_home)) / "hub"


def aistudio_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The cache PaddleNLP's ``from_aistudio=True`` uses (paddlenlp/utils/download/
    aistudio_hub_download.py in 3.0.0b4): ``$AISTUDIO_HUB_CACHE``, else ``$AISTUDIO_HOME/aistudio``,
    with ``AISTUDIO_HOME`` defaulting to ``$XDG_CACHE_HOME/paddle`` or ``~/.cache/paddle``.

    (aistudio-sdk's own ``hub.download``, which from_pretrained does not call, keeps files
    elsewhere: ``$AISTUDIO_CACHE_HOME/.cache/aistudio/models/``.)
    """
    env = os.environ if env is None else env
    found = _env_path(env, "AISTUDIO_HUB_CACHE")
    if found:
        return Path(os.path.abspath(found))
    xdg = _env_path(env, "XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = _env_path(env, "AISTUDIO_HOME") or os.path.join(xdg, "paddle")
    return Path(os.path.abspath(home)) / "aistudio"


def top_dirs(home: Path, env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Where each top folder of a bundle's arcnames lives on this machine."""
    return {"models": home / "models", "taskflow": home / "taskflow",
            KIND_HF: hf_hub_cache(env), KIND_AISTUDIO: aistudio_hub_cache(env)}


def path_of(home: Path, arcname: str, tops: Mapping[str, Path] | None = None) -> Path:
    """Where the file (or folder) ``arcname`` of a bundle lives on this machine."""
    top, _, rest = arcname.partition("/")
    base = (tops if tops is not None else top_dirs(home))[top]
    return base / rest if rest else base


@dataclass(frozen=True)
class LocalFile:
    """A file of a model folder on disk, ready to be packed (its checksum not yet known)."""

    arcname: str
    path: Path
    size: int
    mode: int
    target: str | None = None

    @classmethod
    def regular(cls, arcname: str, path: Path, st: os.stat_result) -> LocalFile:
        """A regular file, its mode normalised (the packing user's umask is not content)."""
        return cls(arcname, path, st.st_size, _normal_mode(st.st_mode))

    def entry(self, sha256: str | None = None) -> FileEntry:
        return FileEntry(self.arcname, self.size, sha256, self.mode, self.target)


def scan_model(home: Path, model: ModelEntry) -> list[LocalFile]:
    """Every file of a model folder, sorted by arcname.

    Symlinks are kept as links when they stay inside the folder (HF-style ``snapshots/`` to
    ``blobs/``); anything else that is not a regular file is refused, naming the path.
    """
    Cache(home).recover()  # a model moved aside by a killed install goes back first
    folder = path_of(home, model.root)
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"model {model.id} is not in the cache: {folder} does not exist",
            hint="load it once with PaddleNLP (or run 'paddle-bundle fetch') on this machine, "
                 + ("or set the cache's environment variable (docs/format.md)"
                    if model.kind in HUB_KINDS else "or pass --home"))
    if model.kind in HUB_KINDS:
        return _scan_hub_model(folder, model)
    found: list[LocalFile] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
            path = Path(dirpath) / name
            arcname = f"{model.root}/{path.relative_to(folder).as_posix()}"
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                reason = symlink_escape_reason(arcname, target, model.root)
                if reason:
                    raise BundleError(f"cannot pack {path}: {reason}",
                                      hint="replace the link with the file it points to")
                found.append(LocalFile(arcname, path, 0, 0o777, target))
            elif stat.S_ISREG(st.st_mode):
                found.append(LocalFile.regular(arcname, path, st))
            else:
                raise BundleError(f"cannot pack {path}: not a regular file or symlink",
                                  hint="remove it from the model folder")
    if not found:
        raise ModelNotFoundError(f"model {model.id} is not in the cache: {folder} is empty",
                                 hint="load it once with PaddleNLP on this machine")
    return sorted(found, key=lambda f: f.arcname)


def _scan_hub_model(folder: Path, model: ModelEntry) -> list[LocalFile]:
    """A hub cache folder as huggingface_hub would read it offline: every ``refs/`` file, every
    revision in ``snapshots/`` (links kept), the ``blobs/`` those links lead to and nothing
    else (unreferenced or half-downloaded blobs stay behind), and the ``.no_exist/`` markers
    of the revisions packed."""
    snapshots = folder / "snapshots"
    revisions = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    if not revisions:
        raise ModelNotFoundError(f"model {model.id} is not in the cache: {snapshots} holds no "
                                 "revision", hint="load it once with PaddleNLP on this machine")
    paths = [p for rev in revisions for p in _walk_files(snapshots / rev)]
    paths += list(_walk_files(folder / "refs")) if (folder / "refs").is_dir() else []
    for rev in revisions:
        marker = folder / ".no_exist" / rev
        paths += list(_walk_files(marker)) if marker.is_dir() else []
    files = hub_local_files(folder, model, paths)
    return sorted(files, key=lambda f: f.arcname)


def hub_local_files(folder: Path, model: ModelEntry, paths: Iterable[Path]) -> list[LocalFile]:
    """``paths`` (files of the hub cache folder ``folder`` of ``model``) as LocalFiles, plus
    the blob each snapshot link leads to. Links must lead to a file in ``blobs/``; anything
    else is refused, naming the path."""
    found: dict[str, LocalFile] = {}
    blobs = folder / "blobs"
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        arcname = f"{model.root}/{rel}"
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            blob = Path(os.path.normpath(path.parent / target))
            if os.path.isabs(target) and blob.parent == blobs:
                # older huggingface_hub wrote absolute links; the bundle carries the relative
                # link newer ones write, which survives the move to another machine
                target = os.path.relpath(blob, path.parent)
            reason = symlink_escape_reason(arcname, target, model.root)
            if reason is None and (blob.parent != blobs or not rel.startswith("snapshots/")):
                reason = f"symlink {target!r} does not lead to a file in blobs/"
            if reason is None and not blob.is_file():
                reason = f"symlink {target!r} leads to a missing blob"
            if reason:
                raise BundleError(f"cannot pack {path}: {reason}",
                                  hint="download the model again (the cache is damaged)")
            found[arcname] = LocalFile(arcname, path, 0, 0o777, target)
            blob_arc = f"{model.root}/blobs/{blob.name}"
            if blob_arc not in found:
                found[blob_arc] = LocalFile.regular(blob_arc, blob, blob.stat())
        elif stat.S_ISREG(st.st_mode):
            found[arcname] = LocalFile.regular(arcname, path, st)
        else:
            raise BundleError(f"cannot pack {path}: not a regular file or symlink",
                              hint="remove it from the model folder")
    return list(found.values())


def hub_snapshot(folder: Path, kind: str) -> Path | None:
    """The snapshot folder a hub client loads by default: the revision ``refs/main``
    (huggingface_hub) or ``refs/master`` (AI Studio) names, else the only one there is."""
    branch = "main" if kind == KIND_HF else "master"
    try:
        revision = (folder / "refs" / branch).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        revision = ""
    snapshots = folder / "snapshots"
    if revision and "/" not in revision and (snapshots / revision).is_dir():
        return snapshots / revision
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    return found[0] if len(found) == 1 else None


def hub_capture(paths: Iterable[str | os.PathLike[str]], *,
                env: Mapping[str, str] | None = None) -> dict[ModelEntry, list[LocalFile]]:
    """For the capture recorder: the absolute paths huggingface_hub or PaddleNLP's AI Studio
    client returned from their caches -> each model ref and the files to pack for it.

    A path is a snapshot file (``<cache>/models--org--name/snapshots/<rev>/<file>``, usually
    a link) or a blob; each model gets the snapshot entries named, the blobs they lead to,
    and the ``refs/`` files naming a revision used (so ``revision="main"`` resolves offline).
    Which hub a path belongs to is decided by the cache it lies in (:func:`hf_hub_cache`,
    :func:`aistudio_hub_cache` under ``env``); a path in neither raises ``ValueError``.
    """
    caches = {KIND_HF: hf_hub_cache(env), KIND_AISTUDIO: aistudio_hub_cache(env)}
    wanted: dict[ModelEntry, tuple[Path, set[Path], set[str]]] = {}
    for raw in paths:
        path = Path(os.path.abspath(raw))
        kind = next((k for k, c in caches.items()
                     if is_within(path.as_posix(), c.as_posix()) and path != c), None)
        if kind is None:
            raise ValueError(f"{path} is in neither hub cache ({caches[KIND_HF]}, "
                             f"{caches[KIND_AISTUDIO]})")
        cache = caches[kind]
        parts = path.relative_to(cache).parts
        if len(parts) < 3 or parts[1] not in ("snapshots", "blobs"):
            raise ValueError(f"{path} is not a snapshot file or blob of a hub cache folder")
        folder = cache / parts[0]
        model = ModelEntry.for_id(hub_ref(kind, parts[0]))
        _, files, revisions = wanted.setdefault(model, (folder, set(), set()))
        files.add(path)
        if parts[1] == "snapshots":
            revisions.add(parts[2])
    out: dict[ModelEntry, list[LocalFile]] = {}
    for model, (folder, files, revisions) in wanted.items():
        refs = folder / "refs"
        for ref in _walk_files(refs) if refs.is_dir() else ():
            try:
                if ref.read_text(encoding="utf-8").strip() in revisions:
                    files.add(ref)
            except (OSError, UnicodeDecodeError):
                continue
        out[model] = sorted(hub_local_files(folder, model, sorted(files)),
                            key=lambda f: f.arcname)
    return out


def _normal_mode(st_mode: int) -> int:
    """0755 for executables, 0644 otherwise: the umask of the packing user is not content."""
    return 0o755 if st_mode & 0o111 else 0o644


def _why(exc: BaseException) -> str:
    """A damaged record's reason in one short line: never the exception's repr, which for a
    decoding error quotes the whole file."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


@dataclass(frozen=True)
class InstallRecord:
    """What ``install`` put in place for one model; ``list`` and ``check`` read these."""

    model: ModelEntry
    files: tuple[FileEntry, ...]
    bundle: str
    manifest_sha256: str
    installed_at: str
    bundle_created: str
    #: who signed the bundle, as install checked it ("" when unsigned)
    signer: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "bundle": self.bundle,
                "manifest_sha256": self.manifest_sha256, "installed_at": self.installed_at,
                "bundle_created": self.bundle_created,
                **({"signer": self.signer} if self.signer else {}),
                "files": [f.to_dict() for f in self.files]}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> InstallRecord:
        """Parse a record; a damaged one raises ManifestError naming the file."""
        try:
            return cls.from_dict(json.loads(data), source)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"install record {source} is damaged ({_why(exc)})",
                                hint="install the model's bundle again") from None

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> InstallRecord:
        try:
            files = Manifest.from_dict(
                {"schema_version": 1, "origin": {"tool_version": "", "created": ""},
                 "models": [raw["model"]], "files": raw["files"]}, source=source)
            return cls(model=files.models[0], files=files.files, bundle=str(raw["bundle"]),
                       manifest_sha256=str(raw["manifest_sha256"]),
                       installed_at=str(raw["installed_at"]),
                       bundle_created=str(raw.get("bundle_created", "")),
                       signer=str(raw.get("signer", "")))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"install record {source} is damaged ({_why(exc)})",
                                hint="install the model's bundle again") from None


class Cache:
    """One PaddleNLP home, seen by paddle-bundle.

    Every way in that reads install records (:meth:`record`, :meth:`records`) first finishes
    what a killed install left behind (:meth:`recover`), so ``list``, ``check``, ``install``,
    ``pack`` and offline mode never see a model folder and a record that disagree. Where
    recovery cannot run (a read-only home, or another install holding the lock right now),
    they read the records as recovery would leave them.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(os.path.abspath(os.path.expanduser(home)))
        self.state = self.home / STATE_DIRNAME
        self.tops = top_dirs(self.home)
        self._holding_lock = False
        self._hashes: dict[tuple[str, int, int, int, int, int], str] = {}

    # -- locations --------------------------------------------------------------------
    def path_of(self, arcname: str) -> Path:
        """Where ``arcname`` (a bundle path: ``models/...``, ``hf/...``) lives here."""
        return path_of(self.home, arcname, self.tops)

    def model_path(self, model: ModelEntry) -> Path:
        return self.path_of(model.root)

    def work_area(self, root: str) -> Path:
        """Where staging and trash for the model folder ``root`` go: beside it, on its file
        system, so it moves in with one rename. The home's own ``.paddle-bundle/`` for
        ``models/`` and ``taskflow/``; a folder of this home's in the hub cache for the
        others (two homes may share one hub cache, and each recovers only its own)."""
        top = root.split("/", 1)[0]
        if top in ("models", "taskflow"):
            return self.state
        # the real path: a home reached through a link (/home -> /data/home) is one home,
        # whose interrupted installs any path to it must find
        tag = hashlib.sha256(os.fsencode(os.path.realpath(self.home))).hexdigest()[:16]
        return self.tops[top] / STATE_DIRNAME / tag

    def _work_areas(self) -> list[Path]:
        return [self.state] + [self.work_area(top) for top in HUB_KINDS]

    def _record_path(self, model: ModelEntry) -> Path:
        return self.state / "installed" / f"{model.root}.json"

    # -- records ----------------------------------------------------------------------
    def record(self, model: ModelEntry) -> InstallRecord | None:
        self.recover()
        for record in self._pending_records():  # recovery could not run: what it would do
            if record.model.root == model.root:
                return record
        path = self._record_path(model)
        try:
            return InstallRecord.from_json(path.read_bytes(), str(path))
        except FileNotFoundError:
            return None

    def records(self) -> list[InstallRecord]:
        self.recover()
        by_root: dict[str, InstallRecord] = {}
        base = self.state / "installed"
        for path in sorted(base.rglob("*.json")) if base.is_dir() else ():
            try:
                record = InstallRecord.from_json(path.read_bytes(), str(path))
            except ManifestError as exc:
                log.warning("%s", exc)
                continue
            by_root[record.model.root] = record
        for record in self._pending_records():  # recovery could not run: what it would do
            by_root[record.model.root] = record
        return sorted(by_root.values(), key=lambda r: r.model.id)

    def write_record(self, record: InstallRecord) -> None:
        path = self._record_path(record.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, record.to_json())

    def swap_in_recorded(self, swaps: Sequence[tuple[Path, InstallRecord]],
                         swapped: Callable[[ModelEntry], None] = lambda model: None) -> None:
        """Swap models in and replace their records, each swap and its record as one step
        as far as a crash can tell; ``swapped`` hears of each model once it is in place.

        The new records go to one journal in ``pending/`` first, each with the identity
        (device and inode) of its staged folder; after the swaps the records are written and
        the journal removed. Killed in between, :meth:`recover` commits each record whose
        folder is the one now in place and drops the others: a test that two versions with
        files of the same sizes cannot fool, at the cost of one ``lstat``. A failed swap
        stops the loop; the records of the models already swapped are still committed.
        """
        journal = self.state / "pending" / f"{uuid.uuid4().hex}.json"
        entries = []
        for staged, record in swaps:
            st = os.lstat(staged)
            entries.append({"folder": {"dev": st.st_dev, "ino": st.st_ino},
                            "record": record.to_dict()})
        journal.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(journal, json.dumps({"swaps": entries}, ensure_ascii=False).encode())
        fsync_dir(journal.parent)
        done: list[InstallRecord] = []
        failed = True
        try:
            for staged, record in swaps:
                self.swap_in(staged, record.model, durable=False)
                done.append(record)
                swapped(record.model)
            failed = False
        finally:
            try:
                self._commit(done, journal)
            except OSError as exc:
                if not failed:
                    raise
                log.warning("the records of %s will be written by the next command: %s",
                            ", ".join(r.model.id for r in done), exc)

    def _commit(self, records: Sequence[InstallRecord], journal: Path) -> None:
        """Swaps and records durable, then the journal gone: killed before that, recovery
        commits the same records again."""
        for record in records:
            _replace_unsynced(self._record_path(record.model), record.to_json())
        places = {os.stat(p).st_dev: p for p in
                  [*(self.model_path(r.model).parent for r in records), self.state]}
        if not all([sync_file_system(place) for place in places.values()]):
            for record in records:
                path = self._record_path(record.model)
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                fsync_dir(path.parent)
                fsync_dir(self.model_path(record.model).parent)
        journal.unlink(missing_ok=True)
        fsync_dir(journal.parent)

    def _read_pending(self, path: Path) -> list[tuple[InstallRecord, bool]]:
        """The records of a journal, each with whether its folder is the one in place."""
        try:
            raw: Any = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return []
        out = []
        try:
            if isinstance(raw, dict) and isinstance(raw.get("swaps"), list):
                for entry in raw["swaps"]:
                    record = InstallRecord.from_dict(entry["record"], str(path))
                    out.append((record, self._is_in_place(record.model, entry.get("folder"))))
            else:  # written before journals carried the folder's identity: compare files
                record = InstallRecord.from_dict(raw, str(path))
                out.append((record, not self.differences(record.files, quick=True)))
        except (ManifestError, AttributeError, KeyError, TypeError):
            return []
        return out

    def _is_in_place(self, model: ModelEntry, folder: Any) -> bool:
        try:
            st = os.lstat(self.model_path(model))
        except OSError:
            return False
        return isinstance(folder, dict) and \
            (st.st_dev, st.st_ino) == (folder.get("dev"), folder.get("ino"))

    def _pending_records(self) -> list[InstallRecord]:
        """Records that recovery would commit (for readers when it could not run)."""
        found: list[InstallRecord] = []
        for path in _journals(self.state / "pending"):
            found.extend(record for record, in_place in self._read_pending(path) if in_place)
        return found

    # -- comparing what is installed ------------------------------------------------
    def differences(self, files: tuple[FileEntry, ...], *, quick: bool = False) -> list[str]:
        """How the files on disk differ from ``files``: each changed or missing file. Empty
        when identical.

        Sizes are compared first; with ``quick`` a size difference is answer enough and no
        file is hashed, which tells a different version apart cheaply.
        """
        problems: list[str] = []
        to_hash: list[tuple[FileEntry, Path]] = []
        for entry in files:
            path = self.path_of(entry.path)
            try:
                st = path.lstat()
            except FileNotFoundError:
                problems.append(f"{entry.path}: missing")
                continue
            except NotADirectoryError:
                problems.append(f"{entry.path}: missing (a file is in the way)")
                continue
            if entry.is_symlink:
                if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != entry.target:
                    problems.append(f"{entry.path}: symlink changed")
            elif not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                problems.append(f"{entry.path}: changed (size {st.st_size}, expected "
                                f"{entry.size})")
            else:
                to_hash.append((entry, path))
        if problems and quick:
            return problems
        for entry, path in to_hash:
            if self._sha256(path) != entry.sha256:
                problems.append(f"{entry.path}: changed (sha256 differs)")
        return problems

    def _sha256(self, path: Path) -> str:
        """A file's sha256, hashed once per Cache while the file is unchanged: install plans
        again under the lock, and must not read a large model twice to do it."""
        st = os.stat(path)
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            digest = self._hashes[key] = sha256_file(path)
        return digest

    def extra_files(self, model: ModelEntry, files: tuple[FileEntry, ...]) -> list[str]:
        """Files in the model folder that ``files`` does not list (added after install)."""
        return self.unreplaced(model, (f.path for f in files))

    def unreplaced(self, model: ModelEntry, keep: Iterable[str]) -> list[str]:
        """Every file, link or other non-folder entry below the model's folder (as arcnames)
        that is not in ``keep``: what replacing the folder would delete without putting back.
        Empty for a folder that is a symlink (replacing it removes only the link)."""
        folder = self.model_path(model)
        if folder.is_symlink() or not folder.is_dir():
            return []
        wanted = set(keep)
        found = (f"{model.root}/{p.relative_to(folder).as_posix()}" for p in _walk_files(folder))
        return sorted(a for a in found if a not in wanted)

    # -- locking, recovery, staging, swapping -------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the home's install lock, after recovering; the kernel drops it if we are
        killed."""
        import fcntl

        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                     0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another paddle-bundle install is running on {self.home}",
                                  hint="wait for it to finish, then run this again") from None
            self._holding_lock = True
            try:
                self._recover()
                yield
            finally:
                self._holding_lock = False
        finally:
            os.close(fd)

    def recover(self) -> None:
        """Finish what a killed install left behind, if anything: put back a model that was
        moved aside, settle each pending record by the folder actually in place, clear
        staging. One ``listdir`` per state folder when there is nothing to do.

        Skipped when another install holds the lock (it is mid-swap, or will recover itself)
        and when the home cannot be written; readers then work the state out read-only.
        """
        if self._holding_lock or not self._leftovers():
            return
        try:
            with self.locked():
                pass
        except LockedError:
            log.debug("not recovering %s: an install is running", self.home)
        except OSError as exc:
            log.warning("could not finish an interrupted install in %s: %s", self.home, exc)

    def _leftovers(self) -> bool:
        folders = [self.state / "pending"]
        folders += [area / name for area in self._work_areas() for name in ("trash", "staging")]
        for folder in folders:
            try:
                if os.listdir(folder):
                    return True
            except OSError:
                continue
        return False

    def _recover(self) -> None:
        """Put models moved aside back when their replacement never arrived, then settle
        pending records (which compare with the folder now in place), then clear staging,
        which is always disposable. In that order: staging may hold the folder a pending
        record names, so it goes last. In every work area (the home's, and this home's in
        each hub cache)."""
        areas = [area for area in self._work_areas() if self._own_area(area)]
        for area in areas:
            trash = area / "trash"
            for entry in sorted(trash.iterdir()) if _real_folder(trash) else ():
                if not _real_folder(entry):  # never ours: a link or file planted here
                    log.warning("removed %s: not a folder paddle-bundle made", entry)
                    entry.unlink(missing_ok=True)
                    continue
                root = _read_root(entry / "root")
                old = entry / "model"
                known = root is not None and self.work_area(root) == area
                if not known and os.path.lexists(old):
                    log.warning("kept %s: a model moved aside whose place is unknown", old)
                    continue
                target = self.path_of(root) if root is not None and known else None
                if target is not None and os.path.lexists(old) and not os.path.lexists(target):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(old, target)
                    fsync_dir(target.parent)
                _remove_trash_entry(entry)
            if area != self.state:
                _remove_empty(area / "trash", stop=area.parent.parent)
        if self.state in areas:
            self._recover_records()
        for area in areas:
            staging = area / "staging"
            if os.path.islink(staging):
                log.warning("removed %s: a link where paddle-bundle keeps its staging", staging)
                staging.unlink()
            shutil.rmtree(staging, ignore_errors=True)
            if area != self.state:
                _remove_empty(staging, stop=area.parent.parent)

    def _own_area(self, area: Path) -> bool:
        """Whether ``area`` and every state folder above it are real folders: recovery
        deletes inside them, so a symlink planted there (a hub cache may be shared with other
        users) must never lead it to another folder. The home's own ``.paddle-bundle`` may
        be a link its owner made; what is inside it may not."""
        folders = [] if area == self.state else [area.parent, area]
        for folder in folders:
            if os.path.lexists(folder) and not _real_folder(folder):
                log.warning("not recovering in %s: it is not a folder paddle-bundle made "
                            "(a symlink?); remove it", folder)
                return False
        for name in ("trash", "pending"):
            link = area / name
            if os.path.islink(link):
                log.warning("removed %s: a link where paddle-bundle keeps its state", link)
                link.unlink()
        return True

    def _recover_records(self) -> None:
        base = self.state / "pending"
        if not base.is_dir():
            return
        for path in _journals(base):
            self._commit([r for r, in_place in self._read_pending(path) if in_place], path)
        shutil.rmtree(base, ignore_errors=True)  # dropped records, half-written temporaries

    def new_staging(self, root: str = "models") -> Path:
        """A fresh staging folder on the file system of the model folder ``root``."""
        path = self.work_area(root) / "staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def drop_staging(self, staging: Path) -> None:
        """Remove a staging folder, and the hub cache's work area if that leaves it empty."""
        shutil.rmtree(staging, ignore_errors=True)
        area = staging.parent.parent
        if area != self.state:
            _remove_empty(area / "staging", stop=area.parent.parent)

    def swap_in(self, staged: Path, model: ModelEntry, *, durable: bool = True) -> None:
        """Put the verified folder ``staged`` at the model's place, atomically; afterwards
        ``staged`` holds the old model (or nothing), for the caller's staging clean-up.

        A new model is one ``rename``. Replacing one uses ``renameat2(RENAME_EXCHANGE)`` where
        the kernel has it, so the path always holds a complete model; elsewhere the old folder
        is moved aside with a journal first, and :meth:`recover` (run by the next command of
        any kind) puts it back if we die between the two renames. ``durable=False`` leaves
        the final fsync of the new entry to the caller (one ``syncfs`` for many models).
        """
        target = self.model_path(model)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(target):
            os.rename(staged, target)
        elif not _exchange(staged, target):
            self._swap_through_trash(staged, target, model)
        if durable:
            fsync_dir(target.parent)

    def _swap_through_trash(self, staged: Path, target: Path, model: ModelEntry) -> None:
        """Two renames, for file systems without RENAME_EXCHANGE: the window between them is
        covered by the journal in ``trash/`` (docs/format.md)."""
        trash = self.work_area(model.root) / "trash"
        aside = trash / uuid.uuid4().hex
        aside.mkdir(parents=True)
        atomic_write_bytes(aside / "root", model.root.encode())
        fsync_dir(aside)
        fsync_dir(trash)
        os.rename(target, aside / "model")
        os.rename(staged, target)
        fsync_dir(target.parent)  # the new model durable in place before the old one goes
        _remove_trash_entry(aside)
        area = self.work_area(model.root)
        if area != self.state:
            _remove_empty(area / "trash", stop=area.parent.parent)


def _real_folder(path: Path) -> bool:
    """A folder itself, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _journals(base: Path) -> list[Path]:
    """The journals in ``pending/``: regular files only (a folder or link named like one,
    which install never writes, is cleared with the rest of the folder, never read or
    unlinked one by one)."""
    if not _real_folder(base):
        return []
    return sorted(p for p in base.rglob("*.json") if stat.S_ISREG(p.lstat().st_mode))


def _read_root(path: Path) -> str | None:
    """The model root a trash journal names, if it is one: a small regular file (never read
    through a link) holding a safe arcname below a known top folder, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        root = os.read(fd, 4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    top = root.split("/", 1)[0]
    if unsafe_reason(root) is not None or "/" not in root or top not in ALLOWED_TOPS:
        return None
    return root


def _remove_trash_entry(entry: Path) -> None:
    """Delete a trash entry, the model first and its journal last: killed half-way, the
    entry still names its place (a journal gone first would leave the rest of the old model
    kept forever as "place unknown")."""
    shutil.rmtree(entry / "model", ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(entry / "model")  # a model that was a symlink
    shutil.rmtree(entry, ignore_errors=True)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents while they are empty, up to but not ``stop``."""
    while folder != stop and is_within(folder.as_posix(), stop.as_posix()):
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return
        folder = folder.parent


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            yield Path(dirpath) / name


_RENAME_EXCHANGE = 2
_libc: Any = None


def _c_library() -> Any:
    """The C library through ctypes, or False where it cannot be loaded."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return _libc


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2; False where that is not available."""
    libc = _c_library()
    if not libc or not hasattr(libc, "renameat2"):
        return False
    at_fdcwd = -100
    rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def sync_file_system(path: Path) -> bool:
    """Make every write to the file system holding ``path`` durable with one ``syncfs``
    (Linux), instead of an fsync per file and folder: with thousands of small files the
    fsyncs, not the bytes, are the cost. False where ``syncfs`` is not available; the caller
    then fsyncs one by one."""
    libc = _c_library()
    if not libc or not hasattr(libc, "syncfs"):
        return False
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        rc = libc.syncfs(fd)
    finally:
        os.close(fd)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return True


def _replace_unsynced(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (temporary file, then rename), leaving durability to
    a later :func:`sync_file_system`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_MODEL_MARKERS = ("config.json", "model_config.json", "tokenizer_config.json")


def installed_hub_models(home: Path) -> dict[str, Path]:
    """``hf:org/name`` / ``aistudio:org/name`` -> the snapshot folder a load by name reads,
    for every hub model in this machine's hub caches (installed there by paddle-bundle, or
    cached by the hub clients themselves). ``home`` only matters through nothing but the
    environment today; it is taken for symmetry with :func:`installed_models`."""
    cache = Cache(home)
    found: dict[str, Path] = {}
    for kind in HUB_KINDS:
        base = cache.tops[kind]
        for folder in sorted(base.glob("models--*")) if base.is_dir() else ():
            try:
                ref = hub_ref(kind, folder.name)
            except ValueError:
                continue
            snapshot = hub_snapshot(folder, kind)
            if snapshot is not None:
                found[ref] = snapshot
    return found


def installed_models(home: Path) -> dict[str, Path]:
    """Model id -> folder, for every community model in ``home``: those paddle-bundle
    installed (its records) and those PaddleNLP cached itself (a folder under ``models/``
    holding a config or tokenizer config), as ``org/name`` or plain ``name``."""
    cache = Cache(home)
    found = {r.model.id: cache.model_path(r.model) for r in cache.records()
             if r.model.kind == "community"}
    models = cache.home / "models"
    if models.is_dir():
        for first in sorted(p for p in models.iterdir() if p.is_dir()):
            if any((first / m).is_file() for m in _MODEL_MARKERS):
                found.setdefault(first.name, first)
                continue
            for second in sorted(p for p in first.iterdir() if p.is_dir()):
                if any((second / m).is_file() for m in _MODEL_MARKERS):
                    found.setdefault(f"{first.name}/{second.name}", second)
    return found

