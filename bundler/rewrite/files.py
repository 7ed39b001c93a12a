"""File plumbing around the codemod: which files, how they are read, planned and written.

Reading side: :func:`iter_sources` walks folders, and :func:`plan_rewrites` decodes each
file as Python would and runs the pure codemod over it, spread over the machine's cores.
Writing side: :func:`unified_diff` for ``--diff`` and :func:`apply`, an atomic write, for
``--in-place``.  Everything is planned (in memory) before anything is written, so
``--diff``/``--check``/``--in-place`` share one path and one bad file cannot leave a project
half-rewritten.  Nothing here prints; the CLI decides how to show changes and findings.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import itertools
import multiprocessing
import os
import signal
import stat
import tempfile
import tokenize
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundler._io import open_regular
from bundler.errors import BundleError
from bundler.rewrite.codemod import CALLEE_NAMES, rewrite_python
from bundler.rewrite.notebooks import rewrite_notebook
from bundler.rewrite.results import Finding, RewriteResult

__all__ = [
    "SKIP_DIRS",
    "FileChangedError",
    "FileRewrite",
    "apply",
    "default_jobs",
    "iter_sources",
    "plan_rewrites",
    "unified_diff",
]

#: Folder names never worth descending into: VCS data, virtualenvs, caches, vendored deps.
#: Rewriting a library inside ``site-packages`` would silently patch a third-party package.
SKIP_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "site-packages", "node_modules"})

_SOURCE_SUFFIXES = (".py", ".ipynb")

#: Below this many files a pool costs more to start (a fresh interpreter importing libcst
#: per worker, a few tenths of a second) than it saves.
PARALLEL_MIN_FILES = 16

#: Files handed to a worker at a time: small enough to keep both cores busy to the end
#: when file sizes vary a lot, large enough that the round trips do not show.
_CHUNK_FILES = 4


@dataclass(frozen=True)
class FileRewrite:
    """A planned rewrite of one file, kept in memory so ``--diff``/``--check`` never write.

    ``encoding`` is what the file was decoded with, so :func:`apply` writes the same bytes
    back for everything that did not change (BOMs and PEP 263 cookies included).
    """

    path: Path
    old_text: str
    new_text: str
    result: RewriteResult
    encoding: str = "utf-8"

    @property
    def changed(self) -> bool:
        """True if applying this rewrite would modify the file."""
        return self.new_text != self.old_text


class FileChangedError(BundleError, RuntimeError):
    """The file on disk no longer matches what was planned; refusing to overwrite it."""


def _skip_dir(name: str) -> bool:
    return name in SKIP_DIRS or name.startswith(".")


def _note_unlisted(unlisted: list[Path], error: OSError) -> None:
    if error.filename is not None:
        unlisted.append(Path(os.fsdecode(error.filename)))


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files to rewrite: explicit files as given, folders walked for .py/.ipynb.

    Folders skip VCS data, virtualenvs, caches, ``site-packages``, ``node_modules`` and
    hidden directories (``.ipynb_checkpoints`` included) -- editing those would patch
    third-party code or stale copies.  Order is sorted and each file is yielded once, so
    diffs are reproducible.  Symlinked folders are not followed; a symlink loop, a dangling
    link or a folder that cannot be listed is yielded as it is, for :func:`plan_rewrites`
    to report as unreadable.  A path given that does not exist raises
    :class:`FileNotFoundError`.
    """
    seen: set[str] = set()

    def once(path: Path) -> Iterator[Path]:
        try:
            key = os.path.realpath(path, strict=True)
        except (OSError, RuntimeError):  # loop, dangling link: reported when it is read
            key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            yield path

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            unlisted: list[Path] = []
            on_error = functools.partial(_note_unlisted, unlisted)
            for root, dirs, files in os.walk(path, onerror=on_error):
                dirs[:] = sorted(d for d in dirs if not _skip_dir(d))
                for name in sorted(files):
                    if name.endswith(_SOURCE_SUFFIXES):
                        yield from once(Path(root, name))
            for folder in unlisted:
                yield from once(folder)
        elif path.exists() or path.is_symlink():
            yield from once(path)
        else:
            raise FileNotFoundError(2, "No such file or directory", str(path))


