"""The Python codemod: point ``*.from_pretrained("org/model")`` calls at installed folders.

Pure ``str -> str``: :func:`rewrite_source` takes one module's text and returns the new text
with what it changed and what it reports (:class:`~.results.RewriteResult`); it never
touches a file, so it is easy to test and to property-test.  The edit is a libcst codemod:
only the one string literal changes, and formatting, comments and quote style survive.
Running it a second time changes nothing, because an absolute path is never an installed
model id.

Anything that cannot be rewritten safely is *reported*, never guessed at: ids built at run
time (f-strings, concatenations, function parameters, imported names) and ``Taskflow(...)``
calls, which take a task name rather than a folder and therefore need the offline-mode
switch (:data:`OFFLINE_IMPORT_LINE`) instead.

Most modules of a real codebase call neither ``from_pretrained`` nor ``Taskflow``; for
those the answer is known from the text alone (:func:`may_act`), so they cost one parse
and no scope analysis.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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

from bundler.rewrite.results import Change, Finding, FindingKind, RewriteResult

__all__ = [
    "OFFLINE_IMPORT_LINE",
    "may_act",
    "parse_error_message",
    "render_string_literal",
    "rewrite_python",
    "rewrite_source",
]

#: The line added to modules that call ``Taskflow``.  Taskflow resolves its models by task
#: name, so it cannot be handed a folder; importing :mod:`bundler.offline` makes the name
#: lookup hit the local cache instead of the network.  The comment says who added it and
#: why, so a reader of the user's script is not left guessing.
OFFLINE_IMPORT_LINE = (
    "import bundler.offline  # paddle-bundle: load models from the local cache, no network"
)

#: The keyword PaddleNLP's ``from_pretrained`` uses for the model id or folder.
_ID_KEYWORD = "pretrained_model_name_or_path"


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
        wrapper: MetadataWrapper,
        installed: Mapping[str, str],
        candidates: Mapping[str, _Constant],
        filename: str,
        cell: int | None,
    ) -> None:
        super().__init__()
        self.wrapper = wrapper
        self.module = wrapper.module
        self.installed = installed
        self.positions: Mapping[cst.CSTNode, CodeRange] = wrapper.resolve(PositionProvider)
        self.candidates = candidates
        self._scopes: Mapping[cst.CSTNode, Scope | None] | None = None
        self.constants: dict[str, _Constant] = {}  # the candidates scope analysis confirmed
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

    def _scopes_of(self) -> Mapping[cst.CSTNode, Scope | None]:
        """Scope analysis, run the first time a call's id is a candidate constant's name.

        It is the most expensive step of the pass (more than parsing), and most modules
        that call from_pretrained never pass it a module constant, so it runs on demand.
        """
        if self._scopes is None:
            self._scopes = self.wrapper.resolve(ScopeProvider)
            global_scope = self._scopes.get(self.module)
            if isinstance(global_scope, GlobalScope):
                self.constants = _confirm_constants(self.candidates, global_scope)
        return self._scopes

    def _resolve_constant(self, name: cst.Name) -> _Constant | None:
        """The module constant ``name`` refers to here, honouring shadowing by locals."""
        if name.value not in self.candidates:
            return None
        scope = self._scopes_of().get(name)
        constant = self.constants.get(name.value)
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


def _constant_candidates(module: cst.Module) -> dict[str, _Constant]:
    """Module-level names with exactly one top-level assignment, to a string literal.

    Only candidates: :func:`_confirm_constants` decides, with scope analysis.
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
    return {name: found_[0] for name, found_ in found.items() if len(found_) == 1}


def _confirm_constants(
    candidates: Mapping[str, _Constant], global_scope: GlobalScope
) -> dict[str, _Constant]:
    """The candidates assigned exactly once in the whole module.

    "Exactly once" is checked against every binding in the global scope (``for`` targets,
    imports, ``global`` statements in functions, ...), so a name that is ever rebound is
    not treated as a constant.
    """
    constants: dict[str, _Constant] = {}
    for name, candidate in candidates.items():
        assignments = list(global_scope.assignments[name])
        if len(assignments) != 1:
            continue
        (only,) = assignments
        if isinstance(only, Assignment) and only.node is candidate.target:
            candidate.assignment = only
            constants[name] = candidate
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


