"""Point ``*.from_pretrained("org/model")`` calls at installed model folders.

Why this exists: on an air-gapped machine
``AutoModel.from_pretrained("Salesforce/codegen-350M-mono")`` starts with a network lookup
that can only fail or hang.  Handing PaddleNLP the installed folder's absolute path instead
makes it read straight from disk.  The scripts and notebooks being edited belong to the
user, so the edit is a libcst codemod: only the one string literal changes, and
formatting, comments and quote style survive.  Running it a second time changes nothing,
because an absolute path is never an installed model id.

Anything that cannot be rewritten safely is *reported*, never guessed at: ids built at run
time (f-strings, concatenations, function parameters, imported names) and ``Taskflow(...)``
calls, which take a task name rather than a folder and therefore need the offline-mode
switch (:data:`OFFLINE_IMPORT_LINE`) instead.

Layout: pure ``str -> str`` functions (:func:`rewrite_source`, :func:`rewrite_notebook`)
that are easy to test and to property-test, then the file plumbing around them
(:func:`iter_sources`, :func:`plan_rewrites`, :func:`unified_diff`, :func:`apply`).  Nothing
here prints; the CLI decides how to show changes and findings.
"""

from __future__ import annotations

import ast
import bisect
import codecs
import contextlib
import dataclasses
import difflib
import io
import json
import os
import re
import stat
import tempfile
import tokenize
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import libcst as cst
from libcst.metadata import (
    Assignment,
    CodeRange,
    GlobalScope,
    MetadataWrapper,
    PositionProvider,
    Scope,
    ScopeProvider,
)

from bundler.errors import BundleError

__all__ = [
    "OFFLINE_IMPORT_LINE",
    "Change",
    "FileChangedError",
    "FileRewrite",
    "Finding",
    "FindingKind",
    "RewriteResult",
    "apply",
    "iter_sources",
    "plan_rewrites",
    "render_string_literal",
    "rewrite_notebook",
    "rewrite_source",
    "unified_diff",
]

#: The line added to modules that call ``Taskflow``.  Taskflow resolves its models by task
#: name, so it cannot be handed a folder; importing :mod:`bundler.offline` makes the name
#: lookup hit the local cache instead of the network.  The comment says who added it and
#: why, so a reader of the user's script is not left guessing.
OFFLINE_IMPORT_LINE = (
    "import bundler.offline  # paddle-bundle: load models from the local cache, no network"
)

FindingKind = Literal["computed-id", "taskflow", "parse-error"]

#: The keyword PaddleNLP's ``from_pretrained`` uses for the model id or folder.
_ID_KEYWORD = "pretrained_model_name_or_path"

#: Folder names never worth descending into: VCS data, virtualenvs, caches, vendored deps.
#: Rewriting a library inside ``site-packages`` would silently patch a third-party package.
SKIP_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "site-packages", "node_modules"})

_SOURCE_SUFFIXES = (".py", ".ipynb")


# --------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------


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

    Kinds: ``computed-id`` (the id is only known at run time), ``taskflow`` (a ``Taskflow``
    call, which cannot take a folder), ``parse-error`` (the file or cell was skipped).
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


_ItemT = TypeVar("_ItemT", Change, Finding)


class FileChangedError(BundleError, RuntimeError):
    """The file on disk no longer matches what was planned; refusing to overwrite it."""


# --------------------------------------------------------------------------------------
# String literals
# --------------------------------------------------------------------------------------

_PREFIX_RE = re.compile(r"[A-Za-z]*")


def _split_literal(literal: str) -> tuple[str, str]:
    """Split a Python string literal's source into (prefix, quote), e.g. ``r'''`` -> (r, ''')."""
    prefix = _PREFIX_RE.match(literal)
    assert prefix is not None  # the pattern matches the empty string
    rest = literal[prefix.end() :]
    quote = rest[:3] if rest[:3] in ('"""', "'''") else rest[:1]
    return prefix.group(0), quote


