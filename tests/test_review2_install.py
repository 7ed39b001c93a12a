"""Install and recovery against a hostile state folder, odd homes and unlucky kills (the second
adversarial review of install/cache).

Each test here failed on the code before the fix it guards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.cache import STATE_DIRNAME, Cache
from bundler.cli import _main
from bundler.install import install
from bundler.manifest import ModelEntry
from tests.conftest import tree
from tests.test_install_hardening import listed, run_script, two_versions
from tests.test_sources import FILES, make_hub_model


def _victim(tmp_path: Path) -> Path:
    """A folder outside the home, full of things recovery must never touch."""
    victim = tmp_path / "victim"
    (victim / "important").mkdir(parents=True)
    (victim / "important" / "data").write_bytes(b"keep me")
    (victim / "settings.json").write_text('{"a": 1}')
    (victim / "sub").mkdir()
    (victim / "sub" / "more.json").write_text("{}")
    return victim


# -- recovery must never follow a symlink planted in a state folder ------------------------
@pytest.mark.parametrize("name", ["trash", "pending", "staging"])
def test_recovery_never_deletes_through_a_link_planted_in_the_state_folder(
        bundle: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    install(bundle, home=home)
    victim = _victim(tmp_path)
    before = tree(victim)
    with contextlib.suppress(FileNotFoundError):
        (home / STATE_DIRNAME / name).rmdir()  # left empty by the install
    (home / STATE_DIRNAME / name).symlink_to(victim)
    assert _main(["list", "--home", str(home)]) == 0
    assert "Org/small" in capsys.readouterr().out
    assert tree(victim) == before
    assert not os.path.lexists(home / STATE_DIRNAME / name)  # the link itself is gone


def test_recovery_never_deletes_through_a_shared_hub_caches_planted_state_folder(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub cache shared by several users (HF_HOME on a team server): another user links
    its ``.paddle-bundle`` to one of ours, shaped like a work area with a trash entry."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    home = tmp_path / "home"
    install(bundle, home=home)
    victim = _victim(tmp_path)
    area = Cache(home).work_area("hf/models--Org--m")
    tag = area.name
    (victim / tag / "trash" / "x").mkdir(parents=True)
    (victim / tag / "trash" / "x" / "data").write_bytes(b"keep me too")
    (victim / tag / "staging" / "y").mkdir(parents=True)
    (victim / tag / "staging" / "y" / "data").write_bytes(b"and me")
    before = tree(victim)
    (hub / STATE_DIRNAME).symlink_to(victim)
    assert [r.model.id for r in Cache(home).records()] == ["Org/small"]
    assert tree(victim) == before


def test_a_trash_entry_that_is_a_link_is_never_followed(
        bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    install(bundle, home=home)
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "w.bin").write_bytes(b"outside")
    (outside / "root").write_text("models/Org/planted")
    before = tree(outside)
    trash = home / STATE_DIRNAME / "trash"
    trash.mkdir()
    (trash / "x").symlink_to(outside)
    Cache(home).records()
    assert tree(outside) == before
    assert not (home / "models/Org/planted").exists()


@pytest.mark.parametrize("root", [
    pytest.param("models/../../escaped", id="dotdot"),
    pytest.param("models//ABS/escaped", id="absolute"),
    pytest.param("hf/models--Org--m", id="other-work-area"),
])
def test_a_trash_journal_naming_a_place_outside_the_home_moves_nothing(
        bundle: Path, tmp_path: Path, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    home = tmp_path / "home"
    install(bundle, home=home)
    root = root.replace("/ABS", str(tmp_path))
    entry = home / STATE_DIRNAME / "trash" / "x"
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "w.bin").write_bytes(b"planted")
    (entry / "root").write_text(root)
    Cache(home).records()
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "hub").exists()
    assert (entry / "model" / "w.bin").read_bytes() == b"planted"  # kept, with a warning


# -- a kill while the old model is deleted from trash/ -------------------------------------
KILL_WHILE_EMPTYING_TRASH = """
    import os, signal, sys
    from pathlib import Path
    import bundler.cache as c
    c._exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE
    real_scandir, real_unlink = os.scandir, os.unlink

    class CreationOrder:
        # exFAT and btrfs list a folder in creation order: a trash entry's journal ('root')
        # before the model moved in after it
        def __init__(self, *args):
            with real_scandir(*args) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
            self.it = iter(entries)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def __iter__(self):
            return self
        def __next__(self):
            return next(self.it)
        def close(self):
            pass

    journal_gone = []
    def unlink(path, *args, **kwargs):
        if journal_gone:
            os.kill(os.getpid(), signal.SIGKILL)  # half-way through the old model
        real_unlink(path, *args, **kwargs)
        if os.path.basename(path) == "root":
            journal_gone.append(path)
    os.scandir, os.unlink = CreationOrder, unlink
    from bundler.install import install
    install(Path(sys.argv[1]), home=Path(sys.argv[2]), force=True)
