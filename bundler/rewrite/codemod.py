"""The Python codemod: point ``*.from_pretrained("org/model")`` calls at installed folders.

Pure ``str -> str``: :func:`rewrite_source` takes one module's text and returns the new text
with what it changed and what it reports (:class:`~.results.RewriteResult`); it never
touches a file, so it is easy to test and to property-test.  The edit is a libcst codemod:
only the id argument of a PaddleNLP ``from_pretrained`` call changes (a literal, or a
variable assigned once to one -- the *call* gets the folder, the variable keeps its value
for every other use), and formatting, comments and quote style survive.  Running it a
second time changes nothing, because an absolute path is never an installed model id.

Anything that cannot be rewritten safely is *reported*, never guessed at: loads by other
libraries (:data:`FOREIGN_LIBRARIES`), ids built at run time (f-strings, concatenations,
function parameters, imported or reassigned names, bytes), hub flags and ``cache_dir=``
that send the load elsewhere, hub downloads (:data:`DOWNLOAD_FUNCTIONS`) and
``Taskflow(...)`` calls, which take a task name rather than a folder and therefore need
the offline-mode switch (:data:`OFFLINE_IMPORT_LINE`) instead.

Most modules of a real codebase call neither ``from_pretrained`` nor ``Taskflow``; for
those the answer is known from the text alone (:func:`may_act`), so they cost one parse
and no scope analysis.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import (
    Assignment,
    ClassScope,
    CodeRange,
    GlobalScope,
    ImportAssignment,
    MetadataWrapper,
    PositionProvider,
    Scope,
    ScopeProvider,
)

from bundler.rewrite.results import Change, Finding, FindingKind, RewriteResult

__all__ = [
    "CALLEE_NAMES",
    "DOWNLOAD_FUNCTIONS",
    "FOREIGN_LIBRARIES",
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


#: Top-level packages whose ``from_pretrained`` is not PaddleNLP's: their loaders read their
#: own caches (or hubs), so a PaddleNLP folder handed to them is wrong.  A callee imported
#: from one of these is reported, never rewritten.
FOREIGN_LIBRARIES = frozenset(
    {
        "accelerate", "allennlp", "ctranslate2", "diffusers", "fairseq", "flax", "gensim",
        "huggingface_hub", "jax", "keras", "llama_cpp", "mindnlp", "mindspore", "modelscope",
        "onnxruntime", "openai", "optimum", "paddlehub", "paddleocr", "peft", "ppdiffusers",
        "sentence_transformers", "spacy", "tensorflow", "timm", "torch", "torchvision",
        "transformers", "vllm",
    }
)

#: Hub download helpers: they fetch a repository by id at run time, so offline they fail.
#: They are reported (with the installed folder when the id is installed), never rewritten:
#: they return a path into a hub cache, which a folder is not a drop-in for.
DOWNLOAD_FUNCTIONS = frozenset({"snapshot_download", "hf_hub_download", "bos_download"})

#: ``from_pretrained`` keywords that send the load somewhere other than ``models/<id>``.
_HUB_FLAGS = (("from_hf_hub", "hf", "the Hugging Face hub cache"),
              ("from_aistudio", "aistudio", "the AI Studio cache"))


def _names_in(node: cst.BaseExpression) -> list[str]:
    """The plain names a ``del`` target unbinds (``del a, (b, c)``)."""
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        return [name for element in node.elements for name in _names_in(element.value)]
    return []


def _root_name(node: cst.BaseExpression) -> str | None:
    """``a`` for ``a``, ``a.b.c``; None for anything that is not a dotted name."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return node.value if isinstance(node, cst.Name) else None


def _top_package(node: cst.BaseExpression) -> str | None:
    dotted = _dotted(node)
    return None if dotted is None else dotted.split(".")[0]


#: Calls that import a module named by a string: ``importlib.import_module("transformers")``.
_DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})

#: Calls through which a module's names can be rebound without an assignment the scope
#: analysis sees (``globals()["MODEL"] = ...``, ``exec("MODEL = ...")``).
_NAMESPACE_WRITERS = frozenset({"eval", "exec", "globals", "locals", "vars"})