def _escape_char(ch: str, quote_char: str, ascii_only: bool) -> str:
    if ch == "\\":
        return "\\\\"
    if ch == quote_char:
        return "\\" + ch
    simple = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    if simple is not None:
        return simple
    if ch.isprintable() and (ch.isascii() or not ascii_only):
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def render_string_literal(value: str, like: str, *, ascii_only: bool = False) -> str:
    """Spell ``value`` as a Python literal in the style of the existing literal ``like``.

    The user chose the quotes and prefix; keeping them keeps the diff to the path itself
    and keeps linters/formatters quiet.  A raw prefix is kept only when the raw form can
    hold the value verbatim (no quote char, no trailing backslash, printable) -- that keeps
    Windows paths readable as ``r"C:\\models\\x"``; otherwise it is dropped and the value
    escaped.  ``ascii_only`` escapes non-ASCII for files in encodings that may not hold it.
    """
    prefix, quote = _split_literal(like)
    if "b" in prefix.lower():  # never produce bytes for a path that PaddleNLP wants as str
        prefix = "".join(c for c in prefix if c not in "bB")
    if "r" in prefix.lower():
        raw_ok = (
            value.isprintable()
            and quote[0] not in value
            and not value.endswith("\\")
            and (value.isascii() or not ascii_only)
        )
        if raw_ok:
            return f"{prefix}{quote}{value}{quote}"
        prefix = "".join(c for c in prefix if c not in "rR")
    body = "".join(_escape_char(ch, quote[0], ascii_only) for ch in value)
    return f"{prefix}{quote}{body}{quote}"


def _static_str(node: cst.BaseExpression) -> str | None:
    """The value of a plain string literal (implicit concatenation included), else None.

    Bytes and f-strings are not static text ids, so they yield None.
    """
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _leftmost_string(node: cst.ConcatenatedString) -> cst.SimpleString | None:
    left = node.left
    return left if isinstance(left, cst.SimpleString) else None


# --------------------------------------------------------------------------------------
# Python source
# --------------------------------------------------------------------------------------


def _dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def _is_taskflow(func: cst.BaseExpression) -> bool:
    """``Taskflow(...)`` or ``<anything>.Taskflow(...)`` such as ``paddlenlp.Taskflow``."""
    if isinstance(func, cst.Name):
        return func.value == "Taskflow"
    return isinstance(func, cst.Attribute) and func.attr.value == "Taskflow"


def _positional(args: Sequence[cst.Arg]) -> list[cst.Arg]:
    return [a for a in args if a.keyword is None and a.star == ""]


def _keyword(args: Sequence[cst.Arg], name: str) -> cst.Arg | None:
    for arg in args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def _hub_key(call: cst.Call, model_id: str) -> str:
    """``hf:<id>`` / ``aistudio:<id>`` for a call with ``from_hf_hub=True`` /
    ``from_aistudio=True``: those load from the hub caches, not from the community folder."""
    for flag, kind in (("from_hf_hub", "hf"), ("from_aistudio", "aistudio")):
        arg = _keyword(call.args, flag)
        if arg is not None and isinstance(arg.value, cst.Name) and arg.value.value == "True":
            return f"{kind}:{model_id}"
    return model_id