"""


def test_a_kill_while_the_old_model_leaves_trash_leaves_nothing_behind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    online, v1, v2 = two_versions(tmp_path)
    home = tmp_path / "home"
    install(v1, home=home)
    proc = run_script(KILL_WHILE_EMPTYING_TRASH.replace("sys.argv[1]", repr(str(v2)))
                      .replace("sys.argv[2]", repr(str(home))))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert listed(home, capsys) == {"Org/small": "v2.tar.zst"}
    assert "place is unknown" not in capsys.readouterr().err
    trash = home / STATE_DIRNAME / "trash"
    assert not [p for p in trash.rglob("*") if not p.is_dir()], "the old model stayed in trash/"
    assert tree(home / "models") == tree(online / "models")


# -- a home reached through a symlink ------------------------------------------------------
def test_a_hub_model_moved_aside_is_put_back_whichever_path_names_the_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/home`` is often a link to ``/data/home``: a kill between the two renames of an
    install run through one path must be repaired by a command run through the other."""
    where = {"hf": tmp_path / "hub", "home": tmp_path / "home"}
    monkeypatch.setenv("HF_HUB_CACHE", str(where["hf"]))
    folder = make_hub_model(where["hf"], "Org/m", FILES)
    before = tree(folder)
    real = where["home"]
    real.mkdir(parents=True)
    link = tmp_path / "link-to-home"
    link.symlink_to(real)
    model = ModelEntry.for_id("hf:Org/m")
    aside = Cache(link).work_area(model.root) / "trash" / "x"  # as install through the link
    aside.mkdir(parents=True)
    (aside / "root").write_text(model.root)
    os.rename(folder, aside / "model")
    Cache(real).records()
    assert tree(folder) == before


# -- the disk fills while the records are written ------------------------------------------
def test_records_that_cannot_be_written_after_every_swap_are_reported_truly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Both models are in place, only their records hit a full disk (a small separate
    ``.paddle-bundle``, or another writer): the message must not say "installed 2 of 2;
    not installed: " with nothing after it."""
    import errno

    import bundler.cache as cache_mod

    online, v1, v2 = two_versions(tmp_path)
    home = tmp_path / "home"
    install(v1, home=home)

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_replace_unsynced", full)
    assert _main(["install", str(v2), "--home", str(home), "--force", "-q"]) == 1
    err = capsys.readouterr().err
    assert "not installed:  (" not in err
    assert "Org/small is in place" in err and "No space left on device" in err
    assert "the next paddle-bundle command" in err
    monkeypatch.undo()
    assert listed(home, capsys) == {"Org/small": "v2.tar.zst"}
    assert tree(home / "models") == tree(online / "models")


# -- odd things in pending/ ----------------------------------------------------------------
@pytest.mark.parametrize("make", [
    pytest.param(lambda p: p.mkdir(), id="folder"),
    pytest.param(lambda p: p.symlink_to("/dev/null"), id="link"),
])
def test_something_named_like_a_journal_never_blocks_installs(
        tmp_path: Path, make: Callable[[Path], None]) -> None:
    """``pending/x.json`` that is not a journal file install wrote: every later install
    failed with "Is a directory" before, forever."""
    online, v1, v2 = two_versions(tmp_path)
    home = tmp_path / "home"
    install(v1, home=home)
    make(home / STATE_DIRNAME / "pending" / "x.json")
    assert [o.status for o in install(v2, home=home, force=True).outcomes] == ["replaced"]
    assert tree(home / "models") == tree(online / "models")
    assert not os.path.lexists(home / STATE_DIRNAME / "pending" / "x.json")


# -- a file where a folder of the model's path should be -----------------------------------
@pytest.mark.parametrize("in_the_way", ["models", "models/Org"])
def test_a_file_where_a_parent_folder_should_be_is_named_before_anything_is_written(
        bundle: Path, tmp_path: Path, in_the_way: str, capsys: pytest.CaptureFixture[str]
        ) -> None:
    home = tmp_path / "home"
    (home / in_the_way).parent.mkdir(parents=True, exist_ok=True)
    (home / in_the_way).write_bytes(b"not a folder")
    before = tree(home)
    for force in ([], ["--force"]):
        assert _main(["install", str(bundle), "--home", str(home), "-q", *force]) == 1
        err = capsys.readouterr().err
        assert f"{home / in_the_way} is a file, not a folder" in err, err
        assert "move those files out" in err
        assert tree(home) == before


# -- a hub cache that already holds another revision ---------------------------------------
def test_a_hub_folder_holding_another_revision_points_at_the_hub_caches_not_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Refused (the other revision's files are not in the bundle), but "install into another
    --home" was no way out: --home does not move hub models, HF_HOME does."""
    from bundler.pack import pack

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "online-hub"))
    make_hub_model(tmp_path / "online-hub", "Org/m", FILES)
    bundle = tmp_path / "hf.tar.zst"
    pack(["hf:Org/m"], bundle, home=tmp_path / "online")
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    make_hub_model(hub, "Org/m", {**FILES, "model_state.pdparams": b"old"}, revision="b" * 40)
    before = tree(hub)
    assert _main(["install", str(bundle), "--home", str(tmp_path / "home"), "--force"]) == 1
    err = capsys.readouterr().err
    assert "snapshots/ (4 files)" in err and "HF_HOME" in err and "another --home" not in err
    assert tree(hub) == before


# -- offline mode finishes a killed hub install too -----------------------------------------
def test_offline_mode_puts_back_a_hub_model_a_killed_install_moved_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: the next command of any kind, offline mode included, finishes what a killed
    install left. For ``from_hf_hub=True`` offline mode said "not installed" instead."""
    from bundler._offline import OfflineResolver

    hub, home = tmp_path / "hub", tmp_path / "home"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    # offline mode reads huggingface_hub's constant when it is imported (it was fixed from
    # the environment then): an earlier test in this process may have imported it
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    folder = make_hub_model(hub, "Org/m", FILES)
    before = tree(folder)
    (home / STATE_DIRNAME).mkdir(parents=True)
    model = ModelEntry.for_id("hf:Org/m")
    aside = Cache(home).work_area(model.root) / "trash" / "x"  # killed between the renames
    aside.mkdir(parents=True)
    (aside / "root").write_text(model.root)
    os.rename(folder, aside / "model")
    OfflineResolver(lambda: str(home / "models")).require_hub_installed("hf", "Org/m")
    assert tree(folder) == before
