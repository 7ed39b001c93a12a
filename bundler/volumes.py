"""Bundles as files on a stick: one file, or split volumes ``OUT.000``, ``OUT.001``, ...

FAT32 caps a file at 4 GiB - 1 byte, so a large bundle is written as fixed-size volumes with one
``OUT.sha256`` sidecar listing every volume. Readers take the base name or any one volume and
stream the volumes in turn (never joined on disk), checking each against the sidecar as it ends,
so a missing, truncated, duplicated or swapped volume is named, not just "corrupt".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import stat
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundler._io import (
    CHUNK,
    abandoned,
    atomic_write_bytes,
    file_kind,
    fsync_dir,
    lock_part,
    open_regular,
    sha256_file,
    temp_part,
)
from bundler.errors import BundleError, BundleNotFoundError, IntegrityError, UsageError

log = logging.getLogger(__name__)

FAT32_MAX = 4 * 1024**3 - 1
MIN_SPLIT = 64 * 1024
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_VOLUME = re.compile(r"^(?P<base>.+)\.(?P<index>\d{3,})$")


def parse_size(text: str) -> int:
    """``4G``, ``700M``, ``64K`` (binary units, as ``split -b``) or a byte count."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise UsageError(f"{text!r} is not a size", hint="write it like 4G, 700M or 64K")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size < MIN_SPLIT:
        raise UsageError(f"split size {text} is below the minimum of 64K")
    return size


def volume_path(out: Path, index: int) -> Path:
    return out.with_name(f"{out.name}.{index:03d}")


def sidecar_path(base: Path) -> Path:
    return base.with_name(base.name + ".sha256")


# -- writing -------------------------------------------------------------------------------
class VolumeWriter(io.RawIOBase):
    """A seekable file that lands on disk as volumes of at most ``size`` bytes each.

    Writes go to temporary files beside the output; :meth:`commit` renames them into place
    and removes any higher-numbered volumes left by an earlier bundle of the same name, if
    ``replaceable`` names them (see :func:`plan_output`): nothing else is ever deleted.
    The first volume's temporary file stays open and locked until then, the mark of a live
    writer that keeps :func:`remove_abandoned_parts` away from this set.
    """

    def __init__(self, out: Path, size: int, replaceable: Container[str] = ()) -> None:
        super().__init__()
        self.out = out
        self.size = size
        self._replaceable = replaceable
        self._lock_fd: int | None = None
        self._pos = 0
        self._end = 0
        self._temps: list[str] = []  # temporary path of each volume so far
        self._open: dict[int, int] = {}  # volume index -> fd; a few at a time, not all
        self._offsets: dict[int, int] = {}  # volume index -> where its fd will write next

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = base + offset
        return self._pos

    def _fd(self, index: int) -> int:
        """The volume's file, opened on demand; only the one being written stays open (a
        thousand volumes must not need a thousand descriptors)."""
        fd = self._open.get(index)
        if fd is not None:
            return fd
        for other in list(self._open):
            os.close(self._open.pop(other))
            self._offsets.pop(other, None)
        while len(self._temps) <= index:
            new_fd, tmp = temp_part(volume_path(self.out, len(self._temps)))
            if self._lock_fd is None:
                self._lock_fd = new_fd
                lock_part(new_fd)
            else:
                os.close(new_fd)
            self._temps.append(tmp)
        fd = os.open(self._temps[index], os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        self._open[index] = fd
        return fd

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        written = 0
        while written < len(view):
            index, offset = divmod(self._pos, self.size)
            take = min(len(view) - written, self.size - offset)
            fd = self._fd(index)
            if self._offsets.get(index) != offset:  # only the manifest's head is rewritten
                os.lseek(fd, offset, os.SEEK_SET)
            # plain sequential write(): pwrite() measured 40% more per call here
            take = os.write(fd, view[written:written + take])
            self._offsets[index] = offset + take
            written += take
            self._pos += take
        self._end = max(self._end, self._pos)
        return written

    def _close_all(self) -> None:
        for index in list(self._open):
            self._offsets.pop(index, None)
            with contextlib.suppress(OSError):
                os.close(self._open.pop(index))

    def commit(self) -> list[Path]:
        """fsync and rename every volume into place; returns their paths in order.

        The first volume goes last, so its lock covers the whole set until the end.
        """
        self._close_all()
        for tmp in self._temps:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644 & ~_umask())
        paths = [volume_path(self.out, index) for index in range(len(self._temps))]
        for tmp, path in reversed(list(zip(self._temps, paths))):
            os.replace(tmp, path)
        self._temps = []
        self._unlock()
        stale = len(paths)
        while volume_path(self.out, stale).name in self._replaceable:
            with contextlib.suppress(FileNotFoundError):
                volume_path(self.out, stale).unlink()
            stale += 1
        fsync_dir(self.out.parent)
        return paths

    def discard(self) -> None:
        self._close_all()
        for tmp in self._temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._temps = []
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# -- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleFiles:
    """The file(s) of one bundle on disk: ``base`` names it, ``parts`` are read in order."""

    base: Path
    parts: tuple[Path, ...]
    expected: dict[str, str]  # file name -> sha256, from the sidecar (may be empty)
    sidecar: Path | None
    split: bool
    #: Why the sidecar that is there cannot be used (not a regular file, unreadable, not in
    #: ``sha256sum`` format): an integrity failure for whoever checks against it.
    sidecar_problem: str | None = None

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.parts)


