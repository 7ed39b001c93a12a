"""Notebooks: run the codemod over the code cells of an ``.ipynb`` and splice the result back.

A notebook is JSON, and the user's notebook must come back byte-stable apart from the
changed lines: outputs, metadata, key order and escapes are left exactly as they were.
So the cells' ``source`` values are located in the text (:class:`_NotebookScanner`)
rather than re-serialised, IPython ``%magic``/``!shell`` lines are masked so the cells
parse as Python, and the cells are analysed together as one module (they share one
namespace) by :func:`bundler.rewrite.codemod.rewrite_python`.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import libcst as cst

from bundler.rewrite.codemod import parse_error_message, rewrite_python, too_deep
from bundler.rewrite.results import Change, Finding, RewriteResult

__all__ = ["rewrite_notebook"]

_ItemT = TypeVar("_ItemT", Change, Finding)

_LINE_END_RE = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def _lines(text: str) -> list[str]:
    """Split after ``\\n``, ``\\r\\n`` or ``\\r`` only -- the line breaks Python itself counts.

    ``str.splitlines`` also splits on form feeds and U+2028, which would throw line
    numbers off against the parser's.
    """
    return [line for line in _LINE_END_RE.split(text) if line]


#: Cell magics whose body is Python; other ``%%`` cells (bash, html, ...) are not code.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
_MAGIC_MARK = "paddle-bundle:ipython-magic:"
_MAGIC_RE = re.compile(r"[ \t]*pass  # " + re.escape(_MAGIC_MARK) + r"(\d+)(\r\n|\r|\n)?\Z")


def _mask_magics(source: str) -> tuple[str, list[str]] | None:
    """Hide IPython ``%magic``/``!shell`` lines so the rest of the cell parses as Python.

    Notebooks routinely start with ``!pip install ...``; without masking every such cell
    would be a parse error.  Each magic line becomes ``pass`` plus a numbered marker at the
    same indentation, restored verbatim by :func:`_unmask_magics`.  Returns None for
    cells that are not Python at all (``%%bash``, ``%%writefile data.json``, ...).
    """
    lines = _lines(source)
    if lines and lines[0].lstrip().startswith("%%"):
        words = lines[0].lstrip()[2:].split()
        magic = words[0] if words else ""
        is_py_file = magic == "writefile" and bool(words[1:]) and words[-1].endswith(".py")
        if magic not in _PYTHON_CELL_MAGICS and not is_py_file:
            return None
    saved: list[str] = []
    out: list[str] = []
    for line in lines:
        stripped = line.lstrip(" \t")
        if stripped.startswith(("%", "!")):
            indent = line[: len(line) - len(stripped)]
            content = stripped.rstrip("\r\n")
            newline = stripped[len(content) :]
            out.append(f"{indent}pass  # {_MAGIC_MARK}{len(saved)}{newline}")
            saved.append(line)
        else:
            out.append(line)
    return "".join(out), saved


def _unmask_magics(source: str, saved: Sequence[str]) -> str:
    if not saved:
        return source
    out = []
    for line in _lines(source):
        match = _MAGIC_RE.match(line)
        out.append(saved[int(match.group(1))] if match else line)
    return "".join(out)


_MemberHandler = Callable[[str, int], int]
_ElementHandler = Callable[[int, int], int]


@dataclass
class _CellSpan:
    """Where one cell's ``source`` value sits in the notebook text (offsets into the text)."""

    index: int
    cell_type: object = None
    start: int = -1
    end: int = -1
    items: list[tuple[int, int]] = field(default_factory=list)
    value: object = None


