"""Pack: cached model folders -> one checksummed zstd bundle (the online side).

Reads each file exactly once: it is hashed while it is compressed. The bundle is written under
a temporary name beside ``out`` and renamed only when complete, so an interrupted pack leaves
no ``out`` behind; then the ``.sha256`` sidecar is written the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import platform
import re
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

from bundler import __version__
from bundler._io import atomic_output, open_regular, sha256_file
from bundler.archive import BundleWriter, Compression, looks_like_bundle
from bundler.cache import STATE_DIRNAME, LocalFile, path_of, scan_model, top_dirs
from bundler.errors import BundleError, ModelNotFoundError, UsageError
from bundler.manifest import (
    MAX_PROBLEMS,
    PLACEHOLDER_SHA256,
    FileEntry,
    Manifest,
    ModelEntry,
    Origin,
    Proof,
    parse_model_ids,
    validate,
)
from bundler.paths import portability_problems, unsafe_reason
from bundler.scan import Allowlist, FileScan, Finding, aliases, raise_for
from bundler.signing import signature_path
from bundler.volumes import (
    OutputPlan,
    VolumeWriter,
    plan_output,
    remove_abandoned_parts,
    volume_path,
    write_sidecar,
)

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: 9999-12-31T23:59:59Z: dates past it cannot be written in the manifest.
LAST_DATE = 253402300799

@dataclass(frozen=True)
class PackOptions:
    """Everything that shapes a bundle, travelling as one object so no option is dropped on
    the way to the writer."""

    compression: Compression = Compression()
    command: tuple[str, ...] = ()
    endpoint: str | None = None
    absent_upstream: dict[str, tuple[str, ...]] = field(default_factory=dict)
    split_size: int | None = None  # volumes of at most this many bytes; None: one file
    #: path -> (size, sha256) installed on the target: those files are left out (a delta)
    exclude_installed: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    portable: bool = False  # refuse names that break on FAT/Windows instead of warning
    proof: Proof | None = None  # fetch's offline proof, recorded in the origin
    #: globals accepted in pickled weights beyond the built-in allowlist (--allow-global),
    #: recorded in the manifest's origin
    allow_globals: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackResult:
    path: Path  # the bundle's name: the file, or the base name of its volumes
    parts: tuple[Path, ...]  # the files written: [path], or the volumes path.000, ...
    sidecar: Path
    manifest: Manifest
    sha256: dict[str, str]  # file name -> sha256, as in the sidecar
    size: int


def _version(dist: str) -> str | None:
    """A distribution's version without importing it: Paddle may be broken here."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _created(files: Sequence[LocalFile]) -> int:
    """The bundle's date: ``SOURCE_DATE_EPOCH`` when set, else the newest file's mtime.

    Not the wall clock, so that packing the same folders twice gives the same bytes.
    """
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env and env.isdigit():
        return min(int(env), LAST_DATE)
    return min(max((int(f.path.lstat().st_mtime) for f in files), default=0), LAST_DATE)


def origin_now(created: int, options: PackOptions) -> Origin:
    stamp = dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    paddle = _version("paddlepaddle") or _version("paddlepaddle-gpu")
    return Origin(tool_version=__version__, created=stamp, user=user,
                  host=socket.gethostname(), platform=platform.platform(),
                  python=platform.python_version(), paddlenlp=_version("paddlenlp"),
                  paddlepaddle=paddle, command=options.command, endpoint=options.endpoint,
                  proof=options.proof,
                  allowed_globals=tuple(sorted(set(options.allow_globals))))


def plan(home: Path, models: Sequence[ModelEntry]) -> tuple[list[ModelEntry], list[LocalFile]]:
    """Scan every model first, so a missing one fails before anything is written."""
    files: list[LocalFile] = []
    missing: list[ModelNotFoundError] = []
    for model in models:
        try:
            files.extend(scan_model(home, model))
        except ModelNotFoundError as exc:
            missing.append(exc)
    if len(missing) == 1:
        raise missing[0]
    if missing:
        raise ModelNotFoundError(f"{len(missing)} models are not in the cache: "
                                 + " | ".join(e.message for e in missing),
                                 hint=missing[0].hint)
    return list(models), sorted(files, key=lambda f: f.arcname)


