"""`paddle-bundle rewrite`: the command over real files and a real home."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.cli import _main
from tests.conftest import make_model

SCRIPT = '''"""A user's script."""
from paddlenlp import Taskflow
from paddlenlp.transformers import AutoModel, AutoTokenizer

MODEL = "Org/small"  # the model we ship
tok = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(pretrained_model_name_or_path="Org/small")
other = AutoModel.from_pretrained("Not/installed")
name = "small"
dyn = AutoModel.from_pretrained(f"Org/{name}")
flow = Taskflow("code_generation", model="Salesforce/codegen-350M-mono")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "app.py").write_text(SCRIPT)
    (folder / "broken.py").write_text("def oops(:\n")
    return folder


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    make_model(home, "Org/small", {"config.json": "{}"})
    return home


def test_check_diff_and_in_place(project: Path, home: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    app = project / "app.py"
    full = str(home.resolve() / "models/Org/small")
    assert _main(["rewrite", str(app), "--home", str(home), "--check"]) == 1
    assert _main(["rewrite", str(app), "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    assert f'+tok = AutoTokenizer.from_pretrained("{full}")' in out
    assert "+MODEL" not in out  # the constant keeps its value for everything else
    assert app.read_text() == SCRIPT  # --diff writes nothing
    assert "app.py:10: note [computed-id]" in err and "app.py:11: note [taskflow]" in err
    assert _main(["rewrite", str(app), "--home", str(home), "--in-place"]) == 0
    text = app.read_text()
    assert 'MODEL = "Org/small"  # the model we ship' in text
    assert f'AutoTokenizer.from_pretrained("{full}")' in text
    assert f'pretrained_model_name_or_path="{full}"' in text
    assert '"Not/installed"' in text and 'f"Org/{name}"' in text
    assert "import bundler.offline" not in text  # only with --add-offline-import
    capsys.readouterr()
    assert _main(["rewrite", str(app), "--home", str(home), "--in-place",
                  "--add-offline-import"]) == 0
    text = app.read_text()
    assert text.count("import bundler.offline") == 1  # the module calls Taskflow
    assert text.index('"""A user\'s script."""') < text.index("import bundler.offline")
    capsys.readouterr()
    assert _main(["rewrite", str(app), "--home", str(home), "--check"]) == 0  # idempotent


def test_folder_with_a_parse_error(project: Path, home: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["rewrite", str(project), "--home", str(home)]) == 4
    err = capsys.readouterr().err
    assert "broken.py:1: warning [parse-error]:" in err
    assert "1 file(s) skipped: cannot read or parse" in err
    assert "Traceback" not in err


def test_rewrite_for_another_machines_home(project: Path, home: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Online side: models found in this machine's home, paths written for the target's."""
    monkeypatch.setenv("PPNLP_HOME", str(home))
    target = "/home/operator/.paddlenlp"
    assert _main(["rewrite", str(project / "app.py"), "--target-home", target]) == 0
    assert f'"{target}/models/Org/small"' in capsys.readouterr().out


def test_a_home_that_does_not_exist_is_refused(project: Path, home: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13: a typo in --home used to look models up in $PPNLP_HOME and write paths
    under the missing folder; the other machine's home is said with --target-home."""
    monkeypatch.setenv("PPNLP_HOME", str(home))
    typo = tmp_path / "hoem"
    app = project / "app.py"
    assert _main(["rewrite", str(app), "--home", str(typo), "--in-place"]) == 2
    assert "--home" in capsys.readouterr().err and app.read_text() == SCRIPT


def test_nothing_installed(project: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(["rewrite", str(project / "app.py"), "--home", str(empty), "--check"]) == 0
    assert "0 installed model(s) known" in capsys.readouterr().err
