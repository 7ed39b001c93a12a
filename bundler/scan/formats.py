"""Which files are pickles, and walking them as their bytes stream past.

A file is scanned when its name says it is a pickle (``.pdparams``, ``.pdopt``, ``.pkl``,
``.pickle``, ``.pdstates``, ``.pt``, ``.pth``, ``.bin``, ``.npy``, ``.npz``) or when its first
bytes do whatever its name (a pickle protocol 2-5 header, a zip archive, a ``.npy`` header):
a renamed pickle is still a pickle to ``pickle.load``.
"""

from __future__ import annotations

import ast
import contextlib
import re
import struct
import zlib
from collections.abc import Generator, Iterator
from typing import Protocol

from bundler.scan.allowlist import Allowlist
from bundler.scan.opcodes import Buffered, Finding, PickleWalker, Refused

#: Names that are pickles (or archives of them) whatever their first bytes.
PICKLE_SUFFIXES = (".pdparams", ".pdopt", ".pkl", ".pickle", ".pdstates", ".pt", ".pth",
                   ".pdiparams.info")  # the last: paddle.jit.load unpickles it
#: Names whose loaders unpickle whatever is not a zip or a ``.npy`` (``pytorch_model.bin``,
#: PaddleNLP's ``training_args.bin``; ``numpy.load`` of a ``.npy`` without its header):
#: walked as pickles then too. Protocols 0 and 1 have no header, so content alone cannot tell
#: them; a ``.bin`` of raw floats stops parsing as a pickle at once and is not refused.
MAYBE_SUFFIXES = (".bin", ".npy", ".npz", ".ckpt")
HEAD = 8  # bytes needed to tell the format
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_LOCAL = b"PK\x03\x04"


class Walker(Protocol):
    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


def kind_of(name: str, head: bytes) -> str | None:
    """``pickle``, ``zip``, ``npy`` or ``None`` (not a format that can run code)."""
    lower = name.lower()
    if head.startswith(_ZIP_LOCAL):
        return "zip"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if lower.endswith(PICKLE_SUFFIXES + MAYBE_SUFFIXES):
        return "pickle"
    return None


def might_be(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES + MAYBE_SUFFIXES)


#: Names ``torch.load`` reads, whose legacy (not zip) format defines ``persistent_load``: a
#: persistent id there does not stop the loader, so it must not stop the walk either.
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def walker_for(kind: str, allow: Allowlist, *, base_offset: int = 0,
               torch: bool = False, persistent_ids: bool = False) -> Walker:
    """``torch``: a zip member (torch's globals allowed, persistent ids walked past);
    ``persistent_ids`` alone: persistent ids walked past, the plain allowlist."""
    if kind == "pickle":
        check = allow.allows_in_torch if torch else allow.allows
        return PickleWalker(check, persistent_ids=torch or persistent_ids,
                            base_offset=base_offset)
    if kind == "npy":
        return NpyWalker(allow, base_offset=base_offset)
    return ZipWalker(allow, base_offset=base_offset)


