"""The mirror root on disk: content-addressed blobs, immutable generations, one symlink flip.

::

    ROOT/
      paddlenlp -> .paddle-bundle/current/paddlenlp   (what a plain web server serves)
      .paddle-bundle/
        lock                                        (one publish/remove at a time)
        blobs/<sha256>                              (every served file, once, never rewritten)
        generations/<N>/index.json                  (which models, from which bundle, when)
        generations/<N>/paddlenlp/...               (hard links to the blobs)
        generations/<N>/purged.json                 (models 'remove --purge' unlinked)
        current -> generations/<N>                  (flipped with one rename)
        index.json -> current/index.json

A publish writes the new blobs (verified while they are written), builds generation N+1 as
hard links, and flips ``current`` with a rename. A request opens its file in one generation or
the other; no file a client may be reading is ever written again or truncated (a blob is created
under a temporary name and renamed into place; an old generation is unlinked, which leaves an
open file readable to the end).

What that guarantees per request, any web server gets. Per model (a client's many requests
must all come from one version), the nginx configuration of :mod:`bundler.mirror.nginx` pins
each client to the generation of its first request with a cookie, which PaddleNLP's download
session keeps: old generations stay for :data:`KEEP_SECONDS` after they are superseded, so a
client that started on one finishes on it (docs/fleet.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler._io import atomic_write_bytes, fsync_dir, sha256_file
from bundler.cache import sync_file_system
from bundler.errors import (
    InstallConflictError,
    IntegrityError,
    LockedError,
    ModelNotFoundError,
    UsageError,
)

STATE = ".paddle-bundle"
INDEX_VERSION = 1
#: How long a superseded generation stays, for clients pinned to it (the nginx cookie lives
#: for 300 s after a client's last request, so a loading client never outlives this).
KEEP_SECONDS = 900


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ServedFile:
    url_path: str  # below the root: paddlenlp/models/community/org/name/config.json
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.url_path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class PublishedModel:
    """One model as the mirror serves it, and where it came from."""

    id: str
    kind: str
    files: tuple[ServedFile, ...]
    bundle: str
    bundle_sha256: str  # of the manifest: the same bundle published twice is a no-op
    signer: str | None
    published_at: str
    skipped: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def same_content(self, other: PublishedModel) -> bool:
        return (self.kind, sorted(self.files, key=lambda f: f.url_path)) == \
            (other.kind, sorted(other.files, key=lambda f: f.url_path))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "bundle": self.bundle,
                "manifest_sha256": self.bundle_sha256, "signer": self.signer,
                "published_at": self.published_at, "skipped": list(self.skipped),
                "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PublishedModel:
        return cls(str(raw["id"]), str(raw["kind"]),
                   tuple(ServedFile(str(f["path"]), str(f["sha256"]), int(f["size"]))
                         for f in raw["files"]),
                   str(raw["bundle"]), str(raw["manifest_sha256"]),
                   None if raw.get("signer") is None else str(raw["signer"]),
                   str(raw["published_at"]), tuple(str(s) for s in raw.get("skipped", [])))


@dataclass(frozen=True)
class Index:
    generation: int
    created: str
    models: tuple[PublishedModel, ...]
    #: generation -> when it was created (seconds since the epoch), for pruning
    history: dict[int, float] = field(default_factory=dict)

    def model(self, model_id: str) -> PublishedModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def to_json(self) -> bytes:
        data = {"version": INDEX_VERSION, "generation": self.generation,
                "created": self.created,
                "history": {str(k): v for k, v in sorted(self.history.items())},
                "models": [m.to_dict() for m in self.models]}
        return (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Index:
        try:
            raw = json.loads(data)
            return cls(int(raw["generation"]), str(raw["created"]),
                       tuple(PublishedModel.from_dict(m) for m in raw["models"]),
                       {int(k): float(v) for k, v in raw.get("history", {}).items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where} is not a mirror index ({exc})",
                                 hint="run 'paddle-bundle mirror check'; publish the bundles "
                                      "again into a new --root if it is damaged") from None


EMPTY = Index(0, "", ())


class Mirror:
    """A mirror root. Reading needs nothing; changing it holds :meth:`locked`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(root)))
        self.state = self.root / STATE
        self.blobs = self.state / "blobs"
        self.generations = self.state / "generations"
        self.current_link = self.state / "current"
        self.tmp = self.state / "tmp"

    # -- reading ---------------------------------------------------------------------------
    def index(self) -> Index:
        """The served generation's index. With ``current`` missing or dangling (deleted by
        hand) it is the newest generation on the disk, the one the next publish, remove or
        prune restores the link to (:meth:`link_problem` says so): never an empty index that
        a publish would merge into, dropping every other model."""
        path = self.current_link / "index.json"
        try:
            data = path.read_bytes()
            purged = self._purged_link()
        except FileNotFoundError:
            if not self.root.is_dir():
                raise UsageError(f"{self.root} is not a mirror root (it does not exist)",
                                 hint="give the --root you published into") from None
            if os.path.exists(self.current_link):  # the served generation lost its index
                raise IntegrityError(f"{path} is missing",
                                     hint="run 'paddle-bundle mirror check'; publish the "
                                          "bundles again into a new --root") from None
            newest = self._newest_generation()
            return EMPTY if newest is None else newest
        # current restored to a purged generation, not yet replaced (_shed_purged)
        return _without(Index.from_json(data, path), purged)

    def _purged_link(self) -> set[str]:
        """The purged models of the generation ``current`` leads to."""
        number = self.current_number()
        return set() if number is None else self._purged(number)

    def serves_list(self) -> bool:
        """Whether the current generation serves its file list as its index says (one made
        by an earlier paddle-bundle has none, and one edited or damaged on the disk differs,
        as ``check`` reports: the next publish then makes a new generation, the repair)."""
        try:
            return (self.current_link / SERVED_LIST).read_bytes() == served_list(self.index())
        except OSError:
            return False

    def link_problem(self) -> str | None:
        """What is wrong with ``current`` when generations are on the disk but it leads to
        none of them (None when nothing is): nginx then serves only clients pinned by cookie."""
        if os.path.exists(self.current_link) or not self._generation_numbers():
            return None
        if os.path.islink(self.current_link):
            return (f"{self.current_link} points to {os.readlink(self.current_link)}, which "
                    "is not on the disk")
        return f"{self.current_link} is missing"

    def _generation_numbers(self) -> list[int]:
        """The generations on the disk, newest first. A numbered folder is complete: it is
        built under tmp/ and renamed into place whole."""
        try:
            names = [p.name for p in self.generations.iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted((int(n) for n in names if n.isdigit()), reverse=True)

    def _newest_generation(self) -> Index | None:
        """The newest generation whose index.json reads, without the models ``remove
        --purge`` unlinked from it (its index still names them); None when there is none on
        the disk. Generations there but none readable is an error: guessing would drop
        models."""
        numbers = self._generation_numbers()
        for n in numbers:
            try:
                index = self._generation_index(n)
                purged = self._purged(n)
            except (OSError, IntegrityError):
                continue
            if index.generation == n:
                return _without(index, purged)
        if numbers:
            raise IntegrityError(
                f"{self.current_link} is missing and no generation in {self.generations} has "
                "a readable index.json", hint="publish the bundles again into a new --root")
        return None

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def generation_dir(self, n: int) -> Path:
        return self.generations / str(n)

    def serves_blobs(self, model: PublishedModel) -> bool:
        """Whether every file of ``model`` in the current generation is its blob (the same
        inode): a served file deleted or replaced on the disk is not."""
        base = self.current_link
        try:
            for served in model.files:
                got, blob = os.stat(base / served.url_path), os.stat(self.blob(served.sha256))
                if (got.st_dev, got.st_ino) != (blob.st_dev, blob.st_ino):
                    return False
        except OSError:
            return False
        return True

    # -- changing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        import fcntl

        self.refuse_symlinked_folders()
        for folder in (self.root, self.state, self.blobs, self.generations, self.tmp):
            _served_dir(folder)
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another paddle-bundle mirror command is changing "
                                  f"{self.root}", hint="wait for it to finish, then run this "
                                                       "again") from None
            self._restore_current()  # first: _clean_tmp goes by the generation it names
            self._clean_tmp()
            self._shed_purged()
            yield
        finally:
            os.close(fd)

    def refuse_symlinked_folders(self) -> None:
        """Blobs and generations are hard-linked and renamed into each other, and nginx
        (``disable_symlinks on``) refuses a pinned client's path through a symlink: a folder
        of ``.paddle-bundle`` moved to another disk behind a symlink is refused before
        anything is written. The root itself may be a symlink (nginx-config resolves it)."""
        for folder in (self.state, self.blobs, self.generations, self.tmp):
            if folder.is_symlink():
                raise UsageError(
                    f"{folder} is a symlink (to {os.readlink(folder)}): nginx refuses pinned "
                    "requests through it and hard links cannot cross file systems; nothing "
                    "was changed", hint="put it back and move the whole --root instead (a "
                    "symlink to the root itself is fine), then run 'paddle-bundle mirror "
                    "nginx-config' again")

    def _restore_current(self) -> None:
        """``current`` deleted by hand, or left pointing at a generation no longer on the
        disk: flip it to the newest generation whose index reads (a generation is renamed
        into place only once built, so it is whole)."""
        if self.link_problem() is None:
            return
        newest = self._newest_generation()
        if newest is not None:
            self._flip(newest.generation)

    def _generation_index(self, n: int) -> Index:
        """Generation ``n``'s own index.json (OSError, IntegrityError when it cannot be read)."""
        path = self.generation_dir(n) / "index.json"
        return Index.from_json(path.read_bytes(), path)

    def _remove_generation(self, n: int) -> None:
        """Out of the served tree in one rename first (a pinned client then falls back to the
        current generation instead of finding half a folder), then deleted."""
        doomed = self.tmp / f"removed-generation-{n}"
        os.rename(self.generation_dir(n), doomed)
        shutil.rmtree(doomed)

    def _purged(self, n: int) -> set[str]:
        """The models ``remove --purge`` unlinked from generation ``n`` (its purged.json)."""
        path = self.generation_dir(n) / PURGED
        try:
            ids = json.loads(path.read_bytes())
        except FileNotFoundError:
            return set()
        except ValueError:
            ids = None
        if not isinstance(ids, list):
            raise IntegrityError(f"{path} is not a list of model ids",
                                 hint="publish the bundles again into a new --root")
        return {str(model_id) for model_id in ids}

    def _shed_purged(self) -> None:
        """``current`` restored to a generation a purge unlinked models from (only superseded
        generations are purged, so nothing else leads there): its index and served list
        still name them, and their files and blobs are gone. A new generation without them
        is served instead, so list, check, the served list and the next publish agree."""
        if not self._purged_link():
            return
        # index() leaves them out; a file of another model gone from the disk is then named
        # by the command's own publish or remove, which is its repair: not refused here
        with contextlib.suppress(IntegrityError):
            self.commit(self.index().models)

    def clear_leftovers(self) -> None:
        """What a failed command left in tmp/ (and a generation it built but never served),
        cleared at once; under :meth:`locked` only."""
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """What a killed publish left: partial blobs, a half-built generation."""
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        current = self.current_number()
        for entry in self.generations.iterdir():
            if entry.name.isdigit() and current is not None and int(entry.name) > current:
                shutil.rmtree(entry, ignore_errors=True)  # built but never flipped to

    def current_number(self) -> int | None:
        try:
            name = os.readlink(self.current_link)
        except OSError:
            return None
        last = name.rstrip("/").rsplit("/", 1)[-1]
        return int(last) if last.isdigit() else None

    def store_blob(self, temp: Path, sha256: str) -> None:
        """Move a verified temporary file to its blob name (world-readable, for the web
        server). A blob already there is one found damaged: it is replaced by the rename, and
        the generations still linking the damaged file keep it until they are pruned."""
        os.chmod(temp, 0o644)
        with self._one_file_system():
            os.rename(temp, self.blob(sha256))

    def commit(self, models: Iterable[PublishedModel]) -> Index:
        """Build the next generation holding ``models`` and flip ``current`` to it."""
        models = list(models)
        _refuse_clashes(models)
        self._require_blobs(models)
        old = self.index()
        number = max([old.generation, *(int(p.name) for p in self.generations.iterdir()
                                        if p.name.isdigit())]) + 1
        now = time.time()
        index = Index(number, _now(), tuple(sorted(models, key=lambda m: m.id)),
                      {**{g: t for g, t in old.history.items()  # generations on the disk
                          if g == old.generation or self.generation_dir(g).is_dir()},
                       number: now})
        staging = self.tmp / f"generation-{number}"
        _served_dir(staging)
        made: set[Path] = {staging}
        linked: set[str] = set()
        for model in index.models:
            for served in model.files:
                if served.url_path in linked:
                    continue  # another model serves the same file there (_refuse_clashes)
                linked.add(served.url_path)
                dest = staging / served.url_path
                if dest.parent not in made:
                    for parent in reversed(dest.parents):
                        if parent not in made and parent.is_relative_to(staging):
                            _served_dir(parent)
                            made.add(parent)
                self._link_blob(served.sha256, dest)
        _served_dir(staging / BUCKET_MARK)  # served even when empty
        _served_dir(staging / BUCKET_MARK / STATE)
        listing = staging / SERVED_LIST
        atomic_write_bytes(listing, served_list(index))
        os.chmod(listing, 0o644)
        atomic_write_bytes(staging / "index.json", index.to_json())
        os.chmod(staging / "index.json", 0o644)  # 'mirror list' for any user, whatever the umask
        if not sync_file_system(staging):
            for folder, _, _ in os.walk(staging):
                fsync_dir(Path(folder))
        os.rename(staging, self.generation_dir(number))
        fsync_dir(self.generations)
        self._flip(number)
        self.prune()
        return index

    def _link_blob(self, sha256: str, dest: Path) -> None:
        """Hard-link a blob into a generation being built. A blob at the file system's link
        limit (ext4: 65,000; a file many models share, times the generations kept) is copied
        to a fresh one first: the generations linking the old one keep it."""
        blob = self.blob(sha256)
        with self._one_file_system():
            try:
                os.link(blob, dest)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                fresh = self.tmp / f"blob-{os.getpid()}-fresh-{sha256[:16]}"
                shutil.copyfile(blob, fresh)
                with open(fresh, "rb") as fh:
                    os.fsync(fh.fileno())
                self.store_blob(fresh, sha256)
                os.link(blob, dest)

    def _require_blobs(self, models: list[PublishedModel]) -> None:
        """Every file of ``models`` has its blob, before anything is built. A blob deleted by
        hand is put back from the served generation's file when that is intact; a file gone
        from both (a served file deleted, then its blob pruned) is named with its model: a
        bare ENOENT on a blob made every later publish and remove fail, saying nothing."""
        gone = []
        for model in models:
            for served in model.files:
                if not self.blob(served.sha256).exists() and not self._relink_blob(served):
                    gone.append(f"{model.id}: {served.url_path}: deleted on the disk")
        if gone:
            raise IntegrityError(
                f"{len(gone)} file(s) of models this mirror serves are gone from the disk; "
                "nothing was changed", sorted(gone),
                hint="publish those models' bundles again (with the others), or remove them "
                     "('paddle-bundle mirror remove MODEL')")

    def _relink_blob(self, served: ServedFile) -> bool:
        path = self.current_link / served.url_path
        try:
            if sha256_file(path) != served.sha256:
                return False
        except OSError:
            return False
        with contextlib.suppress(FileExistsError), self._one_file_system():
            os.link(path, self.blob(served.sha256))
        return True

    @contextlib.contextmanager
    def _one_file_system(self) -> Iterator[None]:
        """Blobs, generations and their temporaries are renamed and hard-linked into each
        other: a ``.paddle-bundle`` folder spread over file systems (a symlinked ``blobs``)
        or one without hard links is named as such, not as a bare errno."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                 errno.EOPNOTSUPP):
                raise
            raise UsageError(
                f"{self.state}: cannot rename or hard-link {exc.filename} ({exc.strerror}); "
                "nothing new is served", hint="the mirror root must be one file system that "
                "supports hard links, with no symlinked folders inside .paddle-bundle") from None

    def _flip(self, number: int) -> None:
        link = self.tmp / "current"
        link.unlink(missing_ok=True)
        os.symlink(f"generations/{number}", link)
        os.rename(link, self.current_link)
        fsync_dir(self.state)
        for name, target in (("index.json", "current/index.json"),):
            if not os.path.lexists(self.state / name):
                os.symlink(target, self.state / name)
        served = self.root / BUCKET_MARK
        if not os.path.lexists(served):
            os.symlink(f"{STATE}/current/{BUCKET_MARK}", served)
        fsync_dir(self.root)

    def prune(self, keep_seconds: float = KEEP_SECONDS) -> list[int]:
        """Remove generations superseded more than ``keep_seconds`` ago, then the blobs no
        generation links to any more. Returns the generations removed."""
        current = self.current_number()
        history = self.index().history
        removed = []
        for entry in sorted(self.generations.iterdir(), key=lambda p: p.name):
            if not entry.name.isdigit() or int(entry.name) == current:
                continue
            n = int(entry.name)
            successor = min((t for g, t in history.items() if g > n), default=None)
            if successor is not None and time.time() - successor < keep_seconds:
                continue
            self._remove_generation(n)
            removed.append(n)
        self._drop_unlinked_blobs()
        return removed

    def _drop_unlinked_blobs(self) -> None:
        for blob in self.blobs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if blob.stat().st_nlink == 1:  # no generation links to it
                    blob.unlink()

    def superseded_models(self) -> set[str]:
        """The ids of the models in the superseded generations still on the disk."""
        current = self.current_number()
        ids = set()
        for n in self._generation_numbers():
            if n != current:
                with contextlib.suppress(OSError, IntegrityError):
                    ids |= {m.id for m in self._generation_index(n).models}
        return ids

    def purge(self, model_ids: Iterable[str]) -> list[tuple[int, str]]:
        """Unlink the files of ``model_ids`` from every superseded generation still on the
        disk (kept for pinned clients), then the blobs no generation links any more: a
        client pinned to an old generation then gets 404 for them instead of the files.
        Returns ``(generation, url path)`` of every file unlinked.

        Each generation's own index says which paths were the model's there. A path that
        another model of that generation also serves stays (two models share a URL only with
        the same content): it is that model's file too, unless that model was purged from
        the generation as well, now or before. Earlier purges are recorded in the
        generation's ``purged.json`` (never served), written before any unlink, so a purge
        that was killed is finished by running it again. Nothing a client may be reading is
        rewritten: the generation's index keeps naming the model; only links go.
        """
        purging = set(model_ids)
        current = self.current_number()
        unlinked: list[tuple[int, str]] = []
        for n in self._generation_numbers():
            if n == current:
                continue
            folder = self.generation_dir(n)
            try:
                index = self._generation_index(n)
                before = self._purged(n)
            except (OSError, IntegrityError):
                # which files were the model's there is unknown: the whole generation goes
                self._remove_generation(n)
                continue
            here = purging & {m.id for m in index.models}
            if not here:
                continue
            gone = before | here
            if gone != before:
                atomic_write_bytes(folder / PURGED, json.dumps(sorted(gone)).encode() + b"\n")
            kept = {f.url_path for m in index.models if m.id not in gone for f in m.files}
            for model in index.models:
                if model.id not in here:
                    continue
                for served in model.files:
                    if served.url_path in kept:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        (folder / served.url_path).unlink()
                        unlinked.append((n, served.url_path))
                    _remove_empty_parents(folder / served.url_path, folder / BUCKET_MARK)
        self._drop_unlinked_blobs()
        return unlinked

    # -- checking --------------------------------------------------------------------------
    def check(self, model_ids: Iterable[str] = ()) -> list[tuple[str, list[str]]]:
        """Re-hash what the current generation serves: ``(model id, problems)`` for each
        model (all when ``model_ids`` is empty)."""
        index = self.index()
        wanted = list(model_ids)
        models = [m for m in index.models if not wanted or m.id in wanted]
        for model_id in wanted:
            if index.model(model_id) is None:
                raise ModelNotFoundError(f"{model_id} is not published in {self.root}",
                                         hint="see 'paddle-bundle mirror list'")
        base = self.generation_dir(index.generation)
        results = []
        for model in models:
            problems = []
            for served in model.files:
                try:
                    got = sha256_file(base / served.url_path)
                except OSError as exc:
                    problems.append(f"{served.url_path}: cannot be read ({exc.strerror})")
                    continue
                if got != served.sha256:
                    problems.append(f"{served.url_path}: sha256 differs from the published "
                                    "file")
            results.append((model.id, problems))
        if not index.generation or not os.path.exists(self.current_link):
            # nothing published, or current lost (link_problem): no list is served to compare;
            # the generation restored to gets its list checked once it is served again
            return results
        try:
            listed = (base / SERVED_LIST).read_bytes()
        except OSError as exc:
            listed, why = b"", f"cannot be read ({exc.strerror})"
        else:
            why = "differs from the generation's index"
        if listed != served_list(index):
            results.append((SERVED_LIST, [f"{SERVED_LIST}: {why} (offline-mode clients with "
                                          "PADDLE_BUNDLE_MIRROR read it)"]))
        return results


def _without(index: Index, purged: set[str]) -> Index:
    """``index`` without the models ``remove --purge`` unlinked from its generation."""
    if not purged:
        return index
    return dataclasses.replace(index, models=tuple(m for m in index.models
                                                   if m.id not in purged))


def _remove_empty_parents(path: Path, top: Path) -> None:
    """The folders of an unlinked file that held nothing else, up to ``top`` (kept)."""
    for parent in path.parents:
        if parent == top or not parent.is_relative_to(top):
            return
        try:
            parent.rmdir()
        except OSError:
            return


def _served_dir(folder: Path) -> None:
    """Create ``folder`` readable and searchable by the web server's user whatever the
    umask (an administrator's ``umask 077`` would otherwise make nginx answer 403)."""
    try:
        folder.mkdir()
    except FileExistsError:
        return
    os.chmod(folder, 0o755)


def _refuse_clashes(models: list[PublishedModel]) -> None:
    """Two models may not serve different files at one URL (or a file where the other needs
    a folder): whichever came last would silently change the other."""
    owner: dict[str, tuple[str, str]] = {}
    clashes = []
    for model in models:
        for served in model.files:
            seen = owner.setdefault(served.url_path, (model.id, served.sha256))
            if seen[0] != model.id and seen[1] != served.sha256:
                clashes.append(f"{served.url_path}: {seen[0]} and {model.id}")
    folders = {p for path in owner for p in _parents(path)}
    clashes += [f"{path}: a file of {owner[path][0]} where another model needs a folder"
                for path in owner if path in folders]
    if clashes:
        raise InstallConflictError(
            "models would serve different files at the same URL: " + "; ".join(clashes[:5]),
            hint="publish them to different --root folders, or remove one first "
                 "('paddle-bundle mirror remove MODEL')")


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


#: The top folder of a generation that the web server serves.
BUCKET_MARK = "paddlenlp"
#: What offline mode's mirror client reads first (``PADDLE_BUNDLE_MIRROR``,
#: :mod:`bundler._offline`): every served file with its sha256 and size, and which model ids
#: the generation serves, so a client downloads only listed files, checks each one, and names
#: the mirror at once for a model it does not serve. No PaddleNLP URL starts with a dot.
SERVED_LIST = f"{BUCKET_MARK}/{STATE}/files.json"
SERVED_LIST_VERSION = 1


def served_list(index: Index) -> bytes:
    """The served file list of ``index``'s generation: paths below ``paddlenlp/``."""
    cut = len(BUCKET_MARK) + 1
    data = {"version": SERVED_LIST_VERSION, "generation": index.generation,
            "models": {m.id: m.kind for m in index.models if m.files},
            "files": {f.url_path[cut:]: [f.sha256, f.size]
                      for m in index.models for f in sorted(m.files, key=lambda f: f.url_path)}}
    return (json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            + "\n").encode()

#: In a superseded generation: the models ``mirror remove --purge`` unlinked from it.
PURGED = "purged.json"
