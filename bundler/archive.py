"""The bundle file format: a tar stream in zstd, ``manifest.json`` first.

This is the only module that touches ``tarfile`` and ``zstandard``.

Layout of a bundle file::

    [zstd frame: tar member manifest.json][skippable frame: padding][zstd frame: other members]

The manifest carries every file's sha256, yet it must come first so that ``inspect`` reads
only the head of the file and ``install`` knows what to expect before it writes anything. To
read each model file only once, pack leaves room at the head of the file, streams the files
(hashing them while they are compressed), then compresses the finished manifest into that
room and fills what is left with a zstd *skippable frame*, which every zstd decoder (the
``zstd`` CLI and ``tar --zstd`` included) passes over. The room is sized from the manifest's
exact length, known in advance because every checksum is 64 hex digits.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler._io import CHUNK, ProgressFn
from bundler.errors import BundleError, IntegrityError, ManifestError
from bundler.manifest import MANIFEST_ARCNAME, MAX_MANIFEST_BYTES, Manifest
from bundler.paths import unsafe_reason
from bundler.volumes import BundleFiles, ChainReader, locate

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240, as GNU tar pads
_SKIPPABLE_MAGIC = 0x184D2A50
_SKIPPABLE_HEADER = 8


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Compression:
    """How the data frame is compressed. Threads are always at least 1: zstd's output is the
    same for any number of worker threads >= 1 (but differs from single-threaded mode), so
    bundles stay byte-identical whatever machine packs them."""

    level: int = 3
    threads: int = 0  # 0: one per available core

    def compressor(self) -> zstandard.ZstdCompressor:
        threads = self.threads or default_threads()
        return zstandard.ZstdCompressor(level=self.level, threads=max(1, threads),
                                        write_checksum=True)


def _pad(n: int, to: int = BLOCK) -> int:
    return -n % to


def _header(arcname: str, kind: bytes, size: int, mode: int, mtime: int,
            target: str = "") -> bytes:
    info = tarfile.TarInfo(arcname)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.linkname = target
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def manifest_reserve(manifest_len: int) -> int:
    """Bytes to leave at the head of the file for the compressed manifest member.

    zstd never makes input bigger than ``ZSTD_COMPRESSBOUND``; add the frame header and
    checksum, and room for the skippable frame's own header.
    """
    member = BLOCK + manifest_len + _pad(manifest_len)
    bound = member + (member >> 8)
    if member < 128 << 10:
        bound += ((128 << 10) - member) >> 11
    return bound + 64 + _SKIPPABLE_HEADER


class BundleWriter:
    """Writes one bundle to a seekable, empty binary file.

    Call :meth:`add_file` / :meth:`add_symlink` in the order the manifest lists the files,
    then :meth:`finish` with the final manifest bytes, which must be exactly
    ``manifest_len`` long.
    """

    def __init__(self, fh: BinaryIO, manifest_len: int, mtime: int,
                 compression: Compression = Compression()) -> None:
        self._fh = fh
        self._manifest_len = manifest_len
        self._mtime = mtime
        self._compression = compression
        self._reserve = manifest_reserve(manifest_len)
        fh.seek(self._reserve)
        self._zw = compression.compressor().stream_writer(fh, closefd=False)
        self._offset = 0  # tar bytes written after the manifest member

    def _write(self, data: bytes) -> None:
        self._zw.write(data)
        self._offset += len(data)

    def add_file(self, arcname: str, path: Path, size: int, mode: int,
                 progress: ProgressFn | None = None) -> str:
        """Append one file, reading it once; returns its sha256.

        Exactly ``size`` bytes (as listed in the manifest) are stored. A file that has grown
        or shrunk since it was listed is refused rather than stored inconsistently.
        """
        self._write(_header(arcname, tarfile.REGTYPE, size, mode, self._mtime))
        digest = hashlib.sha256()
        remaining = size
        with open(path, "rb") as src:
            while remaining:
                chunk = src.read(min(CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                self._write(chunk)
                remaining -= len(chunk)
                if progress:
                    progress(len(chunk))
            if remaining or src.read(1):
                raise BundleError(f"{path} changed while it was being packed",
                                  hint="stop whatever writes to the cache and pack again")
        self._write(b"\0" * _pad(size))
        return digest.hexdigest()

    def add_symlink(self, arcname: str, target: str, mode: int) -> None:
        self._write(_header(arcname, tarfile.SYMTYPE, 0, mode, self._mtime, target))

    def add_hardlink(self, arcname: str, target: str, mode: int) -> None:
        """Content already stored under ``target``: a tar hard link, so standard tar
        extracts it too, while the bytes are stored once."""
        self._write(_header(arcname, tarfile.LNKTYPE, 0, mode, self._mtime, target))

    def finish(self, manifest_json: bytes) -> None:
        if len(manifest_json) != self._manifest_len:
            raise ValueError("manifest length changed after the space for it was reserved")
        member = (_header(MANIFEST_ARCNAME, tarfile.REGTYPE, len(manifest_json), 0o644,
                          self._mtime) + manifest_json + b"\0" * _pad(len(manifest_json)))
        end = len(member) + self._offset + 2 * BLOCK
        self._write(b"\0" * (2 * BLOCK + _pad(end, RECORD)))
        self._zw.flush(zstandard.FLUSH_FRAME)
        self._zw.close()  # type: ignore[no-untyped-call]
        tail = self._fh.tell()
        frame = zstandard.ZstdCompressor(level=self._compression.level,
                                         write_checksum=True).compress(member)
        gap = self._reserve - len(frame) - _SKIPPABLE_HEADER
        if gap < 0:  # pragma: no cover - ruled out by manifest_reserve
            raise AssertionError("compressed manifest larger than its reserved space")
        self._fh.seek(0)
        self._fh.write(frame)
        self._fh.write(_SKIPPABLE_MAGIC.to_bytes(4, "little") + gap.to_bytes(4, "little"))
        self._fh.write(b"\0" * gap)
        self._fh.seek(tail)


# -- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """A tar member as the reader sees it, before anything is trusted."""

    arcname: str
    kind: str  # file, symlink, hardlink, directory, device, fifo, other
    size: int
    mode: int
    target: str


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.isdir():
        return "directory"
    if info.isdev():
        return "fifo" if info.isfifo() else "device"
    return "other"


class BundleReader:
    """Streams a bundle once, front to back: the manifest, then each member.

    ``path`` is a bundle file, the base name of split volumes, or any one volume. The raw
    bytes are checked against the ``.sha256`` sidecar as each file ends (see
    :class:`bundler.volumes.ChainReader`). Nothing here is trusted: :meth:`manifest`
    validates, and callers check each :class:`Member` against the manifest before using its
    bytes. Any decoding failure becomes an :class:`IntegrityError` naming the file.
    """

    def __init__(self, path: Path, *, progress: ProgressFn | None = None,
                 check_sidecar: bool = True) -> None:
        self.path = Path(path)
        self._progress = progress
        self._check_sidecar = check_sidecar
        self._tar: tarfile.TarFile | None = None
        self._raw: ChainReader | None = None
        self.files: BundleFiles | None = None
        self.manifest_bytes = b""

    def __enter__(self) -> BundleReader:
        self.files = locate(self.path)
        self._raw = ChainReader(self.files, self._progress, self._check_sidecar)
        stream = zstandard.ZstdDecompressor().stream_reader(
            io.BufferedReader(self._raw, CHUNK), read_size=CHUNK, read_across_frames=True)
        with self._errors():
            self._tar = tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._raw is not None:
            self._raw.close()

    def drain(self) -> dict[str, str]:
        """Read what the decoder left, checking every file against the sidecar; returns the
        sha256 of each file of the bundle."""
        assert self._raw is not None
        return self._raw.drain()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        def where() -> Path | None:
            if self.files is None or self._raw is None or not self.files.split:
                return None
            return self._raw.current

        return _mapped_errors(self.path, where)

    def manifest(self) -> Manifest:
        """Read and validate the first member, which must be ``manifest.json``."""
        assert self._tar is not None
        with self._errors():
            info = self._tar.next()
            if info is None or info.name != MANIFEST_ARCNAME or not info.isreg():
                first = "nothing" if info is None else repr(info.name)
                raise ManifestError(
                    f"{self.path}: first member is {first}, not {MANIFEST_ARCNAME}",
                    hint="this file is not a paddle-bundle bundle, or it is damaged")
            if info.size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{self.path}: {MANIFEST_ARCNAME} is {info.size} bytes, "
                                    "too large to be a manifest")
            src = self._tar.extractfile(info)
            assert src is not None
            data = src.read()
            if len(data) != info.size:
                raise IntegrityError(f"{self.path}: bundle is truncated inside the manifest",
                                     hint="copy the bundle again")
        self.manifest_bytes = data
        return Manifest.from_json(data, source=f"{self.path}: {MANIFEST_ARCNAME}")

    def members(self) -> Iterator[tuple[Member, Iterator[bytes]]]:
        """Each member after the manifest, with a lazy iterator over its bytes.

        Members whose bytes are not consumed are skipped by the tar reader.
        """
        assert self._tar is not None
        tar = self._tar
        while True:
            with self._errors():
                info = tar.next()
            if info is None:
                return
            member = Member(info.name, _kind(info), info.size, info.mode, info.linkname)
            yield member, self._chunks(info)

    def _chunks(self, info: tarfile.TarInfo) -> Iterator[bytes]:
        if not info.isreg():
            return
        assert self._tar is not None
        with self._errors():
            src = self._tar.extractfile(info)
            assert src is not None
            remaining = info.size
            while remaining:
                chunk = src.read(min(CHUNK, remaining))
                if not chunk:
                    raise IntegrityError(f"{self.path}: bundle is truncated in {info.name}",
                                         hint="copy the bundle again")
                remaining -= len(chunk)
                yield chunk

    def finish(self) -> None:
        """Require a proper end: the tar end-of-archive blocks, then the end of the zstd data.

        A tar reader stops quietly at a damaged or missing header; this is where truncation
        after the last complete member is caught.
        """
        assert self._tar is not None
        stream = self._tar.fileobj
        with self._errors():
            trailing = stream.read(RECORD)  # tar has already read one zero block
            rest_len = len(trailing)
            only_zeros = not trailing.strip(b"\0")
            while chunk := stream.read(CHUNK):
                rest_len += len(chunk)
                only_zeros = only_zeros and not chunk.strip(b"\0")
        if rest_len < BLOCK or not only_zeros:
            raise IntegrityError(f"{self.path}: bundle is truncated or has damaged tar headers",
                                 hint="copy the bundle again")


@contextlib.contextmanager
def _mapped_errors(path: Path, where: Callable[[], Path | None]) -> Iterator[None]:
    """Turns the many ways a damaged stream fails into one IntegrityError naming the file
    (the volume being read, for split bundles)."""
    try:
        yield
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        current = where()
        name = f"volume {current}" if current is not None and current != path else str(path)
        raise IntegrityError(f"{name}: bundle is corrupt or truncated ({exc})",
                             hint="copy the bundle again") from None


def describe_member_problem(member: Member, manifest: Manifest,
                            seen: Container[str]) -> str | None:
    """Why a member may not be installed, or ``None``: the one member safety check."""
    name = member.arcname
    reason = unsafe_reason(name)
    if reason:
        return f"{name!r}: {reason}"
    if member.kind in ("device", "fifo", "directory", "other"):
        return f"{name}: {member.kind} members are never installed"
    entry = manifest.file(name)
    if entry is None:
        return f"{name}: not listed in the manifest"
    if name in seen:
        return f"{name}: appears twice in the archive"
    if entry.from_base:
        return f"{name}: the manifest says it comes from the installed base, not the archive"
    if member.kind == "hardlink" or entry.same_as is not None:
        if member.kind != "hardlink" or member.target != entry.same_as:
            return (f"{name}: hardlink members are never installed unless the manifest lists "
                    "the same content")
        if member.target not in seen:
            return f"{name}: links to {member.target}, which is not earlier in the archive"
        return None
    if entry.is_symlink != (member.kind == "symlink"):
        want = "a symlink" if entry.is_symlink else "a file"
        return f"{name}: is a {member.kind} in the archive but {want} in the manifest"
    if entry.is_symlink and member.target != entry.target:
        return f"{name}: symlink target {member.target!r} differs from the manifest"
    if not entry.is_symlink and member.size != entry.size:
        return f"{name}: size {member.size} differs from the manifest ({entry.size})"
    return None