def _decode_python(raw: bytes) -> tuple[str, str]:
    """Decode like the interpreter does (BOM, PEP 263 cookie), keeping newlines as-is."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


#: Files larger than this are not parsed unless asked (``max_bytes``): libcst needs about
#: 350 bytes of memory and 20 µs of CPU per byte of source (a 5 MB generated module took
#: 1.8 GB and 88 s), and no hand-written script is that large.
MAX_FILE_BYTES = 2_000_000

_SCAN_CHUNK = 1 << 20


def _unreadable(path: Path, message: str) -> FileRewrite:
    finding = Finding("unreadable", 1, message, file=str(path))
    return FileRewrite(path, "", "", RewriteResult("", (), (finding,)))


def _mentions(handle: BinaryIO, needles: Sequence[bytes]) -> bool:
    """True if any of ``needles`` occurs in the stream; reads it in bounded chunks."""
    overlap = max(map(len, needles)) - 1
    tail = b""
    while True:
        chunk = handle.read(_SCAN_CHUNK)
        if not chunk:
            return False
        window = tail + chunk
        if any(needle in window for needle in needles):
            return True
        tail = window[-overlap:] if overlap else b""


def _plan_file(
    path: Path,
    installed: Mapping[str, str],
    add_offline_import: bool,
    prefilter: bool,
    max_bytes: int = MAX_FILE_BYTES,
) -> FileRewrite:
    """Plan one file; whatever goes wrong with it becomes one finding naming it."""
    try:
        return _plan_readable(path, installed, add_offline_import, prefilter, max_bytes)
    except (OSError, RuntimeError, BundleError) as error:
        why = error.message if isinstance(error, BundleError) else _os_reason(error)
        return _unreadable(path, f"cannot read, skipped: {why}")
    except (MemoryError, RecursionError) as error:
        return _unreadable(path, f"cannot rewrite, skipped: {type(error).__name__}")


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _plan_readable(
    path: Path,
    installed: Mapping[str, str],
    add_offline_import: bool,
    prefilter: bool,
    max_bytes: int,
) -> FileRewrite:
    name = str(path)
    with open_regular(path) as fh:  # a FIFO would block for ever, /dev/zero fill memory
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            # Cheap pre-filter: without one of the callee names the codemod acts on there
            # is nothing to change or report, so the file is skipped without a word.
            needles = [n.encode("ascii") for n in CALLEE_NAMES]
            if not _mentions(fh, needles):
                return FileRewrite(path, "", "", RewriteResult(""))
            return _unreadable(path, f"too large to rewrite, skipped: {size / 1e6:.1f} MB is "
                               f"over the {max_bytes / 1e6:.1f} MB limit (--max-size)")
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        return _unreadable(path, "grew while being read, skipped")
    notebook = path.suffix == ".ipynb"
    try:
        if notebook:
            encoding = "utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8"
            text = raw.decode(encoding)
        else:
            text, encoding = _decode_python(raw)
    except (UnicodeDecodeError, SyntaxError, LookupError) as error:
        finding = Finding("parse-error", 1, f"cannot decode, skipped: {error}", file=name)
        return FileRewrite(path, "", "", RewriteResult("", (), (finding,)))
    if notebook:
        result = rewrite_notebook(
            text,
            installed,
            add_offline_import=add_offline_import,
            filename=name,
            prefilter=prefilter,
        )
    else:
        ascii_only = codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig")
        result = rewrite_python(
            text,
            installed,
            add_offline_import=add_offline_import,
            filename=name,
            cell=None,
            ascii_only=ascii_only,
            prefilter=prefilter,
        )
    return FileRewrite(path, text, result.new_source, result, encoding)


def default_jobs() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it stops the pool).

    Otherwise every worker would die with its own KeyboardInterrupt traceback on stderr.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_context() -> multiprocessing.context.BaseContext:
    """A fresh interpreter per worker, never ``fork``.

    Forking a process that may hold threads (a test runner, an embedding application) can
    deadlock the child; the forkserver (spawn where there is none) starts workers clean.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _plan_in_pool(
    sources: Sequence[Path],
    installed: Mapping[str, str],
    add_offline_import: bool,
    prefilter: bool,
    jobs: int,
    max_bytes: int,
) -> list[FileRewrite]:
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=_pool_context(), initializer=_ignore_sigint
    )
    try:
        # map keeps the input order, so the output is the same whatever finishes first.
        return list(
            pool.map(
                _plan_file,
                sources,
                itertools.repeat(dict(installed)),
                itertools.repeat(add_offline_import),
                itertools.repeat(prefilter),
                itertools.repeat(max_bytes),
                chunksize=_CHUNK_FILES,
            )
        )
    finally:
        # On an error or Ctrl-C, drop the queued files instead of planning them all first.
        pool.shutdown(wait=True, cancel_futures=True)


