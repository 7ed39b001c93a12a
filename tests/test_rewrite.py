"""Tests for :mod:`bundler.rewrite` (``paddle-bundle rewrite``).

Sources are written to real files in ``tmp_path`` where the file layer matters; the pure
``str -> str`` functions are exercised directly and with hypothesis.  Nothing here needs
Paddle: the end-to-end test runs the rewritten script against a tiny fake module.
"""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.rewrite import (
    OFFLINE_IMPORT_LINE,
    Change,
    FileChangedError,
    FileRewrite,
    Finding,
    apply,
    iter_sources,
    plan_rewrites,
    render_string_literal,
    rewrite_notebook,
    rewrite_source,
    unified_diff,
)

CODEGEN = "Salesforce/codegen-350M-mono"
ERNIE = "ernie-3.0-medium-zh"
CODEGEN_DIR = "/srv/models/Salesforce/codegen-350M-mono"
ERNIE_DIR = "/srv/models/ernie-3.0-medium-zh"
INSTALLED = {CODEGEN: CODEGEN_DIR, ERNIE: ERNIE_DIR}


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def rewrite(text: str, **kwargs: object) -> str:
    return rewrite_source(src(text), INSTALLED, **kwargs).new_source  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# What gets rewritten
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            f'm = AutoModel.from_pretrained("{CODEGEN}")',
            f'm = AutoModel.from_pretrained("{CODEGEN_DIR}")',
            id="positional-double-quotes",
        ),
        pytest.param(
            f"t = CodeGenTokenizer.from_pretrained('{CODEGEN}')",
            f"t = CodeGenTokenizer.from_pretrained('{CODEGEN_DIR}')",
            id="positional-single-quotes",
        ),
        pytest.param(
            f'm = x.y.Z.from_pretrained(pretrained_model_name_or_path="{ERNIE}", dtype="f16")',
            f'm = x.y.Z.from_pretrained(pretrained_model_name_or_path="{ERNIE_DIR}", dtype="f16")',
            id="keyword-dotted-class",
        ),
        pytest.param(
            f'm = AutoModel.from_pretrained(r"{ERNIE}")',
            f'm = AutoModel.from_pretrained(r"{ERNIE_DIR}")',
            id="raw-prefix-kept",
        ),
        pytest.param(
            f'm = AutoModel.from_pretrained("""{ERNIE}""")',
            f'm = AutoModel.from_pretrained("""{ERNIE_DIR}""")',
            id="triple-quotes-kept",
        ),
        pytest.param(
            f"m = AutoModel.from_pretrained(('{ERNIE}'), from_hf_hub=False)",
            f"m = AutoModel.from_pretrained(('{ERNIE_DIR}'), from_hf_hub=False)",
            id="parenthesised",
        ),
        pytest.param(
            'm = AutoModel.from_pretrained("Salesforce/" "codegen-350M-mono")',
            f'm = AutoModel.from_pretrained("{CODEGEN_DIR}")',
            id="implicit-concatenation-is-a-literal",
        ),
        pytest.param(
            f'm = AutoModel.from_pretrained(  "{ERNIE}" ,  # keep me\n    dtype="float16")',
            f'm = AutoModel.from_pretrained(  "{ERNIE_DIR}" ,  # keep me\n    dtype="float16")',
            id="formatting-and-comment-kept",
        ),
        pytest.param(
            f'def load():\n    return get().from_pretrained("{ERNIE}")',
            f'def load():\n    return get().from_pretrained("{ERNIE_DIR}")',
            id="any-receiver-in-function",
        ),
    ],
)
def test_literal_ids_become_installed_paths(before: str, after: str) -> None:
    result = rewrite_source(before + "\n", INSTALLED, filename="s.py")
    assert result.new_source == after + "\n"
    assert len(result.changes) == 1
    change = result.changes[0]
    assert change.new_path in (CODEGEN_DIR, ERNIE_DIR)
    assert change.line == 1 or change.line == 2
    assert change.location == f"s.py:{change.line}"
    assert result.findings == ()


def test_change_records_line_old_id_and_path() -> None:
    source = src(
        f"""
        import paddlenlp

        m = AutoModel.from_pretrained("{ERNIE}")
        """
    )
    result = rewrite_source(source, INSTALLED, filename="train.py")
    assert result.changes == (Change(3, ERNIE, ERNIE_DIR, file="train.py"),)