def _snippet(module: cst.Module, node: cst.CSTNode, limit: int = 60) -> str:
    text = " ".join(module.code_for_node(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_computed(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.FormattedString) or (
        isinstance(node, cst.ConcatenatedString) and _static_str(node) is None
    ):
        return "an f-string"
    if isinstance(node, cst.BinaryOperation):
        return "a computed expression (concatenation/formatting)"
    if isinstance(node, cst.Call):
        return "the result of a call"
    if isinstance(node, (cst.Attribute, cst.Subscript)):
        return "read from an object at run time"
    return "computed at run time"


@dataclass
class _Constant:
    """A module-level ``NAME = "literal"`` that may feed ``from_pretrained`` calls."""

    target: cst.Name
    value: cst.SimpleString | cst.ConcatenatedString
    text: str
    assignment: Assignment | None = None


@dataclass
class _Analysis:
    """What the read-only pass over one module found; the transformer only consumes it."""

    replacements: dict[cst.CSTNode, str] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    taskflow_calls: int = 0


class _Collector(cst.CSTVisitor):
    """Read-only pass: decide which literals to replace and what to report.

    Kept separate from the transformer so decisions that need the whole module (a constant
    is safe only once every use has been seen) are made before anything is edited.
    """

    def __init__(
        self,
        module: cst.Module,
        installed: Mapping[str, str],
        positions: Mapping[cst.CSTNode, CodeRange],
        scopes: Mapping[cst.CSTNode, Scope | None],
        constants: Mapping[str, _Constant],
        filename: str,
        cell: int | None,
    ) -> None:
        super().__init__()
        self.module = module
        self.installed = installed
        self.positions = positions
        self.scopes = scopes
        self.constants = constants
        self.filename = filename
        self.cell = cell
        self.out = _Analysis()
        self.used_constants: dict[str, None] = {}  # insertion-ordered set of names
        self.taskflow_arg_names: set[cst.CSTNode] = set()

    def _line(self, node: cst.CSTNode) -> int:
        return self.positions[node].start.line

    def _finding(self, kind: FindingKind, node: cst.CSTNode, message: str) -> None:
        self.out.findings.append(
            Finding(kind, self._line(node), message, file=self.filename, cell=self.cell)
        )

    def _replace(self, node: cst.SimpleString | cst.ConcatenatedString, old: str) -> None:
        if node in self.out.replacements:
            return
        new = self.installed[old]
        self.out.replacements[node] = new
        self.out.changes.append(
            Change(self._line(node), old, new, file=self.filename, cell=self.cell)
        )

    def visit_Call(self, node: cst.Call) -> bool:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "from_pretrained":
            self._from_pretrained(node)
        elif _is_taskflow(func):
            self._taskflow(node)
        return True

    def _from_pretrained(self, call: cst.Call) -> None:
        callee = _snippet(self.module, call.func)
        positional = _positional(call.args)
        keyword = _keyword(call.args, _ID_KEYWORD)
        if positional:
            id_node: cst.BaseExpression = positional[0].value
        elif keyword is not None:
            id_node = keyword.value
        else:
            if any(a.star for a in call.args):
                self._finding(
                    "computed-id",
                    call,
                    f"{callee}() gets its model id through */** arguments; not rewritten",
                )
            return
        literal = _static_str(id_node)
        if literal is not None:
            assert isinstance(id_node, (cst.SimpleString, cst.ConcatenatedString))
            key = _hub_key(call, literal)
            if key in self.installed:
                self._replace(id_node, key)
            return
        if isinstance(id_node, cst.Name):
            constant = self._resolve_constant(id_node)
            if constant is not None:
                self.used_constants[id_node.value] = None
                return
            why = f"the variable `{id_node.value}`, which is not a module-level string constant"
        else:
            why = f"{_describe_computed(id_node)}: `{_snippet(self.module, id_node)}`"
        self._finding(
            "computed-id",
            id_node,
            f"model id passed to {callee}() is {why}; not rewritten -- "
            "use a literal id or a module-level constant, or point it at the installed folder",
        )

    def _resolve_constant(self, name: cst.Name) -> _Constant | None:
        """The module constant ``name`` refers to here, honouring shadowing by locals."""
        constant = self.constants.get(name.value)
        scope = self.scopes.get(name)
        if constant is None or constant.assignment is None or scope is None:
            return None
        referents = {r for access in scope.accesses[name] for r in access.referents}
        return constant if referents == {constant.assignment} else None

    def _taskflow(self, call: cst.Call) -> None:
        self.out.taskflow_calls += 1
        positional = _positional(call.args)
        task_arg = positional[0] if positional else _keyword(call.args, "task")
        model_arg = _keyword(call.args, "model")
        parts = []
        for label, arg in (("task", task_arg), ("model", model_arg)):
            if arg is None:
                continue
            if isinstance(arg.value, cst.Name):
                self.taskflow_arg_names.add(arg.value)
            value = _static_str(arg.value)
            parts.append(f"{label}={value!r}" if value is not None else f"{label}=<computed>")
        shown = f"{_snippet(self.module, call.func)}({', '.join(parts)})"
        self._finding(
            "taskflow",
            call,
            f"{shown} picks its model by name and cannot take a folder; "
            f"it needs offline mode (`{OFFLINE_IMPORT_LINE.split('  #')[0]}`)",
        )

    def finish(self) -> _Analysis:
        """Decide the constants now that every use of them has been seen."""
        for name in self.used_constants:
            constant = self.constants[name]
            assert constant.assignment is not None
            if constant.text not in self.installed:
                continue
            refs = {ref.node for ref in constant.assignment.references}
            if refs & self.taskflow_arg_names:
                # Rewriting would hand Taskflow a path, which it rejects: leave the id.
                self._finding(
                    "taskflow",
                    constant.value,
                    f"`{name}` feeds both from_pretrained() and Taskflow(); left as an id "
                    "because Taskflow needs the name -- use a separate constant for the "
                    "from_pretrained() calls to have them rewritten",
                )
                continue
            # Every use resolves to this one literal: rewrite it once, at the constant.
            self._replace(constant.value, constant.text)
        self.out.findings.sort(key=lambda f: f.line)
        self.out.changes.sort(key=lambda c: c.line)
        return self.out


class _Replacer(cst.CSTTransformer):
    """Swap the chosen literals for path literals in the same quote style."""

    def __init__(self, replacements: Mapping[cst.CSTNode, str], ascii_only: bool) -> None:
        super().__init__()
        self.replacements = replacements
        self.ascii_only = ascii_only

    def leave_SimpleString(
        self, original_node: cst.SimpleString, updated_node: cst.SimpleString
    ) -> cst.BaseExpression:
        new = self.replacements.get(original_node)
        if new is None:
            return updated_node
        literal = render_string_literal(new, original_node.value, ascii_only=self.ascii_only)
        return updated_node.with_changes(value=literal)

    def leave_ConcatenatedString(
        self, original_node: cst.ConcatenatedString, updated_node: cst.ConcatenatedString
    ) -> cst.BaseExpression:
        new = self.replacements.get(original_node)
        if new is None:
            return updated_node
        first = _leftmost_string(original_node)
        like = first.value if first is not None else '""'
        literal = render_string_literal(new, like, ascii_only=self.ascii_only)
        return cst.SimpleString(literal, lpar=updated_node.lpar, rpar=updated_node.rpar)


def _module_constants(module: cst.Module, global_scope: GlobalScope | None) -> dict[str, _Constant]:
    """Module-level names assigned exactly once, to a string literal.

    "Exactly once" is checked against every binding in the global scope (``for`` targets,
    imports, ``global`` statements in functions, ...), so a name that is ever rebound is
    not treated as a constant.
    """
    found: dict[str, list[_Constant]] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            target: cst.BaseExpression | None = None
            value: cst.BaseExpression | None = None
            if isinstance(small, cst.Assign) and len(small.targets) == 1:
                target, value = small.targets[0].target, small.value
            elif isinstance(small, cst.AnnAssign) and small.value is not None:
                target, value = small.target, small.value
            if not isinstance(target, cst.Name) or value is None:
                continue
            text = _static_str(value)
            if text is None:
                continue
            assert isinstance(value, (cst.SimpleString, cst.ConcatenatedString))
            found.setdefault(target.value, []).append(_Constant(target, value, text))
    constants: dict[str, _Constant] = {}
    if global_scope is None:
        return constants
    for name, candidates in found.items():
        assignments = list(global_scope.assignments[name])
        if len(candidates) != 1 or len(assignments) != 1:
            continue
        (only,) = assignments
        if isinstance(only, Assignment) and only.node is candidates[0].target:
            candidates[0].assignment = only
            constants[name] = candidates[0]
    return constants


def _has_offline_import(module: cst.Module) -> bool:
    """True if the module already imports :mod:`bundler.offline` at top level."""
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, cst.Import) and any(
                _dotted(alias.name) == "bundler.offline" for alias in small.names
            ):
                return True
            if isinstance(small, cst.ImportFrom) and small.module is not None:
                base = _dotted(small.module)
                if base == "bundler.offline":
                    return True
                if (
                    base == "bundler"
                    and not isinstance(small.names, cst.ImportStar)
                    and any(_dotted(alias.name) == "offline" for alias in small.names)
                ):
                    return True
    return False


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _is_future_import(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and bool(stmt.body)
        and all(
            isinstance(s, cst.ImportFrom)
            and s.module is not None
            and _dotted(s.module) == "__future__"
            for s in stmt.body
        )
    )


def _insert_offline_import(module: cst.Module) -> cst.Module:
    """Add :data:`OFFLINE_IMPORT_LINE` after the docstring and ``__future__`` imports.

    It must come after those two (Python requires it) and before anything that could
    construct a Taskflow.  Blank lines that separated the next statement from the header
    move above the new import, so the import joins the following block instead of
    dangling under the docstring; comments stay attached to their statement.
    """
    body = list(module.body)
    index = 1 if body and _is_docstring(body[0]) else 0
    while index < len(body) and _is_future_import(body[index]):
        index += 1
    new_stmt = cst.parse_statement(
        OFFLINE_IMPORT_LINE + module.default_newline, config=module.config_for_parsing
    )
    if index < len(body):
        following = body[index]
        leading = list(following.leading_lines)
        blank = 0
        while blank < len(leading) and leading[blank].comment is None:
            blank += 1
        new_stmt = new_stmt.with_changes(leading_lines=leading[:blank])
        body[index] = following.with_changes(leading_lines=leading[blank:])
    body.insert(index, new_stmt)
    return module.with_changes(body=body)


def _parse_error_message(source: str, error: Exception) -> tuple[int, str]:
    """Line and message for a source libcst could not parse.

    Python's own compiler is asked first: its line numbers are exact and its messages
    are the ones users know ("Missing parentheses in call to 'print'").  libcst's error
    is used only when the interpreter accepts the code (syntax newer than libcst).
    """
    try:
        with warnings.catch_warnings():  # the library never prints, not even SyntaxWarnings
            warnings.simplefilter("ignore")
            ast.parse(source)
    except SyntaxError as syntax_error:
        line = syntax_error.lineno or 1
        return line, f"cannot parse, skipped: {syntax_error.msg}"
    except (ValueError, RecursionError, MemoryError) as other:
        return 1, f"cannot parse, skipped: {other}"
    if isinstance(error, cst.ParserSyntaxError):
        return error.raw_line, f"cannot parse (libcst), skipped: {error.message}"
    return 1, f"cannot parse (libcst), skipped: {error}"


def _rewrite_python(
    source: str,
    installed: Mapping[str, str],
    *,
    add_offline_import: bool,
    filename: str,
    cell: int | None,
    ascii_only: bool,
) -> RewriteResult:
    """Core of :func:`rewrite_source`, plus the knobs notebooks and odd encodings need."""
    try:
        module = cst.parse_module(source)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as error:
        line, message = _parse_error_message(source, error)
        finding = Finding("parse-error", line, message, file=filename, cell=cell)
        return RewriteResult(source, (), (finding,))

    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)  # parsed just now, ours
    positions = wrapper.resolve(PositionProvider)
    scopes = wrapper.resolve(ScopeProvider)
    global_scope = scopes.get(wrapper.module)
    constants = _module_constants(
        wrapper.module, global_scope if isinstance(global_scope, GlobalScope) else None
    )
    collector = _Collector(wrapper.module, installed, positions, scopes, constants, filename, cell)
    wrapper.module.visit(collector)
    analysis = collector.finish()

    new_module = wrapper.module
    if analysis.replacements:
        new_module = wrapper.module.visit(_Replacer(analysis.replacements, ascii_only))
    added = False
    if add_offline_import and analysis.taskflow_calls and not _has_offline_import(new_module):
        new_module = _insert_offline_import(new_module)
        added = True
    new_source = new_module.code if (analysis.replacements or added) else source
    return RewriteResult(
        new_source, tuple(analysis.changes), tuple(analysis.findings), offline_import_added=added
    )


