"""The fast path of :mod:`bundler.rewrite`: the pre-filter and the worker processes.

Both must be invisible in the results.  The pre-filter (``may_act``) lets most modules skip
libcst's scope analysis; every test here compares it with the unfiltered pass
(``prefilter=False``, the code as it was before the filter) over generated modules,
notebooks, hand-picked corner cases and real sources, and checks that the filter does fire
(a filter that never skips anything would pass the equality checks trivially).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.cli import _main
from bundler.rewrite import files as files_module
from bundler.rewrite import plan_rewrites, rewrite_notebook
from bundler.rewrite.codemod import may_act, rewrite_python
from bundler.rewrite.results import RewriteResult
from tests.conftest import make_model

INSTALLED = {
    "Org/model": "/srv/models/Org/model",
    "ernie-3.0-medium-zh": "/srv/models/ernie-3.0-medium-zh",
}
_IDS = [*INSTALLED, "Not/installed"]

#: Statement shapes: real calls, the callee names where no call is (comments, docstrings,
#: strings, definitions, bare attributes), calls hidden in f-strings, decorators and lambdas,
#: NFKC look-alikes, constants and their rebinding, and syntax errors.
_FRAGMENTS = [
    "m = AutoModel.from_pretrained({lit})",
    "m = a.b.C.from_pretrained(pretrained_model_name_or_path={lit}, dtype='f')",
    "MODEL_{n} = {lit}",
    "m = Tok.from_pretrained(MODEL_{n})",
    "t = Taskflow('ner', model={lit})",
    "t = paddlenlp.Taskflow(task=MODEL_{n})",
    "from paddlenlp import Taskflow",
    "# AutoModel.from_pretrained({lit}) in a comment",
    "s = 'call Taskflow(...) or X.from_pretrained({lit})'",
    "def g():\n    '''Use A.from_pretrained({lit}).'''\n    return {lit}",
    "loader = AutoModel.from_pretrained",
    "def from_pretrained(name):\n    return name",
    "class Taskflow:\n    pass",
    "x = getattr(A, 'from_pretrained')({lit})",
    "msg = f'{{A.from_pretrained({lit})}}'",
    "@Taskflow('ner')\ndef h():\n    pass",
    "fn = lambda: B.from_pretrained(MODEL_{n})",
    "m = A.\uff46rom_pretrained({lit})",
    "\uff34askflow('ner')",
    "x = {lit}",
    "def f(name):\n    return AutoModel.from_pretrained(name)",
    "m = AutoModel.from_pretrained(f'{{org}}/x')",
    "m = A.from_pretrained(*args)",
    "for MODEL_{n} in []:\n    pass",
    "if True:\n    m = X.from_pretrained({lit})",
    "print 'python 2'",
    "def broken(:",
    "x = (1 +",
    "\tx = 1",
    "m = A.from_pretrained('a' 'b')",
]


@st.composite
def _literals(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(['"', "'", '"""', "r'"]))
    close = quote[-1] * (3 if len(quote) == 3 else 1)
    return f"{quote}{draw(st.sampled_from(_IDS))}{close}"


@st.composite
def _statements(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(_FRAGMENTS))
    return template.format(lit=draw(_literals()), n=draw(st.integers(0, 1)))


@st.composite
def _modules(draw: st.DrawFn) -> str:
    body = draw(st.lists(_statements(), max_size=6))
    return draw(st.sampled_from(["", '"""Doc."""\n'])) + "".join(s + "\n" for s in body)


#: Token soup: mostly not Python at all, which is where the parsers could disagree.
_TOKENS = ["from_pretrained", "Taskflow", "A.", "(", ")", "'Org/model'", "\n", " ", "=", "x",
           ":", "\\", "#", '"""', "f'{", "}'", "\t", "\x0c", "\uff46", "import ", "@", ","]
_soup = st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join)


def _run(source: str, *, prefilter: bool, add_import: bool) -> RewriteResult | str:
    """The result, or the name of the exception (both paths must fail alike too)."""
    try:
        return rewrite_python(
            source,
            INSTALLED,
            add_offline_import=add_import,
            filename="m.py",
            cell=None,
            ascii_only=False,
            prefilter=prefilter,
        )
    except Exception as error:  # noqa: BLE001 -- compared, not swallowed
        return type(error).__name__


def _assert_same(source: str, add_import: bool = False) -> None:
    filtered = _run(source, prefilter=True, add_import=add_import)
    unfiltered = _run(source, prefilter=False, add_import=add_import)
    assert filtered == unfiltered, source


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(source=st.one_of(_modules(), _soup), add_import=st.booleans())
def test_prefilter_never_changes_a_result(source: str, add_import: bool) -> None:
    _assert_same(source, add_import)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(cells=st.lists(_modules(), max_size=4), add_import=st.booleans())