#: A sidecar lists one line per volume; anything this large is not one.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
#: ``sha256sum`` lines: ``HEX  NAME`` (``*NAME`` in binary mode), or ``--tag`` style; a
#: leading backslash means NAME is escaped (``\\``, ``\n``, ``\r``), as coreutils writes
#: names holding those characters.
_GNU_LINE = re.compile(rb"(\\?)([0-9a-fA-F]{64}) [ *](.+)", re.DOTALL)
_TAG_LINE = re.compile(rb"(\\?)SHA256 \((.+)\) = ([0-9a-fA-F]{64})", re.DOTALL)
_ESCAPES = {b"\\\\": b"\\", b"\\n": b"\n", b"\\r": b"\r"}


def parse_sidecar(data: bytes) -> dict[str, str]:
    """``file name -> sha256`` from a ``sha256sum`` file; ``ValueError`` saying which line
    is not one. Names are bytes on disk, decoded as Python decodes file names
    (``surrogateescape``), so names that are not valid UTF-8 match the files."""
    expected: dict[str, str] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        gnu = _GNU_LINE.fullmatch(line)
        tag = None if gnu else _TAG_LINE.fullmatch(line)
        if gnu:
            escaped, digest, raw = gnu.groups()
        elif tag:
            escaped, raw, digest = tag.groups()
        else:
            raise ValueError(f"line {number} is not a sha256sum line (SHA256, two spaces, "
                             "file name)")
        if escaped:
            parts = re.split(rb"(\\.)", raw, flags=re.DOTALL)  # odd items: escapes
            if any(b"\\" in p for p in parts[::2]) or any(p not in _ESCAPES
                                                       for p in parts[1::2]):
                raise ValueError(f"line {number} has a bad escape in its file name")
            raw = b"".join(p if i % 2 == 0 else _ESCAPES[p] for i, p in enumerate(parts))
        name = os.fsdecode(raw)
        if expected.get(name, digest.decode().lower()) != digest.decode().lower():
            raise ValueError(f"line {number} lists {name!r} a second time, with another "
                             "sha256")
        expected[name] = digest.decode().lower()
    if not expected:
        raise ValueError("it lists no file")
    return expected


