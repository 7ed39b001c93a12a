"""Install under faults and odd homes (issue 9): interrupted swaps, folders holding more than
the bundle, many models, full and read-only file systems, partial multi-model installs.

Each test here failed on the code before the fix it guards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bundler.cache import Cache
from bundler.cli import _main
from bundler.errors import InstallConflictError
from bundler.install import install
from bundler.pack import pack
from tests.conftest import ROOT, SMALL_MODEL, make_model, tree


# -- helpers -----------------------------------------------------------------------------
def two_versions(tmp_path: Path, model_id: str = "Org/small") -> tuple[Path, Path, Path]:
    """(online home, v1 bundle, v2 bundle) of one model; v2 has the same file names and
    sizes but other weights, so only content tells the versions apart."""
    online = tmp_path / "online"
    make_model(online, model_id, SMALL_MODEL)
    v1 = tmp_path / "v1.tar.zst"
    pack([model_id], v1, home=online)
    (online / "models" / model_id / "model_state.pdparams").write_bytes(os.urandom(300_000))
    v2 = tmp_path / "v2.tar.zst"
    pack([model_id], v2, home=online)
    return online, v1, v2


def listed(home: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Model id -> bundle name, as ``list --json`` prints it."""
    capsys.readouterr()
    assert _main(["list", "--json", "--home", str(home)]) == 0
    data = json.loads(capsys.readouterr().out)
    return {m["id"]: m["bundle"] for m in data["models"]}


def run_script(code: str, *, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def private_mount_ok() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not private_mount_ok(),
                                  reason="needs root and unshare -m to mount file systems")


