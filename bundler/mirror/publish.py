"""``mirror publish``, ``mirror remove``: bundles in, one new generation out.

A bundle is verified exactly as ``install`` verifies it: every member goes through
:func:`bundler.verify.stream_check` (checksums, sizes, unsafe members, and whatever checks
run inside it), into a sink that writes each new file once, as a blob named by its sha256. Only
when every bundle of the command has verified is the next generation built and flipped in;
a bundle that fails leaves the mirror exactly as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler._io import display_name, sha256_file
from bundler.archive import BundleReader
from bundler.cache import sync_file_system
from bundler.errors import (
    InsufficientSpaceError,
    IntegrityError,
    LockedError,
    ModelNotFoundError,
)
from bundler.manifest import FileEntry, Manifest
from bundler.mirror.layout import UrlLookup, kind_of, paddlenlp_urls, place
from bundler.mirror.tree import Index, Mirror, PublishedModel, ServedFile
from bundler.signing import Signer, require_trusted
from bundler.verify import bundle_allowlist, stream_check
from bundler.volumes import BundleFiles, locate

UNCHANGED, PUBLISHED, REPLACED = "unchanged", "published", "replaced"


@dataclass(frozen=True)
class PublishOutcome:
    model: PublishedModel
    status: str  # published | replaced | unchanged


@dataclass(frozen=True)
class PublishResult:
    outcomes: tuple[PublishOutcome, ...]
    index: Index  # the generation now served


class BlobSink:
    """A :class:`bundler.verify.Sink` that writes each file whose content the mirror does not
    have yet to a temporary file, and only hashes the rest. :meth:`commit` names the verified
    temporaries by their sha256."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.pending: dict[str, Path] = {}  # sha256 -> temporary file
        self.intact: set[str] = set()  # existing blobs re-hashed by this publish
        #: blobs this publish wrote (new, or replacing a damaged one): a model serving one
        #: needs a new generation even when its manifest is unchanged
        self.written: set[str] = set()

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> str:
        digest = hashlib.sha256()
        wanted = entry.sha256 or ""
        if wanted in self.pending or wanted in self.intact or self.intact_blob(wanted):
            for chunk in chunks:
                digest.update(chunk)
            return digest.hexdigest()
        # a named temporary in tmp/: a killed publish leaves it there, cleared by the next
        temp = self.mirror.tmp / f"blob-{os.getpid()}-{len(self.pending)}-{wanted[:16]}"
        with open(temp, "xb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got == wanted:
            self.pending[got] = temp
        else:
            temp.unlink()
        return got

    def intact_blob(self, sha256: str) -> bool:
        """Whether the blob is on the disk with exactly that content: a blob damaged on the
        disk (``mirror check`` finds it) is written again by the next publish of it."""
        try:
            if sha256_file(self.mirror.blob(sha256)) != sha256:
                return False
        except OSError:
            return False
        self.intact.add(sha256)
        return True

    def write_symlink(self, entry: FileEntry) -> None:
        return None  # served as the file it leads to (layout.place)

    def write_copy(self, entry: FileEntry, source: FileEntry) -> str:
        return source.sha256 or ""  # the same blob as its source, just verified

    def commit(self) -> None:
        if self.pending and not sync_file_system(self.mirror.tmp):
            for temp in self.pending.values():
                with open(temp, "rb") as fh:
                    os.fsync(fh.fileno())
        for sha256, temp in self.pending.items():
            self.mirror.store_blob(temp, sha256)
            self.written.add(sha256)
        self.pending.clear()

    def discard(self) -> None:
        for temp in self.pending.values():
            temp.unlink(missing_ok=True)
        self.pending.clear()


@contextlib.contextmanager
def _named_when_full(mirror: Mirror, what: str) -> Iterator[None]:
    """The disk filling up, named as the mirror's (a bare 'No space left on device' named no
    disk, or a temporary file), with what it left in tmp/ cleared at once (under the lock)."""
    before = mirror.current_number()
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        mirror.clear_leftovers()
        done = ("nothing was changed" if mirror.current_number() == before else
                f"generation {mirror.current_number()} is served, but the command did not "
                "finish")
        raise InsufficientSpaceError(
            f"the disk of {mirror.root} ran out of space while {what} ({exc.strerror}); "
            f"{done}", hint="free space there and run the command again") from None


def require_signature(files: BundleFiles, trust: Path | None, root: Path) -> Signer | None:
    """Who signed the bundle, checked before a byte of it is read, exactly as install does:
    ``--trust``, ``$PADDLE_BUNDLE_TRUST`` and the mirror's own policy
    (``ROOT/.paddle-bundle/allowed_signers``) each must accept the signer when present."""
    return require_trusted(files, trust=trust, home=root)


def publish(bundles: Sequence[Path], root: Path, *, trust: Path | None = None,
            allow_globals: Sequence[str] = (), lookup: UrlLookup = paddlenlp_urls,
            progress: Callable[[int], None] | None = None) -> PublishResult:
    """Verify every bundle and serve its models from ``root``, all in one new generation."""
    mirror = Mirror(root)
    located = [(Path(b), locate(Path(b))) for b in bundles]  # a missing bundle fails first
    with mirror.locked(), _named_when_full(mirror, "publishing"):
        current = {m.id: m for m in mirror.index().models}
        incoming: dict[str, PublishedModel] = {}
        sink = BlobSink(mirror)
        try:
            for bundle, files in located:
                # the root as the mirror resolved it (~ expanded): the policy it holds applies
                signer = require_signature(files, trust, mirror.root)
                for model in _verify_into(bundle, files, sink, signer, allow_globals, lookup,
                                          progress):
                    incoming[model.id] = model
            _require_bases(mirror, sink, incoming.values())
            sink.commit()
        finally:
            sink.discard()
        outcomes = []
        for model in incoming.values():
            before = current.get(model.id)
            repaired = any(f.sha256 in sink.written for f in model.files) or \
                not mirror.serves_blobs(model)
            status = PUBLISHED if before is None else (
                UNCHANGED if before.same_content(model) and not repaired else REPLACED)
            outcomes.append(PublishOutcome(before if status == UNCHANGED and before else model,
                                           status))
        if all(o.status == UNCHANGED for o in outcomes) and mirror.serves_list():
            return PublishResult(tuple(outcomes), mirror.index())
        merged = {**current, **{o.model.id: o.model for o in outcomes}}
        return PublishResult(tuple(outcomes), mirror.commit(merged.values()))


def _verify_into(bundle: Path, files: BundleFiles, sink: BlobSink, signer: Signer | None,
                 allow_globals: Sequence[str], lookup: UrlLookup,
                 progress: Callable[[int], None] | None) -> list[PublishedModel]:
    with BundleReader(bundle, progress=progress) as reader:
        manifest = reader.manifest()
        allow, note = bundle_allowlist(manifest, signer, allow_globals)
        manifest_sha256 = hashlib.sha256(reader.manifest_bytes).hexdigest()
        planned = _plan(manifest, lookup)  # before reading: an unknown URL fails early
        problems = stream_check(reader, manifest, sink, allow=allow)
        if problems and note:
            problems.append(note)
        if problems:
            raise IntegrityError(f"{bundle} failed verification; nothing was published",
                                 problems, hint="copy the bundle again and run "
                                                "'paddle-bundle verify' on it")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = display_name(files.base.name)
    signed_by = None if signer is None else signer.describe()
    return [PublishedModel(model_id, kind, served, name, manifest_sha256, signed_by, now,
                           skipped) for model_id, kind, served, skipped in planned]


def _plan(manifest: Manifest, lookup: UrlLookup
          ) -> list[tuple[str, str, tuple[ServedFile, ...], tuple[str, ...]]]:
    planned = []
    for model in manifest.models:
        placements, skipped = place(manifest, model, lookup)
        served = {p.url_path: ServedFile(p.url_path, p.sha256, p.size) for p in placements}
        if not served:
            skipped = [*skipped, f"{model.id}: nothing of it can be served"]
        planned.append((model.id, kind_of(model), tuple(served.values()), tuple(skipped)))
    return planned


def _require_bases(mirror: Mirror, sink: BlobSink, models: Iterable[PublishedModel]) -> None:
    """Every file served must have its blob, intact: a delta bundle's base files must have
    been published before (they are not in the bundle), and are re-hashed as every other
    reused blob is (install, too, refuses a delta whose base files changed)."""
    problems = []
    for m in models:
        for f in m.files:
            if f.sha256 in sink.pending or f.sha256 in sink.intact:
                continue
            if not mirror.blob(f.sha256).exists():
                problems.append(f"{m.id}: {f.url_path}: not in the mirror")
            elif not sink.intact_blob(f.sha256):
                problems.append(f"{m.id}: {f.url_path}: damaged in the mirror")
    if problems:
        raise IntegrityError(
            f"{len(problems)} file(s) are in neither the bundle nor the mirror, intact (a "
            "delta bundle whose base was not published here, or is damaged)",
            sorted(set(problems)), hint="publish the full bundle the delta was made against "
                                        "first (it writes damaged files anew)")


def remove(root: Path, model_ids: Sequence[str], *, purge: bool = False) -> Index:
    """Stop serving ``model_ids``: a new generation without them (clients pinned to the old
    one finish on it; its files go once it is pruned).

    ``purge`` (a compromised model): also unlink their files from every superseded
    generation still on the disk, and the blobs then unused, at once; clients pinned to an
    old generation get 404 for them (they fail rather than load it). A model already removed
    without ``purge`` may be named again with it: it is then only purged."""
    mirror = Mirror(root)
    if not os.path.lexists(mirror.state):  # a --root typo: named, and no mirror made there
        mirror.index()  # a root that does not exist
        raise ModelNotFoundError(f"nothing is published in {mirror.root}",
                                 hint="give the --root you published into")
    with mirror.locked(), _named_when_full(mirror, "removing"):
        index = mirror.index()
        known = {m.id for m in index.models}
        if purge:
            known |= mirror.superseded_models()
        unknown = [m for m in model_ids if m not in known]
        if unknown:
            raise ModelNotFoundError(f"{', '.join(unknown)} not published in {mirror.root}",
                                     hint="see 'paddle-bundle mirror list --root DIR'")
        if any(m.id in model_ids for m in index.models):
            index = mirror.commit(m for m in index.models if m.id not in model_ids)
        if purge:
            mirror.purge(model_ids)
        return index


def prune(root: Path) -> list[int] | None:
    """Remove the generations superseded more than :data:`bundler.mirror.tree.KEEP_SECONDS`
    ago, and the files only they served. A publish or remove prunes too, but only when it
    runs: without a later one, a removed model stayed on the disk, and any client could still
    fetch it by sending an old generation's cookie (run this from cron, docs/fleet.md).

    None when another publish or remove holds the lock: it prunes when it finishes, and a
    cron job must neither wait for it nor fail."""
    mirror = Mirror(root)
    if not os.path.lexists(mirror.state):
        mirror.index()  # a root that does not exist is named; an empty one has nothing
        return []
    try:
        with mirror.locked():
            return mirror.prune()
    except LockedError:
        return None