def _read_sidecar(base: Path) -> tuple[Path | None, dict[str, str], str | None]:
    """The sidecar of ``base``: ``(path, expected, problem)``. Absent: ``(None, {}, None)``.

    One that is there but cannot be used is never taken as absent: that would let a
    damaged or hostile ``.sha256`` switch the check off.
    """
    path = sidecar_path(base)
    try:
        with open_regular(path, IntegrityError) as fh:
            data = fh.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return None, {}, None
    except IntegrityError as exc:
        return path, {}, exc.message
    except OSError as exc:
        return path, {}, f"{path} cannot be read ({exc.strerror or exc})"
    if len(data) > MAX_SIDECAR_BYTES:
        return path, {}, f"{path} is larger than any sha256sum file of a bundle"
    try:
        return path, parse_sidecar(data), None
    except ValueError as exc:
        return path, {}, f"{path} is not a sha256sum file: {exc}"


def locate(path: Path) -> BundleFiles:
    """Find a bundle's files from its base name or from any one of its volumes.

    Checks what can be checked without reading: volumes numbered without gaps from ``.000``,
    every volume the sidecar lists present, and all but the last of the same size.
    """
    path = Path(path)
    _refuse_non_regular(path, "bundle")
    match = _VOLUME.match(path.name)
    if match and path.is_file() and (
            not volume_path(path.with_name(match.group("base")), 0).is_file()
            or _own_bundle(path, path.with_name(match.group("base")))):
        match = None  # a one-file bundle whose name ends in digits, like rel.20240101
    base = path.with_name(match.group("base")) if match else path
    if not match and base.is_file():
        sidecar, expected, problem = _read_sidecar(base)
        if base.name not in expected and len(expected) == 1:
            # a bundle renamed together with its one-line sidecar
            expected = {base.name: next(iter(expected.values()))}
        return BundleFiles(base, (base,), expected, sidecar, split=False,
                           sidecar_problem=problem)
    sidecar, expected, problem = _read_sidecar(base)
    listed = sorted((n for n in expected if _volume_of(n, base.name) is not None),
                    key=lambda n: _volume_of(n, base.name) or 0)
    on_disk = sorted((p.name for p in base.parent.glob(f"{glob_escape(base.name)}.[0-9]*")
                      if _volume_of(p.name, base.name) is not None),
                     key=lambda n: _volume_of(n, base.name) or 0)
    if not listed and not on_disk:
        raise BundleNotFoundError(f"bundle {path} does not exist",
                                  hint="check the path, or the USB stick is not mounted")
    names = listed or on_disk
    for index, name in enumerate(names):
        if name != volume_path(base, index).name:
            missing = volume_path(base, index).name
            raise IntegrityError(f"volume {base.parent / missing} is missing",
                                 hint="copy every volume of the bundle")
    parts = tuple(base.parent / n for n in names)
    for part in parts:
        _refuse_non_regular(part, "volume")
        if not part.is_file():
            raise IntegrityError(f"volume {part} is missing",
                                 hint="copy every volume of the bundle")
    extra = [n for n in on_disk if n not in names]
    if extra:
        raise IntegrityError(f"volume {base.parent / extra[0]} is not listed in {sidecar}",
                             hint="remove volumes left from another bundle of the same name")
    sizes = [p.stat().st_size for p in parts]
    for part, size in zip(parts[:-1], sizes[:-1]):
        if size != sizes[0]:
            raise IntegrityError(f"volume {part} is {size} bytes, the others {sizes[0]}: "
                                 "truncated or from another bundle",
                                 hint="copy that volume again")
    if sizes[-1] > sizes[0] or sizes[-1] == 0:
        raise IntegrityError(f"volume {parts[-1]} has the wrong size ({sizes[-1]} bytes)",
                             hint="copy that volume again")
    return BundleFiles(base, parts, expected, sidecar, split=True, sidecar_problem=problem)


def _own_bundle(path: Path, base: Path) -> bool:
    """Whether ``path`` (named like a volume of ``base``) is a one-file bundle of its own
    name: it has its own sidecar, and ``base``'s sidecar does not list it."""
    if not _is_regular(sidecar_path(path)):
        return False
    return path.name not in _read_sidecar(base)[1]


