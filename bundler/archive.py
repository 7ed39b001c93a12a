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
import queue
import tarfile
import threading
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from bundler._io import CHUNK, ProgressFn, open_regular
from bundler.errors import BundleError, IntegrityError, ManifestError
from bundler.manifest import MANIFEST_ARCNAME, MAX_MANIFEST_BYTES, Manifest
from bundler.paths import unsafe_reason
from bundler.volumes import BundleFiles, ChainReader, locate

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240, as GNU tar pads
USTAR_MAGIC = b"ustar\0"  # POSIX ustar (and pax) headers; GNU tar's own is "ustar  \0"
#: What may follow the end-of-archive block: tar pads to its 10 KiB record.
MAX_TAIL = 64 * 1024
#: pax and GNU long-name headers of one member, all together (pack writes a few hundred
#: bytes: a long path).
MAX_EXTENDED_HEADER = 1 << 20
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
                 progress: ProgressFn | None = None,
                 observe: Callable[[bytes], None] | None = None) -> str:
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
                if observe is not None:  # the pickle scan, on the same read
                    observe(chunk)
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


class _Prefetcher(io.RawIOBase):
    """Decompresses in a background thread while the caller hashes and writes.

    zstd and hashlib both release the GIL, so on two cores install decodes the next piece of
    the bundle while the previous one is checked and written, as ``zstd -dc | tar -x`` does
    with two processes. At most ``depth`` pieces wait in memory. An exception in the thread
    (damage, a sidecar mismatch) reaches the reader at the point where it happened.
    """

    def __init__(self, source: Any, mapped: Callable[[], contextlib.AbstractContextManager[None]],
                 depth: int = 4) -> None:
        super().__init__()
        self._source = source
        self._mapped = mapped
        self._full: queue.Queue[tuple[bytearray, int] | BaseException | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(depth):
            self._free.put(bytearray(CHUNK))
        self._stop = threading.Event()
        self._current: tuple[bytearray, int] | None = None
        self._offset = 0
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="bundle-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                buffer = self._free.get()
                if self._stop.is_set():
                    return
                with self._mapped():
                    n = self._source.readinto(buffer)
                if not n:
                    self._full.put(None)
                    return
                self._full.put((buffer, n))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._full.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._current is None:
            if self._eof:
                return 0
            item = self._full.get()
            if item is None:
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._current, self._offset = item, 0
        data, n = self._current
        take = min(len(buffer), n - self._offset)
        buffer[:take] = memoryview(data)[self._offset:self._offset + take]
        self._offset += take
        if self._offset == n:
            self._free.put(data)
            self._current = None
        return take

    def close(self) -> None:
        """Stop the thread and wait for it, so nothing reads the source after this."""
        self._stop.set()
        self._free.put(bytearray(0))  # wake the thread if it waits for a buffer
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._full.get(timeout=0.05)  # unblock a put (the queue is unbounded anyway)
            self._thread.join(timeout=0.05)
        super().close()


class _TarReader:
    """The read side of tar, over a stream that is read exactly once.

    Parses each 512-byte header with the standard library (``TarInfo.frombuf`` checks the
    checksum), applies pax and GNU long-name records, and hands member data out in pieces
    read straight into one reused buffer: no per-chunk allocation, which dominated install
    time with ``tarfile``'s own stream reader.
    """

    def __init__(self, stream: io.RawIOBase) -> None:
        self._stream = stream
        self._pending = 0  # bytes of the current member (and its padding) not yet read
        self._buffer = bytearray(CHUNK)
        self.consumed = 0
        #: Once the manifest is known: the most tar bytes a bundle with it can hold. A
        #: hostile member declaring terabytes of zeros is stopped here, not decompressed.
        self.budget: int | None = None

    def _read_into(self, view: memoryview) -> int:
        got = 0
        while got < len(view):
            n = self._stream.readinto(view[got:])
            if not n:
                break
            got += n
        self.consumed += got
        if self.budget is not None and self.consumed > self.budget:
            raise tarfile.HeaderError("the archive holds more data than its manifest lists")
        return got

    def _read_exact(self, n: int) -> bytes:
        out = bytearray(n)
        if self._read_into(memoryview(out)) != n:
            raise EOFError("unexpected end of data")
        return bytes(out)

    def _skip(self, n: int) -> None:
        view = memoryview(self._buffer)
        while n:
            got = self._read_into(view[:min(n, len(view))])
            if not got:
                raise EOFError("unexpected end of data")
            n -= got

    def next(self) -> tarfile.TarInfo | None:
        """The next member's header, or ``None`` at the end-of-archive block.

        Headers that make standard ``tar -x`` write something other than what this reader
        sees are refused (:class:`RefusedHeader`): pax global headers (they apply to every
        later member), GNU sparse members in either encoding (tar expands holes this reader
        would not), and more than one name for a member.
        """
        self._skip(self._pending)
        self._pending = 0
        pax: dict[str, str] = {}
        long_name = long_link = None
        extended = 0
        seen: set[bytes] = set()
        while True:
            block = self._read_exact(BLOCK)
            if block == b"\0" * BLOCK:
                if seen:
                    raise tarfile.HeaderError("extended header without a member")
                return None
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            if info.type == tarfile.XGLTYPE:
                raise RefusedHeader("a pax global header: standard tar applies it to every "
                                    "later member, so what it extracts could differ from what "
                                    "was checked")
            if info.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                             tarfile.GNUTYPE_LONGLINK):
                if info.type in seen:
                    raise RefusedHeader("two extended headers of the same kind for one member")
                seen.add(info.type)
                extended += info.size
                if info.size < 0 or extended > MAX_EXTENDED_HEADER:
                    raise tarfile.HeaderError(f"extended headers of {extended} bytes")
                data = self._read_exact(info.size + _pad(info.size))[:info.size]
                if info.type == tarfile.XHDTYPE:
                    records = _parse_pax(data)
                    sparse = sorted(k for k in records if k.startswith("GNU.sparse."))
                    if sparse:
                        raise RefusedHeader(f"a GNU sparse member ({sparse[0]}): standard tar "
                                            "would fill in holes that were not checked")
                    pax.update((k, v) for k, v in records.items()
                               if k in ("path", "linkpath", "size"))
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif info.type == tarfile.GNUTYPE_LONGLINK:
                    long_link = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                continue
            if info.type == tarfile.GNUTYPE_SPARSE:
                raise RefusedHeader(f"{info.name!r} is a GNU sparse member: standard tar "
                                    "would fill in holes that were not checked")
            if block[345:346] != b"\0" and block[257:263] != USTAR_MAGIC:
                # tarfile joins the prefix field to the name whatever the magic; GNU tar
                # only under POSIX ustar magic, and would write the file somewhere else
                raise RefusedHeader(f"{info.name!r} has a name prefix in a header that is "
                                    "not ustar: standard tar would ignore it and extract "
                                    "the member elsewhere")
            if (long_name is not None and "path" in pax) or \
                    (long_link is not None and "linkpath" in pax):
                raise RefusedHeader("a member named both by a GNU long name and a pax path")
            if long_name is not None:
                info.name = long_name
            if long_link is not None:
                info.linkname = long_link
            if "path" in pax:
                info.name = pax["path"]
            if "linkpath" in pax:
                info.linkname = pax["linkpath"]
            if "size" in pax:
                try:
                    info.size = int(pax["size"])
                except ValueError:
                    raise tarfile.HeaderError("bad pax size") from None
            if info.size < 0:
                raise tarfile.HeaderError("negative size")
            if not info.isreg():
                info.size = 0 if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else info.size
            self._pending = info.size + _pad(info.size)
            return info

    def data(self, size: int) -> Iterator[memoryview]:
        """The current member's bytes, in pieces valid until the next one is read."""
        view = memoryview(self._buffer)
        remaining = size
        while remaining:
            got = self._read_into(view[:min(remaining, len(view))])
            if not got:
                raise EOFError("unexpected end of data")
            remaining -= got
            self._pending -= got
            yield view[:got]

    def rest(self) -> Iterator[memoryview]:
        """Everything after the end-of-archive block."""
        view = memoryview(self._buffer)
        while got := self._read_into(view):
            yield view[:got]