_WS_RE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _NotebookScanner:
    """Find the text spans of every cell's ``source`` without re-serialising the notebook.

    ``json.loads`` + ``json.dumps`` would reformat the whole file (indentation, key order,
    escapes) and bury a one-line path change in noise; recording spans lets the rewrite
    splice new text into exactly the bytes that changed and leave everything else alone.
    Only ``cells[*].cell_type`` and ``cells[*].source`` are looked at; every other value
    is skipped with the stdlib decoder.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.cells: list[_CellSpan] = []

    def scan(self) -> list[_CellSpan]:
        pos = self._expect(self._skip_ws(0), "{")
        self._members(pos, self._top_member)
        return self.cells

    def _skip_ws(self, pos: int) -> int:
        match = _WS_RE.match(self.text, pos)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def _expect(self, pos: int, char: str) -> int:
        if self.text[pos : pos + 1] != char:
            raise ValueError(f"expected {char!r} at offset {pos}")
        return pos + 1

    def _value_end(self, pos: int) -> int:
        _, end = _DECODER.raw_decode(self.text, pos)
        return int(end)

    def _members(self, pos: int, member: _MemberHandler) -> int:
        """Walk an object's members (``pos`` is just after ``{``); returns the end offset."""
        pos = self._skip_ws(pos)
        if self.text[pos : pos + 1] == "}":
            return pos + 1
        while True:
            key, pos = _DECODER.raw_decode(self.text, pos)
            pos = self._skip_ws(self._expect(self._skip_ws(pos), ":"))
            pos = self._skip_ws(member(str(key), pos))
            if self.text[pos : pos + 1] == "}":
                return pos + 1
            pos = self._skip_ws(self._expect(pos, ","))

    def _elements(self, pos: int, element: _ElementHandler) -> int:
        """Walk an array (``pos`` is at ``[``); returns the end offset."""
        pos = self._skip_ws(self._expect(pos, "["))
        if self.text[pos : pos + 1] == "]":
            return pos + 1
        index = 0
        while True:
            pos = self._skip_ws(element(index, pos))
            index += 1
            if self.text[pos : pos + 1] == "]":
                return pos + 1
            pos = self._skip_ws(self._expect(pos, ","))

    def _top_member(self, key: str, pos: int) -> int:
        if key == "cells" and self.text[pos : pos + 1] == "[":
            self.cells = []
            return self._elements(pos, self._cell)
        return self._value_end(pos)

    def _cell(self, index: int, pos: int) -> int:
        if self.text[pos : pos + 1] != "{":
            return self._value_end(pos)
        span = _CellSpan(index)
        self.cells.append(span)

        def item(_: int, at: int) -> int:
            end = self._value_end(at)
            span.items.append((at, end))
            return end

        def member(key: str, at: int) -> int:
            if key == "cell_type":
                span.cell_type, end = _DECODER.raw_decode(self.text, at)
                return int(end)
            if key != "source":
                return self._value_end(at)
            span.start, span.items = at, []
            if self.text[at : at + 1] == "[":
                span.end = self._elements(at, item)
            else:
                span.end = self._value_end(at)
            span.value = json.loads(self.text[span.start : span.end])
            return span.end

        return self._members(pos + 1, member)