def _refuse_non_regular(path: Path, what: str) -> None:
    """A directory or a FIFO where a bundle file is expected is named as what it is (a FIFO
    would otherwise block the reader forever)."""
    try:
        st = path.stat()
    except OSError:
        return  # missing: the caller says so, naming what is missing
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        inside = sorted(p.name[:-len(".sha256")] for p in path.glob("*.sha256"))[:3]
        raise BundleError(f"{path} is a directory, not a {what} file",
                          hint=(f"give the bundle file inside it, e.g. {path / inside[0]}"
                                if inside else "give the path of the bundle file that pack wrote"))
    raise BundleError(f"{path} is a {file_kind(st.st_mode)}, not a {what} file",
                      hint="give the path of the bundle file itself")


def _volume_of(name: str, base: str) -> int | None:
    """The index of volume ``name`` of bundle ``base``, or ``None``."""
    match = _VOLUME.match(name)
    if match is None or match.group("base") != base:
        return None
    return int(match.group("index"))


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


class ChainReader(io.RawIOBase):
    """Reads the parts of a bundle as one stream, hashing each part as it goes.

    At the end of every part its sha256 is compared with the sidecar (when it lists it): a
    swapped or duplicated volume fails there, naming the file. ``current`` names the part being
    read, so decoding errors can say where they happened.
    """

    def __init__(self, files: BundleFiles, progress: Callable[[int], None] | None = None,
                 check: bool = True) -> None:
        super().__init__()
        self.files = files
        self._progress = progress
        self._check = check
        self._index = -1
        self._fh: BinaryIO | None = None
        self._digest = hashlib.sha256()
        self.digests: dict[str, str] = {}
        if check and files.sidecar_problem is not None:
            raise IntegrityError(files.sidecar_problem,
                                 hint="copy the .sha256 file written with the bundle again")
        self._next()

    @property
    def current(self) -> Path:
        return self.files.parts[min(self._index, len(self.files.parts) - 1)]

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        if self._fh is not None:
            fh, self._fh = self._fh, None  # closed and forgotten before anything can raise
            fh.close()
            problem = self._check_part(self.current, self._digest.hexdigest())
            if problem is not None:
                self._index = len(self.files.parts)  # nothing more is read after a bad part
                raise problem
        self._index += 1
        if self._index >= len(self.files.parts):
            return False
        self._fh = open_regular(self.files.parts[self._index])
        self._digest = hashlib.sha256()
        return True

    def _check_part(self, part: Path, digest: str) -> IntegrityError | None:
        self.digests[part.name] = digest
        if not self._check or self.files.sidecar is None:
            return None
        want = self.files.expected.get(part.name)
        if want is None:
            return IntegrityError(f"{part} is not listed in {self.files.sidecar}",
                                  hint="copy the .sha256 file that belongs to this bundle")
        if want != digest:
            what = "volume" if self.files.split else "bundle"
            return IntegrityError(
                f"{what} {part}: sha256 differs from {self.files.sidecar.name}"
                + (" (swapped, duplicated or damaged)" if self.files.split else ""),
                hint="copy it again")
        return None

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._fh is not None:
            n = self._fh.readinto(buffer)  # type: ignore[attr-defined]
            if n:
                self._digest.update(memoryview(buffer)[:n])
                if self._progress:
                    self._progress(n)
                return int(n)
            self._next()
        return 0

    def drain(self) -> dict[str, str]:
        """Read (and check) whatever is left; returns every part's sha256."""
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            pass
        return self.digests

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def quick_verify(files: BundleFiles, progress: Callable[[int], None] | None = None
                 ) -> list[str]:
    """Compare every part with the sidecar, at disk speed, without decompressing."""
    if files.sidecar is None:
        return [f"{sidecar_path(files.base)} is missing: nothing to compare the bundle with"]
    if files.sidecar_problem is not None:
        return [files.sidecar_problem]
    problems = []
    for part in files.parts:
        want = files.expected.get(part.name)
        if want is None:
            if len(files.parts) == 1 and len(files.expected) == 1:
                want = next(iter(files.expected.values()))
            else:
                problems.append(f"{part}: not listed in {files.sidecar}")
                continue
        if sha256_file(part, progress) != want:
            problems.append(f"{part}: sha256 differs from {files.sidecar.name}")
    return problems