def parse_error_message(source: str, error: Exception) -> tuple[int, str]:
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
    except (RecursionError, MemoryError):
        return 1, "cannot parse, skipped: nested too deeply for Python's parser"
    except ValueError as other:
        return 1, f"cannot parse, skipped: {other}"
    if isinstance(error, cst.ParserSyntaxError):
        return error.raw_line, f"cannot parse (libcst), skipped: {error.message}"
    return 1, f"cannot parse (libcst), skipped: {error}"


#: The only callee names the codemod acts on (:meth:`_Collector.visit_Call`): a module in
#: which no call has one of them has nothing to change and nothing to report.
_CALLEE_NAMES = ("from_pretrained", "Taskflow")


def _is_acted_on(call: ast.Call) -> bool:
    """``ast`` twin of the tests in :meth:`_Collector.visit_Call` (names NFKC-normalised)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr in _CALLEE_NAMES
    return isinstance(func, ast.Name) and func.id == "Taskflow"


def may_act(source: str) -> bool:
    """False when the codemod provably has nothing to change or report in ``source``.

    Most modules of a codebase never call ``from_pretrained`` or ``Taskflow``; for them the
    full pass (a libcst parse plus scope analysis, about 30 s per MB on one core) finds
    nothing.  This answers from the text and Python's own parser (``ast``, written in C,
    about 50 times faster) instead:

    * the callee names are compared by their source text (libcst keeps a name exactly as
      written, and a name cannot be escaped or split across lines), so a module whose
      text contains neither name has no such call;
    * otherwise ``ast`` must parse the module and show no such call.  Its names are
      NFKC-normalised, so it can only see *more* calls than libcst, never fewer.

    True whenever ``ast`` cannot parse the source, so every parse error is still found and
    reported by the full pass exactly as before.  What this relies on is that libcst
    parses whatever CPython's own parser accepts (tests/test_rewrite_fast.py proves the
    filtered and unfiltered results equal over generated modules, notebooks and real
    sources; bench/bench_rewrite.py compares them over a real tree on every run).
    """
    try:
        with warnings.catch_warnings():  # the library never prints, not even SyntaxWarnings
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True  # the full pass reports it, exactly as without this filter
    if not any(name in source for name in _CALLEE_NAMES):
        return False
    return any(isinstance(node, ast.Call) and _is_acted_on(node) for node in ast.walk(tree))


def too_deep(source: str) -> int | None:
    """The line where ``source`` nests deeper than CPython's parser allows, or ``None``.

    libcst's parser recurses without such a limit: on these sources (``-`` repeated 20,000
    times, 5,000 nested brackets, a 20,000-term sum) it runs for minutes or overflows the
    stack and kills the whole process, so it is never handed one.  Python cannot run them
    either; they are reported as parse errors.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (RecursionError, MemoryError):
        return 1
    except SyntaxError as error:
        if error.msg.startswith("too many nested"):
            return error.lineno or 1
    except ValueError:
        pass
    return None


def rewrite_python(
    source: str,
    installed: Mapping[str, str],
    *,
    add_offline_import: bool,
    filename: str,
    cell: int | None,
    ascii_only: bool,
    prefilter: bool = True,
) -> RewriteResult:
    """Core of :func:`rewrite_source`, plus the knobs notebooks and odd encodings need.

    ``prefilter=False`` runs the full pass even where :func:`may_act` says it would find
    nothing: the reference the filter is tested and benchmarked against.
    """
    if prefilter and not may_act(source):
        return RewriteResult(source)
    deep_line = too_deep(source)
    if deep_line is not None:
        finding = Finding("parse-error", deep_line, "cannot parse, skipped: nested too deeply "
                          "for Python's parser", file=filename, cell=cell)
        return RewriteResult(source, (), (finding,))
    try:
        module = cst.parse_module(source)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as error:
        line, message = parse_error_message(source, error)
        finding = Finding("parse-error", line, message, file=filename, cell=cell)
        return RewriteResult(source, (), (finding,))

    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)  # parsed just now, ours
    candidates = _constant_candidates(wrapper.module)
    collector = _Collector(wrapper, installed, candidates, filename, cell)
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
    return rewrite_python(
        source,
        installed,
        add_offline_import=add_offline_import,
        filename=filename,
        cell=None,
        ascii_only=False,
    )