@pytest.mark.parametrize(
    "assignment",
    [
        pytest.param(f'MODEL = "{CODEGEN}"', id="plain"),
        pytest.param(f'MODEL: str = "{CODEGEN}"', id="annotated"),
        pytest.param('MODEL = "Salesforce/" "codegen-350M-mono"', id="implicit-concat"),
    ],
)
def test_module_constant_is_left_and_its_call_sites_get_the_folder(assignment: str) -> None:
    """The constant's value never changes (other code may use it); each call does."""
    source = src(
        f"""
        {assignment}
        tokenizer = CodeGenTokenizer.from_pretrained(MODEL)

        def load():
            return AutoModel.from_pretrained(pretrained_model_name_or_path=MODEL)
        """
    )
    result = rewrite_source(source, INSTALLED)
    lines = result.new_source.splitlines()
    assert lines[0] == source.splitlines()[0]  # the constant itself is untouched
    assert lines[1] == f'tokenizer = CodeGenTokenizer.from_pretrained("{CODEGEN_DIR}")'
    assert lines[4] == (
        f'    return AutoModel.from_pretrained(pretrained_model_name_or_path="{CODEGEN_DIR}")'
    )
    assert result.changes == (Change(2, CODEGEN, CODEGEN_DIR), Change(5, CODEGEN, CODEGEN_DIR))
    assert result.findings == ()


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            f'if True:\n    MODEL = "{CODEGEN}"\nm = A.from_pretrained(MODEL)\n',
            id="not-at-module-top-level",
        ),
        pytest.param(
            f'if __name__ == "__main__":\n    MODEL = "{CODEGEN}"\n'
            "    m = A.from_pretrained(MODEL)\n",
            id="under-main-guard",
        ),
        pytest.param(
            f'class C:\n    MODEL = "{CODEGEN}"\n    m = A.from_pretrained(MODEL)\n',
            id="class-attribute",
        ),
        pytest.param(
            f'def f():\n    name = "{CODEGEN}"\n    return A.from_pretrained(name)\n',
            id="local-variable",
        ),
    ],
)
def test_variables_assigned_once_anywhere_are_resolved_at_the_call(source: str) -> None:
    result = rewrite_source(source, INSTALLED)
    assert result.new_source.count(f'"{CODEGEN}"') == 1  # the assignment keeps the id
    assert result.new_source.count(f'from_pretrained("{CODEGEN_DIR}")') == 1
    assert len(result.changes) == 1 and result.findings == ()


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            f'MODEL = "{CODEGEN}"\nMODEL = "{ERNIE}"\nm = A.from_pretrained(MODEL)\n',
            id="assigned-twice",
        ),
        pytest.param(
            f'MODEL = "{CODEGEN}"\ndef f():\n    global MODEL\n    MODEL = "x"\n'
            "m = A.from_pretrained(MODEL)\n",
            id="rebound-via-global",
        ),
        pytest.param(
            f'MODEL = "{CODEGEN}"\nfor MODEL in []:\n    pass\nm = A.from_pretrained(MODEL)\n',
            id="rebound-by-for",
        ),
        pytest.param(
            f'MODEL = "{CODEGEN}"\ndef f(MODEL):\n    return A.from_pretrained(MODEL)\n',
            id="shadowed-by-parameter",
        ),
        pytest.param(
            "from config import MODEL\nm = A.from_pretrained(MODEL)\n",
            id="imported-name",
        ),
        pytest.param(
            f'MODEL = "{CODEGEN}"\ndel MODEL\nm = A.from_pretrained(MODEL)\n',
            id="deleted",
        ),
        pytest.param(
            f'MODEL = "{CODEGEN}"\nmatch x:\n    case MODEL:\n        pass\n'
            "m = A.from_pretrained(MODEL)\n",
            id="rebound-by-match",
        ),
        pytest.param(
            f'MODEL = b"{CODEGEN}"\nm = A.from_pretrained(MODEL)\n',
            id="bytes-constant",
        ),
    ],
)
def test_names_that_are_not_safe_constants_are_reported(source: str) -> None:
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source
    assert result.changes == ()
    assert [f.kind for f in result.findings] == ["computed-id"]
    assert "MODEL" in result.findings[0].message


# --------------------------------------------------------------------------------------
# What is left alone
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "mentions"),
    [
        pytest.param(
            'prefix = "Salesforce"\nm = A.from_pretrained(f"{prefix}/codegen-350M-mono")\n',
            2,
            "f-string",
            id="f-string",
        ),
        pytest.param(
            'org = "Salesforce/"\nm = A.from_pretrained(org + "codegen-350M-mono")\n',
            2,
            "concatenation",
            id="concatenation",
        ),
        pytest.param(
            'm = A.from_pretrained("Salesforce/{}".format(name))\n',
            1,
            "call",
            id="format-call",
        ),
        pytest.param(
            "def load(name):\n    return A.from_pretrained(name)\n",
            2,
            "`name`",
            id="function-argument",
        ),
        pytest.param(
            "m = A.from_pretrained(\n    args.model_name_or_path)\n",
            2,
            "args.model_name_or_path",
            id="attribute",
        ),
        pytest.param(
            "m = A.from_pretrained(pretrained_model_name_or_path=cfg['model'])\n",
            1,
            "cfg['model']",
            id="keyword-subscript",
        ),
        pytest.param("m = A.from_pretrained(*args)\n", 1, "*/**", id="star-args"),
        pytest.param("m = A.from_pretrained(**kwargs)\n", 1, "*/**", id="double-star-kwargs"),
    ],
)
def test_computed_ids_are_reported_not_changed(source: str, line: int, mentions: str) -> None:
    result = rewrite_source(source, INSTALLED, filename="job.py")
    assert result.new_source == source
    assert result.changes == ()
    (finding,) = result.findings
    assert finding.kind == "computed-id"
    assert finding.line == line
    assert finding.location == f"job.py:{line}"
    assert mentions in finding.message


