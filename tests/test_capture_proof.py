"""The proof's weaknesses found in review (issue 8, F1..F14), each pinned by a test.

No Paddle in this file except where marked: the proof is driven through
:func:`bundler.fetch.write_proven` with a tiny model folder (plain files) and a command that
is a short Python program, so each test checks one property of the proof itself: where its
scratch goes, what it can read, how it treats Ctrl-C, loopback, the start-up hook.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from shlex import quote as shlex_quote

import pytest

from bundler.cache import LocalFile
from bundler.capture import prove, session
from bundler.errors import ProofFailedError
from bundler.fetch import _CommandProof, write_proven
from bundler.manifest import ModelEntry
from bundler.pack import PackOptions
from tests.conftest import ROOT, have_unshare, make_model, run_cli

needs_unshare = pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted "
                                   "here, so the namespace cannot be checked")
MODEL = "Org/tiny"


def _model(home: Path) -> tuple[list[ModelEntry], list[LocalFile]]:
    folder = make_model(home, MODEL, {"config.json": '{"a": 1}', "vocab.txt": "x\ny\n"})
    files = [LocalFile.regular(f"models/{MODEL}/{p.name}", p, p.stat())
             for p in sorted(folder.iterdir())]
    return [ModelEntry.for_id(MODEL)], files


def _prove(tmp_path: Path, code: str, *, scratch: Path | None = None,
           home: Path | None = None) -> Path:
    """Bundle the tiny model to ``<tmp>/stick/b.tar.zst``, proven by ``python -c code``."""
    home = home or tmp_path / "home"
    entries, files = _model(home)
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir(exist_ok=True)
    prover = _CommandProof((sys.executable, "-c", textwrap.dedent(code)))
    kw = {"scratch": scratch} if scratch else {}
    write_proven(entries, files, out, home=home, options=PackOptions(), prover=prover, **kw)
    return out


# -- F1: the scratch home is not beside the bundle -----------------------------------------
def test_the_proof_installs_under_tmpdir_not_beside_the_bundle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a USB stick (FAT32: no file over 4 GiB, no symlinks; wear; space) the proof's
    scratch install must not go beside -o: only the bundle's own staging does."""
    system_tmp = tmp_path / "systemtmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    seen = tmp_path / "seen.json"
    code = f"""
        import json, os
        stick = {str(tmp_path / "stick")!r}
        json.dump({{"home": os.environ["PPNLP_HOME"], "cwd": os.getcwd(),
                    "stick": sorted(os.listdir(stick))}}, open({str(seen)!r}, "w"))
        """
    out = _prove(tmp_path, code)
    got = json.loads(seen.read_text())
    assert Path(got["home"]).is_relative_to(system_tmp), got
    assert all(n.startswith(".paddle-bundle-fetch-") for n in got["stick"]), got
    assert out.is_file()
    # --scratch DIR wins over $TMPDIR
    mine = tmp_path / "myscratch"
    mine.mkdir()
    _prove(tmp_path, code, scratch=mine)
    assert Path(json.loads(seen.read_text())["home"]).is_relative_to(mine)
    assert list(mine.iterdir()) == [] and list(system_tmp.iterdir()) == []  # cleaned up


