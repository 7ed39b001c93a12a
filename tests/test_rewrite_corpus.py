"""Issue 13: ``rewrite`` over real-world shapes must never change what a program means.

The corpus below holds the shapes found when ``rewrite`` was run over PaddleNLP's own tree,
its tutorials and notebooks: other libraries' loaders, constants with other uses (in the
same module and in another), Taskflow fed through aliases, hub flags, download helpers.
Each module is *run*, before and after the rewrite, against stub ``paddlenlp``,
``transformers`` and ``huggingface_hub`` packages that record every load: the only allowed
difference is that PaddleNLP loads of installed ids get the folder.  Everything else the
module computes (paths joined from a constant, ``startswith`` checks, f-strings, another
module's view of the constant, what Taskflow gets) must be identical.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bundler.rewrite.files as files_module
from bundler.cli import _main
from bundler.rewrite import plan_rewrites, rewrite_source
from tests.conftest import make_model

BERT = "bert-base-uncased"
UIE = "uie-base"
CODEGEN = "Salesforce/codegen-350M-mono"
HUB = "org/hub-model"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --------------------------------------------------------------------------------------
# Stub libraries: every load is recorded; Taskflow asserts a registry name, as the real one
# --------------------------------------------------------------------------------------

_RECORDER = '''
import json, os
LOG = os.environ["CORPUS_LOG"]
def record(lib, what, value, **kw):
    with open(LOG, "a") as fh:
        fh.write(json.dumps([lib, what, value, sorted(kw)]) + "\\n")
def loader(lib, name):
    class Loader:
        @classmethod
        def from_pretrained(cls, name=None, *a, pretrained_model_name_or_path=None, **kw):
            value = name if name is not None else pretrained_model_name_or_path
            record(lib, cls.__name__, value, **kw)
            return cls()
    Loader.__name__ = name
    return Loader
'''

STUBS = {
    "_corpus_recorder.py": _RECORDER,
    "paddlenlp/__init__.py": (
        "from _corpus_recorder import record\n"
        "def Taskflow(task, model=None, **kw):\n"
        "    assert model is None or not os.path.isabs(model), 'not a registered model'\n"
        "    record('paddlenlp', 'Taskflow', model)\n"
        "import os\n"
    ),
    "paddlenlp/transformers.py": (
        "from _corpus_recorder import loader\n"
        "AutoModel = loader('paddlenlp', 'AutoModel')\n"
        "AutoTokenizer = loader('paddlenlp', 'AutoTokenizer')\n"
        "BertModel = loader('paddlenlp', 'BertModel')\n"
    ),
    "transformers/__init__.py": (
        "from _corpus_recorder import loader\n"
        "AutoModel = loader('transformers', 'AutoModel')\n"
        "BertModel = loader('transformers', 'BertModel')\n"
        "AutoTokenizer = loader('transformers', 'AutoTokenizer')\n"
    ),
    "huggingface_hub/__init__.py": (
        "from _corpus_recorder import record\n"
        "def snapshot_download(repo_id, **kw):\n    record('hub', 'snapshot', repo_id)\n"
        "    return '/nowhere'\n"
    ),
}

#: name -> modules of one project; ``main.py`` is run.  Each is a real-world shape.
CORPUS: dict[str, dict[str, str]] = {
    "hf-and-paddle-side-by-side": {
        "main.py": f"""
            from transformers import BertModel as HFBert
            import transformers
            from paddlenlp.transformers import BertModel
            a = HFBert.from_pretrained("{BERT}")
            b = transformers.AutoModel.from_pretrained("{BERT}")
            c = BertModel.from_pretrained("{BERT}")
            """,
    },
    "constant-with-other-uses": {
        "main.py": f"""
            import os
            from paddlenlp.transformers import AutoModel, AutoTokenizer
            MODEL = "{BERT}"
            out = os.path.join("./checkpoints", MODEL)
            is_bert = MODEL.startswith("bert-")
            label = f"model={{MODEL}}"
            def describe(name):
                return name.upper()
            shown = describe(MODEL)
            tok = AutoTokenizer.from_pretrained(MODEL)
            model = AutoModel.from_pretrained(pretrained_model_name_or_path=MODEL)
            RESULT = [out, is_bert, label, shown, MODEL]
            """,
    },
    "constant-imported-by-another-module": {
        "config.py": f"""
            MODEL = "{BERT}"
            from paddlenlp.transformers import AutoModel
            model = AutoModel.from_pretrained(MODEL)
            """,
        "main.py": """
            import os
            from config import MODEL
            from paddlenlp.transformers import AutoModel
            RESULT = [os.path.join("runs", MODEL), MODEL]
            again = AutoModel.from_pretrained(MODEL)
            """,
    },
    "taskflow-through-aliases": {
        "main.py": f"""
            from paddlenlp import Taskflow
            from paddlenlp.transformers import AutoTokenizer
            UIE = "{UIE}"
            m = UIE
            tok = AutoTokenizer.from_pretrained(UIE)
            flow = Taskflow("information_extraction", model=m)
            flow2 = Taskflow("information_extraction", model=UIE)
            """,
    },
    "main-guard-and-functions": {
        "main.py": f"""
            from paddlenlp.transformers import AutoModel
            def load(name="{CODEGEN}"):
                return AutoModel.from_pretrained(name)
            if __name__ == "__main__":
                NAME = "{CODEGEN}"
                AutoModel.from_pretrained(NAME)
                load()
            """,
    },
    "hub-sources-and-downloads": {
        "main.py": f"""
            from paddlenlp.transformers import AutoModel
            from huggingface_hub import snapshot_download
            a = AutoModel.from_pretrained("{BERT}", from_hf_hub=True)
            b = AutoModel.from_pretrained("{HUB}", from_hf_hub=True)
            c = AutoModel.from_pretrained("{BERT}", cache_dir="./cache")
            d = AutoModel.from_pretrained("{BERT}", from_hf_hub=False)
            snapshot_download("{HUB}")
            """,
    },
    "unknown-callee-is-paddlenlp": {
        "main.py": f"""
            from paddlenlp.transformers import AutoModel
            class Runner:
                model_class = AutoModel
                def load(self):
                    return self.model_class.from_pretrained("{BERT}")
            Runner().load()
            """,
    },
}

#: Per corpus entry: the loads the rewrite must redirect, as (library, class, old id), once
#: per load (a list: a load redirected twice, or one too many, is a failure).
REDIRECTED = {
    "hf-and-paddle-side-by-side": [("paddlenlp", "BertModel", BERT)],
    "constant-with-other-uses": [("paddlenlp", "AutoModel", BERT),
                                 ("paddlenlp", "AutoTokenizer", BERT)],
    "constant-imported-by-another-module": [("paddlenlp", "AutoModel", BERT)],
    "taskflow-through-aliases": [("paddlenlp", "AutoTokenizer", UIE)],
    "main-guard-and-functions": [("paddlenlp", "AutoModel", CODEGEN)],
    "hub-sources-and-downloads": [("paddlenlp", "AutoModel", BERT),
                                  ("paddlenlp", "AutoModel", HUB)],
    "unknown-callee-is-paddlenlp": [("paddlenlp", "AutoModel", BERT)],
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for model_id in (BERT, UIE, CODEGEN):
        make_model(home, model_id, {"config.json": "{}"})
    return home


def _installed(home: Path) -> dict[str, str]:
    base = home.resolve() / "models"
    found = {model_id: str(base / model_id) for model_id in (BERT, UIE, CODEGEN)}
    found[f"hf:{HUB}"] = "/hub/snapshots/abc"
    return found


def _write_project(root: Path, modules: dict[str, str]) -> None:
    for rel, text in {**STUBS, **{k: src(v) for k, v in modules.items()}}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _run(root: Path) -> tuple[list[list[object]], object]:
    """Run ``main.py``; the loads it made and the value of its RESULT (None if unset)."""
    log = root / "loads.jsonl"
    log.unlink(missing_ok=True)
    code = (
        "import json, runpy\n"
        "g = runpy.run_path('main.py', run_name='__main__')\n"
        "print(json.dumps(g.get('RESULT')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
        env={**os.environ, "CORPUS_LOG": str(log), "PYTHONPATH": str(root)}, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loads = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return loads, json.loads(proc.stdout)


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus_only_paddlenlp_loads_of_installed_ids_change(
    case: str, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    _write_project(root, CORPUS[case])
    before_text = {p: p.read_bytes() for p in root.rglob("*.py")}
    before_loads, before_result = _run(root)

    installed = _installed(home)
    user_files = [root / rel for rel in CORPUS[case]]
    for plan in plan_rewrites(user_files, installed):
        files_module.apply(plan)
    after_loads, after_result = _run(root)

    assert after_result == before_result  # every other use of every value is unchanged
    assert len(after_loads) == len(before_loads)
    redirected = []
    for (lib, what, old, kw), (lib2, what2, new, kw2) in zip(before_loads, after_loads):
        assert (lib, what, kw) == (lib2, what2, kw2)
        if new != old:
            redirected.append((lib, what, old))
            key = old if old in installed else f"hf:{old}"
            assert new == installed[key]
    assert sorted(redirected) == REDIRECTED[case]
    for path, data in before_text.items():  # the stubs and the rest: byte for byte
        if path not in user_files:
            assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("source", "kind", "mentions"),
    [
        pytest.param(f'from transformers import BertModel\nBertModel.from_pretrained("{BERT}")\n',
                     "foreign-call", "transformers", id="transformers"),
        pytest.param(f'import torch\ntorch.hub.from_pretrained("{BERT}")\n',
                     "foreign-call", "torch", id="torch"),
        pytest.param("from modelscope import AutoModel as M\n"
                     f'M.from_pretrained("{BERT}")\n', "foreign-call", "modelscope",
                     id="modelscope"),
        pytest.param("from sentence_transformers import SentenceTransformer as S\n"
                     f'Enc = S\nEnc.from_pretrained("{BERT}")\n', "foreign-call",
                     "sentence_transformers", id="through-an-alias"),
        pytest.param("try:\n    from paddlenlp.transformers import AutoModel\n"
                     "except ImportError:\n    from transformers import AutoModel\n"
                     f'AutoModel.from_pretrained("{BERT}")\n', "foreign-call", "transformers",
                     id="either-library"),
        pytest.param(f'from transformers import *\nAutoModel.from_pretrained("{BERT}")\n',
                     "foreign-call", "import *", id="star-import"),
        pytest.param(f'AutoModel.from_pretrained("{BERT}", from_hf_hub=flag)\n',
                     "hub-source", "run time", id="hub-flag-computed"),
        pytest.param(f'AutoModel.from_pretrained("{BERT}", from_aistudio=True)\n',
                     "hub-source", "AI Studio", id="aistudio-not-installed-there"),
        pytest.param(f'AutoModel.from_pretrained("{BERT}", cache_dir="/data/c")\n',
                     "hub-source", "cache_dir", id="cache-dir"),
        pytest.param(f'from huggingface_hub import hf_hub_download\nhf_hub_download("{BERT}", '
                     '"config.json")\n', "download", "installed at", id="hf-hub-download"),
        pytest.param(f'bos_download(repo_id="{BERT}")\n', "download", "fails offline",
                     id="bos-download"),
        pytest.param(f'M = "{BERT}"\nM = "x"\nA.from_pretrained(M)\n', "computed-id",
                     "assigned 2 times (lines 1, 2)", id="reassigned"),
        pytest.param(f'M = b"{BERT}"\nA.from_pretrained(M)\n', "computed-id",
                     "bytes literal", id="bytes-constant"),
        pytest.param(f'A.from_pretrained(b"{BERT}")\n', "computed-id", "bytes literal",
                     id="bytes-literal"),
        pytest.param("from config import M\nA.from_pretrained(M)\n", "computed-id",
                     "imported from `config`", id="imported-constant"),
    ],
)
def test_what_is_reported_and_left_alone(source: str, kind: str, mentions: str,
                                         home: Path) -> None:
    result = rewrite_source(source, _installed(home))
    assert result.new_source == source
    assert [f.kind for f in result.findings] == [kind]
    assert mentions in result.findings[0].message


def test_paddlenlp_and_local_and_unknown_callees_are_rewritten(home: Path) -> None:
    installed = _installed(home)
    source = src(
        f"""
        from paddlenlp.transformers import AutoModel
        import paddlenlp.transformers as ppt
        from .modeling import MyModel
        AutoModel.from_pretrained("{BERT}")
        ppt.AutoTokenizer.from_pretrained("{BERT}")
        MyModel.from_pretrained("{BERT}")
        model_class.from_pretrained("{BERT}")
        """
    )
    result = rewrite_source(source, installed)
    assert result.new_source == source.replace(f'"{BERT}"', f'"{installed[BERT]}"')
    assert result.findings == ()


# --------------------------------------------------------------------------------------
# --diff is exactly --in-place
# --------------------------------------------------------------------------------------

ODD_SHAPES: dict[str, bytes] = {
    "crlf.py": (f'from paddlenlp.transformers import AutoModel\r\n'
                f'm = AutoModel.from_pretrained("{BERT}")\r\n').encode(),
    "cr_only.py": f'x = 1\rm = A.from_pretrained("{BERT}")\r'.encode(),
    "no_final_newline.py": f"m = A.from_pretrained('{BERT}')".encode(),
    "bom.py": b"\xef\xbb\xbf" + f'm = A.from_pretrained("{BERT}")\n'.encode(),
    "latin1.py": (f'# -*- coding: latin-1 -*-\n# caf\xe9\nm = A.from_pretrained("{BERT}")\n'
                  .encode("latin-1")),
    "formfeed.py": f'\x0c\nm = A.from_pretrained("{BERT}")  # \x1b[31m\n'.encode(),
    "taskflow.py": (f'"""Doc."""\nfrom paddlenlp import Taskflow\n\nT = Taskflow("ner")\n'
                    f'm = A.from_pretrained("{BERT}")\n').encode(),
    "taskflow_only.py": b'from paddlenlp import Taskflow\nT = Taskflow("ner")\n',
    "sub/long.py": ("".join(f"x{i} = {i}\n" for i in range(200))
                    + f'm = A.from_pretrained("{BERT}")\n'
                    + "".join(f"y{i} = {i}\n" for i in range(200))
                    + f'n = A.from_pretrained("{CODEGEN}")\n').encode(),
    "gbk.py": (f'# -*- coding: gbk -*-\n# \u4e2d\u6587\nm = A.from_pretrained("{BERT}")  '
               '# \u6a21\u578b\n').encode("gbk"),
    # names patch would cut at the blank, or a newline would split into a header line
    # of the file name's choosing: quoted in the diff as git and GNU patch read them
    "sp ace.py": f'm = A.from_pretrained("{BERT}")\n'.encode(),
    "tab\there.py": f'm = A.from_pretrained("{BERT}")\n'.encode(),
    "new\nline.py": f'm = A.from_pretrained("{BERT}")\n'.encode(),
    'quote"and\\backslash.py': f'm = A.from_pretrained("{BERT}")\n'.encode(),
    "nb.ipynb": json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                   "source": ["!pip install paddlenlp\n",
                              f'm = A.from_pretrained("{BERT}")']}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1).encode(),
}


@pytest.mark.parametrize("flag", [[], ["--add-offline-import"]], ids=["plain", "offline-import"])
@pytest.mark.parametrize("tool", ["patch", "git"])
def test_diff_applied_to_the_tree_equals_in_place(
    tool: str, flag: list[str], home: Path, tmp_path: Path
) -> None:
    original = tmp_path / "original"
    for rel, data in ODD_SHAPES.items():
        (original / rel).parent.mkdir(parents=True, exist_ok=True)
        (original / rel).write_bytes(data)
    patched, in_place = tmp_path / "patched", tmp_path / "in_place"
    shutil.copytree(original, patched)
    shutil.copytree(original, in_place)
    command = [sys.executable, "-m", "bundler", "rewrite", ".", "--home", str(home), *flag]

    diff = subprocess.run(command + ["--diff"], cwd=patched, capture_output=True, check=True)
    assert diff.stdout.count(b"\n+++ ") == len(ODD_SHAPES) - (0 if flag else 1)
    subprocess.run(command + ["--in-place"], cwd=in_place, capture_output=True, check=True)
    apply = (["patch", "-p1", "--quiet", "--no-backup-if-mismatch"] if tool == "patch"
             else ["git", "apply", "--unsafe-paths", "-p1", "-"])
    subprocess.run(apply, cwd=patched, input=diff.stdout, check=True, capture_output=True)

    for rel in ODD_SHAPES:
        assert (patched / rel).read_bytes() == (in_place / rel).read_bytes(), rel
    assert (in_place / "cr_only.py").read_bytes().endswith(b"\r")
    offline = b"import bundler.offline" in (in_place / "taskflow_only.py").read_bytes()
    assert offline == bool(flag)  # never implied by --in-place


# --------------------------------------------------------------------------------------
# One odd file is one warning; the run goes on
# --------------------------------------------------------------------------------------


def _good(root: Path) -> Path:
    good = root / "zz_good.py"
    good.write_text(f'm = A.from_pretrained("{BERT}")\n')
    return good


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        pytest.param("deep.py", lambda p: p.write_text(
            "x = " + " + ".join(["1"] * 600) + f'\nm = A.from_pretrained("{BERT}")\n'),
            "nested too deeply", id="deep-expression"),
        pytest.param("loop.py", lambda p: p.symlink_to(p.name), "cannot read, skipped",
                     id="symlink-loop"),
        pytest.param("dangling.py", lambda p: p.symlink_to("missing.py"),
                     "No such file or directory", id="dangling-link"),
        pytest.param("x.py", lambda p: os.mkfifo(p), "not a regular file", id="fifo"),
        pytest.param("huge.py", lambda p: p.write_bytes(
            b"# generated\n" + b"x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" * 140_000
            + f'm = A.from_pretrained("{BERT}")\n'.encode()), "over the 2.0 MB limit",
            id="5-MB-generated"),
    ],
)
def test_one_odd_file_costs_one_warning_naming_it(
    name: str, make: object, says: str, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    odd = root / name
    make(odd)  # type: ignore[operator]
    good = _good(root)
    err_file = tmp_path / "stderr"
    # The command's own peak RSS, measured by a small launcher: Linux starts a process's
    # ru_maxrss at its parent's peak when it is forked and exec'd (vfork shares the parent's
    # memory), so measured from this test process it would be the test process's own peak
    # whenever an earlier test made that large (CI saw 790 MB that way).
    launcher = ("import resource, subprocess, sys; "
                "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
    with open(err_file, "wb") as err:
        child = subprocess.run(
            [sys.executable, "-c", launcher, sys.executable, "-m", "bundler", "rewrite",
             str(root), "--home", str(home), "--in-place", "--jobs", "1"],
            stdout=subprocess.PIPE, stderr=err, text=True, timeout=600)
    peak_kib = int(child.stdout.strip())
    stderr = err_file.read_text()
    warnings = [line for line in stderr.splitlines() if ": warning [" in line]
    assert len(warnings) == 1 and warnings[0].startswith(str(odd)), stderr
    assert says in warnings[0]
    assert "Traceback" not in stderr
    assert child.returncode == 4
    assert str(home.resolve() / "models" / BERT) in good.read_text()  # the run went on
    # Bounded memory: libcst took 1.8 GB on a 5 MB module; the cap keeps every file small.
    assert 0 < peak_kib < 600_000, peak_kib


def test_an_unreadable_file_is_one_warning(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Root reads anything, so the permission error comes through the file layer's one seam."""
    root = tmp_path / "tree"
    root.mkdir()
    secret = root / "secret.py"
    secret.write_text(f'm = A.from_pretrained("{BERT}")\n')
    good = _good(root)
    real_open = files_module.open_regular

    def refuse(path: Path, *args: object) -> object:
        if path == secret:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(files_module, "open_regular", refuse)
    assert _main(["rewrite", str(root), "--home", str(home), "--in-place", "-j", "1"]) == 4
    err = capsys.readouterr().err
    assert f"{secret}:1: warning [unreadable]: cannot read, skipped: Permission denied" in err
    assert str(home.resolve() / "models" / BERT) in good.read_text()