def test_prefilter_never_changes_a_notebook(cells: list[str], add_import: bool) -> None:
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": cell.splitlines(keepends=True)}
            for cell in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    text = json.dumps(notebook, indent=1)
    results = [
        rewrite_notebook(text, INSTALLED, add_offline_import=add_import, prefilter=prefilter)
        for prefilter in (True, False)
    ]
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("source", "acts"),
    [
        pytest.param("x = 1\n", False, id="no-callee-name"),
        pytest.param("# AutoModel.from_pretrained('Org/model')\n", False, id="comment"),
        pytest.param("'''Taskflow('ner') and A.from_pretrained(x)'''\n", False, id="docstring"),
        pytest.param("f = AutoModel.from_pretrained\n", False, id="attribute-not-called"),
        pytest.param("def from_pretrained(x):\n    return x\n", False, id="definition"),
        pytest.param("from paddlenlp import Taskflow\n", False, id="import-only"),
        pytest.param("from_pretrained('Org/model')\n", False, id="plain-name-call"),
        pytest.param("A.from_pretrained('Org/model')\n", True, id="call"),
        pytest.param("f'{A.from_pretrained(x)}'\n", True, id="call-in-f-string"),
        pytest.param("Taskflow('ner')\n", True, id="taskflow"),
        pytest.param("paddlenlp.Taskflow('ner')\n", True, id="taskflow-attribute"),
        pytest.param("@Taskflow('ner')\ndef f():\n    pass\n", True, id="decorator"),
        # Python calls it from_pretrained (NFKC), but libcst, like the filter, compares text.
        pytest.param("A.\uff46rom_pretrained('Org/model')\n", False, id="nfkc-look-alike"),
        pytest.param("print 'no callee name, but py2'\n", True, id="syntax-error"),
        pytest.param("x = 1\x00\n", True, id="null-byte"),
        pytest.param("x = " + "(" * 300 + "1" + ")" * 300 + "\n", True, id="too-deep-for-ast"),
    ],
)
def test_may_act_skips_only_modules_without_calls(source: str, acts: bool) -> None:
    assert may_act(source) is acts
    _assert_same(source)
    _assert_same(source, add_import=True)


def _real_sources() -> list[Path]:
    """Small real modules: ours (tests full of from_pretrained) and PaddleNLP's own."""
    repo = Path(__file__).resolve().parent.parent
    ours = sorted([*repo.joinpath("bundler").rglob("*.py"), *repo.joinpath("tests").rglob("*.py")])
    found = [p for p in ours if p.stat().st_size < 8000]
    spec = importlib.util.find_spec("paddlenlp")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        package = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py"))
        small = [p for p in package if p.stat().st_size < 4000]
        found += small[:: max(1, len(small) // 40)]
        calls = re.compile(rb"^ *[\w.]+ = [\w.]+\.from_pretrained\(", re.M)  # likely real
        named = [p for p in package if calls.search(p.read_bytes())]
        found += sorted(named, key=lambda p: p.stat().st_size)[:12]
    return found


def test_prefilter_matches_the_full_pass_on_real_sources() -> None:
    sources = _real_sources()
    skipped = 0
    for path in sources:
        text = path.read_text(encoding="utf-8")
        skipped += not may_act(text)
        _assert_same(text)
    assert len(sources) // 3 <= skipped < len(sources)  # it spares most modules, not all


# --------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """More files than PARALLEL_MIN_FILES: some rewritten, some reported, one unparsable."""
    root = tmp_path / "tree"
    for index in range(files_module.PARALLEL_MIN_FILES + 4):
        folder = root / f"pkg{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        body = [f"x_{index} = {index}\n"]
        if index % 2:
            body.append("m = AutoModel.from_pretrained('Org/model')\n")
        if index % 5 == 0:
            body.append("t = Taskflow('ner')\n")
        if index == 7:
            body = ["def broken(:\n"]
        (folder / f"mod{index:02}.py").write_text("".join(body))
    return root


def test_workers_give_the_same_plans_in_the_same_order(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = plan_rewrites([tree], INSTALLED, add_offline_import=True, jobs=1)
    pools: list[int] = []
    real_pool = files_module._plan_in_pool

    def recording(*args: object) -> object:
        pools.append(len(args[0]))  # type: ignore[arg-type]
        return real_pool(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(files_module, "_plan_in_pool", recording)
    parallel = plan_rewrites([tree], INSTALLED, add_offline_import=True, jobs=2)
    assert pools == [len(serial)]  # the pool did the work
    assert parallel == serial
    assert sum(p.changed for p in serial) == 11  # 9 ids, 2 more offline imports
    assert any(f.kind == "parse-error" for p in serial for f in p.result.findings)


def test_an_unreadable_file_is_one_finding_with_or_without_workers(tree: Path) -> None:
    """Issue 13: a dangling link used to abort every file; now it is reported, in any mode."""
    dangling = tree / "pkg0" / "zz_dangling.py"
    dangling.symlink_to(tree / "missing.py")
    results = []
    for jobs in (1, 2):
        plans = plan_rewrites([tree], INSTALLED, jobs=jobs)
        bad = [f for p in plans for f in p.result.findings if f.kind == "unreadable"]
        assert [(f.file, f.message) for f in bad] == [
            (str(dangling), "cannot read, skipped: No such file or directory")
        ]
        results.append([(p.path, p.new_text, p.result) for p in plans])
        assert sum(p.changed for p in plans) == 9  # the others are planned as usual
    assert results[0] == results[1]


def test_few_files_are_planned_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "s.py"
    script.write_text("m = A.from_pretrained('Org/model')\n")

    def no_pool(*args: object) -> object:
        raise AssertionError("a pool was started for one file")

    monkeypatch.setattr(files_module, "_plan_in_pool", no_pool)
    (plan,) = plan_rewrites([script], INSTALLED, jobs=8)
    assert plan.changed


def test_cli_jobs_do_not_change_the_output(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_model(home, "Org/model", {"config.json": "{}"})
    outputs = []
    for jobs in ("1", "2"):
        code = _main(["rewrite", str(tree), "--home", str(home), "--jobs", jobs])
        outputs.append((code, *capsys.readouterr()))
    assert outputs[0] == outputs[1]
    code, out, err = outputs[0]
    assert code == 4  # the unparsable module: 'cannot read/parse', not 'would change'
    assert out.count("+++ ") == 9 and "mod07.py:1: warning [parse-error]" in err


def test_cli_jobs_must_be_positive(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["rewrite", str(tree), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err

