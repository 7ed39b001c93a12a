"""The command line contract: names, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import __version__
from bundler.cli import Progress, _main
from tests.conftest import run_cli


@pytest.mark.parametrize("args", [
    pytest.param(["pack", "Org/m"], id="pack-without-output"),
    pytest.param(["pack", "-o", "x.tar.zst"], id="pack-without-model"),
    pytest.param(["nonsense"], id="unknown-command"),
    pytest.param(["install"], id="install-without-bundle"),
    pytest.param(["pack", "Org/m", "-o", "x", "--level", "99"], id="level-out-of-range"),
])
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_console_entry_points() -> None:
    rc, out, _ = run_cli("--version")
    assert rc == 0 and __version__ in out
    rc, out, _ = run_cli("--help")
    for command in ("pack", "verify", "inspect", "install", "list", "check"):
        assert command in out


@pytest.mark.parametrize("command", ["verify", "inspect", "install"])
def test_missing_bundle_is_one_line_exit_1(command: str, tmp_path: Path) -> None:
    rc, out, err = run_cli(command, tmp_path / "missing.tar.zst", *(
        ["--home", tmp_path] if command == "install" else []))
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "missing.tar.zst does not exist" in lines[0], err


def test_not_a_bundle_is_an_integrity_failure(tmp_path: Path) -> None:
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a bundle at all" * 100)
    for command in ("verify", "inspect"):
        rc, _, err = run_cli(command, junk)
        assert rc == 3, (command, err)
        assert "Traceback" not in err and "photo.jpg" in err


def test_quiet_pack_prints_nothing(online_home: Path, tmp_path: Path) -> None:
    rc, out, err = run_cli("pack", "Org/small", "-o", tmp_path / "b.tar.zst", "--home",
                           online_home, "-q")
    assert (rc, out, err) == (0, "", "")


def test_summary_line_without_a_terminal(online_home: Path, tmp_path: Path) -> None:
    rc, out, err = run_cli("pack", "Org/small", "-o", tmp_path / "b.tar.zst", "--home",
                           online_home)
    assert rc == 0 and err == ""
    assert len(out.strip().splitlines()) == 1 and "packed 1 model(s)" in out


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = Progress("pack", quiet=False)
    bar.start(2048)
    bar.update(2048)
    bar.close()
    assert "pack" in capsys.readouterr().err
    assert not Progress("pack", quiet=True).enabled


def test_home_defaults_to_ppnlp_home(bundle: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPNLP_HOME", str(tmp_path / "env-home"))
    assert _main(["install", str(bundle), "-q"]) == 0
    assert (tmp_path / "env-home/models/Org/small/config.json").is_file()
    monkeypatch.delenv("PPNLP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert _main(["install", str(bundle), "-q"]) == 0
    assert (tmp_path / "user/.paddlenlp/models/Org/small/config.json").is_file()