def sidecar_line(name: str, sha256: str) -> bytes:
    """One ``sha256sum`` line, as coreutils writes it: the name's own bytes (not valid UTF-8
    is fine), and the escaped form for names holding a backslash or line break."""
    raw = os.fsencode(name)
    if any(ch in raw for ch in (b"\\", b"\n", b"\r")):
        raw = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + sha256.encode() + b"  " + raw + b"\n"
    return sha256.encode() + b"  " + raw + b"\n"


def write_sidecar(base: Path, digests: Sequence[tuple[str, str]]) -> Path:
    path = sidecar_path(base)
    atomic_write_bytes(path, b"".join(sidecar_line(n, d) for n, d in digests))
    return path


# -- where a new bundle may go --------------------------------------------------------------
@dataclass(frozen=True)
class OutputPlan:
    """Where a bundle is about to be written, checked before anything is.

    ``replaceable`` names the files beside ``out`` that belong to a previous bundle of the
    same name (its file or volumes, and its sidecar): the only ones a pack may overwrite or
    delete. Anything else already there is refused up front, or, when the new bundle does
    not need the name, left alone.
    """

    out: Path
    replaceable: frozenset[str]


def output_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a bundle's file name, or ``None``.

    A line break would split the sidecar's line (``sha256sum -c`` reads it as two); other
    control characters make the name unprintable in every message about it.
    """
    bad = sorted({ch for ch in name if ord(ch) < 0x20 or ord(ch) == 0x7F})
    if bad:
        return (f"bundle name {name!r} holds a control character ({bad[0]!r}): "
                "it would break the .sha256 line 'sha256sum -c' reads")
    return None


def plan_output(out: Path, *, split: bool, protected: Sequence[tuple[Path, str]],
                is_bundle: Callable[[Path], bool]) -> OutputPlan:
    """Check that a bundle may be written at ``out`` (``split``: as volumes), destroying
    nothing the user did not make with paddle-bundle for that name.

    ``protected`` lists folders (with what they are, for the message) a bundle must not be
    written into: the models being packed and the home's model folders, so ``-o`` can never
    replace a model file or end up inside the next pack of that model. ``is_bundle`` tells
    whether a file starts the way a bundle does (``archive.looks_like_bundle``).
    """
    out = Path(os.path.abspath(out))
    problem = output_name_problem(out.name)
    if problem:
        raise UsageError(problem, hint="choose a plain file name with -o")
    if not out.parent.is_dir():
        raise BundleError(f"cannot write {out}: folder {out.parent} does not exist")
    for folder, what in protected:
        if _within(out.parent, folder):
            raise UsageError(f"{out} is inside {folder}, {what}: refusing to write a bundle "
                             "there (it would replace or join the model's files)",
                             hint="write the bundle outside the PaddleNLP home's models/ and "
                                  "taskflow/ folders, e.g. -o ~/bundle.tar.zst")

    sidecar = sidecar_path(out)
    listed: set[str] = set()
    if _existing(sidecar, "the sidecar of " + out.name) is not None:
        _, expected, problem = _read_sidecar(out)
        if problem is not None:
            raise UsageError(f"{problem}: refusing to overwrite it with the sidecar of "
                             f"{out.name}", hint="move it away, or choose another -o")
        listed = set(expected)
    replaceable = {sidecar.name}

    def refuse(path: Path, why: str) -> UsageError:
        return UsageError(f"{path} exists and {why}: refusing to overwrite or delete it",
                          hint="move it away, or choose another -o")

    if _existing(out, out.name) is not None:
        if not is_bundle(out):
            raise refuse(out, "is not a paddle-bundle bundle")
        replaceable.add(out.name)
    head = volume_path(out, 0)
    head_is_bundle = _is_regular(head) and is_bundle(head)
    for name in sorted(n for n in os.listdir(out.parent) if _volume_of(n, out.name) is not None):
        path = out.parent / name
        # a one-file bundle whose own name ends in digits (``rel.000`` beside its own
        # ``rel.000.sha256``) is not a volume of ``out``, unless out's sidecar lists it
        own_bundle = name not in listed and _is_regular(sidecar_path(path))
        if head_is_bundle and (name == head.name or name in listed) and _is_regular(path) \
                and not own_bundle:
            replaceable.add(name)
        elif split:
            _existing(path, name)
            raise refuse(path, f"is not a volume of an earlier bundle {out.name} "
                               f"(not listed in its {sidecar.name})")
        # else: a single-file bundle does not need that name; it is left alone
    return OutputPlan(out, frozenset(replaceable))


def _within(directory: Path, folder: Path) -> bool:
    """Whether ``directory`` is ``folder`` or inside it, however it is reached.

    By path after resolving symbolic links first; then by inode, which also sees through
    names that differ only in case on a case-insensitive file system and through bind
    mounts (a folder mounted elsewhere keeps its device and inode numbers), of ``folder``
    itself, one of its parents, or one of the folders inside it.
    """
    real, inside = Path(os.path.realpath(directory)), Path(os.path.realpath(folder))
    if real == inside or inside in real.parents:
        return True
    try:
        here, there = os.stat(directory), os.stat(folder)
    except OSError:
        return False
    if here.st_dev != there.st_dev:
        return False
    for parent in (real, *real.parents):
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(parent), there):
                return True
    pending = [str(folder)]
    while pending:  # folders only, inode numbers as readdir gives them: no stat per entry
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.inode() == here.st_ino:
                        return True
                    pending.append(entry.path)
    return False


def _owned_regular(path: Path, owners: Container[int]) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid in owners


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _existing(path: Path, what: str) -> os.stat_result | None:
    """``lstat`` of an output name that may be replaced; refuses anything but a regular file
    there (a symbolic link would be replaced, not followed; a FIFO or folder is not ours)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is a {file_kind(st.st_mode)}: refusing to replace it "
                         f"with {what}",
                         hint="give the real path of the file to write, or another -o")
    return st