def test_comments_docstrings_and_unrelated_strings_are_untouched() -> None:
    source = src(
        f'''
        """Fine-tune "{CODEGEN}" on our data."""
        # Download "{CODEGEN}" first: AutoModel.from_pretrained("{CODEGEN}")

        NAME_FOR_LOGS = "{ERNIE}"  # never fed to from_pretrained


        def main():
            """Loads '{CODEGEN}'."""
            print("{CODEGEN}")
            registry = {{"{CODEGEN}": 1}}
            save(name="{CODEGEN}")
            m = AutoModel.from_pretrained("{CODEGEN}", revision="{CODEGEN}")
            return NAME_FOR_LOGS, registry, m
        '''
    )
    result = rewrite_source(source, INSTALLED)
    expected = source.replace(
        f'from_pretrained("{CODEGEN}", rev', f'from_pretrained("{CODEGEN_DIR}", rev'
    )
    assert result.new_source == expected
    assert len(result.changes) == 1
    assert result.new_source.count(CODEGEN_DIR) == 1


def test_ids_that_are_not_installed_are_left_alone_silently() -> None:
    source = src(
        """
        MODEL = "PaddlePaddle/not-installed"
        a = AutoModel.from_pretrained(MODEL)
        b = AutoModel.from_pretrained("ernie-1.0")
        c = AutoModel.from_pretrained("./checkpoints/best")
        """
    )
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source
    assert result.changes == () and result.findings == ()


def test_nothing_to_do_returns_the_source_object_unchanged() -> None:
    source = "x = 1\n"
    assert rewrite_source(source, INSTALLED).new_source is source


# --------------------------------------------------------------------------------------
# Taskflow and the offline import
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        pytest.param('Taskflow("ner")', "Taskflow(task='ner')", id="bare"),
        pytest.param(
            f'paddlenlp.Taskflow(task="text_generation", model="{CODEGEN}")',
            f"paddlenlp.Taskflow(task='text_generation', model='{CODEGEN}')",
            id="module-attribute-keywords",
        ),
        pytest.param(
            "Taskflow(kind, model=pick())",
            "Taskflow(task=<computed>, model=<computed>)",
            id="computed-task-and-model",
        ),
    ],
)
def test_taskflow_calls_are_reported(call: str, shown: str) -> None:
    source = f"import paddlenlp\n\nflow = {call}\n"
    result = rewrite_source(source, INSTALLED, filename="app.py")
    assert result.new_source == source  # reporting only; no import unless asked
    (finding,) = result.findings
    assert finding.kind == "taskflow"
    assert finding.location == "app.py:3"
    assert finding.message.startswith(shown)
    assert "import bundler.offline" in finding.message


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            "import paddlenlp\nflow = paddlenlp.Taskflow('ner')\n",
            f"{OFFLINE_IMPORT_LINE}\nimport paddlenlp\nflow = paddlenlp.Taskflow('ner')\n",
            id="top-of-module",
        ),
        pytest.param(
            '"""Doc."""\n\nimport paddlenlp\nflow = paddlenlp.Taskflow("ner")\n',
            f'"""Doc."""\n\n{OFFLINE_IMPORT_LINE}\nimport paddlenlp\n'
            'flow = paddlenlp.Taskflow("ner")\n',
            id="after-docstring",
        ),
        pytest.param(
            '"""Doc."""\nfrom __future__ import annotations\nfrom __future__ import division\n\n'
            "from paddlenlp import Taskflow\nflow = Taskflow('ner')\n",
            '"""Doc."""\nfrom __future__ import annotations\nfrom __future__ import division\n\n'
            f"{OFFLINE_IMPORT_LINE}\nfrom paddlenlp import Taskflow\nflow = Taskflow('ner')\n",
            id="after-docstring-and-future-imports",
        ),
        pytest.param(
            "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\nfrom paddlenlp import Taskflow\n"
            "Taskflow('ner')\n",
            "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n"
            f"{OFFLINE_IMPORT_LINE}\nfrom paddlenlp import Taskflow\nTaskflow('ner')\n",
            id="after-shebang-and-coding-line",
        ),
        pytest.param(
            '"""Doc."""\n\n# set up the pipeline\nflow = Taskflow("ner")\n',
            f'"""Doc."""\n\n{OFFLINE_IMPORT_LINE}\n# set up the pipeline\nflow = Taskflow("ner")\n',
            id="comment-stays-with-its-statement",
        ),
        pytest.param(
            "x = 1\r\nflow = Taskflow('ner')\r\n",
            f"{OFFLINE_IMPORT_LINE}\r\nx = 1\r\nflow = Taskflow('ner')\r\n",
            id="crlf-newlines",
        ),
    ],
)
def test_offline_import_is_added_once_after_docstring_and_future(before: str, after: str) -> None:
    result = rewrite_source(before, INSTALLED, add_offline_import=True)
    assert result.new_source == after
    assert result.offline_import_added
    again = rewrite_source(result.new_source, INSTALLED, add_offline_import=True)
    assert again.new_source == after
    assert not again.offline_import_added
    assert after.count("import bundler.offline") == 1


