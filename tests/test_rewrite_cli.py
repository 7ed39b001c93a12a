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
    assert f'+MODEL = "{full}"  # the model we ship' in out
    assert app.read_text() == SCRIPT  # --diff writes nothing
    assert "app.py:10: note [computed-id]" in err and "app.py:11: note [taskflow]" in err
    assert _main(["rewrite", str(app), "--home", str(home), "--in-place"]) == 0
    text = app.read_text()
    assert f'MODEL = "{full}"  # the model we ship' in text
    assert f'pretrained_model_name_or_path="{full}"' in text
    assert '"Not/installed"' in text and 'f"Org/{name}"' in text
    assert "import bundler.offline" in text  # the module calls Taskflow
    assert text.index('"""A user\'s script."""') < text.index("import bundler.offline")
    capsys.readouterr()
    assert _main(["rewrite", str(app), "--home", str(home), "--check"]) == 0  # idempotent


def test_folder_with_a_parse_error(project: Path, home: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["rewrite", str(project), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "broken.py:1: warning [parse-error]:" in err and "skipped: parse errors" in err
    assert "Traceback" not in err


def test_rewrite_for_another_machines_home(project: Path, home: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Online side: models found in this machine's home, paths written for the target's."""
    monkeypatch.setenv("PPNLP_HOME", str(home))
    target = "/home/operator/.paddlenlp"
    assert _main(["rewrite", str(project / "app.py"), "--home", target]) == 0
    assert f'"{target}/models/Org/small"' in capsys.readouterr().out


def test_nothing_installed(project: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(["rewrite", str(project / "app.py"), "--home", str(empty), "--check"]) == 0
    assert "0 installed model(s) known" in capsys.readouterr().err