# -- F2: the real homes are out of reach -----------------------------------------------------
@needs_unshare
def test_the_proof_cannot_read_the_real_home_or_dot_paddlenlp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that reads the real PaddleNLP home (fetch's --home, or ~/.paddlenlp) by
    path worked in the proof: the bundle was never what it loaded."""
    monkeypatch.setattr(prove, "_ISOLATION", None)
    user = tmp_path / "user"
    make_model(user / ".paddlenlp", "Other/model", {"config.json": "{}"})
    monkeypatch.setenv("HOME", str(user))
    home = tmp_path / "home"
    for path in (home / "models" / MODEL / "config.json",
                 user / ".paddlenlp" / "models" / "Other" / "model" / "config.json"):
        out = tmp_path / "stick" / "b.tar.zst"
        with pytest.raises(ProofFailedError, match="offline proof failed .network namespace."):
            _prove(tmp_path, f"print(open({str(path)!r}).read())", home=home)
        assert path.is_file()  # still there outside the proof
        assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_program_that_sets_its_own_home_fails_the_guard_proof_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a namespace (socket guard only), offline mode reports the homes it resolved
    models in: one that is not the scratch home fails the proof."""
    monkeypatch.setattr(prove, "_ISOLATION", (prove.ISOLATION_GUARD, ()))
    home = tmp_path / "home"
    code = f"""
        import os
        os.environ["PPNLP_HOME"] = {str(home)!r}  # the program picks the real home itself
        from bundler._offline import _RESOLVER
        assert _RESOLVER.model_folder({MODEL!r}).is_dir()
        """
    with pytest.raises(ProofFailedError) as info:
        _prove(tmp_path, code, home=home)
    assert f"loaded models from {home / 'models'}" in str(info.value)
    assert "socket guard" in str(info.value)
    assert not (tmp_path / "stick" / "b.tar.zst").exists()
    # the same program loading from the home it was given passes
    ok = code.replace(f'os.environ["PPNLP_HOME"] = {str(home)!r}', "pass")
    assert _prove(tmp_path, ok, home=home).is_file()


# -- F4: Ctrl-C during the proof ---------------------------------------------------------
SERVER = """
    import signal, sys, time
    signal.signal(signal.SIGINT, lambda *a: sys.exit(0))  # a server: Ctrl-C is a clean stop
    open(sys.argv[1], "w").close()
    time.sleep(60)
    """

DRIVER = """
    import signal, sys, tempfile, textwrap
    from pathlib import Path
    if len(sys.argv) > 3:
        tempfile.tempdir = sys.argv[3]  # the system's temporary folder, for the scratch
    # as in a terminal: a test run started in the background (make test &, CI runners) has
    # SIGINT ignored, and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from tests.test_capture_proof import _prove
    try:
        _prove(Path(sys.argv[1]), {server!r}.replace("sys.argv[1]", repr(sys.argv[2])))
    except KeyboardInterrupt:
        sys.exit(130)
    print("WRITTEN")
    """


def _start_proof_of_a_server(tmp_path: Path, *system_tmp: Path
                             ) -> tuple[subprocess.Popen[str], Path]:
    """A fetch proof of :data:`SERVER` in its own process group, once the server runs."""
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER.format(server=textwrap.dedent(SERVER))),
         str(tmp_path), str(marker), *map(str, system_tmp)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()
    return proc, marker