@pytest.mark.parametrize(
    ("source", "requested"),
    [
        pytest.param(
            "import paddlenlp\nx = paddlenlp.Taskflow('ner')\n", False, id="not-requested"
        ),
        pytest.param("import paddlenlp\nm = A.from_pretrained('x')\n", True, id="no-taskflow"),
        pytest.param(
            "from bundler import offline\nx = Taskflow('ner')\n", True, id="already-imported-from"
        ),
        pytest.param("import bundler.offline\nx = Taskflow('ner')\n", True, id="already-imported"),
    ],
)
def test_offline_import_not_added(source: str, requested: bool) -> None:
    result = rewrite_source(source, INSTALLED, add_offline_import=requested)
    assert result.new_source == source
    assert not result.offline_import_added


def test_constant_shared_with_taskflow_is_left_as_an_id() -> None:
    source = src(
        f"""
        MODEL = "{CODEGEN}"
        tokenizer = AutoTokenizer.from_pretrained(MODEL)
        flow = Taskflow("text_generation", model=MODEL)
        """
    )
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source.replace(
        "from_pretrained(MODEL)", f'from_pretrained("{CODEGEN_DIR}")'
    )
    assert [f.kind for f in result.findings] == ["taskflow"]


# --------------------------------------------------------------------------------------
# Quoting
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "like", "expected"),
    [
        pytest.param("/a/b", '"x"', '"/a/b"', id="double"),
        pytest.param("/a/b", "'x'", "'/a/b'", id="single"),
        pytest.param("/o'neil/m", "'x'", "'/o\\'neil/m'", id="single-quote-escaped"),
        pytest.param('/say "hi"/m', '"x"', '"/say \\"hi\\"/m"', id="double-quote-escaped"),
        pytest.param("C:\\models\\ernie", '"x"', '"C:\\\\models\\\\ernie"', id="backslashes"),
        pytest.param("C:\\models\\ernie", 'r"x"', 'r"C:\\models\\ernie"', id="raw-kept"),
        pytest.param("C:\\models\\", 'r"x"', '"C:\\\\models\\\\"', id="raw-dropped-trailing-bs"),
        pytest.param('C:\\a "b"', 'R"x"', '"C:\\\\a \\"b\\""', id="raw-dropped-quote"),
        pytest.param("/a\tb", "r'x'", "'/a\\tb'", id="raw-dropped-unprintable"),
        pytest.param("/模型/x", '"x"', '"/模型/x"', id="unicode-kept"),
        pytest.param("/a/b", 'u"x"', 'u"/a/b"', id="u-prefix"),
        pytest.param("/a/b", '"""x"""', '"""/a/b"""', id="triple"),
        pytest.param("/a/b", "b'x'", "'/a/b'", id="bytes-prefix-dropped"),
    ],
)
def test_render_string_literal(value: str, like: str, expected: str) -> None:
    literal = render_string_literal(value, like)
    assert literal == expected
    assert ast.literal_eval(literal) == value


def test_render_ascii_only_escapes_non_ascii() -> None:
    literal = render_string_literal("/模型", 'r"x"', ascii_only=True)
    assert literal.isascii()
    assert ast.literal_eval(literal) == "/模型"


_LIKES = [
    f"{prefix}{quote}x{quote}"
    for prefix in ("", "r", "R", "u", "U")
    for quote in ('"', "'", '"""', "'''")
]


@given(value=st.text(), like=st.sampled_from(_LIKES), ascii_only=st.booleans())
def test_render_string_literal_round_trips(value: str, like: str, ascii_only: bool) -> None:
    literal = render_string_literal(value, like, ascii_only=ascii_only)
    assert ast.literal_eval(literal) == value
    body = like.lstrip("rRuU")
    quote = body[: body.index("x")]  # the style asked for is kept, whatever the value
    assert literal.endswith(quote) and literal.lstrip("rRuU").startswith(quote)
    if ascii_only:
        assert literal.isascii()


# --------------------------------------------------------------------------------------
# Idempotence (property test over generated small modules)
# --------------------------------------------------------------------------------------

TRICKY = "Tricky/path-model"
TRICKY_DIR = 'C:\\Users\\o\'neil "x"\\模型\\tricky'
PROPERTY_INSTALLED = {**INSTALLED, TRICKY: TRICKY_DIR}
_IDS = [CODEGEN, ERNIE, TRICKY, "not/installed", "Salesforce/codegen-350M-mono-extra"]


@st.composite
def literals(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "r", "u", "R"]))
    quote = draw(st.sampled_from(['"', "'", '"""', "'''"]))
    return f"{prefix}{quote}{draw(st.sampled_from(_IDS))}{quote}"


