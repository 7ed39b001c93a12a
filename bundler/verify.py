"""Verify a bundle against its manifest, and check installed models against their records.

:func:`stream_check` is the one loop over a bundle's members; ``verify`` runs it with nothing
to write and ``install`` with a sink that writes to staging, so both refuse exactly the same
things.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bundler.archive import BundleReader, describe_member_problem
from bundler.cache import Cache, InstallRecord
from bundler.errors import IntegrityError, ModelNotFoundError
from bundler.manifest import FileEntry, Manifest, parse_model_ids
from bundler.scan import Allowlist, FileScan, aliases, offline_allowlist, refusal, scanned_chunks
from bundler.signing import Signer, require_trusted
from bundler.volumes import locate, quick_verify
from bundler.wheels import folder_problems


class Sink(Protocol):
    """Where verified bytes go. ``write_file`` consumes ``chunks`` and returns their sha256."""

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> str: ...

    def write_symlink(self, entry: FileEntry) -> None: ...

    def write_copy(self, entry: FileEntry, source: FileEntry) -> str: ...


class HashOnly:
    """A sink that keeps nothing: verification without writing."""

    def write_file(self, entry: FileEntry, chunks: Iterable[bytes | memoryview]) -> str:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        return digest.hexdigest()

    def write_symlink(self, entry: FileEntry) -> None:
        return None

    def write_copy(self, entry: FileEntry, source: FileEntry) -> str:
        return source.sha256 or ""  # the source's own bytes were just checked


def stream_check(reader: BundleReader, manifest: Manifest, sink: Sink, *,
                 allow: Allowlist | None = None) -> list[str]:
    """Read every member once, check it against ``manifest``, hand good bytes to ``sink``.

    Returns every problem found (unsafe or unexpected members, size and checksum
    mismatches, missing entries, truncation, weights naming a global outside ``allow``)
    rather than stopping at the first. The pickle scan rides along the same read.
    """
    problems: list[str] = []
    seen: set[str] = set()
    allow = allow or Allowlist()
    names = aliases((f.path, f.same_as, f.target) for f in manifest.files)
    try:
        for member, chunks in reader.members():
            problem = describe_member_problem(member, manifest, seen)
            if problem:
                problems.append(problem)
                continue
            seen.add(member.arcname)
            entry = manifest.file(member.arcname)
            assert entry is not None
            if entry.is_symlink:
                sink.write_symlink(entry)
            elif entry.same_as is not None:
                source = manifest.file(entry.same_as)
                assert source is not None  # checked by describe_member_problem
                if sink.write_copy(entry, source) != entry.sha256:
                    problems.append(f"{entry.path}: copy of {source.path} differs from the "
                                    "manifest")
            else:
                scan = FileScan(names.get(entry.path, [entry.path]), allow)
                if sink.write_file(entry, scanned_chunks(scan, chunks)) != entry.sha256:
                    problems.append(f"{entry.path}: sha256 differs from the manifest")
                elif scan.close() is not None:
                    assert scan.finding is not None
                    problems.append(refusal(entry.path, scan.finding))
        reader.finish()
    except IntegrityError as exc:
        problems.append(str(exc))
        return problems
    missing = [f.path for f in manifest.files if f.in_archive and f.path not in seen]
    problems.extend(f"{path}: listed in the manifest but missing from the archive"
                    for path in missing)
    return problems


@dataclass(frozen=True)
class VerifyReport:
    bundle: Path
    manifest: Manifest | None
    problems: tuple[str, ...]
    sha256: dict[str, str]  # file name -> sha256, for the bundle file or each volume
    sidecar: Path | None  # the .sha256 file that was compared, if there was one
    signer: Signer | None = None  # who signed the sidecar (trusted_by None: not checked)

    @property
    def ok(self) -> bool:
        return not self.problems


def bundle_allowlist(manifest: Manifest, signer: Signer | None, extra: Sequence[str]
                     ) -> tuple[Allowlist, str | None]:
    """The allowlist verify, install and mirror publish scan a bundle with: the globals its
    manifest asks for count only when a trusted signer vouches for it (plus ``extra``)."""
    return offline_allowlist(manifest.origin.allowed_globals,
                             signer is not None and signer.trusted_by is not None, extra)


def verify(bundle: Path, progress: Callable[[int], None] | None = None,
           *, quick: bool = False, trust: Path | None = None, home: Path | None = None,
           allow_globals: Sequence[str] = ()) -> VerifyReport:
    """Check every member of ``bundle`` against its manifest, and every file of it against
    the ``.sha256`` sidecar when there is one. Collects all problems.

    ``quick`` compares the files with the sidecar only, at disk speed: for checking a copy
    on the stick before walking away.
    """
    files = locate(bundle)
    signer = require_trusted(files, trust=trust, home=home)  # SignatureError: exit 3
    if quick:
        return VerifyReport(bundle, None, tuple(quick_verify(files, progress)
                                                + folder_problems(files.base, files.expected)),
                            {}, files.sidecar, signer)
    problems: list[str] = []
    manifest: Manifest | None = None
    digests: dict[str, str] = {}
    try:
        with BundleReader(bundle, progress=progress) as reader:
            manifest = reader.manifest()
            allow, note = bundle_allowlist(manifest, signer, allow_globals)
            problems.extend(stream_check(reader, manifest, HashOnly(), allow=allow))
            if problems and note:
                problems.append(note)
            digests = reader.drain()
    except IntegrityError as exc:
        problems.append(str(exc))
        problems.extend(exc.problems)
    problems.extend(folder_problems(files.base, files.expected))  # OUT.python/ (--python)
    return VerifyReport(bundle, manifest, tuple(problems), digests, files.sidecar, signer)


def inspect(bundle: Path) -> tuple[Manifest, int]:
    """The manifest and the file size, reading only the head of the bundle."""
    with BundleReader(bundle, check_sidecar=False) as reader:
        manifest = reader.manifest()
        assert reader.files is not None
        return manifest, reader.files.size


@dataclass(frozen=True)
class CheckResult:
    record: InstallRecord
    drift: tuple[str, ...]  # changed or missing files
    extra: tuple[str, ...]  # files added to the folder since install (not drift)


def check(home: Path, model_ids: Sequence[str] = ()) -> list[CheckResult]:
    """Re-hash installed models against what install wrote. All installed models when
    ``model_ids`` is empty."""
    cache = Cache(home)
    if model_ids:
        records = []
        for model in parse_model_ids(model_ids):
            record = cache.record(model)
            if record is None:
                raise ModelNotFoundError(
                    f"model {model.id} was not installed by paddle-bundle in {cache.home}",
                    hint="see 'paddle-bundle list', or pass --home")
            records.append(record)
    else:
        records = cache.records()
    return [CheckResult(r, _drift(cache, r), tuple(cache.extra_files(r.model, r.files)))
            for r in records]


_HUB_CACHE_VARS = {"hf": "HF_HUB_CACHE / HF_HOME", "aistudio": "AISTUDIO_HUB_CACHE"}


def _drift(cache: Cache, record: InstallRecord) -> tuple[str, ...]:
    """Changed or missing files; for a hub model whose whole folder is gone, one line that
    says where it was looked for and why that may differ (the cache variables)."""
    folder = cache.model_path(record.model)
    if record.model.kind in _HUB_CACHE_VARS and not folder.exists():
        return (f"{folder} does not exist (all {len(record.files)} files missing); is "
                f"{_HUB_CACHE_VARS[record.model.kind]} set as it was at install?",)
    return tuple(cache.differences(record.files))