class _Buffered(Buffered):
    """:class:`Buffered` with the end of the input refused where more bytes were needed."""

    def _more(self, start: int) -> Generator[None, None, None]:
        if self._eof:
            raise Refused(Finding(start, "the file ends early", fatal=False))
        yield

    def _read(self, n: int, start: int) -> Generator[None, None, bytes]:
        while len(self._buf) - self._pos < n:
            yield from self._more(start)
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return data

    def _pass(self, n: int | None, start: int,
              into: Walker | None) -> Generator[None, None, None]:
        """Hand the next ``n`` bytes (all that is left when ``None``) to ``into``."""
        while n is None or n:
            if self._pos >= len(self._buf):
                if n is None and self._eof:
                    return
                yield from self._more(start)
                continue
            take = len(self._buf) - self._pos if n is None else min(n, len(self._buf)
                                                                     - self._pos)
            if into is not None:
                into.feed(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            if n is not None:
                n -= take


class NpyWalker(_Buffered):
    """A ``.npy`` file: the header says the dtype; an object dtype means a pickle follows."""

    def __init__(self, allow: Allowlist, *, base_offset: int = 0) -> None:
        self._allow = allow
        super().__init__(base_offset)

    def _run(self) -> Generator[None, None, None]:
        yield
        start = self._offset
        magic = yield from self._read(8, start)
        major = magic[6]
        width = 2 if major == 1 else 4
        size = int.from_bytes((yield from self._read(width, start)), "little")
        if size > 1 << 20:
            raise Refused(Finding(start, "a .npy header larger than numpy writes"))
        header = yield from self._read(size, start)
        try:
            fields = ast.literal_eval(header.decode("latin-1"))
            descr = fields["descr"]
        except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
            raise Refused(Finding(start, "a .npy header numpy could not read")) from None
        if not _has_object(descr):
            return  # plain numbers: numpy reads them without unpickling
        body = walker_for("pickle", self._allow, base_offset=self._offset)
        yield from self._pass(None, start, body)
        body.close()


#: A ``descr`` of plain numbers, bytes or text as numpy writes it (``<f4``, ``|b1``, ``<M8[ns]``,
#: ``|S5``); anything else may be an object dtype (``object``, ``(2,)O``, ``i4,O`` all are).
_PLAIN_DESCR = re.compile(r"[<>|=]?[biufcSUVmM]\d*(\[\w+\])?")


def _has_object(descr: object) -> bool:
    """Whether numpy could read ``descr`` as a dtype holding objects: only plain descrs and
    structured lists of ``(name, descr[, shape])`` of them are known not to."""
    if isinstance(descr, str):
        return _PLAIN_DESCR.fullmatch(descr) is None
    if isinstance(descr, list) and descr:
        return any(not isinstance(field, tuple) or len(field) not in (2, 3)
                   or _has_object(field[1]) for field in descr)
    return True  # not a dtype numpy writes: treat it as the worst case


class ZipWalker(_Buffered):
    """A zip archive (torch's ``.pt``/``.bin``, numpy's ``.npz``) read front to back.

    Each member that is a pickle (by name or content) or a ``.npy`` is walked; the central
    directory at the end must name the same members at the same offsets, with the same
    compression and compressed size, and the end records must be the last bytes and point at
    that directory (``zipfile`` reads the *last* end record and the directory it names), so a
    loader that trusts the directory cannot be pointed at bytes the walk took for something
    else.
    """

    def __init__(self, allow: Allowlist, *, base_offset: int = 0) -> None:
        self._allow = allow
        self._base = base_offset
        self._before_end = b""  # the last 20 bytes of the directory
        super().__init__(base_offset)

    def _run(self) -> Generator[None, None, None]:
        yield
        # offset in the archive -> (member name, compression, compressed size)
        local: dict[int, tuple[str, int, int]] = {}
        directory: int | None = None  # where the central directory starts
        while True:
            start = self._offset
            sig = yield from self._read(4, start)
            if sig == b"PK\x03\x04" and directory is None:
                local[start - self._base] = yield from self._member(start)
            elif sig == b"PK\x01\x02":
                if directory is None:
                    directory = start - self._base
                yield from self._directory_entry(start, local)
            elif sig in (b"PK\x05\x06", b"PK\x06\x06"):
                if local:
                    raise Refused(Finding(start, f"the zip directory does not list member "
                                                 f"{next(iter(local.values()))[0]!r}"))
                yield from self._end(start, sig, start - self._base if directory is None
                                     else directory)
                return
            else:
                raise Refused(Finding(start, "not a zip record where one must be"))

    def _end(self, start: int, sig: bytes, directory: int) -> Generator[None, None, None]:
        """The end records, as ``zipfile`` reads them from the end of the file: an optional
        zip64 record and locator, then the end record, then nothing. They must name the
        directory the walk checked (anything else could name a second one)."""
        size = start - self._base - directory
        if sig == b"PK\x06\x06":
            record = yield from self._read(52, start)
            (length, _, _, _, _, _, _, size64, offset64) = struct.unpack("<QHHIIQQQQ", record)
            locator = yield from self._read(20, start)
            if (length != 44 or locator[:4] != b"PK\x06\x07" or size64 != size
                    or offset64 != directory):
                raise Refused(Finding(start, "zip64 end records that do not name the "
                                             "directory the scan checked"))
            if (yield from self._read(4, start)) != b"PK\x05\x06":
                raise Refused(Finding(start, "not a zip record where one must be"))
        elif self._before_end.startswith(b"PK\x06\x07"):
            raise Refused(Finding(start, "a zip64 locator hidden before the end record"))
        fixed = yield from self._read(18, start)
        (_, _, _, _, size32, offset32, comment) = struct.unpack("<HHHHIIH", fixed)
        if sig == b"PK\x05\x06" and (size32 != size or offset32 != directory):
            raise Refused(Finding(start, "a zip end record that does not name the directory "
                                         "the scan checked"))
        if comment:
            raise Refused(Finding(start, "a zip comment (no model writer adds one; it could "
                                         "hold a second end record)"))
        if self._pos < len(self._buf) or not self._eof:
            yield from self._more(start)  # bytes after the end record: refused below
        if self._pos < len(self._buf):
            raise Refused(Finding(self._offset, "bytes after the zip's end record (zipfile "
                                                "would read another archive there)"))

    def _member(self, start: int) -> Generator[None, None, tuple[str, int, int]]:
        (_, flags, method, _, _, _, csize, usize, nlen, xlen) = struct.unpack(
            "<HHHHHIIIHH", (yield from self._read(26, start)))
        name = (yield from self._read(nlen, start)).decode("utf-8", "surrogateescape")
        extra = yield from self._read(xlen, start)
        if 0xFFFFFFFF in (csize, usize):
            usize, csize = _zip64_sizes(extra, usize, csize)
        descriptor = bool(flags & 0x08)
        if method not in (0, 8):
            raise Refused(Finding(start, f"zip member {name!r} uses compression {method}, "
                                         "which cannot be scanned"))
        if descriptor and method == 0:
            raise Refused(Finding(start, f"zip member {name!r} is stored without its size, "
                                         "which cannot be scanned"))
        data_at = self._offset
        if method == 0:
            inner = _Sniffer(name, self._allow, data_at, "")
            yield from self._pass(csize, start, inner)
            inner.close()
        else:
            yield from self._inflate(name, start, None if descriptor else csize)
            csize = self._offset - data_at
        if descriptor:
            if (yield from self._peek(4, start)) == b"PK\x07\x08":
                self._pos += 4
            yield from self._read(20 if usize == 0xFFFFFFFF else 12, start)
        return name, method, csize

    def _peek(self, n: int, start: int) -> Generator[None, None, bytes]:
        while len(self._buf) - self._pos < n:
            yield from self._more(start)
        return bytes(self._buf[self._pos:self._pos + n])

    def _inflate(self, name: str, start: int,
                 csize: int | None) -> Generator[None, None, None]:
        """Decompress a deflated member in bounded pieces (a zip bomb inflates 1 MiB at a
        time), walking what comes out."""
        decomp = zlib.decompressobj(-15)
        inner = _Sniffer(name, self._allow, 0, " (offset in its uncompressed data)")
        remaining = csize
        while not decomp.eof:
            if self._pos >= len(self._buf):
                yield from self._more(start)
                continue
            take = len(self._buf) - self._pos
            if remaining is not None:
                take = min(take, remaining)
                if take == 0:
                    raise Refused(Finding(start, f"zip member {name!r} is damaged"))
            try:
                out = decomp.decompress(memoryview(self._buf)[self._pos:self._pos + take],
                                        1 << 20)
            except zlib.error:
                raise Refused(Finding(start, f"zip member {name!r} is damaged")) from None
            used = take - len(decomp.unconsumed_tail) - len(decomp.unused_data)
            self._pos += used
            if remaining is not None:
                remaining -= used
            inner.feed(out)
        inner.close()
        if remaining:
            yield from self._pass(remaining, start, None)

    def _directory_entry(self, start: int,
                         local: dict[int, tuple[str, int, int]]
                         ) -> Generator[None, None, None]:
        fixed = yield from self._read(42, start)
        method, = struct.unpack("<H", fixed[6:8])
        csize, usize = struct.unpack("<II", fixed[16:24])
        nlen, xlen, clen = struct.unpack("<HHH", fixed[24:30])
        offset = struct.unpack("<I", fixed[38:42])[0]
        raw = yield from self._read(nlen, start)
        name = raw.decode("utf-8", "surrogateescape")
        extra = yield from self._read(xlen, start)
        comment = yield from self._read(clen, start)
        self._before_end = (b"PK\x01\x02" + fixed + raw + extra + comment)[-20:]
        if csize == 0xFFFFFFFF:
            _, csize = _zip64_sizes(extra, usize, csize)
        if offset == 0xFFFFFFFF:
            offset = _zip64_offset(extra, fixed)
        if local.pop(offset, None) != (name, method, csize):
            raise Refused(Finding(start, f"the zip directory's member {name!r} is not the "
                                         "member stored at its offset (name, compression "
                                         "and size must match)"))


class _Sniffer:
    """A zip member: its first bytes (and name) decide whether and how it is walked; a
    refusal inside it names the member."""

    def __init__(self, name: str, allow: Allowlist, base: int, where: str) -> None:
        self._name, self._allow, self._base, self._where = name, allow, base, where
        self._head = bytearray()
        self._inner: Walker | None = None
        self._decided = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        with self._named():
            if self._decided:
                if self._inner is not None:
                    self._inner.feed(data)
                return
            self._head += data
            if len(self._head) >= HEAD:
                self._decide()

    def close(self) -> None:
        with self._named():
            if not self._decided:
                self._decide()
            if self._inner is not None:
                self._inner.close()

    def _decide(self) -> None:
        self._decided = True
        kind = _member_kind(self._name, bytes(self._head[:HEAD]))
        if kind is not None:
            self._inner = walker_for(kind, self._allow, base_offset=self._base, torch=True)
            self._inner.feed(self._head)
        self._head = bytearray()

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        try:
            yield
        except Refused as exc:
            f = exc.finding
            if not f.fatal:
                # this member stops being loadable there; the archive's other members and
                # its directory are still walked (a loader reads them by name)
                self._inner = None
                return
            raise Refused(Finding(f.offset, f"in zip member {self._name!r}: {f.what}"
                                            f"{self._where}", f.global_name, f.fatal)) from None


def _member_kind(name: str, head: bytes) -> str | None:
    kind = kind_of(name, head)
    return None if kind == "zip" and not name.lower().endswith(PICKLE_SUFFIXES) else kind


def _zip64_fields(extra: bytes) -> bytes:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[pos:pos + 4])
        if tag == 0x0001:
            return extra[pos + 4:pos + 4 + size]
        pos += 4 + size
    return b""


def _zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    data = _zip64_fields(extra)
    values = [struct.unpack("<Q", data[i:i + 8])[0] for i in range(0, len(data) - 7, 8)]
    if usize == 0xFFFFFFFF and values:
        usize = values.pop(0)
    if csize == 0xFFFFFFFF and values:
        csize = values.pop(0)
    return usize, csize


def _zip64_offset(extra: bytes, fixed: bytes) -> int:
    csize, usize = struct.unpack("<II", fixed[16:24])
    data = _zip64_fields(extra)
    values = [struct.unpack("<Q", data[i:i + 8])[0] for i in range(0, len(data) - 7, 8)]
    skip = (usize == 0xFFFFFFFF) + (csize == 0xFFFFFFFF)
    return values[skip] if len(values) > skip else -1