def pack(model_ids: Sequence[str], out: Path, *, home: Path,
         options: PackOptions = PackOptions(),
         progress: Callable[[int], None] | None = None,
         on_start: Callable[[int], None] | None = None) -> PackResult:
    """Pack the named cached models, whole folders, into ``out``.

    ``on_start`` receives the total number of bytes to read, then ``progress`` each amount
    read, so the CLI can draw a bar without the library knowing about terminals.
    """
    home = Path(os.path.abspath(os.path.expanduser(home)))
    models, files = plan(home, parse_model_ids(model_ids))
    return write_bundle(models, files, out, home=home, options=options, progress=progress,
                        on_start=on_start)


_TOP_NAMES = {"models": "the PaddleNLP home's models/ folder",
              "taskflow": "the PaddleNLP home's taskflow/ folder",
              "hf": "the Hugging Face hub cache", "aistudio": "the AI Studio hub cache"}


def check_output(out: Path, *, home: Path, models: Sequence[ModelEntry],
                 split: bool) -> OutputPlan:
    """Refuse an ``out`` whose writing could destroy anything: inside the home's model
    folders, the hub caches or a model being packed, or over a file that is not an earlier
    bundle of that name (see :func:`bundler.volumes.plan_output`). Nothing is written here."""
    out = Path(os.path.abspath(out))
    if out.is_dir() and not out.is_symlink():
        raise UsageError(f"{out} is a directory", hint="give the bundle's file name with -o")
    tops = top_dirs(home)
    protected = [(path_of(home, m.root, tops), f"the folder of model {m.id}, which is being "
                  "packed") for m in models]
    protected += [(folder, _TOP_NAMES.get(top, f"the cache folder of {top}/"))
                  for top, folder in tops.items()]
    protected.append((home / STATE_DIRNAME, "paddle-bundle's own records of this home"))
    return plan_output(out, split=split, protected=protected, is_bundle=looks_like_bundle)


