"""``paddle-bundle doctor``: one line per finding, exit 1 when loading is blocked, and a
broken Paddle or PaddleNLP import (even one that kills the interpreter) cannot crash it.

Paddle and PaddleNLP are shadowed by small stand-ins on PYTHONPATH (doctor imports them in a
child Python, which inherits it), so these tests run in seconds; the real set is checked by
doctor in tests/test_wheels_offline.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundler import doctor
from bundler.cli import _main
from tests.conftest import ROOT


def stand_ins(tmp_path: Path, paddle: str = "", paddlenlp: str = "") -> Path:
    folder = tmp_path / "shadow"
    for name, code in (("paddle", paddle), ("paddlenlp", paddlenlp)):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(code)
    return folder


def run_doctor(tmp_path: Path, home: Path, **code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{stand_ins(tmp_path, **code)}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "bundler", "doctor", "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=300)


def lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        status, _, rest = line.partition("] ")
        found.setdefault(rest.split(":", 1)[0], f"{status[1:]}|{rest}")
    return found


def test_healthy_machine_exits_0_and_lists_the_home_s_models(
        tmp_path: Path, bundle: Path, offline_home: Path) -> None:
    assert _main(["install", str(bundle), "--home", str(offline_home), "-q"]) == 0
    proc = run_doctor(tmp_path, offline_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = lines(proc)
    assert found["python"].startswith("ok|") and sys.version.split()[0] in found["python"]
    assert found["paddlepaddle"].startswith("ok|") and "imports" in found["paddlepaddle"]
    assert found["paddlenlp"].startswith("ok|")
    assert found["home"] == f"ok|home: {offline_home}: 1 model(s) installed"
    assert found["model"].startswith("ok|model: Org/small at ")
    assert "offline hook" in found and "unshare" in found
    assert all(line.startswith("[") for line in proc.stdout.splitlines())  # one per finding


@pytest.mark.parametrize(("code", "words"), [
    pytest.param("import os; os.abort()", "the interpreter died with signal 6", id="crash"),
    pytest.param("raise ImportError('libcudart.so.11.0: cannot open shared object file')",
                 "ImportError: libcudart.so.11.0: cannot open shared object file",
                 id="import-error"),
])
def test_a_broken_paddlenlp_is_one_line_and_exit_1_without_crashing_doctor(
        tmp_path: Path, code: str, words: str) -> None:
    proc = run_doctor(tmp_path, tmp_path / "no-home", paddlenlp=code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = lines(proc)
    assert found["paddlenlp"].startswith("fail|") and words in found["paddlenlp"]
    assert "--no-index --find-links OUT.python" in found["paddlenlp"]  # what to do
    assert found["paddlepaddle"].startswith("ok|")
    # everything after the broken import was still checked
    assert found["home"].startswith("warn|") and "does not exist" in found["home"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_missing_paddlenlp_blocks_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PYTHONPATH", str(stand_ins(tmp_path)))
    real = doctor._version
    monkeypatch.setattr(doctor, "_version",
                        lambda dist: None if dist == "paddlenlp" else real(dist))
    assert _main(["doctor", "--home", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[fail] paddlenlp: paddlenlp is not installed in this Python" in out
    assert "[warn] home:" in out and "no models installed" in out


def test_offline_hook_missing_is_a_warning_with_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import site
    import sysconfig

    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": str(tmp_path)})
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(tmp_path)])
    finding = doctor.offline_hook_finding()
    assert finding.status == doctor.WARN and not finding.blocking
    assert finding.fix is not None and "import bundler.offline" in finding.fix
    (tmp_path / "paddle_bundle_offline.pth").write_text("import os\n")
    assert doctor.offline_hook_finding().status == doctor.OK


def test_a_home_that_is_a_file_blocks_loading(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    findings = doctor.home_findings(home)
    assert [f.status for f in findings] == [doctor.FAIL]
    assert doctor.exit_code(findings) == 1


def test_a_home_that_cannot_be_read_is_a_finding_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A --home under a folder this user may not enter (EACCES; as root the test fakes it):
    the report is still printed, the home named as blocking."""
    home = tmp_path / "locked" / "home"
    real_stat = Path.stat

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if self == home:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(doctor, "_software", lambda python: [])
    assert _main(["doctor", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert f"[fail] home: {home} cannot be read: Permission denied" in out
    assert "[warn] offline hook" in out or "[ok] offline hook" in out


def test_no_home_folder_at_all_is_a_finding_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """No $HOME and a uid the password database does not know (a container run under an
    arbitrary uid): Path.home() raises RuntimeError; doctor still reports."""
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("PPNLP_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    monkeypatch.setattr(doctor, "_software", lambda python: [])
    assert _main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[fail] home: no home folder: Could not determine home directory." in out
    assert "--home DIR" in out


def test_imports_are_checked_against_what_is_installed_not_the_current_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """doctor started in a folder holding a package of the same name (a PaddleNLP source
    checkout has paddlenlp/ at its top): the child must import the installed one."""
    broken = tmp_path / "json"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('the folder doctor ran in')\n")
    monkeypatch.chdir(tmp_path)
    assert doctor._import_in_child("json", sys.executable) == (True, "")


def test_an_environment_without_site_getsitepackages_still_gets_an_answer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Old virtualenv (< 20) ships a site.py without getsitepackages: doctor must not die
    with AttributeError there."""
    import site
    import sysconfig

    monkeypatch.delattr(site, "getsitepackages")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": str(tmp_path)})
    assert doctor.offline_hook_finding().status == doctor.WARN
    (tmp_path / "paddle_bundle_offline.pth").write_text("import os\n")
    assert doctor.offline_hook_finding().status == doctor.OK


def test_the_fleet_mirror_is_checked_only_when_set(tmp_path: Path, bundle: Path,
                                                   offline_home: Path) -> None:
    """A fleet client's administrator asks doctor whether offline mode reaches the mirror:
    PADDLE_BUNDLE_MIRROR was not looked at, so a typo or a down mirror showed up only when a
    program first needed a model."""
    from tests.test_mirror import free_port, nginx

    root = tmp_path / "root"
    assert _main(["mirror", "publish", str(bundle), "--root", str(root), "-q"]) == 0
    with nginx(root, tmp_path / "nginx") as server:
        env = {**os.environ, "PYTHONPATH": f"{stand_ins(tmp_path)}{os.pathsep}{ROOT}"}
        proc = subprocess.run([sys.executable, "-m", "bundler", "doctor", "--home",
                               str(offline_home)], capture_output=True, text=True, timeout=300,
                              env={**env, "PADDLE_BUNDLE_MIRROR": server.endpoint})
        assert lines(proc)["mirror"] == (
            f"ok|mirror: PADDLE_BUNDLE_MIRROR={server.endpoint} serves 1 model(s) (community),"
            " 4 file(s): offline mode takes what is not installed here from it")
    down = f"http://u:pw-secret@127.0.0.1:{free_port()}/paddlenlp"
    proc = subprocess.run([sys.executable, "-m", "bundler", "doctor", "--home",
                           str(offline_home)], capture_output=True, text=True, timeout=300,
                          env={**env, "PADDLE_BUNDLE_MIRROR": down})
    assert proc.returncode == 1
    assert lines(proc)["mirror"].startswith(
        "fail|mirror: offline mode could not read the mirror's file list")
    assert "could not serve" in proc.stdout and "pw-secret" not in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "bundler", "doctor", "--home",
                           str(offline_home)], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in env.items() if k != "PADDLE_BUNDLE_MIRROR"})
    assert "mirror" not in lines(proc)
