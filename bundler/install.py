"""Install: a bundle -> the same cache folders on the offline machine, safely.

Plan first, then act: the manifest alone decides what is new, unchanged or in conflict, and
whether it fits, before a byte is written; a plan with nothing to write finishes there, without
the lock (so a read-only home still answers "already installed"). Then every file is checked
while it is extracted into staging on the target's file system, and each model folder is
swapped into place with an atomic rename only once the whole bundle has verified. Killed at any
moment, the cache holds the old model or the new one, never a mix, with a record that agrees;
the next command of any kind that reads the home finishes what was left (``Cache.recover``).

Replacing never deletes what the bundle does not put back: a folder holding files that are
neither in the bundle nor in the record of the version being replaced (another cached model
below it, files added by hand) is refused, naming them, ``--force`` or not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bundler._io import display_name, fsync_dir, read_chunks
from bundler.archive import BundleReader
from bundler.cache import (
    Cache,
    InstallRecord,
    hub_snapshot,
    installed_models,
    sync_file_system,
)
from bundler.errors import (
    DeltaBaseMissingError,
    InstallConflictError,
    InsufficientSpaceError,
    IntegrityError,
    ManifestError,
    PartialInstallError,
)
from bundler.manifest import HUB_KINDS, KIND_TASKFLOW, FileEntry, Manifest, ModelEntry
from bundler.paths import is_within
from bundler.scan import Allowlist, aliases, refusal, scan_file
from bundler.signing import Signer, require_trusted
from bundler.verify import bundle_allowlist, stream_check
from bundler.volumes import locate

log = logging.getLogger(__name__)

#: Kept free on the target besides the models themselves, as a share of what they take on
#: disk with a small floor: a full file system breaks everything else running on it.
SPACE_MARGIN_SHARE = 0.01
SPACE_MARGIN_FLOOR = 1 << 20

NEW, UNCHANGED, REPLACED = "installed", "unchanged", "replaced"
#: Files in a model folder that make it a model (PaddleNLP's own markers).
_MODEL_MARKERS = ("config.json", "model_config.json", "tokenizer_config.json")


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
    signer: Signer | None = None  # who signed it (trusted_by None: not checked)


@dataclass(frozen=True)
class Conflict:
    """A model whose folder already holds something else. ``blocking`` conflicts are refused
    even with ``--force``: replacing the folder would delete files the bundle does not put
    back."""

    model: ModelEntry
    reason: str
    blocking: bool


@dataclass(frozen=True)
class InstallPlan:
    manifest: Manifest
    new: tuple[ModelEntry, ...]
    unchanged: tuple[ModelEntry, ...]
    different: tuple[ModelEntry, ...]
    conflicts: tuple[Conflict, ...] = ()
    #: Unchanged models whose record is missing, damaged or out of date.
    records_to_write: tuple[ModelEntry, ...] = ()

    def to_write(self, force: bool) -> tuple[ModelEntry, ...]:
        return self.new + (self.different if force else ())

    def is_noop(self) -> bool:
        return not (self.new or self.different or self.conflicts or self.records_to_write)

    def refuse(self, cache: Cache, force: bool) -> None:
        """Raise for conflicts that stop this install: blocking ones always, the others
        unless ``force``. Every one is named."""
        stopping = [c for c in self.conflicts if c.blocking or not force]
        if not stopping:
            return
        blocking = any(c.blocking for c in stopping)
        lines = [f"{c.model.id}: {c.reason}" for c in stopping]
        # --home does not move hub models: their caches' variables do
        elsewhere = ("into other hub caches (HF_HOME, AISTUDIO_HUB_CACHE)"
                     if all(c.model.kind in HUB_KINDS for c in stopping if c.blocking)
                     else "into another --home")
        hint = ("paddle-bundle replaces only what a bundle puts back: move those files out "
                f"of the folder (or delete them yourself) and run install again, or install "
                f"{elsewhere}" if blocking else "add --force to replace it")
        raise InstallConflictError("; ".join(lines), hint=hint)


def on_disk(manifest: Manifest, model: ModelEntry) -> tuple[FileEntry, ...]:
    """What an installed model's folder holds: plain files, whatever the bundle shared or
    left out."""
    return tuple(replace(f, same_as=None, from_base=False) for f in manifest.files_of(model))


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
    records = {r.model.root: r for r in cache.records()}
    nested = _nested_in_installed(cache, manifest, records)
    if nested:
        raise InstallConflictError(
            "refusing to put one model inside another: " + "; ".join(nested),
            hint="these ids cannot live side by side in one home; install into another --home")
    new, unchanged, different, stale = [], [], [], []
    conflicts: list[Conflict] = []
    for model in manifest.models:
        files = manifest.files_of(model)
        record = records.get(model.root)
        conflict = _existing_folder(cache, model, files, record)
        if conflict is None:
            new.append(model)
            continue
        if conflict.reason:
            conflicts.append(conflict)
            if not conflict.blocking:
                different.append(model)
            continue
        unchanged.append(model)
        if record is None or record.files != on_disk(manifest, model):
            stale.append(model)
    return InstallPlan(manifest, tuple(new), tuple(unchanged), tuple(different),
                       tuple(conflicts), tuple(stale))


def _existing_folder(cache: Cache, model: ModelEntry, files: tuple[FileEntry, ...],
                     record: InstallRecord | None) -> Conflict | None:
    """What is at the model's place: None when nothing is there that could be lost (no
    folder, or only empty folders); a conflict without a reason when it holds exactly this
    version; otherwise a conflict saying truly what is there."""
    path = cache.model_path(model)
    if not os.path.lexists(path):
        top = cache.path_of(model.root.split("/", 1)[0])
        for parent in path.parents:  # a file where a folder of the path should be
            if parent == top.parent or os.path.isdir(parent):
                break
            if os.path.lexists(parent):
                return Conflict(model, f"{parent} is a file, not a folder", blocking=True)
        return None
    if not path.is_dir():
        return Conflict(model, f"{path} is a file, not a model folder", blocking=True)
    present = cache.unreplaced(model, ())
    if not present and not path.is_symlink():
        return None  # only empty folders: nothing to lose
    if not cache.differences(files, quick=True):
        return Conflict(model, "", blocking=False)
    replaced = {f.path for f in files} | {f.path for f in (record.files if record else ())}
    others = [a for a in present if a not in replaced]
    if others:
        return Conflict(model, f"{path} holds {len(others)} file(s) that this bundle would "
                               f"not put back: {_describe(others, model.root)}", blocking=True)
    if record is not None or any((path / m).is_file() for m in _MODEL_MARKERS):
        return Conflict(model, f"a different version is already installed at {path}",
                        blocking=False)
    return Conflict(model, f"{path} already holds files that differ from the bundle's "
                           f"({_describe(present, model.root)})", blocking=False)


def _describe(arcnames: list[str], root: str, limit: int = 5) -> str:
    """``legacy/ (3 files), notes.txt`` for paths below ``root``: folders summed up."""
    groups: dict[str, int] = {}
    for arcname in arcnames:
        rel = arcname[len(root) + 1:]
        first, sep, _ = rel.partition("/")
        key = first + "/" if sep else first
        groups[key] = groups.get(key, 0) + 1
    shown = [f"{key} ({n} file{'s' if n > 1 else ''})" if key.endswith("/") else key
             for key, n in sorted(groups.items())[:limit]]
    more = len(groups) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _nested_in_installed(cache: Cache, manifest: Manifest,
                         records: dict[str, InstallRecord]) -> list[str]:
    """Models of the bundle whose folder would contain, or sit inside, the folder of a model
    already installed (``Salesforce`` against ``Salesforce/codegen``). Replacing either would
    destroy the other, so this is refused even with ``--force``. Linear: each root is looked
    up with its parents in sets, never compared with every other root."""
    installed = {f"models/{model_id}" for model_id in installed_models(cache.home)}
    installed.update(records)
    ancestors: dict[str, str] = {}  # every proper parent of an installed root -> that root
    for other in sorted(installed):
        for parent in _parents(other):
            ancestors.setdefault(parent, other)
    clashes = []
    for model in manifest.models:
        inside = next((p for p in _parents(model.root) if p in installed), None)
        around = ancestors.get(model.root)
        for clash in (inside, around):
            if clash is not None:
                clashes.append(f"{model.id} ({model.root}) and the installed {clash}")
    return clashes


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


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

    def _root(self, arcname: str) -> str | None:
        """The model root being installed that holds ``arcname``: a look-up per parent, not
        a scan of every root (bundles can hold thousands of models)."""
        return next((p for p in (*_parents(arcname), arcname) if p in self.staging), None)

    def _wanted(self, entry: FileEntry) -> bool:
        return self._root(entry.path) is not None

    def staged(self, arcname: str) -> Path:
        root = self._root(arcname)
        assert root is not None
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
        """Create the deferred symlinks, give files their modes (less the umask), and make
        everything in staging durable.

        Durability comes here, after the whole stream, rather than per file: the kernel has
        been writing back while we decompressed, so most of the waiting is already done. One
        ``syncfs`` where Linux has it (thousands of per-file fsyncs cost more than the
        bytes of a bundle of many small models), else an fsync per file and per folder.
        """
        umask = os.umask(0)
        os.umask(umask)
        for path, mode in self._written:
            os.chmod(path, mode & ~umask & 0o777)
        for entry in self._symlinks:
            dest = self.staged(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            assert entry.target is not None
            os.symlink(entry.target, dest)
        areas = set(self.staging.values())
        if all([sync_file_system(area) for area in areas]):
            return
        for path, _ in self._written:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for area in areas:
            for folder, _, _ in os.walk(area):
                fsync_dir(Path(folder))


def space_needed(manifest: Manifest, models: tuple[ModelEntry, ...], block: int) -> int:
    """Bytes the models take once written: each file rounded up to the file system's block,
    a block per folder and per record. A delta's base files are hard links: nothing."""
    block = max(block, 512)
    need = 0
    for model in models:
        folders = {model.root}
        for entry in manifest.files_of(model):
            folders.update(p for p in _parents(entry.path) if is_within(p, model.root))
            if not entry.from_base:
                need += -(-entry.size // block) * block
        need += (len(folders) + 1) * block
    return need


def space_margin(need: int) -> int:
    return max(SPACE_MARGIN_FLOOR, int(need * SPACE_MARGIN_SHARE))


def check_space(cache: Cache, manifest: Manifest, models: tuple[ModelEntry, ...]) -> None:
    """Each file system must hold what goes to it (hub caches may be on other disks than
    the home): the models' size on disk there, in its blocks, plus a margin."""
    groups: dict[int, tuple[Path, list[ModelEntry]]] = {}
    for model in models:
        where = _existing(cache.model_path(model))
        groups.setdefault(os.stat(where).st_dev, (where, []))[1].append(model)
    for where, group in groups.values():
        st = os.statvfs(where)
        need = space_needed(manifest, tuple(group), st.f_frsize or st.f_bsize)
        margin = space_margin(need)
        free = shutil.disk_usage(where).free
        if need + margin > free:
            raise InsufficientSpaceError(
                f"not enough space on {_file_system(where)}: the models take "
                f"{_size(need)} on disk, and install keeps {_size(margin)} free besides "
                f"({SPACE_MARGIN_SHARE:.0%} of that, at least {_size(SPACE_MARGIN_FLOOR)}), "
                f"so it needs {_size(need + margin)}; {_size(free)} are free",
                hint=f"free {_size(need + margin - free)} there, or install with --home "
                     "(HF_HOME, AISTUDIO_HUB_CACHE for hub models) on a larger disk")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent: where it will be created."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _file_system(home: Path) -> str:
    """``the file system of /home/u/.paddlenlp (mounted at /home)``: where space must be
    freed, which is not always where the user thinks."""
    mount = Path(os.path.realpath(home))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"the file system of {home} (mounted at {mount})"


@contextlib.contextmanager
def _out_of_space_explained(cache: Cache, need: int) -> Iterator[None]:
    """A write that fails for lack of space (the disk filled while we wrote, or a quota)
    becomes one line naming the file system and what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        what = "a disk quota was reached" if exc.errno == errno.EDQUOT else "it filled up"
        where = _existing(Path(exc.filename)) if exc.filename else cache.home
        if is_within(where.as_posix(), cache.home.as_posix()):
            where = cache.home  # named as the user knows it
        raise InsufficientSpaceError(
            f"{_file_system(where)} ran out of space while installing ({what}: "
            f"{exc.strerror}); nothing was installed and the partial copy was removed",
            hint=f"free at least {_size(need + space_margin(need))} there (what this bundle's "
                 "models take, plus a margin) and run install again, or install with --home "
                 "on a larger disk") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while models are swapped in, so a swap and its record
    always complete together (in the main thread; elsewhere a kill is left to recovery).
    The signals that arrived are listed in what it yields."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def install(bundle: Path, *, home: Path, force: bool = False,
            progress: Callable[[int], None] | None = None,
            on_start: Callable[[int], None] | None = None,
            trust: Path | None = None, allow_globals: Sequence[str] = ()) -> InstallResult:
    """Install every model of ``bundle`` into ``home``.

    Raises :class:`InstallConflictError` when a different version is installed and not
    ``force`` (or when replacing would delete files the bundle does not put back),
    :class:`IntegrityError` when any member fails verification (and then nothing is
    installed), :class:`InsufficientSpaceError` before writing when it cannot fit (or when
    the disk fills while writing), :class:`PartialInstallError` naming what was installed
    when a later model of the bundle could not be swapped in.
    """
    bundle = Path(bundle)
    files = locate(bundle)  # fails early, naming a missing bundle or volume
    cache = Cache(home)
    # who signed it, before a byte of it is read: a trust policy in home makes this mandatory
    signer = require_trusted(files, trust=trust, home=cache.home)
    with BundleReader(bundle, progress=progress) as reader:
        manifest = reader.manifest()
        allow, note = bundle_allowlist(manifest, signer, allow_globals)
        manifest_sha256 = hashlib.sha256(reader.manifest_bytes).hexdigest()
        plan = make_plan(cache, manifest)
        if not plan.is_noop():  # a no-op needs no lock, so a read-only home can say so
            plan.refuse(cache, force)
            cache.home.mkdir(parents=True, exist_ok=True)
            with cache.locked():
                plan = make_plan(cache, manifest)  # again: another install may have run
                plan.refuse(cache, force)
                _act(cache, reader, plan, force, bundle, display_name(files.base.name),
                     manifest_sha256, on_start, files.size, allow, note,
                     signer.describe() if signer is not None else "")
    replaced, new = {m.root for m in plan.different}, {m.root for m in plan.new}
    outcomes = [ModelOutcome(m, cache.model_path(m),
                             REPLACED if m.root in replaced else
                             NEW if m.root in new else UNCHANGED)
                for m in manifest.models]
    return InstallResult(bundle, manifest, tuple(outcomes), signer)


def _scan_renamed_base(cache: Cache, manifest: Manifest, allow: Allowlist) -> list[str]:
    """A delta's base files are not in the archive, so the stream never shows them to the
    scan; one the bundle gives another name (a symlink ``model_state.pdparams -> notes.txt``)
    is scanned under it from the installed copy: it was scanned under its own name only."""
    names = aliases((f.path, f.same_as, f.target) for f in manifest.files)
    problems = []
    for entry in manifest.files:
        if entry.from_base and len(names.get(entry.path, ())) > 1:
            result = scan_file(cache.path_of(entry.path), allow, names[entry.path])
            if result.finding is not None:
                problems.append(refusal(entry.path, result.finding))
    return problems


def _act(cache: Cache, reader: BundleReader, plan: InstallPlan, force: bool, bundle: Path,
         bundle_name: str, manifest_sha256: str, on_start: Callable[[int], None] | None,
         size: int, allow: Allowlist, note: str | None, signer: str) -> None:
    """Carry out a plan, under the lock."""
    manifest = plan.manifest
    to_write = plan.to_write(force)
    check_space(cache, manifest, to_write)

    def record(model: ModelEntry) -> InstallRecord:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return InstallRecord(model, on_disk(manifest, model), bundle_name, manifest_sha256,
                             now, manifest.origin.created, signer)

    if to_write:
        if on_start:
            on_start(size)
        need = space_needed(manifest, to_write, 4096)
        # one staging folder per work area: each model is staged on its target's file
        # system (hub caches may be elsewhere than the home)
        areas: dict[Path, Path] = {}
        try:
            with _out_of_space_explained(cache, need):  # the swap writes records too
                for model in to_write:
                    area = cache.work_area(model.root)
                    if area not in areas:
                        areas[area] = cache.new_staging(model.root)
                staging = {m.root: areas[cache.work_area(m.root)] for m in to_write}
                sink = StagingSink(staging, cache.path_of)
                problems = stream_check(reader, manifest, sink, allow=allow)
                problems += _scan_renamed_base(cache, manifest, allow)
                if problems and note:
                    problems.append(note)
                if problems:
                    raise IntegrityError(
                        f"{bundle} failed verification; nothing was installed", problems,
                        hint="copy the bundle again and run 'paddle-bundle verify' on it")
                sink.link_base(tuple(f for f in manifest.files if f.from_base))
                sink.complete()  # every staged file and folder durable before the renames
                for model in to_write:
                    cache.model_path(model).parent.mkdir(parents=True, exist_ok=True)
                _swap_all(cache, sink, to_write, record)
        finally:
            for staging_dir in areas.values():
                cache.drop_staging(staging_dir)
    for model in plan.records_to_write:
        cache.write_record(record(model))


def _swap_all(cache: Cache, sink: StagingSink, models: tuple[ModelEntry, ...],
              record: Callable[[ModelEntry], InstallRecord]) -> None:
    """Swap each verified model in with its record, signals held so that a Ctrl-C cannot
    land between a swap and its record. A failure after the first swap names exactly what
    was installed and what was not."""
    done: list[ModelEntry] = []
    with _signals_held() as received:
        try:
            cache.swap_in_recorded([(sink.staged(m.root), record(m)) for m in models],
                                   swapped=done.append)
        except (OSError, ManifestError) as exc:
            if not done:
                raise
            left = models[len(done):]  # swapped in order, stopping at the first failure
            cause = f"{exc.strerror or exc}: {exc.filename}" if isinstance(exc, OSError) \
                and exc.filename else (exc.strerror if isinstance(exc, OSError)
                                       and exc.strerror else str(exc))
            if not left:  # every swap landed; only writing the records failed
                one = len(done) == 1
                raise PartialInstallError(
                    f"{', '.join(m.id for m in done)} {'is' if one else 'are'} in place, but "
                    f"{'its install record' if one else 'their install records'} could not "
                    f"be written in {cache.state} ({cause}); kept in "
                    f"{cache.state / 'pending'}", installed=tuple(m.id for m in done),
                    missing=(), hint="fix the cause (free some space there); the next "
                    "paddle-bundle command in this home (list, say) writes them") from None
            raise PartialInstallError(
                f"installed {len(done)} of {len(models)} model(s) "
                f"({', '.join(m.id for m in done)}); not installed: "
                f"{', '.join(m.id for m in left)} ({cause})",
                installed=tuple(m.id for m in done), missing=tuple(m.id for m in left),
                hint="fix the cause and run the same install again: the installed models "
                     "will show 'already installed'") from None
    if received:
        log.warning("%s arrived while models were being swapped in; the install was "
                    "completed first, so every model and its record agree",
                    ", ".join(signal.Signals(s).name for s in dict.fromkeys(received)))


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