def write_bundle(models: Sequence[ModelEntry], files: Sequence[LocalFile], out: Path, *,
                 home: Path, options: PackOptions = PackOptions(),
                 progress: Callable[[int], None] | None = None,
                 on_start: Callable[[int], None] | None = None) -> PackResult:
    """Write exactly ``files`` (of ``models``, from ``home``) into the bundle ``out`` and
    its sidecar.

    ``pack`` passes whole folders; ``fetch`` passes just the files PaddleNLP's loaders used.
    ``out`` is checked first (:func:`check_output`); temporary files an earlier, killed pack
    to ``out`` left behind are removed.
    """
    out = Path(os.path.abspath(out))
    target = check_output(out, home=home, models=models, split=bool(options.split_size))
    for path, size in remove_abandoned_parts(out):
        log.warning("removed %s (%.1f MB), left by an interrupted pack", path, size / 1e6)
    files = sorted(files, key=lambda f: f.arcname)
    models = [ModelEntry(m.id, m.kind, m.root, tuple(sorted(
        set(m.absent_upstream) | set(options.absent_upstream.get(m.id, ()))))) for m in models]
    check_portability([f.arcname for f in files], strict=options.portable)
    created = _created(files)
    entries = plan_entries(files, options.exclude_installed)
    draft = Manifest(origin=origin_now(created, options), models=tuple(models),
                     files=tuple(entries[f.arcname] for f in files))
    problems = validate(draft)
    if problems:
        raise BundleError(f"cannot pack: {problems[0]}")
    draft_json = draft.to_json()
    stored = [f for f in files if _stored(entries[f.arcname])]
    if on_start:
        on_start(sum(f.size for f in stored))
    warn_if_short_of_space(out.parent, sum(f.size for f in stored))

    hashes: dict[str, str] = {}
    allow = Allowlist(options.allow_globals)
    names = aliases((e.path, e.same_as, e.target) for e in entries.values())
    refused: list[tuple[str, Finding]] = []

    def stream(fh: BinaryIO) -> Manifest:
        writer = BundleWriter(fh, len(draft_json), created, options.compression)
        for f in files:
            entry = entries[f.arcname]
            if entry.from_base:
                continue
            if f.target is not None:
                writer.add_symlink(f.arcname, f.target, f.mode)
            elif entry.same_as is not None:
                writer.add_hardlink(f.arcname, entry.same_as, f.mode)
            else:
                scan = FileScan(names.get(f.arcname, [f.arcname]), allow)
                digest = writer.add_file(f.arcname, f.path, f.size, f.mode, progress,
                                         observe=scan.feed)
                if scan.close() is not None:
                    assert scan.finding is not None
                    refused.append((f.arcname, scan.finding))
                if entry.sha256 not in (PLACEHOLDER_SHA256, digest):
                    raise BundleError(f"{f.path} changed while it was being packed",
                                      hint="stop whatever writes to the cache and pack again")
                hashes[f.arcname] = digest
        raise_for(refused, "nothing was written")  # before the output is renamed into place
        manifest = draft.with_hashes(hashes)
        writer.finish(manifest.to_json())
        return manifest

    if options.split_size:
        volumes = VolumeWriter(out, options.split_size, target.replaceable)
        try:
            manifest = stream(volumes)  # type: ignore[arg-type]
            parts = volumes.commit()
        except BaseException:
            volumes.discard()
            raise
        if out.name in target.replaceable:  # an earlier one-file bundle would shadow them
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
    else:
        with atomic_output(out) as fh:
            manifest = stream(fh)  # type: ignore[arg-type]
        parts = [out]
        stale = 0  # an earlier split bundle's volumes; any other file of such a name stays
        while volume_path(out, stale).name in target.replaceable:
            with contextlib.suppress(FileNotFoundError):
                volume_path(out, stale).unlink()
            stale += 1
    digests = [(p.name, sha256_file(p)) for p in parts]
    sidecar = write_sidecar(out, digests)
    with contextlib.suppress(FileNotFoundError):  # an earlier bundle's: it signs other bytes
        signature_path(sidecar).unlink()
    return PackResult(out, tuple(parts), sidecar, manifest, dict(digests),
                      sum(p.stat().st_size for p in parts))


def _stored(entry: FileEntry) -> bool:
    return not entry.from_base and entry.same_as is None and not entry.is_symlink


def plan_entries(files: Sequence[LocalFile],
                 exclude_installed: Mapping[str, tuple[int, str]]) -> dict[str, FileEntry]:
    """Each file's manifest entry before streaming: which are left out of a delta (already
    installed on the target, same bytes) and which repeat an earlier file's content.

    Only files that could match (same path and size as an installed one; same size as
    another file) are hashed ahead; everything else is hashed once, while compressed, and
    gets a placeholder here.
    """
    entries: dict[str, FileEntry] = {}
    regular = [f for f in files if f.target is None]
    known: dict[str, str] = {}
    for f in regular:
        installed = exclude_installed.get(f.arcname)
        if installed is not None and installed[0] == f.size:
            known[f.arcname] = sha256_file(f.path)
    by_size: dict[int, list[LocalFile]] = {}
    for f in regular:
        if f.size > 0:
            by_size.setdefault(f.size, []).append(f)
    for group in by_size.values():
        if len(group) > 1:
            for f in group:
                if f.arcname not in known:
                    known[f.arcname] = sha256_file(f.path)
    first_with: dict[str, str] = {}
    for f in files:
        if f.target is not None:
            entries[f.arcname] = f.entry(None)
            continue
        digest = known.get(f.arcname)
        installed = exclude_installed.get(f.arcname)
        if digest is not None and installed is not None and installed == (f.size, digest):
            entries[f.arcname] = replace(f.entry(digest), from_base=True)
        elif digest is not None and digest in first_with:
            entries[f.arcname] = replace(f.entry(digest), same_as=first_with[digest])
        else:
            if digest is not None:
                first_with[digest] = f.arcname
            entries[f.arcname] = f.entry(digest or PLACEHOLDER_SHA256)
    return entries