def test_a_big_file_without_any_load_is_skipped_unparsed(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "table.py").write_bytes(b"T = [\n" + b"    (1, 'a', 2.5),\n" * 300_000 + b"]\n")
    good = _good(root)

    def no_parse(*args: object, **kwargs: object) -> object:
        raise AssertionError("the big file was decoded and parsed")

    real = files_module.rewrite_python
    monkeypatch.setattr(files_module, "rewrite_python",
                        lambda text, *a, **k: no_parse() if len(text) > 2_000_000
                        else real(text, *a, **k))
    assert _main(["rewrite", str(root), "--home", str(home), "--check", "-j", "1"]) == 1
    err = capsys.readouterr().err
    assert "table.py" not in err and "1 of 2 file(s) would change" in err
    assert good.read_text().count(BERT) == 1


# --------------------------------------------------------------------------------------
# --check outcomes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "code"),
    [
        pytest.param({"a.py": "x = 1\n"}, 0, id="nothing-to-change"),
        pytest.param({"a.py": f'A.from_pretrained("{BERT}")\n'}, 1, id="would-change"),
        pytest.param({"a.py": "def oops(:\n"}, 4, id="cannot-parse"),
        pytest.param({"a.py": f'A.from_pretrained("{BERT}")\n', "b.py": "def oops(:\n"}, 4,
                     id="both-cannot-parse-wins"),
        pytest.param({"a.py": b"\xff\xfe x = 1\n"}, 4, id="cannot-decode"),
    ],
)
def test_check_exit_codes(files: dict[str, str | bytes], code: int, home: Path,
                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for rel, data in files.items():
        path = root / rel
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    assert _main(["rewrite", str(root), "--home", str(home), "--check"]) == code
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    capsys.readouterr()


# --------------------------------------------------------------------------------------
# Property: the only token differences are ids at PaddleNLP call sites
# --------------------------------------------------------------------------------------

P_INSTALLED = {BERT: "/h/models/bert", CODEGEN: "/h/models/codegen", f"hf:{HUB}": "/hub/snap"}
P_IDS = [BERT, CODEGEN, HUB, "not/installed"]
P_IMPORTS = ["from paddlenlp.transformers import AutoModel",
             "from transformers import AutoModel as HFModel", "import torch", "import os",
             "from paddlenlp import Taskflow"]
P_FOREIGN = {"from transformers import AutoModel as HFModel": "HFModel", "import torch": "torch"}
P_RECEIVERS = ["AutoModel", "HFModel", "torch.nn.M", "self.model_class"]
P_KWARGS = ["", ", from_hf_hub=True", ", cache_dir='c'", ", revision='main'", ", from_hf_hub=False"]


def _literal(draw: st.DrawFn) -> str:
    model_id = draw(st.sampled_from(P_IDS))
    return draw(st.sampled_from(['"{}"', "'{}'", 'r"{}"', '"""{}"""'])).format(model_id)


@st.composite
def modules(draw: st.DrawFn) -> str:
    """A module of real-world statements about model ids, in any order and combination."""
    def statement(names: list[str], indent: str) -> str:
        kind = draw(st.sampled_from(["assign", "call", "call-name", "use", "taskflow"]))
        name = draw(st.sampled_from(names))
        if kind == "assign":
            return f"{indent}{name} = {_literal(draw)}"
        receiver = draw(st.sampled_from(P_RECEIVERS))
        kwarg = draw(st.sampled_from(P_KWARGS))
        if kind == "call":
            arg = _literal(draw)
            if draw(st.booleans()):
                arg = f"pretrained_model_name_or_path={arg}"
            return f"{indent}m = {receiver}.from_pretrained({arg}{kwarg})"
        if kind == "call-name":
            return f"{indent}m = {receiver}.from_pretrained({name}{kwarg})"
        if kind == "use":
            return f'{indent}x = os.path.join("ckpt", {name}) + {name}.upper()'
        return f'{indent}t = Taskflow("ner", model={name})'

    lines = draw(st.lists(st.sampled_from(P_IMPORTS), unique=True))
    lines += [statement(["MODEL", "OTHER"], "") for _ in range(draw(st.integers(0, 6)))]
    if draw(st.booleans()):
        lines.append("def load(p):")
        lines += [statement(["local", "p"], "    ") for _ in range(draw(st.integers(1, 4)))]
    if draw(st.booleans()):
        lines.append('if __name__ == "__main__":')
        lines += [statement(["MODEL", "OTHER"], "    ")
                  for _ in range(draw(st.integers(1, 4)))]
    return "\n".join(lines) + "\n"


def _expected_edits(source: str) -> dict[tuple[int, int], str]:
    """(line, col) of each id argument that must change -> the folder it must name.

    An independent oracle written with ``ast``: a ``from_pretrained`` call whose receiver is
    not imported from another library; its id a literal, or a name assigned exactly once
    in its scope (the generator keeps module and function names apart) to a literal,
    before the call (used earlier it is a NameError, which must stay one);
    ``cache_dir=`` never; ``from_hf_hub=True`` reads the ``hf:`` entry.
    """
    tree = ast.parse(source)
    foreign = {root for line, root in P_FOREIGN.items() if line in source.splitlines()}
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.arguments):
            for arg in node.args:
                assigned.setdefault(arg.arg, []).append(ast.Name("<param>", lineno=0))
    edits: dict[tuple[int, int], str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"):
            continue
        root = node.func.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id in foreign:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        arg = node.args[0] if node.args else keywords["pretrained_model_name_or_path"]
        value = arg
        if isinstance(arg, ast.Name):
            values = assigned.get(arg.id, [])
            if len(values) != 1 or values[0].lineno > arg.lineno:
                continue  # reassigned, or used before it is assigned (a NameError)
            value = values[0]
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            continue
        if "cache_dir" in keywords:
            continue
        hub = keywords.get("from_hf_hub")
        key = value.value
        if isinstance(hub, ast.Constant) and hub.value is True:
            key = f"hf:{key}"
        if key in P_INSTALLED:
            edits[(arg.lineno, arg.col_offset)] = P_INSTALLED[key]
    return edits


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules())
def test_only_ids_at_paddlenlp_call_sites_change(source: str) -> None:
    result = rewrite_source(source, P_INSTALLED)
    old, new = _tokens(source), _tokens(result.new_source)
    assert len(old) == len(new)  # one token for one token, nothing added or moved
    changed = {}
    for was, now in zip(old, new):
        if (was.type, was.string) == (now.type, now.string):
            continue
        assert now.type == tokenize.STRING and was.type in (tokenize.STRING, tokenize.NAME)
        changed[was.start] = ast.literal_eval(now.string)
    assert changed == _expected_edits(source)
    assert len(result.changes) == len(changed)
    assert rewrite_source(result.new_source, P_INSTALLED).new_source == result.new_source


def test_a_file_that_cannot_be_written_is_one_warning(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--in-place: a file changed since it was read is not overwritten, and the rest are."""
    root = tmp_path / "tree"
    root.mkdir()
    first = root / "a.py"
    first.write_text(f'm = A.from_pretrained("{BERT}")\n')
    good = _good(root)
    real_plan = files_module.plan_rewrites

    def plan_then_edit(*args: object, **kwargs: object) -> object:
        plans = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        first.write_text("# edited meanwhile\n")
        return plans

    monkeypatch.setattr("bundler.rewrite.plan_rewrites", plan_then_edit)
    assert _main(["rewrite", str(root), "--home", str(home), "--in-place", "-j", "1"]) == 4
    err = capsys.readouterr().err
    assert f"{first}: warning [unreadable]: not written: {first} changed since it was read" in err
    assert first.read_text() == "# edited meanwhile\n"
    assert str(home.resolve() / "models" / BERT) in good.read_text()
    assert "1 of 2 file(s) changed" in err
