"""Review of issue 13's rewrite: shapes where a rewrite would have changed what code means.

Each module below, run as it is, loads something other than what the rewritten module would
load (a name rebound behind the scope analysis' back, a class from another library reached
through a dynamic import, a subscript, ``self.<attr>`` or a later ``from x import *``).  The
rewrite must leave each one alone and report why.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from bundler.rewrite import rewrite_notebook, rewrite_source

BERT = "bert-base-uncased"
INSTALLED = {BERT: "/home/op/.paddlenlp/models/bert-base-uncased"}
LOAD = f'from paddlenlp.transformers import AutoModel\nMODEL = "{BERT}"\n'

#: name -> (module, the kind of note that must explain why it is left alone)
LEFT_ALONE: dict[str, tuple[str, str]] = {
    "globals-subscript": (LOAD + 'globals()["MODEL"] = "other"\n'
                          "AutoModel.from_pretrained(MODEL)\n", "computed-id"),
    "globals-update-in-function": (LOAD + "def load():\n"
                                   "    return AutoModel.from_pretrained(MODEL)\n"
                                   "def pick(name):\n    globals().update(MODEL=name)\n",
                                   "computed-id"),
    "exec": (LOAD + "exec(\"MODEL = 'other'\")\nAutoModel.from_pretrained(MODEL)\n",
             "computed-id"),
    "setattr-on-module": ("import sys\n" + LOAD
                          + 'setattr(sys.modules[__name__], "MODEL", "other")\n'
                          "AutoModel.from_pretrained(MODEL)\n", "computed-id"),
    "class-body-locals": ("from paddlenlp.transformers import AutoModel\nclass C:\n"
                          f'    MODEL = "{BERT}"\n    locals()["MODEL"] = "other"\n'
                          "    m = AutoModel.from_pretrained(MODEL)\n", "computed-id"),
    "star-import-after-constant": (LOAD + "from config import *\n"
                                   "AutoModel.from_pretrained(MODEL)\n", "computed-id"),
    "foreign-star-after-paddlenlp-import": (
        "from paddlenlp.transformers import AutoModel\nfrom transformers import *\n"
        f'AutoModel.from_pretrained("{BERT}")\n', "foreign-call"),
    "importlib-alias": ('import importlib\nAutoModel = importlib.import_module("transformers")'
                        f'.AutoModel\nAutoModel.from_pretrained("{BERT}")\n', "foreign-call"),
    "importlib-module": ('import importlib\ntf = importlib.import_module("transformers")\n'
                         f'tf.AutoModel.from_pretrained("{BERT}")\n', "foreign-call"),
    "importlib-inline": ('import importlib\nimportlib.import_module("transformers.models")'
                         f'.AutoModel.from_pretrained("{BERT}")\n', "foreign-call"),
    "dunder-import": ('tf = __import__("transformers")\n'
                      f'tf.AutoModel.from_pretrained("{BERT}")\n', "foreign-call"),
    "getattr": ('import transformers\nM = getattr(transformers, "AutoModel")\n'
                f'M.from_pretrained("{BERT}")\n', "foreign-call"),
    "conditional-class": ("import transformers\nfrom paddlenlp.transformers import AutoModel\n"
                          "USE_HF = True\nM = transformers.AutoModel if USE_HF else AutoModel\n"
                          f'M.from_pretrained("{BERT}")\n', "foreign-call"),
    "class-registry-subscript": ('import transformers\nCLASSES = {"bert": transformers.BertModel}\n'
                                 f'CLASSES["bert"].from_pretrained("{BERT}")\n', "foreign-call"),
    "self-attribute-class": ("import transformers\nclass R:\n"
                             "    model_class = transformers.AutoModel\n    def load(self):\n"
                             f'        return self.model_class.from_pretrained("{BERT}")\n',
                             "foreign-call"),
    "self-attribute-set-in-init": ("from transformers import BertModel\nclass R:\n"
                                   "    def __init__(self):\n        self.cls = BertModel\n"
                                   "    def load(self):\n"
                                   f'        return self.cls.from_pretrained("{BERT}")\n',
                                   "foreign-call"),
    "parameter-default-class": ("import transformers\nclass R:\n"
                                "    def __init__(self, cls=transformers.AutoModel):\n"
                                "        self.cls = cls\n    def load(self):\n"
                                f'        return self.cls.from_pretrained("{BERT}")\n',
                                "foreign-call"),
}


@pytest.mark.parametrize("name", sorted(LEFT_ALONE))
def test_left_alone_and_reported(name: str) -> None:
    source, kind = LEFT_ALONE[name]
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source, textwrap.indent(result.new_source, "  ")
    assert not result.changes
    assert [f.kind for f in result.findings if f.kind != "taskflow"] == [kind]


#: Look-alikes of the shapes above that are PaddleNLP loads of a settled value: still rewritten.
STILL_REWRITTEN: dict[str, str] = {
    "setattr-on-self": (LOAD + "class C:\n    def __init__(self):\n"
                        '        setattr(self, "MODEL", "other")\n'
                        "AutoModel.from_pretrained(MODEL)\n"),
    "paddlenlp-import-after-foreign-star": ("from transformers import *\n"
                                            "from paddlenlp.transformers import AutoModel\n"
                                            f'AutoModel.from_pretrained("{BERT}")\n'),
    "paddlenlp-importlib": ("import importlib\n"
                            'tf = importlib.import_module("paddlenlp.transformers")\n'
                            f'tf.AutoModel.from_pretrained("{BERT}")\n'),
    "paddlenlp-registry": ("from paddlenlp.transformers import BertModel\n"
                           'CLASSES = {"bert": BertModel}\n'
                           f'CLASSES["bert"].from_pretrained("{BERT}")\n'),
    "local-constant-in-function-with-globals-elsewhere": (
        "from paddlenlp.transformers import AutoModel\nG = globals()\ndef load():\n"
        f'    name = "{BERT}"\n    return AutoModel.from_pretrained(name)\n'),
}


@pytest.mark.parametrize("name", sorted(STILL_REWRITTEN))
def test_look_alikes_still_rewritten(name: str) -> None:
    source = STILL_REWRITTEN[name]
    result = rewrite_source(source, INSTALLED)
    assert [c.old_id for c in result.changes] == [BERT]
    assert INSTALLED[BERT] in result.new_source


def _notebook(*cells: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                                  "execution_count": None, "source": source}
                                 for source in cells],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1)


def test_notebook_notes_name_cells_and_their_lines() -> None:
    """A note's own line references point into the cells, not into the joined module
    (which the user never sees: "lines 8, 12" named nothing in a 3-line cell)."""
    text = _notebook("import os\n", "from paddlenlp.transformers import AutoModel\n"
                     f'M = "{BERT}"\nx = AutoModel.from_pretrained(M)\n',
                     "%%capture\nM = 'other'\n", "y = 1 + M\n")
    result = rewrite_notebook(text, INSTALLED)
    assert result.new_source == text
    (note,) = result.findings
    assert (note.kind, note.cell, note.line) == ("computed-id", 2, 3)
    assert "assigned 2 times (cell 2 line 2, cell 3 line 2)" in note.message


#: More ways to rebind a module variable that scope analysis does not see.
REBOUND_UNSEEN = {
    "walrus-in-comprehension": "ys = [(MODEL := x) for x in ['other']]\n",
    "walrus-in-generator": "any((MODEL := x) for x in ['other'])\n",
    "eval": "eval(\"exec('MODEL = 1')\")\n",
    "builtins-exec": "import builtins\nbuiltins.exec(\"MODEL = 'other'\")\n",
    "module-attribute": "import sys\nsys.modules[__name__].MODEL = 'other'\n",
}


@pytest.mark.parametrize("name", sorted(REBOUND_UNSEEN))
def test_rebound_unseen_is_left_alone(name: str) -> None:
    source = LOAD + REBOUND_UNSEEN[name] + "AutoModel.from_pretrained(MODEL)\n"
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source
    assert [f.kind for f in result.findings] == ["computed-id"]


def test_other_modules_attributes_are_not_namespace_writers() -> None:
    source = (LOAD + "class C:\n    def f(self):\n        self.modules.x = 1\n"
              "AutoModel.from_pretrained(MODEL)\n")
    assert [c.old_id for c in rewrite_source(source, INSTALLED).changes] == [BERT]


@pytest.mark.parametrize("source", [
    'import functools\nfrom paddlenlp import Taskflow\nner = functools.partial(Taskflow, "ner")\n',
    "import paddlenlp\nFLOWS = dict(ner=paddlenlp.Taskflow)\n",
], ids=["functools-partial", "registry"])
def test_taskflow_handed_on_is_reported_and_gets_the_offline_import(source: str) -> None:
    """Taskflow constructed later through ``functools.partial`` or a registry still picks
    its model by name: reported, and ``--add-offline-import`` covers the module."""
    plain = rewrite_source(source, INSTALLED)
    assert plain.new_source == source
    assert [f.kind for f in plain.findings] == ["taskflow"]
    added = rewrite_source(source, INSTALLED, add_offline_import=True)
    assert added.offline_import_added
    assert added.new_source.startswith("import bundler.offline  # paddle-bundle:")
    assert added.new_source.endswith(source)


@pytest.mark.parametrize("source", [
    # Python reads ＭODEL as MODEL (NFKC): the constant is reassigned
    LOAD + '\uff2dODEL = "other"\nAutoModel.from_pretrained(MODEL)\n',
    # ... and Ａ as A: the class is transformers'
    f'from transformers import AutoModel as A\n\uff21.from_pretrained("{BERT}")\n',
], ids=["respelled-constant", "respelled-foreign-alias"])
def test_names_python_reads_differently_stop_the_rewrite(source: str) -> None:
    result = rewrite_source(source, INSTALLED)
    assert result.new_source == source
    (note,) = result.findings
    respelled_line = next(n for n, line in enumerate(source.splitlines(), 1)
                          if not line.isascii())
    assert note.kind == "computed-id" and "(NFKC)" in note.message
    assert note.line == respelled_line