#: ``list --json`` of a home with tens of thousands of models stays far below this.
MAX_STATE_BYTES = 256 * 1024 * 1024


def load_installed_state(path: Path) -> dict[str, tuple[int, str]]:
    """``paddle-bundle list --json`` from the target machine: path -> (size, sha256).

    Validated like a manifest: every problem is collected, and a malformed file is one
    usage error naming it, never a crash half-way through.
    """
    hint = "on the offline machine run: paddle-bundle list --json > state.json"
    try:
        with open_regular(path, UsageError) as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"state file {path} does not exist") from None
    except OSError as exc:
        raise BundleError(f"state file {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_STATE_BYTES:
        raise UsageError(f"{path} is too large to be the output of 'paddle-bundle list --json'",
                         hint=hint)
    try:
        raw = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise UsageError(f"{path} is not the output of 'paddle-bundle list --json' (not JSON: "
                         f"{why})", hint=hint) from None
    problems: list[str] = []
    state = _parse_state(raw, problems)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{path} is not the output of 'paddle-bundle list --json': "
                         f"{problems[0]}{more}", hint=hint)
    return state


def _parse_state(raw: object, problems: list[str]) -> dict[str, tuple[int, str]]:
    """The installed files of ``list --json`` output; what is wrong goes to ``problems``."""
    state: dict[str, tuple[int, str]] = {}
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, list):
        problems.append("it must be an object with a 'models' list")
        return state
    for i, model in enumerate(models):
        files = model.get("files") if isinstance(model, dict) else None
        if not isinstance(files, list):
            problems.append(f"models[{i}] must be an object with a 'files' list")
            continue
        for j, entry in enumerate(files):
            if len(problems) >= MAX_PROBLEMS:
                return state
            where = f"models[{i}].files[{j}]"
            if not isinstance(entry, dict) or entry.get("type") not in ("file", "symlink"):
                problems.append(f"{where} must be an object of type 'file' or 'symlink'")
                continue
            arcname, size, sha256 = entry.get("path"), entry.get("size"), entry.get("sha256")
            if not isinstance(arcname, str) or unsafe_reason(arcname):
                reason = unsafe_reason(arcname) if isinstance(arcname, str) else "not a string"
                problems.append(f"{where}.path: {reason}")
            elif entry["type"] == "symlink":
                continue
            elif not isinstance(size, int) or isinstance(size, bool) or size < 0:
                problems.append(f"{where}.size must be a non-negative integer")
            elif not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                problems.append(f"{where}.sha256 must be 64 lowercase hex digits")
            else:
                state[arcname] = (size, sha256)
    return state


def check_portability(arcnames: Sequence[str], *, strict: bool) -> None:
    """Names that break on the other side (FAT, exFAT, Windows, case-insensitive file
    systems) are warned about, or with ``strict`` refused."""
    problems = portability_problems(arcnames)
    if problems and strict:
        raise BundleError(f"{len(problems)} file name(s) are not portable: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                          hint="rename them, or pack without --portable")
    for problem in problems:
        log.warning("not portable: %s", problem)


def warn_if_short_of_space(folder: Path, estimate: int) -> None:
    """Model weights barely compress, so the input size is a fair estimate of the output."""
    free = shutil.disk_usage(folder).free
    if estimate > free:
        log.warning("the bundle will likely not fit in %s: about %.1f MB to write, %.1f MB "
                    "free; use a larger stick or --split-size across several", folder,
                    estimate / 1e6, free / 1e6)