class RefusedHeader(tarfile.HeaderError):
    """A well-formed tar header that a bundle may not hold (see :meth:`_TarReader.next`)."""


def _parse_pax(data: bytes) -> dict[str, str]:
    """pax extended header records: ``"%d %s=%s\\n"``, the length counting the whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise tarfile.HeaderError("bad pax record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.HeaderError("bad pax record length") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise tarfile.HeaderError("bad pax record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


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
        self._tar: _TarReader | None = None
        self._raw: ChainReader | None = None
        self._prefetch: _Prefetcher | None = None
        self.files: BundleFiles | None = None
        self.manifest_bytes = b""

    def __enter__(self) -> BundleReader:
        self.files = locate(self.path)
        self._raw = ChainReader(self.files, self._progress, self._check_sidecar)
        stream = zstandard.ZstdDecompressor().stream_reader(
            io.BufferedReader(self._raw, CHUNK), read_size=CHUNK, read_across_frames=True)
        self._prefetch = _Prefetcher(stream, self._errors)
        self._tar = _TarReader(self._prefetch)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        if self._raw is not None:
            self._raw.close()

    def drain(self) -> dict[str, str]:
        """Read what the decoder left, checking every file against the sidecar; returns the
        sha256 of each file of the bundle."""
        assert self._raw is not None and self._prefetch is not None
        with self._errors():
            while self._prefetch.readinto(bytearray(CHUNK)):
                pass
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
            data = b"".join(bytes(chunk) for chunk in self._tar.data(info.size))
        self.manifest_bytes = data
        manifest = Manifest.from_json(data, source=f"{self.path}: {MANIFEST_ARCNAME}")
        self._tar.budget = self._tar.consumed + sum(
            4 * BLOCK + f.size + _pad(f.size) for f in manifest.files if f.in_archive
        ) + MAX_TAIL
        return manifest

    def members(self) -> Iterator[tuple[Member, Iterator[memoryview]]]:
        """Each member after the manifest, with a lazy iterator over its bytes.

        Members whose bytes are not consumed are skipped. A piece is only valid until the
        next one is read: hash or write it, do not keep it.
        """
        assert self._tar is not None
        while True:
            with self._errors():
                info = self._tar.next()
            if info is None:
                return
            member = Member(info.name, _kind(info), info.size, info.mode, info.linkname)
            yield member, self._chunks(info)

    def _chunks(self, info: tarfile.TarInfo) -> Iterator[memoryview]:
        if not info.isreg():
            return
        assert self._tar is not None
        with self._errors():
            yield from self._tar.data(info.size)

    def finish(self) -> None:
        """Require a proper end: the end-of-archive blocks, then the end of the zstd data.

        This is where truncation after the last complete member is caught.
        """
        assert self._tar is not None
        rest_len, only_zeros = 0, True
        with self._errors():
            for chunk in self._tar.rest():
                rest_len += len(chunk)
                only_zeros = only_zeros and not bytes(chunk).strip(b"\0")
                if rest_len > MAX_TAIL:
                    break
        if rest_len < BLOCK or rest_len > MAX_TAIL or not only_zeros:
            raise IntegrityError(f"{self.path}: bundle is truncated or has damaged tar headers",
                                 hint="copy the bundle again")


@contextlib.contextmanager
def _mapped_errors(path: Path, where: Callable[[], Path | None]) -> Iterator[None]:
    """Turns the many ways a damaged stream fails into one IntegrityError naming the file
    (the volume being read, for split bundles)."""
    try:
        yield
    except RefusedHeader as exc:
        current = where()
        name = f"volume {current}" if current is not None and current != path else str(path)
        raise IntegrityError(f"{name}: the archive holds {exc}",
                             hint="this bundle was not written by paddle-bundle pack; "
                                  "do not install it") from None
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        current = where()
        name = f"volume {current}" if current is not None and current != path else str(path)
        raise IntegrityError(f"{name}: bundle is corrupt or truncated ({exc})",
                             hint="copy the bundle again") from None


def looks_like_bundle(path: Path) -> bool:
    """True when ``path`` starts the way every bundle and every first volume does: a zstd
    frame whose first tar member is ``manifest.json``. Reads a few KB; never raises.

    How pack recognises a previous bundle it may replace, as opposed to a user's file.
    """
    try:
        with open_regular(path) as fh:
            decoder = zstandard.ZstdDecompressor().decompressobj()
            out = b""
            for _ in range(64):  # the first block of the frame: at most 128 KiB in
                chunk = fh.read(BLOCK * 8)
                if not chunk:
                    break
                out += decoder.decompress(chunk)
                if len(out) >= BLOCK:
                    break
        info = tarfile.TarInfo.frombuf(out[:BLOCK], "utf-8", "surrogateescape")
    except (OSError, BundleError, zstandard.ZstdError, tarfile.TarError, ValueError):
        return False
    return info.name == MANIFEST_ARCNAME and info.isreg()


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