def _cell_text(value: object) -> str | None:
    """A cell's source as one string (nbformat allows a string or a list of lines)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "".join(value)
    return None


def _source_edits(
    text: str, span: _CellSpan, new_source: str, ensure_ascii: bool
) -> list[tuple[int, int, str]]:
    """Text edits turning ``span``'s source into ``new_source``, keeping its JSON shape.

    A list source stays a list of lines; when the line count is unchanged only the lines
    that differ are re-encoded, otherwise the array is rebuilt with the original's
    separators and the untouched lines' original tokens.
    """

    def dumps(value: str) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii)

    old = span.value
    if isinstance(old, str):
        return [(span.start, span.end, dumps(new_source))]
    assert isinstance(old, list)
    new_lines = new_source.splitlines(keepends=True)
    canonical = old == "".join(old).splitlines(keepends=True)
    if canonical and len(new_lines) == len(old):
        return [
            (start, end, dumps(new))
            for (start, end), was, new in zip(span.items, old, new_lines)
            if was != new
        ]
    tokens: dict[str, str] = {}
    for (start, end), was in zip(span.items, old):
        tokens.setdefault(was, text[start:end])
    encoded = [tokens.get(line) or dumps(line) for line in new_lines]
    if span.items:
        lead = text[span.start + 1 : span.items[0][0]]
        trail = text[span.items[-1][1] : span.end - 1]
        if len(span.items) > 1:
            sep = text[span.items[0][1] : span.items[1][0]]
        else:
            sep = "," + lead if lead else ", "
    else:
        lead, trail, sep = "", "", ", "
    return [(span.start, span.end, "[" + lead + sep.join(encoded) + trail + "]")]


def _is_python_notebook(notebook: object) -> bool:
    """False only when the notebook says it is in another language (R, Julia, ...)."""
    if not isinstance(notebook, dict):
        return False
    metadata = notebook.get("metadata")
    if not isinstance(metadata, dict):
        return True
    for key, name_key in (("kernelspec", "language"), ("language_info", "name")):
        section = metadata.get(key)
        if isinstance(section, dict):
            language = section.get(name_key)
            if isinstance(language, str) and language.lower() != "python":
                return False
    return True


@dataclass
class _CellWork:
    """One Python code cell on its way through the rewrite."""

    span: _CellSpan
    original: str
    masked: str
    saved: list[str]
    first_line: int = 0  # 1-based line where the cell starts in the joined module


_CELL_MARK = "paddle-bundle:end-of-cell:"
_CELL_END_RE = re.compile(r"pass  # " + re.escape(_CELL_MARK) + r"(\d+)(\r\n|\r|\n)?\Z")


def _parses(source: str) -> Exception | None:
    if too_deep(source) is not None:  # libcst would hang or crash on it (see too_deep)
        return ValueError("nested too deeply for Python's parser")
    try:
        cst.parse_module(source)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as error:
        return error
    return None


def _prepare_cell(source: str) -> tuple[str, list[str]] | Finding | None:
    """A cell's source ready to join: (masked text, saved magic lines), a parse error, or None.

    Magics are masked only when the cell does not parse as it is, so valid Python whose
    continuation line happens to start with ``%`` or ``!=`` is never touched.  None means
    nothing to do: blank, or not Python (``%%bash`` and friends).
    """
    if not source.strip():
        return None
    if _parses(source) is None:
        return source, []
    masked = _mask_magics(source)
    if masked is None:
        return None
    error = _parses(masked[0])
    if error is None:
        return masked
    line, message = parse_error_message(masked[0], error)
    return Finding("parse-error", line, message)


def _join_cells(cells: Sequence[_CellWork]) -> str:
    """Join cells into one module, each followed by a marker line to split them apart again.

    A notebook's cells share one namespace: a constant defined in one cell is used in
    the next.  Analysing them as one module lets constants, shadowing and the
    Taskflow/offline-import logic work exactly as they do for a ``.py`` file.
    """
    pieces: list[str] = []
    line = 1
    for number, cell in enumerate(cells):
        body = cell.masked if cell.masked.endswith(("\n", "\r")) else cell.masked + "\n"
        cell.first_line = line
        pieces.append(body)
        line += len(_lines(body))
        pieces.append(f"pass  # {_CELL_MARK}{number}\n")
        line += 1
    return "".join(pieces)


def _split_cells(joined: str, cells: Sequence[_CellWork]) -> list[str] | None:
    """Undo :func:`_join_cells`; None if the markers did not survive (never expected)."""
    pieces: list[str] = []
    current: list[str] = []
    for line in _lines(joined):
        match = _CELL_END_RE.match(line)
        if match is None:
            current.append(line)
            continue
        if int(match.group(1)) != len(pieces):
            return None
        piece = "".join(current)
        cell = cells[len(pieces)]
        if not cell.masked.endswith(("\n", "\r")) and piece.endswith("\n"):
            piece = piece[:-1]  # drop the newline _join_cells added
        pieces.append(piece)
        current = []
    if len(pieces) != len(cells) or "".join(current):
        return None
    return pieces


def _to_cell(line: int, cells: Sequence[_CellWork]) -> tuple[int, int]:
    """Map a line of the joined module to (1-based cell number, line within that cell)."""
    index = bisect.bisect_right([cell.first_line for cell in cells], line) - 1
    cell = cells[max(index, 0)]
    return cell.span.index + 1, line - cell.first_line + 1


def rewrite_notebook(
    text: str,
    installed: Mapping[str, str],
    *,
    add_offline_import: bool = False,
    filename: str = "<string>",
    prefilter: bool = True,
) -> RewriteResult:
    """Rewrite installed model ids in the code cells of an ``.ipynb`` notebook (JSON text).

    The code cells are analysed together, in order, as one module (they share a
    namespace), with IPython ``%``/``!`` lines masked; ``%%bash``-style cells and cells
    that do not parse (reported) are left out.  Only the changed lines of changed cells'
    ``source`` are re-encoded, so outputs, metadata and formatting stay byte-stable.
    Lines in changes/findings are within the cell; ``cell`` is the 1-based index into
    the notebook's cells.  The offline import, when asked for, goes at the top of the
    first code cell.  ``prefilter`` as in :func:`bundler.rewrite.codemod.rewrite_python`.
    """
    try:
        notebook = json.loads(text)
        spans = _NotebookScanner(text).scan()
    except (ValueError, IndexError, RecursionError) as error:
        line = error.lineno if isinstance(error, json.JSONDecodeError) else 1
        message = f"not a readable notebook, skipped: {error}"
        return RewriteResult(text, (), (Finding("parse-error", line, message, file=filename),))
    if not _is_python_notebook(notebook):
        return RewriteResult(text)

    findings: list[Finding] = []
    cells: list[_CellWork] = []
    for span in spans:
        source = _cell_text(span.value) if span.cell_type == "code" else None
        prepared = _prepare_cell(source) if source is not None else None
        if source is None or prepared is None:
            continue
        if isinstance(prepared, Finding):
            findings.append(dataclasses.replace(prepared, file=filename, cell=span.index + 1))
            continue
        cells.append(_CellWork(span, source, *prepared))

    joined = _join_cells(cells)
    result = rewrite_python(
        joined,
        installed,
        add_offline_import=add_offline_import,
        filename=filename,
        cell=None,
        ascii_only=False,
        prefilter=prefilter,
        where=lambda line: "cell {} line {}".format(*_to_cell(line, cells)),
    )
    pieces = _split_cells(result.new_source, cells)
    if pieces is None or any(f.kind == "parse-error" for f in result.findings):
        message = "cannot rewrite the notebook's code cells as one program, skipped"
        return RewriteResult(text, (), (*findings, Finding("parse-error", 1, message, filename)))

    def relocate(item: _ItemT) -> _ItemT:
        cell, line = _to_cell(item.line, cells)
        return dataclasses.replace(item, line=line, cell=cell)

    ensure_ascii = text.isascii()
    edits: list[tuple[int, int, str]] = []
    for cell, piece in zip(cells, pieces):
        new_source = _unmask_magics(piece, cell.saved)
        if new_source != cell.original:
            edits.extend(_source_edits(text, cell.span, new_source, ensure_ascii))
    new_text = text
    for start, end, replacement in sorted(edits, reverse=True):
        new_text = new_text[:start] + replacement + new_text[end:]
    findings.extend(relocate(finding) for finding in result.findings)
    return RewriteResult(
        new_text,
        tuple(relocate(change) for change in result.changes),
        tuple(sorted(findings, key=lambda f: (f.cell or 0, f.line))),
        offline_import_added=result.offline_import_added,
    )
