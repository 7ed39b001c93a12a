"""Install: a bundle -> the same cache folders on the offline machine, safely.

Plan first, then act: the manifest alone decides what is new, unchanged or in conflict, and
whether it fits, before a byte is written. Then every file is checked while it is extracted
into staging on the target's file system, and each model folder is swapped into place with an
atomic rename only once the whole bundle has verified. Killed at any moment, the cache holds
the old model or the new one, never a mix; the next run clears what was left in staging.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bundler._io import fsync_dir, read_chunks
from bundler.archive import BundleReader
from bundler.cache import Cache, InstallRecord, hub_snapshot, installed_models
from bundler.errors import (
    DeltaBaseMissingError,
    InstallConflictError,
    InsufficientSpaceError,
    IntegrityError,
    ManifestError,
)
from bundler.manifest import HUB_KINDS, KIND_TASKFLOW, FileEntry, Manifest, ModelEntry
from bundler.paths import is_within
from bundler.verify import stream_check
from bundler.volumes import locate

#: Kept free on the target besides the models themselves (file system slack, records).
SPACE_MARGIN = 64 << 20

NEW, UNCHANGED, REPLACED = "installed", "unchanged", "replaced"


@dataclass(frozen=True)
class ModelOutcome:
    model: ModelEntry
    path: Path
    status: str  # installed | unchanged | replaced


@dataclass(frozen=True)
class InstallResult:
    bundle: Path
    manifest: Manifest
    outcomes: tuple[ModelOutcome, ...]


@dataclass(frozen=True)
class InstallPlan:
    manifest: Manifest
    new: tuple[ModelEntry, ...]
    unchanged: tuple[ModelEntry, ...]
    different: tuple[ModelEntry, ...]

    def to_write(self, force: bool) -> tuple[ModelEntry, ...]:
        return self.new + (self.different if force else ())


def make_plan(cache: Cache, manifest: Manifest) -> InstallPlan:
    """Decide, from the manifest and what is on disk, what install will do.

    A delta bundle's base files must already be installed, byte for byte; otherwise the
    plan fails naming every missing one, before anything is written.
    """
    base = tuple(f for f in manifest.files if f.from_base)
    if base:
        missing = cache.differences(base)
        if missing:
            raise DeltaBaseMissingError(
                f"this delta bundle relies on {len(missing)} installed file(s) that are not "
                f"in {cache.home}", missing,
                hint="install the full bundle it was made against first, or ask for a full "
                     "bundle (pack without --exclude-installed)")
    nested = _nested_in_installed(cache, manifest)
    if nested:
        raise InstallConflictError(
            "refusing to put one model inside another: " + "; ".join(nested),
            hint="these ids cannot live side by side in one home; install into another --home")
    new, unchanged, different = [], [], []
    for model in manifest.models:
        if not cache.model_path(model).exists():
            new.append(model)
        elif cache.differences(manifest.files_of(model), quick=True):
            different.append(model)
        else:
            unchanged.append(model)
    return InstallPlan(manifest, tuple(new), tuple(unchanged), tuple(different))


def _nested_in_installed(cache: Cache, manifest: Manifest) -> list[str]:
    """Models of the bundle whose folder would contain, or sit inside, the folder of a model
    already installed (``Salesforce`` against ``Salesforce/codegen``). Replacing either would
    destroy the other, so this is refused even with ``--force``."""
    installed = {f"models/{model_id}" for model_id in installed_models(cache.home)}
    for record in cache.records():
        installed.add(record.model.root)
    clashes = []
    for model in manifest.models:
        for other in sorted(installed):
            if other != model.root and (is_within(other, model.root)
                                        or is_within(model.root, other)):
                clashes.append(f"{model.id} ({model.root}) and the installed {other}")
    return clashes


class StagingSink:
    """Writes verified members below ``staging`` for the models being installed; only hashes
    the members of models that are already in place.

    Files are created with ``O_EXCL | O_NOFOLLOW`` and symlinks only after every file, so no
    member can write through a link. Paths were validated against the manifest before any
    of this runs.
    """

    def __init__(self, staging: Mapping[str, Path], installed: Callable[[str], Path]) -> None:
        #: model root -> the staging folder it is written below (on its own file system)
        self.staging = staging
        self.installed = installed  # arcname -> where it is installed now
        self._symlinks: list[FileEntry] = []
        self._written: list[tuple[Path, int]] = []

    def _root(self, entry: FileEntry) -> str | None:
        return next((root for root in self.staging if is_within(entry.path, root)), None)

    def _wanted(self, entry: FileEntry) -> bool:
        return self._root(entry) is not None

    def staged(self, arcname: str) -> Path:
        root = next(root for root in self.staging if is_within(arcname, root))
        return self.staging[root] / arcname

    def _store(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> str:
        """Hash ``chunks``, writing them to the entry's staging path when it is wanted."""
        digest = hashlib.sha256()
        if not self._wanted(entry):
            for chunk in chunks:
                digest.update(chunk)
            return digest.hexdigest()
        dest = self.staged(entry.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(dest, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        self._written.append((dest, entry.mode))
        return digest.hexdigest()

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> str:
        return self._store(entry, chunks)

    def write_copy(self, entry: FileEntry, source: FileEntry) -> str:
        """Content stored once in the bundle, written again at ``entry``: copied from the
        verified staging file, or from the installed copy when its model is unchanged."""
        if not self._wanted(entry):
            return entry.sha256 or ""
        origin = self.staged if self._wanted(source) else self.installed
        return self._store(entry, read_chunks(origin(source.path)))

    def link_base(self, entries: tuple[FileEntry, ...]) -> None:
        """A delta's base files: hard-linked from the installed copy (checked by the plan),
        so the model is whole in staging before the swap and nothing is copied."""
        for entry in entries:
            if not self._wanted(entry):
                continue
            dest = self.staged(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.installed(entry.path), dest)
            except OSError:
                self._store(entry, read_chunks(self.installed(entry.path)))

    def write_symlink(self, entry: FileEntry) -> None:
        if self._wanted(entry):
            self._symlinks.append(entry)

    def complete(self) -> None:
        """Make every written file durable, create the deferred symlinks, and give files
        their modes (less the umask).

        The fsyncs come here, after the whole stream, rather than per file: the kernel has
        been writing back while we decompressed, so most of the waiting is already done.
        """
        umask = os.umask(0)
        os.umask(umask)
        for path, mode in self._written:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(path, mode & ~umask & 0o777)
        for entry in self._symlinks:
            dest = self.staged(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            assert entry.target is not None
            os.symlink(entry.target, dest)


def check_space(cache: Cache, manifest: Manifest, models: tuple[ModelEntry, ...]) -> None:
    """Each file system must hold what goes to it: hub caches may be on other disks than
    the home."""
    need: dict[int, tuple[Path, int]] = {}
    for model in models:
        where = _existing(cache.model_path(model))
        device = os.stat(where).st_dev
        shown, size = need.get(device, (where, 0))
        need[device] = (shown, size + sum(f.size for f in manifest.files_of(model)))
    for where, size in need.values():
        free = shutil.disk_usage(where).free
        if size + SPACE_MARGIN > free:
            raise InsufficientSpaceError(
                f"not enough space in {where}: the bundle needs {size / 1e6:.1f} MB there, "
                f"{free / 1e6:.1f} MB are free",
                hint="free some space, or install with --home (HF_HOME, AISTUDIO_HUB_CACHE "
                     "for hub models) on a larger disk")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent: where it will be created."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def install(bundle: Path, *, home: Path, force: bool = False,
            progress: Callable[[int], None] | None = None,
            on_start: Callable[[int], None] | None = None) -> InstallResult:
    """Install every model of ``bundle`` into ``home``.

    Raises :class:`InstallConflictError` when a different version is installed and not
    ``force``, :class:`IntegrityError` when any member fails verification (and then nothing
    is installed), :class:`InsufficientSpaceError` before writing when it cannot fit.
    """
    bundle = Path(bundle)
    files = locate(bundle)  # fails early, naming a missing bundle or volume
    cache = Cache(home)
    cache.home.mkdir(parents=True, exist_ok=True)
    with cache.locked(), BundleReader(bundle, progress=progress) as reader:
        manifest = reader.manifest()
        manifest_sha256 = hashlib.sha256(reader.manifest_bytes).hexdigest()
        plan = make_plan(cache, manifest)
        if plan.different and not force:
            names = ", ".join(f"{m.id} ({cache.model_path(m)})" for m in plan.different)
            raise InstallConflictError(f"a different version is already installed: {names}",
                                       hint="add --force to replace it")
        to_write = plan.to_write(force)
        check_space(cache, manifest, to_write)

        def record(model: ModelEntry) -> InstallRecord:
            now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            # what is on disk now: plain files, whatever the bundle shared or left out
            on_disk = tuple(replace(f, same_as=None, from_base=False)
                            for f in manifest.files_of(model))
            return InstallRecord(model, on_disk, files.base.name, manifest_sha256,
                                 now, manifest.origin.created)

        if to_write:
            if on_start:
                on_start(files.size)
            # one staging folder per work area: each model is staged on its target's file
            # system (hub caches may be elsewhere than the home)
            areas: dict[Path, Path] = {}
            try:
                for model in to_write:
                    area = cache.work_area(model.root)
                    if area not in areas:
                        areas[area] = cache.new_staging(model.root)
                staging = {m.root: areas[cache.work_area(m.root)] for m in to_write}
                sink = StagingSink(staging, cache.path_of)
                problems = stream_check(reader, manifest, sink)
                if problems:
                    raise IntegrityError(
                        f"{bundle} failed verification; nothing was installed", problems,
                        hint="copy the bundle again and run 'paddle-bundle verify' on it")
                sink.link_base(tuple(f for f in manifest.files if f.from_base))
                sink.complete()
                for model in to_write:
                    staged = sink.staged(model.root)
                    for folder, _, _ in os.walk(staged):
                        fsync_dir(Path(folder))  # new entries durable before the rename
                    cache.swap_in_recorded(staged, record(model))
            finally:
                for staging_dir in areas.values():
                    cache.drop_staging(staging_dir)
        for model in plan.unchanged:
            fresh = record(model)
            try:
                existing = cache.record(model)
            except ManifestError:  # damaged: the files are right, so write it anew
                existing = None
            if existing is None or existing.files != fresh.files:
                cache.write_record(fresh)

    outcomes = [ModelOutcome(m, cache.model_path(m),
                             REPLACED if m in plan.different else
                             NEW if m in plan.new else UNCHANGED)
                for m in manifest.models]
    return InstallResult(bundle, manifest, tuple(outcomes))


def _read_small(folder: Path, name: str, limit: int = 1 << 20) -> bytes:
    """A small file of an installed model, only if it really lies inside the model folder
    and is a regular file: never follow a link out, never read a device or a huge file."""
    path = Path(os.path.realpath(folder / name))
    if not is_within(path.as_posix(), Path(os.path.realpath(folder)).as_posix()):
        raise OSError(f"{name} leads outside {folder}")
    with open(path, "rb") as fh:
        if not os.path.isfile(path) or os.fstat(fh.fileno()).st_size > limit:
            raise OSError(f"{name} is not a small regular file")
        return fh.read(limit)


def load_snippet(model: ModelEntry, path: Path) -> str:
    """Two lines of Python that load the installed model by its full path: that works
    offline with PaddleNLP as it is, no offline mode needed (loading by name probes the
    server first unless offline mode is on)."""
    if model.kind in HUB_KINDS:
        path = hub_snapshot(path, model.kind) or path
    literal = json.dumps(str(path))  # a JSON string is a valid Python literal
    if model.kind == KIND_TASKFLOW:
        task = model.root.split("/")[1]
        return (f"    from paddlenlp import Taskflow\n"
                f"    task = Taskflow({task!r}, task_path={literal})")
    cls = "AutoModel"
    try:
        config = json.loads(_read_small(path, "config.json"))
        arch = config.get("architectures") if isinstance(config, dict) else None
        if isinstance(arch, list) and arch and isinstance(arch[0], str) and arch[0].isidentifier():
            cls = arch[0]
    except (OSError, ValueError):
        pass
    if (path / "tokenizer_config.json").is_file():
        return (f"    from paddlenlp.transformers import AutoTokenizer, {cls}\n"
                f"    tokenizer, model = AutoTokenizer.from_pretrained({literal}), "
                f"{cls}.from_pretrained({literal})")
    return (f"    from paddlenlp.transformers import {cls}\n"
            f"    model = {cls}.from_pretrained({literal})")