def in_private_mounts(setup: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python inside a private mount namespace, after the shell commands
    ``setup`` (mounts that vanish with the process)."""
    script = f"{setup} && exec {sys.executable} -c {_quote(textwrap.dedent(code))}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# -- 2: an interrupt after the exchange --------------------------------------------------
def test_ctrl_c_right_after_the_exchange_still_completes_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    import bundler.cache as cache_mod

    _, v1, v2 = two_versions(tmp_path)
    home = tmp_path / "home"
    install(v1, home=home)
    real = cache_mod._exchange

    def exchange_then_ctrl_c(a: Path, b: Path) -> bool:
        done = real(a, b)
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C just now
        return done

    monkeypatch.setattr(cache_mod, "_exchange", exchange_then_ctrl_c)
    assert _main(["install", str(v2), "--home", str(home), "--force", "-q"]) == 0
    captured = capsys.readouterr()
    assert "Org/small: replaced" in captured.out
    assert "SIGINT arrived while models were being swapped in" in captured.err
    assert listed(home, capsys) == {"Org/small": "v2.tar.zst"}
    assert _main(["check", "--home", str(home)]) == 0


KILL_AFTER_EXCHANGE = """
    import os, signal, sys
    from pathlib import Path
    import bundler.cache as c
    real = c._exchange
    def exchange_then_die(a, b):
        real(a, b)
        os.kill(os.getpid(), signal.SIGKILL)
    c._exchange = exchange_then_die
    from bundler.install import install
    install(Path(sys.argv[1]), home=Path(sys.argv[2]), force=True)
"""

KILL_BETWEEN_RENAMES = """
    import os, signal, sys
    from pathlib import Path
    import bundler.cache as c
    c._exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE
    home = Path(sys.argv[2]).resolve()
    real = os.rename
    def rename(src, dst):
        real(src, dst)
        if Path(src) == home / "models/Org/small":  # the old model is now aside
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename
    from bundler.install import install
    install(Path(sys.argv[1]), home=home, force=True)
"""


def _next_command(kind: str, home: Path, v1: Path, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> str:
    """Run one command of ``kind`` against ``home``; the bundle name it says is installed."""
    if kind == "list":
        return listed(home, capsys)["Org/small"]
    if kind == "check":
        assert _main(["check", "--home", str(home)]) == 0
        record = Cache(home).record(Cache(home).records()[0].model)
        assert record is not None
        return record.bundle
    if kind == "offline":
        from bundler._offline import OfflineResolver

        resolver = OfflineResolver(lambda: str(home / "models"))
        resolver.require_installed("Org/small")
        record = resolver.record("Org/small")
        assert record is not None
        return record.bundle
    if kind == "pack":
        out = tmp_path / f"repack-{kind}.tar.zst"
        pack(["Org/small"], out, home=home)
        return listed(home, capsys)["Org/small"]
    assert kind == "install"
    try:
        result = install(v1, home=home)
    except InstallConflictError as exc:
        assert "different version" in str(exc)
        return "v2.tar.zst"
    assert [o.status for o in result.outcomes] == ["unchanged"]
    return "v1.tar.zst"


def _consistent(home: Path, v1_tree: dict[str, bytes | str], v2_tree: dict[str, bytes | str],
                said: str) -> None:
    now = tree(home / "models")
    assert now in (v1_tree, v2_tree), "the model folder is neither version"
    assert said == ("v1.tar.zst" if now == v1_tree else "v2.tar.zst")
    records = Cache(home).records()
    assert [r.bundle for r in records] == [said]
    assert Cache(home).differences(records[0].files) == []
    state = home / ".paddle-bundle"
    for leftover in ("pending", "trash", "staging"):
        files = [p for p in (state / leftover).rglob("*") if not p.is_dir()]
        assert not files, f"left in {leftover}/: {files}"


@pytest.mark.parametrize("kind", ["list", "check", "offline", "install", "pack"])
@pytest.mark.parametrize("script", [pytest.param(KILL_AFTER_EXCHANGE, id="exchange"),
                                    pytest.param(KILL_BETWEEN_RENAMES, id="no-exchange")])
def test_kill_mid_swap_then_any_command_sees_one_consistent_state(
        tmp_path: Path, kind: str, script: str, capsys: pytest.CaptureFixture[str]) -> None:
    online, v1, v2 = two_versions(tmp_path)
    home = tmp_path / "home"
    install(v1, home=home)
    v1_tree = tree(home / "models")
    v2_tree = tree(online / "models")
    proc = run_script(script.replace("sys.argv[1]", repr(str(v2)))
                      .replace("sys.argv[2]", repr(str(home))))
    assert proc.returncode == -9, proc.stderr
    said = _next_command(kind, home, v1, tmp_path, capsys)
    _consistent(home, v1_tree, v2_tree, said)


# -- 3 and 16: folders holding more than the bundle puts back ----------------------------
def test_force_never_deletes_a_cached_model_below_a_taskflow_task(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    online, home = tmp_path / "online", tmp_path / "home"
    task = {"static/inference.pdmodel": b"m" * 100, "config.json": b"{}"}
    for h in (online, home):
        for rel, content in task.items():
            path = h / "taskflow/information_extraction" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    (online / "taskflow/information_extraction/config.json").write_bytes(b'{"v": 2}')
    cached = home / "taskflow/information_extraction/uie-m-large"  # PaddleNLP's own cache
    cached.mkdir()
    (cached / "model_state.pdparams").write_bytes(b"uie" * 1000)
    (cached / "config.json").write_bytes(b"{}")
    before = tree(home)
    bundle = tmp_path / "task.tar.zst"
    pack(["taskflow:information_extraction"], bundle, home=online)
    for force in ([], ["--force"]):
        assert _main(["install", str(bundle), "--home", str(home), *force]) == 1
        err = capsys.readouterr().err
        assert "uie-m-large/ (2 files)" in err and "would not put back" in err
        assert "different version" not in err
        assert tree(home) == before


def test_force_never_deletes_a_folder_without_config_below_the_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    online, home = tmp_path / "online", tmp_path / "home"
    make_model(online, "acme", {"config.json": "{}", "w.bin": b"new" * 10})
    make_model(home, "acme", {"config.json": "{}", "w.bin": b"old" * 10,
                              "legacy/weights.bin": b"keep me", "legacy/notes.txt": b"n"})
    before = tree(home)
    bundle = tmp_path / "acme.tar.zst"
    pack(["acme"], bundle, home=online)
    assert _main(["install", str(bundle), "--home", str(home), "--force"]) == 1
    err = capsys.readouterr().err
    assert "legacy/ (2 files)" in err and str(home / "models/acme") in err
    assert tree(home) == before


def test_force_replaces_what_the_old_version_installed_even_if_the_new_one_lacks_it(
        tmp_path: Path) -> None:
    online, home = tmp_path / "online", tmp_path / "home"
    folder = make_model(online, "Org/m", {"config.json": "{}", "old.bin": b"o" * 10})
    v1 = tmp_path / "v1.tar.zst"
    pack(["Org/m"], v1, home=online)
    install(v1, home=home)
    (folder / "old.bin").unlink()
    (folder / "new.bin").write_bytes(b"n" * 10)
    v2 = tmp_path / "v2.tar.zst"
    pack(["Org/m"], v2, home=online)
    with pytest.raises(InstallConflictError, match="different version"):
        install(v2, home=home)
    assert [o.status for o in install(v2, home=home, force=True).outcomes] == ["replaced"]
    assert tree(home / "models") == tree(online / "models")


def test_an_empty_folder_in_the_way_is_not_a_different_version(
        bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models/Org/small/sub").mkdir(parents=True)
    result = install(bundle, home=home)  # nothing to lose: no --force needed
    assert [o.status for o in result.outcomes] == ["installed"]
    assert tree(home / "models/Org/small")["config.json"]


def test_a_folder_of_other_files_is_described_truly(bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    home = tmp_path / "home"
    make_model(home, "Org/small", {"vocab.json": b"partial download"})
    assert _main(["install", str(bundle), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "different version" not in err
    assert "already holds files that differ from the bundle's (vocab.json)" in err
    assert "--force" in err


# -- 4: linear in the number of models ---------------------------------------------------
def test_install_and_inspect_do_linear_work_in_the_number_of_models(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Counts path comparisons, not seconds: with N models of one file each, the work per
    model must not grow with N (it was N comparisons per model: 40M at 8,000)."""
    import bundler.install
    import bundler.manifest
    import bundler.paths

    n = 300
    online = tmp_path / "online"
    ids = [f"Org/m{i:04d}" for i in range(n)]
    for model_id in ids:
        make_model(online, model_id, {"config.json": model_id})
    bundle = tmp_path / "many.tar.zst"
    pack(ids, bundle, home=online)
    calls = {"n": 0}
    real = bundler.paths.is_within

    def counting(arcname: str, root: str) -> bool:
        calls["n"] += 1
        return real(arcname, root)

    for module in (bundler.paths, bundler.manifest, bundler.install):
        monkeypatch.setattr(module, "is_within", counting, raising=False)
    result = install(bundle, home=tmp_path / "home")
    assert len(result.outcomes) == n
    assert _main(["inspect", str(bundle)]) == 0
    assert capsys.readouterr().out.count("\nmodel Org/m") == n
    assert calls["n"] < 20 * n, calls


# -- 11 and 12: space ------------------------------------------------------------------------
@needs_mounts
def test_a_small_bundle_fits_a_small_file_system(bundle: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = f"""
        import sys
        from bundler.cli import _main
        sys.exit(_main(["install", {str(bundle)!r}, "--home", {str(mnt / "home")!r}, "-q"]))
    """
    proc = in_private_mounts(f"mount -t tmpfs -o size=5m tmpfs {mnt}", code)
    assert proc.returncode == 0, proc.stderr
    assert "Org/small: installed" in proc.stdout


def test_the_space_message_states_the_need_and_the_margin(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=500_000))
    home = tmp_path / "home"
    assert _main(["install", str(bundle), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    import re

    taken = re.search(r"the models take ([\d.]+) KB on disk", err)
    assert taken and 300 < float(taken.group(1)) < 340, err  # 300 KB of weights, in blocks
    assert "keeps 1.0 MB free besides (1% of that, at least 1.0 MB)" in err
    assert "500.0 KB are free" in err and "mounted at" in err
    assert not (home / "models").exists()


@needs_mounts
def test_disk_full_mid_stream_names_the_file_system_and_what_to_do(
        bundle: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    home = mnt / "home"
    code = f"""
        import shutil, sys
        real = shutil.disk_usage  # the disk fills after the check (another writer)
        shutil.disk_usage = lambda p: real(p)._replace(free=1 << 40)
        from bundler.cli import _main
        rc = _main(["install", {str(bundle)!r}, "--home", {str(home)!r}, "-q"])
        import os
        print("LEFT", sorted(os.listdir({str(home / ".paddle-bundle/staging")!r})))
        print("MODELS", os.path.exists({str(home / "models/Org/small")!r}))
        sys.exit(rc)
    """
    proc = in_private_mounts(f"mount -t tmpfs -o size=128k tmpfs {mnt}", code)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"the file system of {home} (mounted at {mnt}) ran out of space" in err
    assert "nothing was installed" in err and "free at least" in err
    assert "LEFT []" in proc.stdout and "MODELS False" in proc.stdout


# -- 13: a partial multi-model install is reported exactly ---------------------------------
def test_a_failure_after_the_first_model_names_what_was_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import bundler.cache as cache_mod

    online, home = tmp_path / "online", tmp_path / "home"
    make_model(online, "Org/a", {"config.json": "{}", "w": b"a"})
    make_model(online, "Org/b", {"config.json": "{}", "w": b"b"})
    bundle = tmp_path / "ab.tar.zst"
    pack(["Org/a", "Org/b"], bundle, home=online)
    real = os.rename

    def rename(src: object, dst: object) -> None:
        if str(dst).endswith("models/Org/b"):
            raise PermissionError(13, "Permission denied", str(src))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_mod.os, "rename", rename)
    assert _main(["install", str(bundle), "--home", str(home), "-q"]) == 1
    err = capsys.readouterr().err
    assert "installed 1 of 2 model(s) (Org/a); not installed: Org/b (Permission denied" in err
    monkeypatch.undo()
    assert (home / "models/Org/a/w").read_bytes() == b"a"
    assert not (home / "models/Org/b").exists()
    assert listed(home, capsys) == {"Org/a": "ab.tar.zst"}
    assert _main(["check", "--home", str(home)]) == 0
    statuses = [o.status for o in install(bundle, home=home).outcomes]
    assert statuses == ["unchanged", "installed"]


# -- 18: a no-op needs no lock -------------------------------------------------------------
@needs_mounts
def test_already_installed_on_a_read_only_home(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    install(bundle, home=home)
    code = f"""
        import sys
        from bundler.cli import _main
        sys.exit(_main(["install", {str(bundle)!r}, "--home", {str(home)!r}, "-q"]))
    """
    proc = in_private_mounts(f"mount --bind {home} {home} && mount -o remount,bind,ro {home}",
                             code)
    assert proc.returncode == 0, proc.stderr
    assert "Org/small: already installed" in proc.stdout