@st.composite
def statements(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 2))
    lit = draw(literals())
    model = draw(st.sampled_from(_IDS))
    return draw(
        st.sampled_from(
            [
                f"m = AutoModel.from_pretrained({lit})",
                f"m = a.b.C.from_pretrained(pretrained_model_name_or_path={lit}, dtype='f')",
                f"MODEL_{n} = {lit}",
                f"m = Tok.from_pretrained(MODEL_{n})",
                f"print({lit})  # {lit}",
                f"t = Taskflow('text_generation', model={lit})",
                f"t = paddlenlp.Taskflow(task={lit})",
                "def f(name):\n    return AutoModel.from_pretrained(name)",
                "m = AutoModel.from_pretrained(f'{org}/x')",
                f"def g():\n    '''Load {model}.'''\n    return A.from_pretrained({lit})",
            ]
        )
    )


@st.composite
def modules(draw: st.DrawFn) -> str:
    header = draw(
        st.sampled_from(["", '"""Doc."""\n', '"""Doc."""\nfrom __future__ import annotations\n'])
    )
    body = draw(st.lists(statements(), max_size=8))
    return header + "".join(line + "\n" for line in body)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(source=modules(), add_import=st.booleans())
def test_rewrite_is_idempotent_and_keeps_other_lines(source: str, add_import: bool) -> None:
    first = rewrite_source(source, PROPERTY_INSTALLED, add_offline_import=add_import)
    second = rewrite_source(first.new_source, PROPERTY_INSTALLED, add_offline_import=add_import)
    assert second.new_source == first.new_source
    assert second.changes == ()
    assert not second.offline_import_added

    tree = ast.parse(first.new_source)  # still valid Python
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "from_pretrained"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            assert node.args[0].value not in PROPERTY_INSTALLED
        if isinstance(node, ast.Constant) and node.value in PROPERTY_INSTALLED.values():
            assert node.value  # paths survive quoting exactly (checked by literal equality)

    new_lines = [line for line in first.new_source.splitlines() if line != OFFLINE_IMPORT_LINE]
    old_lines = source.splitlines()
    assert len(new_lines) == len(old_lines)
    for old, new in zip(old_lines, new_lines):
        if old != new:
            assert "from_pretrained" in old or old.startswith("MODEL_")
    assert first.offline_import_added == (add_import and "Taskflow(" in source)


# --------------------------------------------------------------------------------------
# Parse errors
# --------------------------------------------------------------------------------------


def test_unparsable_source_is_reported_and_skipped() -> None:
    source = f'print "py2"\nm = A.from_pretrained("{CODEGEN}")\n'
    result = rewrite_source(source, INSTALLED, filename="old.py")
    assert result.new_source == source
    (finding,) = result.findings
    assert finding.kind == "parse-error"
    assert finding.line == 1
    assert finding.file == "old.py"
    assert "Missing parentheses" in finding.message


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------