def rewrite_source(
    source: str,
    installed: Mapping[str, str],
    *,
    add_offline_import: bool = False,
    filename: str = "<string>",
) -> RewriteResult:
    """Rewrite installed model ids in one Python module's source.

    ``installed`` maps model id (``"Salesforce/codegen-350M-mono"``) to the absolute
    folder it was installed to.  Literal ids in ``<anything>.from_pretrained(...)`` (first
    positional argument or ``pretrained_model_name_or_path=``) become that folder; a
    module-level constant feeding such a call is rewritten where it is defined.  With
    ``add_offline_import`` a module that calls ``Taskflow`` gets :data:`OFFLINE_IMPORT_LINE`
    (once).  ``filename`` is only used to label changes and findings.
    """
    return _rewrite_python(
        source,
        installed,
        add_offline_import=add_offline_import,
        filename=filename,
        cell=None,
        ascii_only=False,
    )


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------

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
    line, message = _parse_error_message(masked[0], error)
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
) -> RewriteResult:
    """Rewrite installed model ids in the code cells of an ``.ipynb`` notebook (JSON text).

    The code cells are analysed together, in order, as one module (they share a
    namespace), with IPython ``%``/``!`` lines masked; ``%%bash``-style cells and cells
    that do not parse (reported) are left out.  Only the changed lines of changed cells'
    ``source`` are re-encoded, so outputs, metadata and formatting stay byte-stable.
    Lines in changes/findings are within the cell; ``cell`` is the 1-based index into
    the notebook's cells.  The offline import, when asked for, goes at the top of the
    first code cell.
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
    result = _rewrite_python(
        joined,
        installed,
        add_offline_import=add_offline_import,
        filename=filename,
        cell=None,
        ascii_only=False,
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


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


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


def _plan_file(path: Path, installed: Mapping[str, str], add_offline_import: bool) -> FileRewrite:
    name = str(path)
    raw = path.read_bytes()
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
            text, installed, add_offline_import=add_offline_import, filename=name
        )
    else:
        ascii_only = codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig")
        result = _rewrite_python(
            text,
            installed,
            add_offline_import=add_offline_import,
            filename=name,
            cell=None,
            ascii_only=ascii_only,
        )
    return FileRewrite(path, text, result.new_source, result, encoding)


def plan_rewrites(
    paths: Iterable[str | os.PathLike[str]],
    installed: Mapping[str, str],
    add_offline_import: bool = False,
) -> list[FileRewrite]:
    """Compute (but do not write) the rewrite of every source under ``paths``.

    Planning everything first means ``--check``/``--diff`` share one code path with
    ``--in-place`` and a failure on one file cannot leave a half-rewritten project.
    Unchanged files are included, since their findings still matter.
    """
    return [_plan_file(path, installed, add_offline_import) for path in iter_sources(paths)]


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
