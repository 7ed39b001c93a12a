"""Small file helpers shared by pack, install and verify: chunked hashing, atomic writes,
opening only regular files, and names that are not valid UTF-8."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from bundler.errors import BundleError

#: Read and write in 1 MiB pieces: large enough that Python's per-call cost disappears,
#: small enough that memory stays flat whatever the model size.
CHUNK = 1 << 20

ProgressFn = Callable[[int], None]


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words, for messages."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Path, error: type[BundleError] = BundleError) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (symlinks to one are fine).

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so a FIFO
    (or a device) put where a bundle or sidecar is expected is refused at once instead of
    blocking forever, and nothing can be swapped in between the check and the read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path} is a {file_kind(st.st_mode)}, not a regular file",
                        hint="give the path of the file itself")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def display_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that were not UTF-8 (kept by Python as lone
    surrogates, ``surrogateescape``) become ``\\xNN``, so the name can go into JSON records
    and messages."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_chunks(path: Path) -> Iterator[bytes]:
    """A regular file's bytes in :data:`CHUNK` pieces."""
    with open_regular(path) as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in read_chunks(path):
        digest.update(chunk)
        if progress:
            progress(len(chunk))
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write ``path`` all at once or not at all.

    The data goes to a temporary file beside ``path`` (same file system, so the final
    ``os.replace`` is atomic) which is fsync'ed, renamed over ``path`` on success, and removed
    on any exception, Ctrl-C included. While it is written the temporary file is locked
    (:func:`lock_part`), so a later run can tell one left by a killed process
    (:func:`abandoned`) from one still being written.
    """
    fd, tmp = temp_part(path)
    try:
        lock_part(fd)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode & ~_umask())
            os.replace(tmp, path)  # still locked: never mistaken for an abandoned part
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: Temporary files are named ``.NAME.XXXXXXXX.part`` beside NAME (``tempfile``'s 8 random
#: characters), which :func:`abandoned` and the stale-file clean-up rely on.
PART_PREFIX, PART_SUFFIX = ".", ".part"


def temp_part(path: Path) -> tuple[int, str]:
    """A new, empty temporary file for ``path``: ``(fd, name)``."""
    return tempfile.mkstemp(dir=path.parent, prefix=f"{PART_PREFIX}{path.name}.",
                            suffix=PART_SUFFIX)


def lock_part(fd: int) -> bool:
    """Hold an advisory lock on a temporary file while it is written: the mark of a live
    writer. False where the file system has no locks (nothing is then cleaned up)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def abandoned(path: Path, owners: Container[int]) -> bool:
    """True when ``path`` is a regular file owned by one of ``owners`` that no live process
    holds locked: a temporary file left by a killed run. False when in doubt."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in owners:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held by a live writer, or no locks here: keep it
        return True
    finally:
        os.close(fd)  # releases the lock taken for the test


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_output(path, mode) as fh:
        fh.write(data)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