def _notebook(cells: list[dict[str, object]], **metadata: object) -> dict[str, object]:
    return {
        "cells": cells,
        "metadata": metadata or {"kernelspec": {"language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _code(*lines: str, outputs: list[object] | None = None) -> dict[str, object]:
    return {
        "cell_type": "code",
        "execution_count": 1,
        "id": "c0ffee",
        "metadata": {},
        "outputs": outputs or [],
        "source": list(lines),
    }


def _markdown(*lines: str) -> dict[str, object]:
    return {"cell_type": "markdown", "id": "feed", "metadata": {}, "source": list(lines)}


def _dump(notebook: dict[str, object]) -> str:
    """The layout ``nbformat.write`` produces."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_notebook_code_cells_rewritten_everything_else_byte_stable() -> None:
    stream = {"name": "stdout", "output_type": "stream", "text": [f"{CODEGEN}\n"]}
    notebook = _notebook(
        [
            _markdown("# 微调 ", f'`AutoModel.from_pretrained("{CODEGEN}")`\n'),
            _code("!pip install paddlenlp\n", "%matplotlib inline\n", f'MODEL = "{CODEGEN}"'),
            _code(
                "from paddlenlp.transformers import AutoModel\n",
                "model = AutoModel.from_pretrained(MODEL)\n",
                f"tok = Tok.from_pretrained('{ERNIE}')  # {ERNIE}\n",
                f'print("{CODEGEN}")',
                outputs=[stream],
            ),
        ]
    )
    text = _dump(notebook)
    result = rewrite_notebook(text, INSTALLED, filename="demo.ipynb")

    expected = text.replace(
        "from_pretrained(MODEL)", f'from_pretrained(\\"{CODEGEN_DIR}\\")'
    ).replace(f"from_pretrained('{ERNIE}')", f"from_pretrained('{ERNIE_DIR}')")
    assert result.new_source == expected  # only those two JSON strings changed
    assert [(c.cell, c.line, c.old_id) for c in result.changes] == [(3, 2, CODEGEN), (3, 3, ERNIE)]
    assert result.changes[0].location == "demo.ipynb[cell 3]:2"

    new = json.loads(result.new_source)
    assert new["cells"][0] == notebook["cells"][0]  # type: ignore[index]
    assert new["cells"][1]["source"][:2] == ["!pip install paddlenlp\n", "%matplotlib inline\n"]
    assert new["cells"][2]["outputs"] == [stream]
    assert rewrite_notebook(result.new_source, INSTALLED).new_source == result.new_source


def test_notebook_non_canonical_layout_is_preserved() -> None:
    text = (
        '{"nbformat": 4, "nbformat_minor": 2, "metadata": {},\n'
        '  "cells": [ {"source": ["m = A.from_pretrained(\\"' + ERNIE + '\\")\\n", "x = 1"],\n'
        '              "cell_type": "code", "outputs": [], "metadata": {}, "execution_count": null}'
        "]}"
    )
    result = rewrite_notebook(text, INSTALLED)
    assert result.new_source == text.replace(ERNIE, ERNIE_DIR)


def test_notebook_string_source_stays_a_string() -> None:
    cell = _code()
    cell["source"] = f"m = A.from_pretrained('{ERNIE}')\nprint(m)\n"
    result = rewrite_notebook(_dump(_notebook([cell])), INSTALLED)
    assert json.loads(result.new_source)["cells"][0]["source"] == (
        f"m = A.from_pretrained('{ERNIE_DIR}')\nprint(m)\n"
    )


def test_notebook_offline_import_goes_into_first_code_cell_once() -> None:
    notebook = _notebook(
        [
            _markdown("Intro\n"),
            _code("!pip install paddlenlp\n", "import paddlenlp"),
            _code("flow = paddlenlp.Taskflow('ner')"),
        ]
    )
    text = _dump(notebook)
    result = rewrite_notebook(text, INSTALLED, add_offline_import=True, filename="t.ipynb")
    assert result.offline_import_added
    cells = json.loads(result.new_source)["cells"]
    assert cells[1]["source"] == [
        OFFLINE_IMPORT_LINE + "\n",
        "!pip install paddlenlp\n",
        "import paddlenlp",
    ]
    assert cells[2] == notebook["cells"][2]  # type: ignore[index]
    assert [(f.kind, f.location) for f in result.findings] == [("taskflow", "t.ipynb[cell 3]:1")]
    again = rewrite_notebook(result.new_source, INSTALLED, add_offline_import=True)
    assert again.new_source == result.new_source
    assert not again.offline_import_added


def test_notebook_bad_cell_reported_other_cells_rewritten() -> None:
    notebook = _notebook(
        [
            _code("def broken(:\n"),
            _code("%%bash\n", "echo AutoModel.from_pretrained\n"),
            _code(f"m = A.from_pretrained('{ERNIE}')"),
        ]
    )
    result = rewrite_notebook(_dump(notebook), INSTALLED, filename="nb.ipynb")
    assert [(f.kind, f.cell) for f in result.findings] == [("parse-error", 1)]
    assert [c.cell for c in result.changes] == [3]
    cells = json.loads(result.new_source)["cells"]
    assert cells[1]["source"] == ["%%bash\n", "echo AutoModel.from_pretrained\n"]


@pytest.mark.parametrize(
    ("lines", "rewritten"),
    [
        pytest.param(
            [
                "!pip install paddlenlp\n",
                "if True:\n",
                "    %time x = 1\n",
                f"m = A.from_pretrained('{ERNIE}')",
            ],
            True,
            id="shell-escape-masked",
        ),
        pytest.param(
            ["%%time\n", f"m = A.from_pretrained('{ERNIE}')"], True, id="python-cell-magic"
        ),
        pytest.param(
            ["%%writefile train.py\n", f"m = A.from_pretrained('{ERNIE}')"],
            True,
            id="writefile-py",
        ),
        pytest.param(
            ["%%writefile notes.txt\n", f"m = A.from_pretrained('{ERNIE}')"],
            False,
            id="writefile-not-py",
        ),
        pytest.param(["%%bash\n", f"echo \"A.from_pretrained('{ERNIE}')\""], False, id="bash-cell"),
        pytest.param(
            ["x = (1\n", "     % 2)\n", f"m = A.from_pretrained('{ERNIE}')"],
            True,
            id="valid-python-line-starting-with-percent",
        ),
    ],
)
def test_notebook_magics(lines: list[str], rewritten: bool) -> None:
    text = _dump(_notebook([_code(*lines)]))
    result = rewrite_notebook(text, INSTALLED)
    assert result.findings == ()
    new_lines = json.loads(result.new_source)["cells"][0]["source"]
    expected = [line.replace(ERNIE, ERNIE_DIR) for line in lines] if rewritten else lines
    assert new_lines == expected


def test_notebook_in_another_language_is_left_alone() -> None:
    notebook = _notebook(
        [_code(f"m <- A.from_pretrained('{ERNIE}')")],
        kernelspec={"language": "R", "name": "ir"},
    )
    text = _dump(notebook)
    assert rewrite_notebook(text, INSTALLED).new_source == text


def test_notebook_that_is_not_json_is_a_parse_error() -> None:
    result = rewrite_notebook('{"cells": [', INSTALLED, filename="bad.ipynb")
    assert result.new_source == '{"cells": ['
    assert [f.kind for f in result.findings] == ["parse-error"]


# --------------------------------------------------------------------------------------
# Files: walking, planning, diffing, applying
# --------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def test_iter_sources_walks_folders_and_skips_noise(tmp_path: Path) -> None:
    for rel in [
        "a.py",
        "nb.ipynb",
        "notes.txt",
        "pkg/b.py",
        "pkg/sub/c.py",
        ".git/hooks/x.py",
        ".venv/lib/y.py",
        "venv/lib/y.py",
        "pkg/__pycache__/b.py",
        "lib/site-packages/z.py",
        "web/node_modules/w.py",
        ".ipynb_checkpoints/nb-checkpoint.ipynb",
        ".hidden/h.py",
    ]:
        _write(tmp_path / rel, "")
    explicit = _write(tmp_path / "script", "")  # explicit files are taken whatever the suffix
    found = list(iter_sources([tmp_path, explicit, tmp_path / "a.py"]))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.py",
        "nb.ipynb",
        "pkg/b.py",
        "pkg/sub/c.py",
        "script",
    ]


def test_iter_sources_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_sources([tmp_path / "nope.py"]))


def test_plan_diff_and_apply(tmp_path: Path) -> None:
    script = _write(tmp_path / "proj" / "train.py", f'm = A.from_pretrained("{CODEGEN}")\n')
    untouched = _write(tmp_path / "proj" / "util.py", "x = 1\n")
    script.chmod(0o754)
    plans = plan_rewrites([tmp_path / "proj"], INSTALLED)
    assert [p.path.name for p in plans] == ["train.py", "util.py"]
    plan, other = plans
    assert plan.changed and not other.changed

    diff = unified_diff(plan)
    name = str(script).lstrip("/")  # outside the working directory: absolute minus the root
    assert diff == (
        f"--- a/{name}\n+++ b/{name}\n@@ -1 +1 @@\n"
        f'-m = A.from_pretrained("{CODEGEN}")\n+m = A.from_pretrained("{CODEGEN_DIR}")\n'
    ).encode()
    assert unified_diff(other) == b""
    assert script.read_text() == plan.old_text  # planning never writes

    before = untouched.stat().st_mtime_ns
    assert apply(plan) is True
    assert apply(other) is False
    assert script.read_text() == f'm = A.from_pretrained("{CODEGEN_DIR}")\n'
    assert stat.S_IMODE(script.stat().st_mode) == 0o754
    assert untouched.stat().st_mtime_ns == before
    assert sorted(p.name for p in script.parent.iterdir()) == ["train.py", "util.py"]
    assert not any(p.changed for p in plan_rewrites([tmp_path / "proj"], INSTALLED))


def test_unified_diff_marks_missing_final_newline(tmp_path: Path) -> None:
    script = _write(tmp_path / "s.py", f"m = A.from_pretrained('{ERNIE}')")
    (plan,) = plan_rewrites([script], INSTALLED)
    assert unified_diff(plan).endswith(
        f"+m = A.from_pretrained('{ERNIE_DIR}')\n\\ No newline at end of file\n".encode()
    )


def test_apply_is_atomic_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _write(tmp_path / "s.py", f"m = A.from_pretrained('{ERNIE}')\n")
    (plan,) = plan_rewrites([script], INSTALLED)

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        apply(plan)
    assert script.read_text() == plan.old_text
    assert [p.name for p in tmp_path.iterdir()] == ["s.py"]  # temp file cleaned up


def test_apply_refuses_a_file_changed_since_planning(tmp_path: Path) -> None:
    script = _write(tmp_path / "s.py", f"m = A.from_pretrained('{ERNIE}')\n")
    (plan,) = plan_rewrites([script], INSTALLED)
    script.write_text("# edited meanwhile\n")
    with pytest.raises(FileChangedError):
        apply(plan)
    assert script.read_text() == "# edited meanwhile\n"


def test_apply_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = _write(tmp_path / "real.py", f"m = A.from_pretrained('{ERNIE}')\n")
    link = tmp_path / "link.py"
    link.symlink_to(real)
    (plan,) = plan_rewrites([link], INSTALLED)
    assert apply(plan)
    assert link.is_symlink()
    assert ERNIE_DIR in real.read_text()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            f"m = A.from_pretrained('{ERNIE}')\r\nx = 1\r\n".encode(),
            f"m = A.from_pretrained('{ERNIE_DIR}')\r\nx = 1\r\n".encode(),
            id="crlf",
        ),
        pytest.param(
            b"\xef\xbb\xbf" + f"m = A.from_pretrained('{ERNIE}')\n".encode(),
            b"\xef\xbb\xbf" + f"m = A.from_pretrained('{ERNIE_DIR}')\n".encode(),
            id="utf8-bom",
        ),
        pytest.param(
            f"# -*- coding: latin-1 -*-\n# caf\xe9\nm = A.from_pretrained('{ERNIE}')\n".encode(
                "latin-1"
            ),
            f"# -*- coding: latin-1 -*-\n# caf\xe9\nm = A.from_pretrained('{ERNIE_DIR}')\n".encode(
                "latin-1"
            ),
            id="latin1-cookie",
        ),
    ],
)
def test_files_keep_their_encoding_and_newlines(
    tmp_path: Path, raw: bytes, expected: bytes
) -> None:
    script = tmp_path / "s.py"
    script.write_bytes(raw)
    (plan,) = plan_rewrites([script], INSTALLED)
    apply(plan)
    assert script.read_bytes() == expected


def test_latin1_file_gets_escaped_non_ascii_path(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_bytes(f"# coding: latin-1\nm = A.from_pretrained('{ERNIE}')\n".encode("latin-1"))
    (plan,) = plan_rewrites([script], {ERNIE: "/模型/ernie"})
    apply(plan)
    assert "from_pretrained('/\\u6a21\\u578b/ernie')" in script.read_text(encoding="latin-1")


def test_unparsable_file_reported_and_left_alone(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.py", "def (:\n")
    notebook = _write(tmp_path / "bad.ipynb", "not json")
    plans = plan_rewrites([tmp_path], INSTALLED)
    assert [(p.path.name, p.changed) for p in plans] == [("bad.ipynb", False), ("bad.py", False)]
    findings = [f for p in plans for f in p.result.findings]
    assert [(f.kind, f.file) for f in findings] == [
        ("parse-error", str(notebook)),
        ("parse-error", str(bad)),
    ]
    assert isinstance(findings[0], Finding)


def test_plan_rewrites_handles_notebooks_and_offline_import(tmp_path: Path) -> None:
    nb = _write(
        tmp_path / "nb.ipynb",
        _dump(_notebook([_code("from paddlenlp import Taskflow\n", "Taskflow('ner')")])),
    )
    py = _write(
        tmp_path / "app.py", '"""App."""\nfrom paddlenlp import Taskflow\nTaskflow("ner")\n'
    )
    plans = {p.path.name: p for p in plan_rewrites([tmp_path], INSTALLED, True)}
    assert all(p.result.offline_import_added for p in plans.values())
    for plan in plans.values():
        apply(plan)
    assert OFFLINE_IMPORT_LINE in py.read_text()
    assert json.loads(nb.read_text())["cells"][0]["source"][0] == OFFLINE_IMPORT_LINE + "\n"
    assert not any(p.changed for p in plan_rewrites([tmp_path], INSTALLED, True))


# --------------------------------------------------------------------------------------
# End to end: the rewritten script really hands from_pretrained the folder
# --------------------------------------------------------------------------------------

FAKE_MODULE = '''
"""Stand-in for paddlenlp.transformers: records what from_pretrained receives."""
CALLS = []


class AutoModel:
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        CALLS.append(pretrained_model_name_or_path)
        return cls()


class CodeGenTokenizer(AutoModel):
    pass
'''

SCRIPT = f'''
"""Generate code with CodeGen."""
import json

import fakenlp
from fakenlp import CodeGenTokenizer

MODEL = "{CODEGEN}"  # the model to load


def main():
    tokenizer = CodeGenTokenizer.from_pretrained(MODEL)
    model = fakenlp.AutoModel.from_pretrained(pretrained_model_name_or_path='{ERNIE}')
    print(json.dumps(fakenlp.CALLS))


if __name__ == "__main__":
    main()
'''


def _run(script: Path, cwd: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    calls: list[str] = json.loads(out.stdout)
    return calls


def test_rewritten_script_loads_from_the_installed_folders(tmp_path: Path) -> None:
    models = tmp_path / "models"
    codegen_dir = models / "Salesforce" / "codegen-350M-mono"
    ernie_dir = models / 'it\'s "quoted" \\ here' / ERNIE  # quoting must survive execution
    for folder in (codegen_dir, ernie_dir):
        folder.mkdir(parents=True)
    installed = {CODEGEN: str(codegen_dir), ERNIE: str(ernie_dir)}
    _write(tmp_path / "fakenlp.py", FAKE_MODULE)
    script = _write(tmp_path / "gen.py", SCRIPT.lstrip("\n"))

    assert _run(script, tmp_path) == [CODEGEN, ERNIE]
    (plan,) = plan_rewrites([script], installed)
    assert [c.old_id for c in plan.result.changes] == [CODEGEN, ERNIE]
    apply(plan)
    calls = _run(script, tmp_path)
    assert calls == [str(codegen_dir), str(ernie_dir)]
    assert all(os.path.isdir(path) for path in calls)
    assert '"""Generate code with CodeGen."""' in script.read_text()
    assert "# the model to load" in script.read_text()


def test_file_rewrite_is_a_frozen_value() -> None:
    plan = FileRewrite(Path("x.py"), "a", "a", rewrite_source("a", {}))
    assert not plan.changed
    with pytest.raises(AttributeError):
        plan.new_text = "b"  # type: ignore[misc]


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"], ids=["cr-only", "crlf", "lf"])
def test_line_endings_are_kept_to_the_last_one(newline: str) -> None:
    """Issue 13: a CR-only file lost its final CR (libcst drops it)."""
    source = f"x = 1{newline}m = A.from_pretrained('{ERNIE}'){newline}"
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source.replace(ERNIE, ERNIE_DIR)
