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
import difflib
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

from bundler._io import open_regular
from bundler.errors import BundleError
from bundler.rewrite.codemod import rewrite_python
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


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files to rewrite: explicit files as given, folders walked for .py/.ipynb.

    Folders skip VCS data, virtualenvs, caches, ``site-packages``, ``node_modules`` and
    hidden directories (``.ipynb_checkpoints`` included) -- editing those would patch
    third-party code or stale copies.  Order is sorted and each file is yielded once, so
    diffs are reproducible.  A path that does not exist raises :class:`FileNotFoundError`.
    """
    seen: set[Path] = set()

    def once(path: Path) -> Iterator[Path]:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not _skip_dir(d))
                for name in sorted(files):
                    if name.endswith(_SOURCE_SUFFIXES):
                        yield from once(Path(root, name))
        elif path.exists():
            yield from once(path)
        else:
            raise FileNotFoundError(2, "No such file or directory", str(path))


def _decode_python(raw: bytes) -> tuple[str, str]:
    """Decode like the interpreter does (BOM, PEP 263 cookie), keeping newlines as-is."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    return raw.decode(encoding), encoding


def _plan_file(
    path: Path, installed: Mapping[str, str], add_offline_import: bool, prefilter: bool
) -> FileRewrite:
    name = str(path)
    try:  # a FIFO would block for ever, a link to /dev/zero fill the memory
        with open_regular(path) as fh:
            raw = fh.read()
    except BundleError as error:
        finding = Finding("parse-error", 1, f"cannot read, skipped: {error.message}", file=name)
        return FileRewrite(path, "", "", RewriteResult("", (), (finding,)))
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
) -> list[FileRewrite]:
    """Compute (but do not write) the rewrite of every source under ``paths``.

    Planning everything first means ``--check``/``--diff`` share one code path with
    ``--in-place`` and a failure on one file cannot leave a half-rewritten project.
    Unchanged files are included, since their findings still matter.  The result is in
    :func:`iter_sources` order whatever ``jobs`` is: with ``jobs`` > 1 (the CLI passes
    :func:`default_jobs`) files are planned in up to that many worker processes, unless
    there are fewer than :data:`PARALLEL_MIN_FILES` of them.  Workers are fresh
    interpreters, so a script calling this with ``jobs`` > 1 needs the usual
    ``if __name__ == "__main__":`` guard.  An error planning any file (an unreadable file,
    say) is raised here, as it would be without workers.
    ``prefilter=False`` skips the cheap test that spares most files the full analysis
    (:func:`bundler.rewrite.codemod.may_act`); the results are the same, only slower.
    """
    sources = list(iter_sources(paths))
    workers = min(jobs, len(sources))
    if workers <= 1 or len(sources) < PARALLEL_MIN_FILES:
        return [_plan_file(path, installed, add_offline_import, prefilter) for path in sources]
    return _plan_in_pool(sources, installed, add_offline_import, prefilter, workers)


def _diff_lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        # Same marker as diff(1)/git, so patch(1) reproduces the missing final newline.
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def unified_diff(file_rewrite: FileRewrite, *, context: int = 3) -> str:
    """A unified diff of the planned rewrite (empty when nothing changes), for ``--diff``."""
    if not file_rewrite.changed:
        return ""
    name = str(file_rewrite.path)
    return "".join(
        difflib.unified_diff(
            _diff_lines(file_rewrite.old_text),
            _diff_lines(file_rewrite.new_text),
            fromfile=name,
            tofile=name,
            n=context,
        )
    )


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