#: Temporary files of pack: the bundle, its volumes and its sidecar (see ``_io.temp_part``).
def _part_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"\." + re.escape(name) + r"(?:\.\d{3,}|\.sha256)?\.[a-z0-9_]{8}\.part")


def remove_abandoned_parts(out: Path) -> list[tuple[Path, int]]:
    """Remove the temporary files a killed pack to ``out`` left behind; returns what was
    removed, with sizes.

    Only regular files named as pack names them for exactly this output, owned by this user
    (or by the folder's owner: on a FAT stick every file has the mount's owner), and held by
    no live process (see ``_io.abandoned``) are touched; if any of them is still being
    written, another pack to the same name is running and nothing is removed.
    """
    pattern = _part_pattern(out.name)
    try:
        owners = {os.geteuid(), out.parent.stat().st_uid}
        names = sorted(n for n in os.listdir(out.parent) if pattern.fullmatch(n))
    except OSError:
        return []
    paths = [out.parent / n for n in names if _owned_regular(out.parent / n, owners)]
    if not all(abandoned(p, owners) for p in paths):
        log.warning("another pack to %s seems to be running: its temporary files are left "
                    "alone", out)
        return []
    removed = []
    for path in paths:
        with contextlib.suppress(OSError):
            size = path.lstat().st_size
            path.unlink()
            removed.append((path, size))
    return removed