def _dynamic_import(node: cst.BaseExpression) -> str | None:
    """The top package of ``importlib.import_module("x.y")`` / ``__import__("x")``."""
    if not isinstance(node, cst.Call) or _callee_name(node.func) not in _DYNAMIC_IMPORTS:
        return None
    positional = _positional(node.args)
    if not positional:
        return None
    value = _static_str(positional[0].value)
    return None if not value else value.lstrip(".").split(".")[0] or "."


def _dynamic_imports_in(node: cst.CSTNode) -> set[str]:
    """The packages every ``import_module("x")``/``__import__("x")`` call in ``node`` names."""
    found: set[str] = set()

    class _Calls(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            package = _dynamic_import(call)
            if package is not None:
                found.add(package)

    node.visit(_Calls())
    return found


def _names_module(node: cst.CSTNode) -> bool:
    """True for an expression that may be a module object: ``sys.modules[__name__]``."""
    found = False

    class _Module(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            nonlocal found
            found = found or name.value == "__name__"

        def visit_Attribute(self, attribute: cst.Attribute) -> None:
            nonlocal found
            found = found or (attribute.attr.value == "modules"
                              and _root_name(attribute.value) == "sys")

    node.visit(_Module())
    return found


def _names_read(node: cst.CSTNode) -> set[str]:
    """Every plain name ``node`` reads (``getattr(transformers, "X")`` reads ``transformers``)."""
    found: set[str] = set()

    class _Names(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.add(name.value)

        def visit_Attribute(self, attribute: cst.Attribute) -> bool:
            attribute.value.visit(self)  # ``a.b`` reads ``a``, never a name ``b``
            return False

    node.visit(_Names())
    return found


class _Bindings(cst.CSTVisitor):
    """Read-only pre-pass: where names come from, and what single-name assignments hold.

    ``origins`` maps a name to the top-level packages it is imported from anywhere in the
    module (``"."`` for a relative import), including through plain aliases
    (``Model = transformers.AutoModel``); ``values`` maps each assigned ``Name`` target
    node to the expression assigned to it, for :meth:`_Collector._resolve_name`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.imported: dict[str, set[str]] = {}
        self.aliases: dict[str, set[str]] = {}
        self.star_origins: set[str] = set()
        self.values: dict[cst.CSTNode, cst.BaseExpression] = {}
        #: Names assigned a string or bytes literal somewhere: only these need scope analysis.
        self.literal_names: set[str] = set()
        #: Names unbound or rebound where scope analysis does not look (``del``, ``match``
        #: capture patterns): never treated as holding a known value.
        self.unsettled: dict[str, str] = {}
        #: ``from x import *`` statements: they may rebind any module-level name.
        self.star_imports: list[tuple[str, cst.ImportFrom]] = []
        #: Nodes that bind each name by import or assignment (for star-import order).
        self.binders: dict[str, list[cst.CSTNode]] = {}
        #: Code that can rebind names behind the scope analysis' back (``globals()``,
        #: ``sys.modules[__name__].MODEL = ...``).
        self.namespace_writer: cst.CSTNode | None = None
        #: How deep the visit is in comprehensions, whose ``:=`` binds in the scope
        #: around them (scope analysis puts it in the comprehension's own).
        self._comprehensions = 0

    def visit_Call(self, node: cst.Call) -> bool:
        func = node.func
        name = func.value if isinstance(func, cst.Name) else None
        if isinstance(func, cst.Attribute) and _root_name(func.value) in (
            "builtins", "__builtins__"
        ):
            name = func.attr.value  # ``builtins.exec(...)``
        first = _positional(node.args)[:1]
        if self.namespace_writer is None and (
            name in _NAMESPACE_WRITERS
            # ``setattr(sys.modules[__name__], "MODEL", ...)``
            or (name == "setattr" and first and _names_module(first[0].value))
        ):
            self.namespace_writer = node
        return True

    def visit_ListComp(self, node: cst.ListComp) -> None:
        self._comprehensions += 1

    def leave_ListComp(self, original_node: cst.ListComp) -> None:
        self._comprehensions -= 1

    def visit_SetComp(self, node: cst.SetComp) -> None:
        self._comprehensions += 1

    def leave_SetComp(self, original_node: cst.SetComp) -> None:
        self._comprehensions -= 1

    def visit_DictComp(self, node: cst.DictComp) -> None:
        self._comprehensions += 1

    def leave_DictComp(self, original_node: cst.DictComp) -> None:
        self._comprehensions -= 1

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> None:
        self._comprehensions += 1

    def leave_GeneratorExp(self, original_node: cst.GeneratorExp) -> None:
        self._comprehensions -= 1

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        if self._comprehensions and isinstance(node.target, cst.Name):
            self.unsettled.setdefault(node.target.value, "rebound by `:=` in a comprehension")

    def visit_Del(self, node: cst.Del) -> None:
        for target in _names_in(node.target):
            self.unsettled.setdefault(target, "deleted with `del`")

    def visit_MatchAs(self, node: cst.MatchAs) -> None:
        if node.name is not None:
            self.unsettled.setdefault(node.name.value, "rebound by a `match` pattern")

    def visit_MatchStar(self, node: cst.MatchStar) -> None:
        if node.name is not None:
            self.unsettled.setdefault(node.name.value, "rebound by a `match` pattern")

    def visit_MatchMapping(self, node: cst.MatchMapping) -> None:
        if node.rest is not None:
            self.unsettled.setdefault(node.rest.value, "rebound by a `match` pattern")

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            top = _top_package(alias.name)
            if top is None:
                continue
            bound = alias.asname.name if alias.asname is not None else None
            name = bound.value if isinstance(bound, cst.Name) else top
            self.imported.setdefault(name, set()).add(top)
            self.binders.setdefault(name, []).append(node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative:
            origin: str | None = "."
        else:
            origin = _top_package(node.module) if node.module is not None else None
        if origin is None:
            return
        if isinstance(node.names, cst.ImportStar):
            self.star_origins.add(origin)
            self.star_imports.append((origin, node))
            return
        for alias in node.names:
            bound = alias.asname.name if alias.asname is not None else alias.name
            if isinstance(bound, cst.Name):
                self.imported.setdefault(bound.value, set()).add(origin)
                self.binders.setdefault(bound.value, []).append(node)

    def _assigned(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        if (
            isinstance(target, cst.Attribute)
            and self.namespace_writer is None
            and _names_module(target.value)
        ):
            self.namespace_writer = target  # ``sys.modules[__name__].MODEL = ...``
        if isinstance(target, cst.Attribute) and _root_name(target.value) in ("self", "cls"):
            # ``self.model_class = transformers.AutoModel``: remembered under the
            # attribute's name, which ``self.model_class.from_pretrained`` looks up
            self._alias(target.attr.value, value)
            return
        if not isinstance(target, cst.Name):
            return
        self.values[target] = value
        self.binders.setdefault(target.value, []).append(target)
        if isinstance(value, (cst.SimpleString, cst.ConcatenatedString)):
            self.literal_names.add(target.value)
        self._alias(target.value, value)

    def _alias(self, name: str, value: cst.BaseExpression) -> None:
        """Record where ``name = value`` may get a class from: every name the value reads
        (``getattr(transformers, "AutoModel")``, ``{"bert": transformers.BertModel}``,
        ``A if x else B``) and any module it imports by name (``import_module("x")``)."""
        if isinstance(value, (cst.SimpleString, cst.ConcatenatedString)):
            return
        for dynamic in _dynamic_imports_in(value):
            self.imported.setdefault(name, set()).add(dynamic)
        read = _names_read(value) - {name}
        if read:
            self.aliases.setdefault(name, set()).update(read)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._assigned(target.target, node.value)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is not None:  # ``def __init__(self, cls=transformers.AutoModel)``
            self._alias(node.name.value, node.default)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._assigned(node.target, node.value)

    def origins(self, name: str) -> set[str]:
        """Every package ``name`` may be imported from (directly or via aliases)."""
        found: set[str] = set()
        todo, seen = [name], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            found |= self.imported.get(current, set())
            todo.extend(self.aliases.get(current, ()))
        return found


@dataclass
class _Analysis:
    """What the read-only pass over one module found; the transformer only consumes it."""

    replacements: dict[cst.CSTNode, tuple[str, str]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    taskflow_calls: int = 0


@dataclass(frozen=True)
class _Resolved:
    """A name at a call site whose value is known: one assignment, to a string literal."""

    value: str
    literal: cst.SimpleString | cst.ConcatenatedString


class _Collector(_Bindings):
    """Read-only pass: decide which literals to replace and what to report.

    One traversal: the visit records the bindings (:class:`_Bindings`) and the calls acted
    on; the calls are decided in :meth:`finish`, once every import and assignment of the
    module has been seen (a function may use a name imported or assigned further down).

    Only the id argument of a ``from_pretrained`` call that resolves to PaddleNLP is ever
    changed, and only there: a variable holding an installed id is replaced *at the call*
    by the folder's literal, and its definition is left alone, so every other use of the
    variable (``os.path.join``, ``startswith``, ``Taskflow(model=...)``, another module's
    ``from app import MODEL``) still sees the id.
    """

    def __init__(
        self,
        wrapper: MetadataWrapper,
        installed: Mapping[str, str],
        filename: str,
        cell: int | None,
        where: Callable[[int], str] | None = None,
    ) -> None:
        super().__init__()
        self.where = where
        self.wrapper = wrapper
        self.module = wrapper.module
        self.installed = installed
        self.positions: Mapping[cst.CSTNode, CodeRange] = wrapper.resolve(PositionProvider)
        self.bindings: _Bindings = self
        self.calls: list[cst.Call] = []
        self.taskflow_handed_on: list[cst.Call] = []
        self._scopes: Mapping[cst.CSTNode, Scope | None] | None = None
        self.filename = filename
        self.cell = cell
        self.out = _Analysis()

    def _line(self, node: cst.CSTNode) -> int:
        return self.positions[node].start.line

    def _at(self, line: int) -> str:
        """A line named in a message: ``line 3``, or ``cell 2 line 1`` in a notebook."""
        return self.where(line) if self.where is not None else f"line {line}"

    def _finding(self, kind: FindingKind, node: cst.CSTNode, message: str) -> None:
        self.out.findings.append(
            Finding(kind, self._line(node), message, file=self.filename, cell=self.cell)
        )

    def _replace(self, node: cst.BaseExpression, key: str, like: str) -> None:
        if node in self.out.replacements:
            return
        new = self.installed[key]
        self.out.replacements[node] = (new, like)
        self.out.changes.append(
            Change(self._line(node), key, new, file=self.filename, cell=self.cell)
        )

    def visit_Call(self, node: cst.Call) -> bool:
        func = node.func
        if _callee_name(func) in CALLEE_NAMES:
            self.calls.append(node)
        if any(_is_taskflow(arg.value) for arg in node.args):
            self.taskflow_handed_on.append(node)  # ``functools.partial(Taskflow, ...)``
        return super().visit_Call(node)

    def _decide(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "from_pretrained":
            self._from_pretrained(node)
        elif _is_taskflow(func):
            self._taskflow(node)
        elif _callee_name(func) in DOWNLOAD_FUNCTIONS:
            self._download(node)

    # -- which library a call belongs to -------------------------------------------------

    def _foreign_origin(self, receiver: cst.BaseExpression) -> str | None:
        """The other library ``receiver`` (the ``X`` of ``X.from_pretrained``) comes from.

        None when it is PaddleNLP's, local, or unknown: unknown callees (a parameter,
        ``self.model_class``) are PaddleNLP's unless the module says otherwise.
        """
        origins: set[str] = set()
        names: list[str] = []
        node = receiver
        while True:  # ``a.b``, ``a["k"]``, ``a()``, ``import_module("x").A``: down to ``a``
            if isinstance(node, cst.Attribute):
                if isinstance(node.value, cst.Name) and node.value.value in ("self", "cls"):
                    names.append(node.attr.value)  # ``self.model_class``
                node = node.value
            elif isinstance(node, cst.Subscript):
                node = node.value
            elif isinstance(node, cst.Call):
                dynamic = _dynamic_import(node)
                if dynamic is not None:
                    origins.add(dynamic)
                    break
                node = node.func
            else:
                if isinstance(node, cst.Name):
                    names.append(node.value)
                break
        for name in names:
            origins |= self.bindings.origins(name)
        foreign = sorted(origins & FOREIGN_LIBRARIES)
        if foreign:
            return foreign[0]
        for star, statement in self.bindings.star_imports:
            if star not in FOREIGN_LIBRARIES:
                continue
            # the star import may rebind the name unless something binds it after it
            star_line = self._line(statement)
            if not any(
                self._line(binder) > star_line
                for name in names
                for binder in self.bindings.binders.get(name, ())
                if binder in self.positions
            ):
                return f"{star} (through `from {star} import *`)"
        return None

    # -- from_pretrained ----------------------------------------------------------------

    def _from_pretrained(self, call: cst.Call) -> None:
        func = call.func
        assert isinstance(func, cst.Attribute)
        callee = _snippet(self.module, func)
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
        resolved, why = self._id_value(id_node)
        if resolved is None:
            if why is not None:
                self._finding(
                    "computed-id",
                    id_node,
                    f"model id passed to {callee}() is {why}; not rewritten -- use a literal "
                    "id or a variable assigned once to one, or point it at the installed folder",
                )
            return
        text = resolved.value
        foreign = self._foreign_origin(func.value)
        if foreign is not None:
            if self._any_installed(text):
                self._finding(
                    "foreign-call",
                    id_node,
                    f"{callee}({text!r}) loads with {foreign}, not PaddleNLP; not rewritten "
                    "-- the installed folder is in PaddleNLP's format",
                )
            return
        key = self._hub_key(call, text, id_node, callee)
        if key is None:
            return
        if key not in self.installed:
            return
        like = _literal_style(resolved.literal)
        self._replace(id_node, key, like)

    def _any_installed(self, model_id: str) -> bool:
        return any(k in self.installed for k in (model_id, f"hf:{model_id}",
                                                  f"aistudio:{model_id}"))

    def _hub_key(
        self, call: cst.Call, model_id: str, id_node: cst.CSTNode, callee: str
    ) -> str | None:
        """The installed key a load of ``model_id`` by this call reads, or None (reported).

        ``from_hf_hub=True``/``from_aistudio=True`` load from those hubs' caches
        (``hf:<id>``/``aistudio:<id>``); a flag whose value is not a literal, or a
        ``cache_dir=``, makes the folder PaddleNLP reads unknowable here, so it is reported.
        """
        for flag, kind, where in _HUB_FLAGS:
            arg = _keyword(call.args, flag)
            if arg is None:
                continue
            value = arg.value.value if isinstance(arg.value, cst.Name) else None
            if value == "False":
                continue
            key = f"{kind}:{model_id}"
            if value == "True":
                if key in self.installed:
                    return key
                if self._any_installed(model_id):
                    self._finding(
                        "hub-source",
                        id_node,
                        f"{callee}({model_id!r}, {flag}=True) reads {where}, where "
                        f"{model_id!r} is not installed; not rewritten -- install it with "
                        "its hub source or drop the flag",
                    )
                return None
            if self._any_installed(model_id):
                self._finding(
                    "hub-source",
                    id_node,
                    f"{callee}({model_id!r}) decides {flag}= at run time, so which cache it "
                    "reads is unknown here; not rewritten",
                )
            return None
        cache_dir = _keyword(call.args, "cache_dir")
        if cache_dir is not None and self._any_installed(model_id):
            self._finding(
                "hub-source",
                id_node,
                f"{callee}({model_id!r}, cache_dir=...) reads its own cache folder, not the "
                "home's; not rewritten -- drop cache_dir= or point the call at the folder "
                f"yourself ({self.installed.get(model_id, 'see paddle-bundle list')})",
            )
            return None
        return model_id

    # -- what an id argument holds ------------------------------------------------------

    def _id_value(self, node: cst.BaseExpression) -> tuple[_Resolved | None, str | None]:
        """(the literal value of ``node``, None) or (None, why it is not known; None if
        nothing worth saying -- e.g. a literal that is simply not an id)."""
        literal = _static_str(node)
        if literal is not None:
            assert isinstance(node, (cst.SimpleString, cst.ConcatenatedString))
            return _Resolved(literal, node), None
        if _is_bytes(node):
            return None, f"a bytes literal `{_snippet(self.module, node)}` (PaddleNLP wants a str)"
        if isinstance(node, cst.Name):
            return self._resolve_name(node)
        return None, f"{_describe_computed(node)}: `{_snippet(self.module, node)}`"

    def _scopes_of(self) -> Mapping[cst.CSTNode, Scope | None]:
        """Scope analysis, run the first time an id is a variable's name.

        It is the most expensive step of the pass (more than parsing), and most modules
        that call from_pretrained pass it literals, so it runs on demand.
        """
        if self._scopes is None:
            self._scopes = self.wrapper.resolve(ScopeProvider)
        return self._scopes

    def _resolve_name(self, name: cst.Name) -> tuple[_Resolved | None, str | None]:
        """A variable's value at this call when it is assigned exactly once, to a literal.

        Scope analysis decides which binding the name refers to here (locals shadow
        globals); the binding must be the only assignment of that name in its scope
        (``for`` targets, ``global`` statements in functions and imports all count), so
        the value cannot be anything else whenever the name is bound at all.
        """
        label = f"the variable `{name.value}`"
        unsettled = self.bindings.unsettled.get(name.value)
        if unsettled is not None:
            return None, f"{label}, which is {unsettled}"
        if name.value not in self.bindings.literal_names:
            # Never assigned a literal anywhere here, so its value cannot be one: say why
            # without scope analysis, the most expensive step of the pass (parameters like
            # ``pretrained_model_name_or_path`` are most of what library code passes).
            origins = sorted(self.bindings.imported.get(name.value, ()))
            if origins:
                where = "a relative import" if origins == ["."] else f"`{origins[0]}`"
                return None, f"{label}, imported from {where}; its value is not known here"
            return None, f"{label}, which is never assigned a string literal in this module"
        scope = self._scopes_of().get(name)
        if scope is None:
            return None, f"{label}, whose binding is unknown here"
        referents: set[object] = set()
        for access in scope.accesses[name]:
            if access.node is name:
                referents |= set(access.referents)
        if not referents:
            return None, f"{label}, which is not assigned in this module"
        scopes = {r.scope for r in referents if isinstance(r, Assignment)}
        if len(scopes) == 1:
            (scope_of,) = scopes
            bindings = list(scope_of.assignments[name.value])
            if len(bindings) > 1:
                lines = sorted({self._line(b.node) for b in bindings
                                if isinstance(b, Assignment) and b.node in self.positions})
                shown = (f"lines {', '.join(str(n) for n in lines)}" if self.where is None
                         else ", ".join(self._at(n) for n in lines))
                return None, f"{label}, which is assigned {len(bindings)} times ({shown})"
        if len(referents) > 1:
            return None, f"{label}, which may hold one of several values here"
        (only,) = referents
        if not isinstance(only, Assignment):
            return None, f"{label}, which is not assigned in this module"
        if isinstance(only.scope, GlobalScope) and self.bindings.star_imports:
            origin, statement = self.bindings.star_imports[0]
            return None, (f"{label}, which `from {origin} import *` "
                          f"({self._at(self._line(statement))}) may rebind")
        writer = self.bindings.namespace_writer
        if isinstance(only.scope, (GlobalScope, ClassScope)) and writer is not None:
            return None, (f"{label}, which `{_snippet(self.module, writer, 40)}` "
                          f"({self._at(self._line(writer))}) may rebind at run time")
        if isinstance(only, ImportAssignment):
            source = _snippet(self.module, only.node)
            return None, (f"{label}, imported (`{source}`); its value is not known in this "
                          "file")
        value = self.bindings.values.get(only.node)
        if isinstance(only.node, cst.Param):
            return None, f"{label}, a function parameter"
        if value is None:
            return None, f"{label}, bound by `{_snippet(self.module, only.node)}` at run time"
        literal = _static_str(value)
        if literal is None:
            if _is_bytes(value):
                return None, (f"{label}, which holds a bytes literal "
                              f"`{_snippet(self.module, value)}` (PaddleNLP wants a str)")
            return None, (f"{label}, which is {_describe_computed(value)} "
                          f"({self._at(self._line(value))})")
        assert isinstance(value, (cst.SimpleString, cst.ConcatenatedString))
        return _Resolved(literal, value), None

    # -- Taskflow and hub downloads -----------------------------------------------------

    def _taskflow(self, call: cst.Call) -> None:
        self.out.taskflow_calls += 1
        positional = _positional(call.args)
        task_arg = positional[0] if positional else _keyword(call.args, "task")
        model_arg = _keyword(call.args, "model")
        parts = []
        for label, arg in (("task", task_arg), ("model", model_arg)):
            if arg is None:
                continue
            value = _static_str(arg.value)
            parts.append(f"{label}={value!r}" if value is not None else f"{label}=<computed>")
        shown = f"{_snippet(self.module, call.func)}({', '.join(parts)})"
        self._finding(
            "taskflow",
            call,
            f"{shown} picks its model by name and cannot take a folder; "
            f"it needs offline mode (`{OFFLINE_IMPORT_LINE.split('  #')[0]}`, or "
            "rewrite --add-offline-import)",
        )

    def _download(self, call: cst.Call) -> None:
        callee = _snippet(self.module, call.func)
        positional = _positional(call.args)
        arg = positional[0] if positional else _keyword(call.args, "repo_id")
        if arg is None:
            return
        resolved, _ = self._id_value(arg.value)
        model_id = resolved.value if resolved is not None else None
        folder = None
        if model_id is not None:
            for key in (model_id, f"hf:{model_id}", f"aistudio:{model_id}"):
                folder = folder or self.installed.get(key)
        shown = repr(model_id) if model_id is not None else "a computed id"
        where = f"; it is installed at {folder}" if folder else ""
        self._finding(
            "download",
            call,
            f"{callee}({shown}) downloads at run time and fails offline; not rewritten"
            f"{where}",
        )

    def finish(self) -> _Analysis:
        for call in self.calls:
            self._decide(call)
        for call in self.taskflow_handed_on:
            self.out.taskflow_calls += 1
            self._finding(
                "taskflow",
                call,
                f"`{_snippet(self.module, call)}` hands Taskflow on to be called elsewhere; "
                "it picks its model by name and cannot take a folder; it needs offline mode "
                f"(`{OFFLINE_IMPORT_LINE.split('  #')[0]}`, or rewrite --add-offline-import)",
            )
        self.out.findings.sort(key=lambda f: f.line)
        self.out.changes.sort(key=lambda c: c.line)
        return self.out


def _callee_name(func: cst.BaseExpression) -> str | None:
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def _is_bytes(node: cst.BaseExpression) -> bool:
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        return isinstance(node.evaluated_value, bytes)
    return False


def _literal_style(node: cst.SimpleString | cst.ConcatenatedString) -> str:
    """The source of the literal whose quote style a replacement copies."""
    if isinstance(node, cst.SimpleString):
        return node.value
    first = _leftmost_string(node)
    return first.value if first is not None else '""'


class _Replacer(cst.CSTTransformer):
    """Swap the chosen id arguments for path literals in the same quote style.

    An argument is a string literal or a variable's name; either way only that one
    argument expression changes (parentheses around it are kept).
    """

    def __init__(
        self, replacements: Mapping[cst.CSTNode, tuple[str, str]], ascii_only: bool
    ) -> None:
        super().__init__()
        self.replacements = replacements
        self.ascii_only = ascii_only

    def _swap(
        self, original_node: cst.BaseExpression, updated_node: cst.BaseExpression
    ) -> cst.BaseExpression:
        found = self.replacements.get(original_node)
        if found is None:
            return updated_node
        new, like = found
        literal = render_string_literal(new, like, ascii_only=self.ascii_only)
        return cst.SimpleString(literal, lpar=updated_node.lpar, rpar=updated_node.rpar)

    def leave_SimpleString(
        self, original_node: cst.SimpleString, updated_node: cst.SimpleString
    ) -> cst.BaseExpression:
        return self._swap(original_node, updated_node)

    def leave_ConcatenatedString(
        self, original_node: cst.ConcatenatedString, updated_node: cst.ConcatenatedString
    ) -> cst.BaseExpression:
        return self._swap(original_node, updated_node)

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self._swap(original_node, updated_node)


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
CALLEE_NAMES = ("from_pretrained", "Taskflow", *sorted(DOWNLOAD_FUNCTIONS))


def _is_acted_on(call: ast.Call) -> bool:
    """``ast`` twin of the tests in :meth:`_Collector.visit_Call` (names NFKC-normalised)."""
    func = call.func
    if any(_ast_is_taskflow(value) for value in
           (*call.args, *(keyword.value for keyword in call.keywords))):
        return True  # ``functools.partial(Taskflow, ...)``
    if isinstance(func, ast.Attribute):
        return func.attr in CALLEE_NAMES
    return isinstance(func, ast.Name) and (func.id == "Taskflow" or func.id in DOWNLOAD_FUNCTIONS)


def _ast_is_taskflow(node: ast.expr) -> bool:
    """``ast`` twin of :func:`_is_taskflow` (``*Taskflow`` unwrapped as libcst's Arg does)."""
    if isinstance(node, ast.Starred):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id == "Taskflow"
    return isinstance(node, ast.Attribute) and node.attr == "Taskflow"


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
    if not any(name in source for name in CALLEE_NAMES):
        return False
    return any(isinstance(node, ast.Call) and _is_acted_on(node) for node in ast.walk(tree))


def _respelled_name(source: str) -> tuple[int, str, str] | None:
    """(line, name as written, name as Python reads it) for the first identifier that is
    not in NFKC form, or ``None``.

    Python reads ``ＭODEL`` as ``MODEL`` (PEP 3131); libcst keeps names as written, so its
    scopes and imports would see two names where Python sees one -- a second assignment or
    a ``from transformers import AutoModel as Ａ`` it cannot connect.
    """
    if source.isascii():
        return None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and not token.string.isascii():
                read = unicodedata.normalize("NFKC", token.string)
                if read != token.string:
                    return token.start[0], token.string, read
    except (tokenize.TokenError, SyntaxError):
        return None  # libcst parsed it; nothing here says a name is respelled
    return None


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
    where: Callable[[int], str] | None = None,
) -> RewriteResult:
    """Core of :func:`rewrite_source`, plus the knobs notebooks and odd encodings need.

    ``prefilter=False`` runs the full pass even where :func:`may_act` says it would find
    nothing: the reference the filter is tested and benchmarked against.  ``where`` names a
    line of ``source`` in messages (a notebook's joined cells: ``cell 2 line 1``).
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

    try:
        result = _transform(module, source, installed, add_offline_import=add_offline_import,
                            filename=filename, cell=cell, ascii_only=ascii_only, where=where)
        respelled = _respelled_name(source) if result.changes or result.findings else None
        if respelled is not None:  # the same pass, changing no id
            result = _transform(module, source, {}, add_offline_import=add_offline_import,
                                filename=filename, cell=cell, ascii_only=ascii_only,
                                where=where)
    except RecursionError:
        # libcst's visitors recurse once per nesting level (a sum of a few hundred terms
        # is enough); CPython's parser accepted the file, so say what happened and go on.
        finding = Finding("parse-error", 1, "cannot rewrite, skipped: nested too deeply "
                          "for the rewriter (RecursionError)", file=filename, cell=cell)
        return RewriteResult(source, (), (finding,))
    if respelled is not None:
        line, written, read = respelled
        note = Finding("computed-id", line, f"the name `{written}` is read by Python as "
                       f"`{read}` (NFKC), which the rewriter cannot follow; nothing in this "
                       "module is rewritten -- spell names as Python reads them",
                       file=filename, cell=cell)
        return dataclasses.replace(result, findings=(*result.findings, note))
    return result


def _transform(
    module: cst.Module,
    source: str,
    installed: Mapping[str, str],
    *,
    add_offline_import: bool,
    filename: str,
    cell: int | None,
    ascii_only: bool,
    where: Callable[[int], str] | None,
) -> RewriteResult:
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)  # parsed just now, ours
    collector = _Collector(wrapper, installed, filename, cell, where)
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
    if source.endswith("\r") and not new_source.endswith("\r"):
        new_source += "\r"  # libcst drops a CR-only file's last line break
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
    variable assigned once to a literal id is replaced at the call (never where it is
    defined); calls whose class comes from another library are reported.  With
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
