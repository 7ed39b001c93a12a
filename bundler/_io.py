"""Small file helpers shared by pack, install and verify: chunked hashing and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: Read and write in 1 MiB pieces: large enough that Python's per-call cost disappears,
#: small enough that memory stays flat whatever the model size.
CHUNK = 1 << 20

ProgressFn = Callable[[int], None]


def read_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in :data:`CHUNK` pieces."""
    with open(path, "rb") as fh:
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
    on any exception, Ctrl-C included.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