def test_ctrl_c_during_the_proof_means_no_bundle_even_if_the_command_exits_0(
        tmp_path: Path) -> None:
    proc, _ = _start_proof_of_a_server(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "WRITTEN" not in stdout
    stick = tmp_path / "stick"
    assert list(stick.iterdir()) == []  # no bundle, no staging


# -- F5: run and the proof start Pythons the same way -----------------------------------
def test_run_switches_offline_mode_on_in_a_python_without_paddle_bundle(
        tmp_path: Path) -> None:
    """The proof reached every Python through the sitecustomize hook on PYTHONPATH; run
    relied on the venv's .pth, so a script starting another Python passed the proof and
    failed under run."""
    bare = Path(sys.base_prefix) / "bin" / "python3"
    if not bare.is_file() or sys.prefix == sys.base_prefix:
        pytest.skip("no Python without paddle-bundle next to this venv")
    code = "import bundler._offline as o; print('ACTIVE', o.is_active())"
    (tmp_path / "home").mkdir()
    for python in (sys.executable, str(bare)):
        rc, out, err = run_cli("run", "--home", tmp_path / "home", "--", python, "-c", code)
        assert rc == 0, err
        assert "ACTIVE True" in out, (python, out, err)


# -- F6: loopback works in the namespace ---------------------------------------------------
@needs_unshare
def test_a_program_talking_to_its_own_localhost_server_passes_the_proof(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prove, "_ISOLATION", None)
    code = """
        import socket
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname(), timeout=10)
        conn, _ = server.accept()
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        """
    out = _prove(tmp_path, code)
    assert out.is_file()
    assert prove.isolation()[0] == prove.ISOLATION_NAMESPACE


# -- F7: the start-up hook ----------------------------------------------------------------
def _package_link(hook: Path) -> Path:
    found = [p for p in hook.rglob("bundler") if p.is_symlink() or p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def test_a_failing_hook_is_one_line_and_the_users_sitecustomize_still_runs(
        tmp_path: Path) -> None:
    hook = session.write_hook(tmp_path / "hook")
    link = _package_link(hook)
    link.unlink()
    link.mkdir()
    (link / "__init__.py").write_text("raise RuntimeError('broken install')\n")
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITE = 1\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{user}",
           "PADDLE_BUNDLE_CAPTURE": str(reports)}
    proc = subprocess.run([sys.executable, "-c",
                           "import builtins; print('USER', getattr(builtins, 'USER_SITE', 0))"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0
    assert "USER 1" in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "start-up hook failed" in lines[0] and "broken install" in \
        lines[0], proc.stderr


def test_the_hook_folder_does_not_shadow_a_users_package_named_bundler(
        tmp_path: Path) -> None:
    hook = session.write_hook(tmp_path / "hook")
    user = tmp_path / "user"
    (user / "bundler").mkdir(parents=True)
    (user / "bundler" / "__init__.py").write_text("MINE = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_BUNDLE")}
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{user}"
    proc = subprocess.run([sys.executable, "-c", "import bundler; print('MINE', bundler.MINE)"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "MINE 1" in proc.stdout, proc.stderr


# -- F9: report files --------------------------------------------------------------------
def test_a_reused_pid_does_not_overwrite_an_earlier_report(tmp_path: Path) -> None:
    """Two recorders of one pid (a pid reused by a later process of the command) each keep
    their report; names were ``<pid>.json``, so the later one replaced the earlier."""
    from bundler.capture.recorder import Recorder

    home = tmp_path / "home"
    first = Recorder(str(home), report_dir=str(tmp_path))
    first.use("models/A/a", str(home / "models/A/a/config.json"), "downloaded")
    second = Recorder(str(home), report_dir=str(tmp_path))
    second.use("models/B/b", str(home / "models/B/b/config.json"), "cached")
    merged = session.merge(tmp_path)
    assert merged["processes"] == 2
    assert [f["root"] for f in merged["files"]] == ["models/A/a", "models/B/b"]


def test_threads_recording_at_once_lose_nothing(tmp_path: Path) -> None:
    import threading

    from bundler.capture.recorder import Recorder

    rec = Recorder(str(tmp_path / "home"), report_dir=str(tmp_path))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                rec.use(f"models/T/{n}", str(tmp_path / f"home/models/T/{n}/f{i}"), "cached")
        except BaseException as exc:  # pragma: no cover - the failure itself
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(session.merge(tmp_path)["files"]) == 180
    assert not list(tmp_path.glob("*.tmp"))


# -- F10: the command's exit code comes first --------------------------------------------
def test_a_failing_command_with_a_damaged_report_reports_its_exit_code(
        tmp_path: Path) -> None:
    from bundler.errors import CommandFailedError
    from bundler.fetch import fetch_command

    code = ("import os, sys; d = os.environ['PADDLE_BUNDLE_CAPTURE']\n"
            "open(os.path.join(d, '1-x.json'), 'w').write('{not json')\n"
            "sys.exit(5)\n")
    with pytest.raises(CommandFailedError) as info:
        fetch_command([sys.executable, "-c", code], tmp_path / "b.tar.zst",
                      home=tmp_path / "home")
    assert info.value.exit_code == 5 and "exited with code 5" in str(info.value)


# -- F11: no credentials in the manifest or the messages ------------------------------------
def test_credentials_are_redacted_from_commands_and_urls() -> None:
    from bundler.fetch import redact_command, redact_url

    assert redact_url("http://user:pw@mirror.local:8080/paddlenlp") == \
        "http://***@mirror.local:8080/paddlenlp"
    assert redact_url("see https://tok@h/x and ftp://a:b@c/") == \
        "see https://***@h/x and ftp://***@c/"
    assert redact_url("http://mirror.local/paddlenlp") == "http://mirror.local/paddlenlp"
    assert redact_command(["python", "app.py", "--token", "s3cret", "api_key=abc",
                           "--password=pw", "--mirror", "http://u:p@m/x", "--epochs", "3",
                           "HF_TOKEN=hf_x"]) == (
        "python", "app.py", "--token", "***", "api_key=***", "--password=***", "--mirror",
        "http://***@m/x", "--epochs", "3", "HF_TOKEN=***")


def test_a_failing_commands_message_does_not_print_its_secrets(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    rc, _, stderr = run_cli("fetch", "--home", tmp_path / "home", "-o", out,
                            "--mirror", "http://alice:hunter2@127.0.0.1:9/paddlenlp", "--",
                            sys.executable, "-c", "raise SystemExit(4)", "--token", "s3cret",
                            "password=hunter3")
    assert rc == 4
    assert "exited with code 4" in stderr
    for secret in ("s3cret", "hunter2", "hunter3", "alice"):
        assert secret not in stderr, stderr


def test_a_failed_download_does_not_print_the_mirrors_password() -> None:
    from bundler.fetch import ChildReport, error_for

    report = ChildReport(endpoint="http://alice:hunter2@m.local/paddlenlp", paddlenlp="",
                         paddle="", files=(), absent={},
                         error={"kind": "download", "message": "boom for url "
                                "http://alice:hunter2@m.local/paddlenlp/x",
                                "url": "http://alice:hunter2@m.local/paddlenlp/x"})
    text = str(error_for(report, "http://alice:hunter2@m.local/paddlenlp"))
    assert "hunter2" not in text and "alice" not in text and "m.local" in text


# -- F12: SIGTERM and leftovers -----------------------------------------------------------
def test_sigterm_during_the_proof_leaves_no_folders(tmp_path: Path) -> None:
    system_tmp = tmp_path / "systemtmp"
    system_tmp.mkdir()
    proc, _ = _start_proof_of_a_server(tmp_path, system_tmp)
    assert any((tmp_path / "stick").iterdir()) and any(system_tmp.iterdir())  # at work
    proc.terminate()  # paddle-bundle only, as a service manager or `kill` would
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (stdout, stderr)
    assert list((tmp_path / "stick").iterdir()) == []
    assert list(system_tmp.iterdir()) == []


def test_a_later_fetch_removes_stale_folders_of_a_killed_one(tmp_path: Path) -> None:
    from bundler.capture.prove import PROOF_PREFIX

    stick = tmp_path / "stick"
    system_tmp = tmp_path / "systemtmp"
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    stale = [stick / f".paddle-bundle-fetch-{dead}-abc_1234",
             system_tmp / f"{PROOF_PREFIX}{dead}-x9y8z7w6", stick / ".paddle-bundle-proof-oldname1"]
    live = [stick / f".paddle-bundle-fetch-{os.getppid()}-abcdefgh",
            system_tmp / f"{PROOF_PREFIX}{os.getppid()}-yyyyyyyy"]
    for folder in stale + live:
        (folder / "home").mkdir(parents=True)
    old = time.time() - 3 * 24 * 3600
    os.utime(stale[2], (old, old))
    _prove(tmp_path, "pass", scratch=system_tmp)
    assert [p for p in stale if p.exists()] == []
    assert all(p.is_dir() for p in live)


# -- F14: Ctrl-C between the final renames ---------------------------------------------------
def test_ctrl_c_between_the_renames_still_moves_the_whole_bundle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bundler.fetch

    real_replace = os.replace
    calls: list[str] = []
    target = tmp_path / "stick" / "b.tar.zst"

    def replace(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if Path(str(dst)).parent == target.parent:
            calls.append(str(dst))
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the bundle's rename

    monkeypatch.setattr(bundler.fetch.os, "replace", replace)
    try:
        out = _prove(tmp_path, "pass")
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C stopped the move half-way: {sorted(os.listdir(target.parent))}")
    assert out.is_file() and out.with_name(out.name + ".sha256").is_file()
    assert len(calls) == 2


# -- F13: not root inside the user namespace -----------------------------------------------
NOBODY_PROBE = """
import subprocess, sys
from bundler.capture.prove import isolation
name, prefix = isolation()
probe = ("import os, socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
         "socket.create_connection(s.getsockname(), timeout=5); print(os.getuid(), os.getgid())")
done = subprocess.run([*prefix, "--", sys.executable, "-I", "-c", probe],
                      capture_output=True, text=True)
print(name, "|", done.returncode, "|", done.stdout.strip(), "|", done.stderr.strip()[-300:])
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists()
                    or not Path("/usr/bin/python3").exists(),
                    reason="needs root (to become nobody), setpriv and /usr/bin/python3")
def test_without_root_the_proof_runs_as_the_callers_own_uid(tmp_path: Path) -> None:
    """``unshare -r -n`` ran the proof as uid 0: a program that behaves differently as root
    (writes where the user cannot, skips a permission check) was proven as someone else."""
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
         f"HOME={tmp_path}", f"PYTHONPATH={ROOT}", "/usr/bin/python3", "-c", NOBODY_PROBE],
        capture_output=True, text=True, cwd="/tmp", timeout=120)
    assert proc.returncode == 0, proc.stderr
    name, rc, ids, err = (p.strip() for p in proc.stdout.split("|"))
    if name != prove.ISOLATION_NAMESPACE:
        pytest.skip("user namespaces are not available to an unprivileged user here")
    assert (rc, ids) == ("0", "65534 65534"), err


def test_the_proof_never_hides_your_home_folder_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    (user / ".paddlenlp").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("PPNLP_HOME", str(user))  # a home that is the home folder: not hidden
    monkeypatch.setattr(prove, "_account_homes", lambda: [])  # this machine's own accounts
    for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "AISTUDIO_HUB_CACHE",
                 "XDG_CACHE_HOME", "AISTUDIO_HOME"):
        monkeypatch.delenv(name, raising=False)
    found = prove.real_homes([tmp_path / "data"])
    assert found == [tmp_path / "data", user / ".paddlenlp"], found


def test_scratch_must_be_an_existing_folder(tmp_path: Path) -> None:
    rc, _, err = run_cli("fetch", "-o", tmp_path / "b.tar.zst", "--scratch",
                         tmp_path / "nope", "--", sys.executable, "-c", "pass")
    assert rc == 2 and "--scratch" in err


# -- review rv8 -------------------------------------------------------------------------------
def test_stale_cleanup_never_removes_a_users_folder_named_like_ours(tmp_path: Path) -> None:
    """``.paddle-bundle-fetch-2024-backup`` (a dead "pid", a name mkdtemp never makes) and a
    day-old ``paddle-bundle-proof-notes`` are the user's, not a killed fetch's leftovers."""
    from bundler.capture.prove import PROOF_PREFIX

    stick = tmp_path / "stick"
    system_tmp = tmp_path / "systemtmp"
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    mine = [stick / f".paddle-bundle-fetch-{dead}-backup", stick / ".paddle-bundle-fetch-old",
            system_tmp / f"{PROOF_PREFIX}{dead}-my-notes-2024",
            system_tmp / f"{PROOF_PREFIX}notes"]
    for folder in mine:
        (folder / "precious").mkdir(parents=True)
    old = time.time() - 3 * 24 * 3600
    for folder in mine:
        os.utime(folder, (old, old))
    _prove(tmp_path, "pass", scratch=system_tmp)
    assert [p for p in mine if not (p / "precious").is_dir()] == []


def test_a_site_mirror_cannot_fill_in_what_the_bundle_lacks_in_the_proof(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PADDLE_BUNDLE_MIRROR`` (docs/fleet.md) makes offline mode download built-in names'
    files and Taskflow's files from the site's mirror, through the socket guard: exported on
    the fetching machine, the proof passed on files the bundle does not hold."""
    monkeypatch.setattr(prove, "_ISOLATION", (prove.ISOLATION_GUARD, ()))
    monkeypatch.setenv("PADDLE_BUNDLE_MIRROR", "http://mirror.corp.example:8080/paddlenlp")
    code = """
        import os, sys
        from bundler._offline import mirror_endpoint
        sys.exit(f"offline mode would use {mirror_endpoint()}" if mirror_endpoint() else 0)
        """
    assert _prove(tmp_path, code).is_file()


def test_secrets_in_headers_query_strings_and_shell_strings_are_redacted() -> None:
    from bundler.fetch import redact_command, redact_url, shown

    command = ["curl", "-H", "Authorization: Bearer abc123", "--header=X-Api-Key: k3y",
               "https://h.example/x?access_token=qqq&a=1", "sh", "-c",
               "HF_TOKEN=hf_zz python app.py --token s3cret --epochs 3"]
    text = shown(command)
    for secret in ("abc123", "k3y", "qqq", "hf_zz", "s3cret"):
        assert secret not in text, text
    assert redact_command(command) == (
        "curl", "-H", "Authorization: Bearer ***", "--header=X-Api-Key: ***",
        "https://h.example/x?access_token=***&a=1", "sh", "-c",
        "HF_TOKEN=*** python app.py --token *** --epochs 3")
    assert redact_url("http://m/p?token=t1&x=2#f") == "http://m/p?token=***&x=2#f"
    assert redact_command(["python", "app.py", "--epochs", "3", "model=org/name"]) == (
        "python", "app.py", "--epochs", "3", "model=org/name")


@needs_unshare
def test_a_project_inside_the_home_does_not_unhide_the_homes_models(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the command's folder inside the PaddleNLP home (``~/.paddlenlp/work``), the home
    was not hidden at all, so a program reading the real model by path passed the proof.
    Its own folder must still be there."""
    monkeypatch.setattr(prove, "_ISOLATION", None)
    home = tmp_path / "home"
    project = home / "work"
    (project / "data").mkdir(parents=True)
    (project / "data" / "input.txt").write_text("hello")
    monkeypatch.chdir(project)
    model_file = home / "models" / MODEL / "config.json"
    with pytest.raises(ProofFailedError, match="No such file"):
        _prove(tmp_path, f"print(open({str(model_file)!r}).read())", home=home)
    assert model_file.is_file()
    assert not (tmp_path / "stick" / "b.tar.zst").exists()
    # the project's own files are not hidden
    assert _prove(tmp_path, "print(open('data/input.txt').read())", home=home).is_file()


def test_sigterm_stops_the_commands_grandchildren_too(tmp_path: Path) -> None:
    """``fetch -- sh run.sh``: SIGTERM stopped the shell only; the Python it started ran on,
    orphaned (downloading, writing), after paddle-bundle had exited."""
    pidfile = tmp_path / "grandchild.pid"
    child = (f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(120)")
    script = f"{shlex_quote(sys.executable)} -c {shlex_quote(child)}; true"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bundler", "fetch", "--home", str(tmp_path / "home"), "-o",
         str(tmp_path / "b.tar.zst"), "--", "sh", "-c", script], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)  # no pipe the orphan holds open
    deadline = time.monotonic() + 120
    while not pidfile.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pidfile.exists(), proc.poll()
    time.sleep(0.2)
    grandchild = int(pidfile.read_text())
    proc.terminate()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = not Path(f"/proc/{grandchild}").exists() or \
        Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1].split()[0] == "Z"
    if not gone:
        os.kill(grandchild, signal.SIGKILL)
    assert gone, "the command's grandchild outlived paddle-bundle"


@needs_unshare
def test_a_sandbox_that_cannot_be_set_up_is_not_blamed_on_the_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount the sandbox could not make (here: a folder gone between listing and hiding)
    was reported as "python ... exited with code 125 offline" with the hint that the program
    needs something the capture did not see: the command never ran."""
    monkeypatch.setattr(prove, "_ISOLATION", None)
    monkeypatch.setattr(prove, "real_homes", lambda extra=(): [tmp_path / "vanished"])
    with pytest.raises(ProofFailedError) as info:
        _prove(tmp_path, "pass")
    text = str(info.value)
    assert "could not start" in text and "exited with code" not in text, text
    assert "vanished" in text and "--no-prove" in text
    assert not (tmp_path / "stick" / "b.tar.zst").exists()


@needs_unshare
def test_another_accounts_paddlenlp_home_is_hidden_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sudo paddle-bundle fetch`` proves with root's home: a program reading
    ``/home/alice/.paddlenlp/...`` by path passed the proof with a model the bundle lacks."""
    monkeypatch.setattr(prove, "_ISOLATION", None)
    alice = tmp_path / "alice"
    make_model(alice / ".paddlenlp", "Other/model", {"config.json": "{}"})
    monkeypatch.setattr(prove, "_account_homes", lambda: [alice])
    path = alice / ".paddlenlp" / "models" / "Other" / "model" / "config.json"
    with pytest.raises(ProofFailedError, match="No such file"):
        _prove(tmp_path, f"print(open({str(path)!r}).read())")
    assert path.is_file()


def test_a_failed_proof_does_not_print_a_secret_from_the_programs_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prove, "_ISOLATION", (prove.ISOLATION_GUARD, ()))
    code = """
        import sys
        sys.exit("cannot log in to http://bob:hunter2@db.local with --password s3cret")
        """
    with pytest.raises(ProofFailedError) as info:
        _prove(tmp_path, code)
    text = str(info.value)
    assert "cannot log in" in text and "db.local" in text, text
    assert "hunter2" not in text and "s3cret" not in text, text


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="needs root (to drop CAP_SYS_ADMIN) and setpriv")
def test_root_without_cap_sys_admin_still_gets_a_namespace(tmp_path: Path) -> None:
    """Root in a container without CAP_SYS_ADMIN: ``unshare -m -n`` is refused, only that
    was tried, and the proof fell back to the socket guard although ``unshare -r`` works."""
    drop = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]
    if subprocess.run([*drop, "unshare", "-r", "-m", "-n", "true"]).returncode != 0:
        pytest.skip("user namespaces are not permitted here either")
    assert subprocess.run([*drop, "unshare", "-m", "-n", "true"],
                          stderr=subprocess.DEVNULL).returncode != 0
    proc = subprocess.run(
        [*drop, "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", NOBODY_PROBE],
        capture_output=True, text=True, cwd="/tmp", timeout=120)
    assert proc.returncode == 0, proc.stderr
    name, rc, ids, err = (p.strip() for p in proc.stdout.split("|"))
    assert (name, rc, ids) == (prove.ISOLATION_NAMESPACE, "0", "0 0"), (name, rc, ids, err)
