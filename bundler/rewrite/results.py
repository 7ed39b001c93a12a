"""What a rewrite produces: the changes it made and the findings it reports.

Plain frozen values, shared by the codemod (:mod:`.codemod`), the notebook layer
(:mod:`.notebooks`) and the file layer (:mod:`.files`); they cross process boundaries when
the file layer spreads work over cores, so they hold nothing but strings and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SKIPPED_KINDS", "Change", "Finding", "FindingKind", "RewriteResult"]

FindingKind = Literal[
    "computed-id", "foreign-call", "hub-source", "download", "taskflow", "parse-error", "unreadable"
]

#: The kinds that mean a file (or cell) was not looked at: the "cannot read/parse" outcome.
SKIPPED_KINDS: frozenset[FindingKind] = frozenset({"parse-error", "unreadable"})


def _location(file: str, cell: int | None, line: int) -> str:
    """``file:line`` (or ``file[cell N]:line``), the form editors and CI logs can jump to."""
    if cell is None:
        return f"{file}:{line}"
    return f"{file}[cell {cell}]:{line}"


@dataclass(frozen=True)
class Change:
    """One model id replaced by an installed folder.

    ``line`` is 1-based, counted in the original text (in a notebook: within ``cell``, the
    1-based index into the notebook's ``cells`` list).
    """

    line: int
    old_id: str
    new_path: str
    file: str = "<string>"
    cell: int | None = None

    @property
    def location(self) -> str:
        """Where the change happened, as ``file:line``."""
        return _location(self.file, self.cell, self.line)


@dataclass(frozen=True)
class Finding:
    """Something the user has to look at because it was deliberately *not* rewritten.

    Kinds: ``computed-id`` (the id is only known at run time), ``foreign-call`` (an
    installed id loaded by another library, e.g. ``transformers``), ``hub-source`` (the
    call reads a hub cache or ``cache_dir=`` the installed folder may not be),
    ``download`` (``snapshot_download``-style calls), ``taskflow`` (a ``Taskflow`` call,
    which cannot take a folder); ``parse-error`` and ``unreadable`` (the file or cell was
    skipped: :data:`SKIPPED_KINDS`).
    """

    kind: FindingKind
    line: int
    message: str
    file: str = "<string>"
    cell: int | None = None

    @property
    def location(self) -> str:
        """Where the finding is, as ``file:line``."""
        return _location(self.file, self.cell, self.line)


@dataclass(frozen=True)
class RewriteResult:
    """Outcome of rewriting one source text; ``new_source`` equals the input if nothing changed."""

    new_source: str
    changes: tuple[Change, ...] = ()
    findings: tuple[Finding, ...] = ()
    offline_import_added: bool = False