def plan_rewrites(
    paths: Iterable[str | os.PathLike[str]],
    installed: Mapping[str, str],
    add_offline_import: bool = False,
    *,
    jobs: int = 1,
    prefilter: bool = True,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[FileRewrite]:
    """Compute (but do not write) the rewrite of every source under ``paths``.

    Planning everything first means ``--check``/``--diff`` share one code path with
    ``--in-place`` and a failure on one file cannot leave a half-rewritten project.
    Unchanged files are included, since their findings still matter.  The result is in
    :func:`iter_sources` order whatever ``jobs`` is: with ``jobs`` > 1 (the CLI passes
    :func:`default_jobs`) files are planned in up to that many worker processes, unless
    there are fewer than :data:`PARALLEL_MIN_FILES` of them.  Workers are fresh
    interpreters, so a script calling this with ``jobs`` > 1 needs the usual
    ``if __name__ == "__main__":`` guard.  A file that cannot be read, decoded or parsed
    (a FIFO, a dangling link, a symlink loop, no permission, nesting too deep for the
    parser) is one finding of kind ``unreadable``/``parse-error`` naming it, and the rest
    are planned as usual.  Files over ``max_bytes`` that name a callee the codemod acts on
    are reported as too large; those that do not are skipped unread beyond a byte scan.
    ``prefilter=False`` skips the cheap test that spares most files the full analysis
    (:func:`bundler.rewrite.codemod.may_act`); the results are the same, only slower.
    """
    sources = list(iter_sources(paths))
    workers = min(jobs, len(sources))
    if workers <= 1 or len(sources) < PARALLEL_MIN_FILES:
        return [_plan_file(path, installed, add_offline_import, prefilter, max_bytes)
                for path in sources]
    return _plan_in_pool(sources, installed, add_offline_import, prefilter, workers, max_bytes)


_Opcode = tuple[str, int, int, int, int]


def _diff_lines(data: bytes) -> list[bytes]:
    """Lines as diff(1) and patch(1) see them: split after ``\\n`` only.

    A CR-only file is therefore one line, and ``\\r\\n`` stays part of its line, which is
    what makes the diff apply back byte for byte.
    """
    return data.splitlines(keepends=True) if b"\r" not in data else _split_lf(data)


def _split_lf(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _opcodes(old: Sequence[bytes], new: Sequence[bytes]) -> list[_Opcode]:
    """Edit operations turning ``old`` into ``new``, in O(lines) instead of difflib's search.

    The codemod never moves lines: it swaps literals within a line and may insert the
    offline-import line near the top.  So after the common head and tail, the rest is
    aligned from its end, line for line, and any surplus at its start is one insertion or
    deletion.  The result is always a correct diff (applying it gives ``new``); for the
    edits the codemod makes it is also the minimal one.
    """
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    old_end, new_end = len(old) - tail, len(new) - tail
    surplus = (new_end - head) - (old_end - head)
    ops: list[_Opcode] = []

    def add(tag: str, i1: int, i2: int, j1: int, j2: int) -> None:
        if ops and ops[-1][0] == tag and ops[-1][2] == i1 and ops[-1][4] == j1:
            ops[-1] = (tag, ops[-1][1], i2, ops[-1][3], j2)
        elif i1 != i2 or j1 != j2:
            ops.append((tag, i1, i2, j1, j2))

    add("equal", 0, head, 0, head)
    i, j = head, head
    if surplus > 0:
        add("insert", i, i, j, j + surplus)
        j += surplus
    elif surplus < 0:
        add("delete", i, i - surplus, j, j)
        i -= surplus
    while i < old_end:
        add("equal" if old[i] == new[j] else "replace", i, i + 1, j, j + 1)
        i, j = i + 1, j + 1
    add("equal", old_end, len(old), new_end, len(new))
    return ops


def _grouped(ops: list[_Opcode], context: int) -> Iterator[list[_Opcode]]:
    """Hunks of ``ops`` with ``context`` lines around changes (difflib's grouping)."""
    if not ops:
        return
    if ops[0][0] == "equal":
        tag, i1, i2, j1, j2 = ops[0]
        ops[0] = tag, max(i1, i2 - context), i2, max(j1, j2 - context), j2
    if ops[-1][0] == "equal":
        tag, i1, i2, j1, j2 = ops[-1]
        ops[-1] = tag, i1, min(i2, i1 + context), j1, min(j2, j1 + context)
    group: list[_Opcode] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal" and i2 - i1 > 2 * context:
            group.append((tag, i1, min(i2, i1 + context), j1, min(j2, j1 + context)))
            yield group
            group = []
            i1, j1 = max(i1, i2 - context), max(j1, j2 - context)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        yield group


def _range(start: int, stop: int) -> str:
    length = stop - start
    first = start + 1 if length else start
    return f"{first}" if length == 1 else f"{first},{length}"


def _emit(line: bytes, mark: bytes) -> bytes:
    if line.endswith(b"\n"):
        return mark + line
    # Same marker as diff(1)/git, so patch(1) reproduces the missing final newline.
    return mark + line + b"\n\\ No newline at end of file\n"


def _diff_name(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, for ``-p1``."""
    relative = os.path.relpath(os.path.abspath(path))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return os.path.abspath(path).lstrip(os.sep)
    return relative


_C_ESCAPES = {ord("\\"): b"\\\\", ord('"'): b'\\"', ord("\n"): b"\\n", ord("\t"): b"\\t"}


def _quoted(name: bytes) -> bytes:
    """A diff header name as GNU patch and git read it: C-quoted (``"a/x\\ty.py"``) when it
    holds whitespace, a quote, a backslash or a control byte -- unquoted, ``patch`` stops at
    the first blank and a newline would start a header line of the name's choosing."""
    if not any(byte <= 0x20 or byte in (0x22, 0x5C, 0x7F) for byte in name):
        return name
    out = bytearray(b'"')
    for byte in name:
        escape = _C_ESCAPES.get(byte)
        if escape is not None:
            out += escape
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def unified_diff(file_rewrite: FileRewrite, *, context: int = 3) -> bytes:
    """A unified diff of the planned rewrite (empty when nothing changes), for ``--diff``.

    Bytes, in the file's own encoding (BOM and line endings included), with git-style
    ``a/``/``b/`` names relative to the working directory: ``patch -p1`` or ``git apply``
    run there turns the tree into exactly what ``--in-place`` writes.  Lines are compared
    in linear time (:func:`_opcodes`), so a huge file costs no more than reading it.
    """
    if not file_rewrite.changed:
        return b""
    old = _diff_lines(file_rewrite.old_text.encode(file_rewrite.encoding))
    new = _diff_lines(file_rewrite.new_text.encode(file_rewrite.encoding))
    name = os.fsencode(_diff_name(file_rewrite.path))
    out = [b"--- " + _quoted(b"a/" + name) + b"\n", b"+++ " + _quoted(b"b/" + name) + b"\n"]
    for group in _grouped(_opcodes(old, new), context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@\n".encode("ascii"))
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out.extend(_emit(line, b" ") for line in old[a1:a2])
                continue
            out.extend(_emit(line, b"-") for line in old[a1:a2])
            out.extend(_emit(line, b"+") for line in new[b1:b2])
    return b"".join(out)


def apply(file_rewrite: FileRewrite) -> bool:
    """Write the rewrite to disk atomically; returns False if there was nothing to write.

    The new text goes to a temporary file in the same directory (so ``os.replace`` is an
    atomic rename on the same filesystem) which gets the original's permission bits;
    an interrupted run therefore leaves either the old file or the new one, never half of
    each.  A symlink is followed and its target rewritten, keeping the link.  If the file
    changed on disk since it was planned, :class:`FileChangedError` is raised instead.
    """
    if not file_rewrite.changed:
        return False
    target = Path(os.path.realpath(file_rewrite.path))
    if target.read_bytes() != file_rewrite.old_text.encode(file_rewrite.encoding):
        raise FileChangedError(f"{file_rewrite.path} changed since it was read; not rewritten")
    mode = stat.S_IMODE(target.stat().st_mode)
    data = file_rewrite.new_text.encode(file_rewrite.encoding)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return True
