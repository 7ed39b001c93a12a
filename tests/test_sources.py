"""Models from the Hugging Face hub (``hf:org/name``) and AI Studio (``aistudio:org/name``).

They keep their clients' cache layout (``models--org--name/{blobs,snapshots,refs}``), live in
those caches rather than in the PaddleNLP home, and must come out of ``install`` exactly where
huggingface_hub and PaddleNLP's AI Studio client look, with the same guarantees as community
models. The fast tests use hand-made caches; the slow one downloads tiny real models through
local stand-ins of both hubs (tools/hubs.py), packs, installs into fresh caches and loads them
by name under ``unshare -n`` in offline mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundler import _offline, cache
from bundler.cache import Cache, hub_capture
from bundler.cli import _main
from bundler.errors import ManifestError, MissingFromBundleError, ModelNotInstalledError
from bundler.manifest import Manifest, ModelEntry, root_for
from tests.conftest import AUDIT_RECORDER, ROOT, have_unshare, script_result, tarinfo, tree

REV = "a" * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_hub_model(cache_dir: Path, repo_id: str, files: dict[str, bytes], *,
                   revision: str = REV, branch: str = "main") -> Path:
    """A hub cache folder as huggingface_hub writes it: blobs by hash, snapshot links."""
    folder = cache_dir / ("models--" + repo_id.replace("/", "--"))
    for rel, content in files.items():
        blob = folder / "blobs" / sha(content)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = folder / "snapshots" / revision / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / branch).write_text(revision)
    return folder


FILES = {"config.json": b'{"architectures": ["ErnieModel"]}', "vocab.txt": b"a\nb\n",
         "sub/tokenizer_config.json": b"{}", "model_state.pdparams": os.urandom(50_000)}


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], dict[str, Path]]:
    """``use(name)`` points HF_HOME and AISTUDIO_HUB_CACHE at fresh folders, returns them."""

    def use(name: str) -> dict[str, Path]:
        base = tmp_path / name
        monkeypatch.setenv("HF_HOME", str(base / "hf"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
        monkeypatch.setenv("AISTUDIO_HUB_CACHE", str(base / "aistudio"))
        return {"home": base / "home", "hf": base / "hf" / "hub", "aistudio": base / "aistudio"}

    return use


# -- refs and roots --------------------------------------------------------------------------
@pytest.mark.parametrize(("ref", "kind", "root"), [
    pytest.param("hf:Org/name", "hf", "hf/models--Org--name", id="hf"),
    pytest.param("hf:gpt2", "hf", "hf/models--gpt2", id="hf-no-org"),
    pytest.param("aistudio:PaddleNLP/tiny.v1", "aistudio", "aistudio/models--PaddleNLP--tiny.v1",
                 id="aistudio"),
    pytest.param("Org/name", "community", "models/Org/name", id="community-unchanged"),
])
def test_root_for_hub_refs(ref: str, kind: str, root: str) -> None:
    assert root_for(ref) == (kind, root)


@pytest.mark.parametrize("ref", [
    pytest.param("aistudio:name", id="aistudio-needs-org"),
    pytest.param("hf:a/b/c", id="three-parts"),
    pytest.param("hf:a--b/c", id="double-dash"),
    pytest.param("hf:../x", id="dotdot"),
    pytest.param("hf:.hidden/x", id="leading-dot"),
    pytest.param("hf:", id="empty"),
    pytest.param("hf:a/" + "b" * 100, id="too-long"),
])
def test_bad_hub_refs_are_usage_errors(ref: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        root_for(ref)
    assert _main(["pack", ref, "-o", str(tmp_path / "b.tar.zst"), "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a model id" in err and len(err.strip().splitlines()) == 1


# -- hostile manifests -----------------------------------------------------------------------
def hub_manifest(model_id: str, files: list[dict[str, Any]], *, kind: str | None = None,
                 root: str | None = None) -> dict[str, Any]:
    real_kind, real_root = root_for(model_id)
    return {"schema_version": 1,
            "origin": {"tool_version": "test", "created": "2026-01-01T00:00:00Z"},
            "models": [{"id": model_id, "kind": kind or real_kind, "root": root or real_root,
                        "absent_upstream": []}],
            "files": files}


def blob(root: str, content: bytes) -> dict[str, Any]:
    return {"path": f"{root}/blobs/{sha(content)}", "type": "file", "size": len(content),
            "sha256": sha(content), "mode": "0644"}


def link(path: str, target: str) -> dict[str, Any]:
    return {"path": path, "type": "symlink", "target": target, "mode": "0777"}


ROOT_AB = "hf/models--a--b"
GOOD_BLOB = blob(ROOT_AB, b"x")
GOOD_LINK = link(f"{ROOT_AB}/snapshots/{REV}/config.json", f"../../blobs/{sha(b'x')}")


@pytest.mark.parametrize(("manifest", "expected"), [
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, link(
        f"{ROOT_AB}/snapshots/{REV}/config.json", "../../../models--c--d/blobs/" + sha(b"x"))]),
        "outside its model folder", id="link-escapes-models--a--b"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, link(
        f"{ROOT_AB}/snapshots/{REV}/config.json", "../../../../../etc/passwd")]),
        "outside its model folder", id="link-escapes-cache"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, link(
        f"{ROOT_AB}/snapshots/{REV}/config.json", "/etc/passwd")]),
        "absolute path", id="absolute-link"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, {
        "path": f"{ROOT_AB}/refs/main", "type": "file", "size": 1, "sha256": sha(b"r"),
        "mode": "0644"}, link(f"{ROOT_AB}/snapshots/{REV}/config.json", "../../refs/main")]),
        "does not lead to a file in", id="link-not-into-blobs"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, link(
        f"{ROOT_AB}/snapshots/{REV}/config.json", "../../blobs/" + "f" * 64)]),
        "a blob the bundle does not have", id="dangling-link"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, link(f"{ROOT_AB}/blobs/x",
                                                         f"./{sha(b'x')}")]),
        "only snapshots/ links", id="link-in-blobs"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, GOOD_LINK, {
        "path": f"{ROOT_AB}/evil.py", "type": "file", "size": 1, "sha256": sha(b"e"),
        "mode": "0755"}]), "not part of a hub cache folder", id="file-outside-layout"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, GOOD_LINK], root="hf/models--a--c"),
        "must have kind 'hf' and root 'hf/models--a--b'", id="root-mismatch"),
    pytest.param(hub_manifest("hf:a/b", [GOOD_BLOB, GOOD_LINK], kind="community"),
        "must have kind 'hf'", id="kind-mismatch"),
    pytest.param(hub_manifest("aistudio:a/b", [blob("models/a/b", b"x")], root="models/a/b"),
        "must have kind 'aistudio' and root 'aistudio/models--a--b'",
        id="aistudio-root-in-home"),
])
def test_hostile_hub_manifests_are_refused(manifest: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(manifest)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_good_hub_manifest_is_accepted() -> None:
    manifest = Manifest.from_dict(hub_manifest("hf:a/b", [GOOD_BLOB, GOOD_LINK]))
    assert manifest.models[0].kind == "hf"


def test_install_refuses_escaping_link_and_writes_nothing(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        build_raw_bundle: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    where = caches("target")
    escape = f"../../../models--c--d/blobs/{sha(b'x')}"
    manifest = hub_manifest("hf:a/b", [GOOD_BLOB, link(
        f"{ROOT_AB}/snapshots/{REV}/config.json", escape)])
    bundle = build_raw_bundle("evil.tar.zst", manifest, [
        (tarinfo(GOOD_BLOB["path"], size=1), b"x"),
        (tarinfo(f"{ROOT_AB}/snapshots/{REV}/config.json", kind=tarfile.SYMTYPE,
                 linkname=escape), b"")])
    assert _main(["install", str(bundle), "--home", str(where["home"])]) == 3
    assert "outside its model folder" in capsys.readouterr().err
    assert not where["hf"].exists() or tree(where["hf"]) == {}


# -- pack, install, list, check, inspect ----------------------------------------------------
def test_pack_takes_snapshots_referenced_blobs_refs_and_markers(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]]) -> None:
    where = caches("online")
    folder = make_hub_model(where["hf"], "Org/m", FILES)
    (folder / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"half")  # a broken download
    (folder / "blobs" / ("d" * 64)).write_bytes(b"an old revision's blob")  # unreferenced
    (folder / ".no_exist" / REV).mkdir(parents=True)
    (folder / ".no_exist" / REV / "added_tokens.json").write_bytes(b"")
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(where["home"]), "-q"]) == 0
    manifest, _ = __import__("bundler.verify", fromlist=["inspect"]).inspect(out)
    paths = {f.path[len("hf/models--Org--m/"):] for f in manifest.files}
    assert paths == {*(f"snapshots/{REV}/{rel}" for rel in FILES),
                     *(f"blobs/{sha(c)}" for c in FILES.values()), "refs/main",
                     f".no_exist/{REV}/added_tokens.json"}
    assert manifest.models[0].kind == "hf"


def test_absolute_snapshot_links_are_packed_relative_and_escaping_ones_refused(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        capsys: pytest.CaptureFixture[str]) -> None:
    where = caches("online")
    folder = make_hub_model(where["hf"], "Org/m", FILES)
    snap = folder / "snapshots" / REV / "config.json"
    blob_path = folder / "blobs" / sha(FILES["config.json"])
    snap.unlink()
    snap.symlink_to(blob_path)  # absolute, as huggingface_hub < 0.13 wrote them
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(where["home"]), "-q"]) == 0
    manifest = __import__("bundler.verify", fromlist=["inspect"]).inspect(out)[0]
    entry = manifest.file(f"hf/models--Org--m/snapshots/{REV}/config.json")
    assert entry is not None and entry.target == f"../../blobs/{sha(FILES['config.json'])}"

    outside = tmp_path / "secret"
    outside.write_text("not a blob")
    snap.unlink()
    snap.symlink_to(outside)
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(where["home"])]) == 1
    assert f"cannot pack {snap}" in capsys.readouterr().err


def test_round_trip_writes_the_hub_layout_into_the_target_caches(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        capsys: pytest.CaptureFixture[str]) -> None:
    online = caches("online")
    make_hub_model(online["hf"], "Org/m", FILES)
    make_hub_model(online["aistudio"], "Org/m", FILES, revision="master", branch="master")
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "aistudio:Org/m", "-o", str(out),
                  "--home", str(online["home"]), "-q"]) == 0
    assert _main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "model hf:Org/m [hf] -> hf/models--Org--m" in shown
    assert "model aistudio:Org/m [aistudio] -> aistudio/models--Org--m" in shown

    offline = caches("offline")
    assert _main(["install", str(out), "--home", str(offline["home"])]) == 0
    for kind, folder in (("hf", offline["hf"]), ("aistudio", offline["aistudio"])):
        installed = folder / "models--Org--m"
        assert tree(installed) == tree(online[kind] / "models--Org--m")
        rev = REV if kind == "hf" else "master"
        for rel, content in FILES.items():
            snap = installed / "snapshots" / rev / rel
            assert snap.is_symlink() and not os.path.isabs(os.readlink(snap))
            assert snap.read_bytes() == content
        # nothing of ours is left in the hub cache, and the record is in the home
        assert sorted(p.name for p in folder.iterdir()) == ["models--Org--m"]
        assert (offline["home"] / ".paddle-bundle" / "installed" / kind
                / "models--Org--m.json").is_file()
    capsys.readouterr()
    assert _main(["list", "--home", str(offline["home"])]) == 0
    shown = capsys.readouterr().out
    assert "hf:Org/m" in shown and "[hf]" in shown and "[aistudio]" in shown
    assert _main(["list", "--json", "--home", str(offline["home"])]) == 0
    listed = {m["id"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["hf:Org/m"]["kind"] == "hf"
    assert listed["hf:Org/m"]["path"] == str(offline["hf"] / "models--Org--m")
    assert listed["aistudio:Org/m"]["path"] == str(offline["aistudio"] / "models--Org--m")
    assert _main(["check", "--home", str(offline["home"])]) == 0

    blob_path = offline["hf"] / "models--Org--m" / "blobs" / sha(FILES["vocab.txt"])
    blob_path.write_bytes(b"a\nc\n")
    capsys.readouterr()
    assert _main(["check", "hf:Org/m", "--home", str(offline["home"])]) == 3
    assert f"blobs/{sha(FILES['vocab.txt'])}: changed" in capsys.readouterr().err


def test_check_names_the_cache_variables_when_a_hub_folder_is_not_found(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        capsys: pytest.CaptureFixture[str]) -> None:
    online = caches("online")
    make_hub_model(online["hf"], "Org/m", FILES)
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(online["home"]),
                  "-q"]) == 0
    offline = caches("offline")
    assert _main(["install", str(out), "--home", str(offline["home"]), "-q"]) == 0
    caches("elsewhere")  # check run with another HF_HOME than install
    capsys.readouterr()
    assert _main(["check", "--home", str(offline["home"])]) == 3
    err = capsys.readouterr().err
    assert "hf:Org/m: 1 problem(s)" in err and "is HF_HUB_CACHE / HF_HOME set as it was" in err


def _other_device(path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and \
            os.stat(shm).st_dev != os.stat(path).st_dev:
        return shm
    return None


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "move-aside"])
def test_hub_cache_on_another_file_system_is_staged_there(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    """Staging and trash for a hub model sit in its cache's file system: every rename that
    puts it in place stays on one device (a cross-device rename is EXDEV), first install and
    --force replacement alike, and nothing of ours is left there afterwards."""
    other = _other_device(tmp_path)
    if other is None:
        pytest.skip("no second writable file system (/dev/shm) to put the hub cache on")
    import tempfile

    hub_home = Path(tempfile.mkdtemp(dir=other, prefix="pb-hf-"))
    try:
        online = caches("online")
        make_hub_model(online["hf"], "Org/m", FILES)
        v1, v2 = tmp_path / "v1.tar.zst", tmp_path / "v2.tar.zst"
        assert _main(["pack", "hf:Org/m", "-o", str(v1), "--home", str(online["home"]),
                      "-q"]) == 0
        (online["hf"] / "models--Org--m" / "blobs" / sha(FILES["vocab.txt"])).write_bytes(
            b"new vocab\n")
        assert _main(["pack", "hf:Org/m", "-o", str(v2), "--home", str(online["home"]),
                      "-q"]) == 0

        monkeypatch.setenv("HF_HUB_CACHE", str(hub_home))
        renames: list[tuple[int, int]] = []
        real_rename = os.rename

        def rename(src: Any, dst: Any) -> None:
            renames.append((os.lstat(src).st_dev, os.stat(os.path.dirname(dst)).st_dev))
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)
        if not exchange:
            monkeypatch.setattr(cache, "_exchange", lambda a, b: False)
        home = tmp_path / "home"
        assert _main(["install", str(v1), "--home", str(home), "-q"]) == 0
        assert _main(["install", str(v2), "--home", str(home), "--force", "-q"]) == 0
        assert renames and all(a == b for a, b in renames), renames
        installed = hub_home / "models--Org--m"
        assert (installed / "snapshots" / REV / "vocab.txt").read_bytes() == b"new vocab\n"
        assert sorted(p.name for p in hub_home.iterdir()) == ["models--Org--m"]
        assert not (home / ".paddle-bundle" / "staging").exists() or \
            not any((home / ".paddle-bundle" / "staging").iterdir())
    finally:
        import shutil

        shutil.rmtree(hub_home, ignore_errors=True)


def test_space_is_checked_on_the_hub_caches_file_system(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The hub cache may be on another disk than the home: a full one is refused before
    anything is written, naming it (the home's free space says nothing about it)."""
    online = caches("online")
    make_hub_model(online["hf"], "Org/m", FILES)
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(online["home"]),
                  "-q"]) == 0
    target = caches("target")
    real_stat, real_usage = os.stat, __import__("shutil").disk_usage
    hub_parent = target["hf"].parent.parent  # the folder that exists before install

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)
        if Path(path) == hub_parent:  # pretend the hub cache's disk is another device
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 1, *tuple(st)[3:]))
        return st

    def usage(path: Any) -> Any:
        got = real_usage(path)
        return got._replace(free=1000) if Path(path) == hub_parent else got

    import bundler.install

    monkeypatch.setattr(bundler.install.os, "stat", stat)
    monkeypatch.setattr(bundler.install.shutil, "disk_usage", usage)
    assert _main(["install", str(out), "--home", str(target["home"])]) == 1
    err = capsys.readouterr().err
    assert f"not enough space in {hub_parent}" in err
    assert not target["hf"].exists()


def test_interrupted_hub_install_is_recovered_on_the_next_run(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]]) -> None:
    """A kill between moving the old hub model aside and moving the new one in: the next
    install (any bundle) puts the old one back from the hub cache's own trash."""
    where = caches("c")
    folder = make_hub_model(where["hf"], "Org/m", FILES)
    before = tree(folder)
    c = Cache(where["home"])
    model = ModelEntry.for_id("hf:Org/m")
    aside = c.work_area(model.root) / "trash" / "x"
    aside.mkdir(parents=True)
    (aside / "root").write_text(model.root)
    os.rename(folder, aside / "model")
    with c.locked():
        pass
    assert tree(folder) == before
    assert sorted(p.name for p in where["hf"].iterdir()) == ["models--Org--m"]


# -- the recorder's helper -------------------------------------------------------------------
def test_hub_capture_maps_returned_paths_to_refs_and_files(
        caches: Callable[[str], dict[str, Path]]) -> None:
    where = caches("c")
    hf = make_hub_model(where["hf"], "Org/m", FILES)
    ais = make_hub_model(where["aistudio"], "Org/m", FILES, revision="master",
                         branch="master")
    (hf / "refs" / "other").write_text("b" * 40)  # a branch naming a revision not used
    used = [hf / "snapshots" / REV / "config.json", hf / "snapshots" / REV / "sub" /
            "tokenizer_config.json", ais / "snapshots" / "master" / "vocab.txt"]
    got = hub_capture([str(p) for p in used])
    by_id = {m.id: sorted(f.arcname for f in files) for m, files in got.items()}
    root = "hf/models--Org--m"
    assert by_id["hf:Org/m"] == sorted([
        f"{root}/snapshots/{REV}/config.json", f"{root}/snapshots/{REV}/sub/tokenizer_config.json",
        f"{root}/blobs/{sha(FILES['config.json'])}",
        f"{root}/blobs/{sha(FILES['sub/tokenizer_config.json'])}", f"{root}/refs/main"])
    aroot = "aistudio/models--Org--m"
    assert by_id["aistudio:Org/m"] == sorted([
        f"{aroot}/snapshots/master/vocab.txt", f"{aroot}/blobs/{sha(FILES['vocab.txt'])}",
        f"{aroot}/refs/master"])
    links = [f for files in got.values() for f in files if f.target is not None]
    assert links and all(f.target.startswith("../") for f in links)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="neither hub cache"):
        hub_capture(["/etc/passwd"])


# -- rewrite ----------------------------------------------------------------------------------
def test_rewrite_points_hub_loads_at_the_installed_snapshot(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]]) -> None:
    from bundler.rewrite import rewrite_source

    source = ('a = AutoModel.from_pretrained("Org/m", from_hf_hub=True)\n'
              'b = AutoModel.from_pretrained("Org/m", from_aistudio=True)\n'
              'c = AutoModel.from_pretrained("Org/m")\n')
    got = rewrite_source(source, {"hf:Org/m": "/h", "Org/m": "/c"}).new_source
    assert got == ('a = AutoModel.from_pretrained("/h", from_hf_hub=True)\n'
                   'b = AutoModel.from_pretrained("Org/m", from_aistudio=True)\n'
                   'c = AutoModel.from_pretrained("/c")\n')

    where = caches("c")
    make_hub_model(where["hf"], "Org/m", FILES)
    script = tmp_path / "app.py"
    script.write_text(source)
    home = where["home"]
    home.mkdir(parents=True)
    assert _main(["rewrite", "--in-place", str(script), "--home", str(home)]) == 0
    snapshot = where["hf"] / "models--Org--m" / "snapshots" / REV
    assert script.read_text().splitlines()[0] == \
        f'a = AutoModel.from_pretrained("{snapshot}", from_hf_hub=True)'
    assert script.read_text().splitlines()[1:] == source.splitlines()[1:]


def test_stand_in_serves_huggingface_hub_and_capture_maps_what_it_returned(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]]) -> None:
    """huggingface_hub itself (no Paddle) against tools/hubs.py: downloads land in the cache
    layout, a missing file or repo is 'does not exist', and hub_capture turns the paths it
    returned into the bundle's files."""
    from tools import hubs

    model = tmp_path / "m"
    model.mkdir()
    for rel, content in FILES.items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(content)
    hubs.place(tmp_path / "served", "hf", "Org/m", model)
    where = caches("online")
    script = textwrap.dedent("""
        import json, huggingface_hub as h
        names = ("config.json", "sub/tokenizer_config.json")
        paths = [h.hf_hub_download("Org/m", f) for f in names]
        print(json.dumps({"paths": paths, "missing": h.file_exists("Org/m", "nope.json"),
                          "repo": h.file_exists("Org/none", "config.json"),
                          "here": h.file_exists("Org/m", "vocab.txt")}))
    """)
    with hubs.start(tmp_path / "served") as hub:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, **hub.env()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (got["missing"], got["repo"], got["here"]) == (False, False, True)
    captured = hub_capture(got["paths"])
    [(entry, files)] = captured.items()
    assert entry.id == "hf:Org/m"
    commit = (where["hf"] / "models--Org--m" / "refs" / "main").read_text()
    root = "hf/models--Org--m"
    assert sorted(f.arcname for f in files) == sorted([
        f"{root}/snapshots/{commit}/config.json",
        f"{root}/snapshots/{commit}/sub/tokenizer_config.json",
        f"{root}/blobs/{sha(FILES['config.json'])}",
        f"{root}/blobs/{sha(FILES['sub/tokenizer_config.json'])}", f"{root}/refs/main"])
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(where["home"]), "-q"]) == 0


# -- offline resolution without Paddle ------------------------------------------------------
def test_offline_resolver_hub_rules(tmp_path: Path, caches: Callable[[str], dict[str, Path]],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    online = caches("online")
    make_hub_model(online["hf"], "Org/m", FILES)
    out = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "-o", str(out), "--home", str(online["home"]),
                  "-q"]) == 0
    offline = caches("offline")
    assert _main(["install", str(out), "--home", str(offline["home"]), "-q"]) == 0
    monkeypatch.delitem(sys.modules, "huggingface_hub.constants", raising=False)
    resolver = _offline.OfflineResolver(lambda: str(offline["home"] / "models"))
    resolver.require_hub_installed("hf", "Org/m")  # installed: no error
    with pytest.raises(ModelNotInstalledError, match="hf:Org/other"):
        resolver.require_hub_installed("hf", "Org/other")
    with pytest.raises(ModelNotInstalledError, match="aistudio:Org/m"):
        resolver.require_hub_installed("aistudio", "Org/m")
    assert resolver.hub_absent("hf", "Org/m", "added_tokens.json", None) is False
    (offline["hf"] / "models--Org--m" / "snapshots" / REV / "vocab.txt").unlink()
    with pytest.raises(MissingFromBundleError, match="vocab.txt of model hf:Org/m"):
        resolver.hub_absent("hf", "Org/m", "vocab.txt", None)
    # the community lookup PaddleNLP's AutoTokenizer makes for a hub id is absent, not an error
    resolver.require_installed("Org/m")
    with pytest.raises(ModelNotInstalledError):
        resolver.require_installed("Org/nothing")


def test_offline_mode_switches_imported_hub_clients_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported before offline mode (``import bundler.offline`` after huggingface_hub): the
    module constants are switched too, not only the environment read at their import."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in _offline.HUB_OFFLINE_ENV:
        monkeypatch.setenv(key, "0")  # recorded, so the teardown restores "unset" if it was
        monkeypatch.delenv(key)
    _offline.set_hub_offline()
    assert constants.HF_HUB_OFFLINE is True
    assert {k: os.environ.get(k) for k in _offline.HUB_OFFLINE_ENV} == _offline.HUB_OFFLINE_ENV


# -- end to end through the stand-ins, with real tiny models --------------------------------
ONLINE = AUDIT_RECORDER + """
    from paddlenlp.transformers import (AutoModel, AutoModelForCausalLM, AutoTokenizer)
    import paddle
    tok = AutoTokenizer.from_pretrained(HF_ID, from_hf_hub=True)
    lm = AutoModelForCausalLM.from_pretrained(HF_ID, from_hf_hub=True)
    lm.eval()
    ids, _ = lm.generate(input_ids=tok("def add(a, b):", return_tensors="pd")["input_ids"],
                         max_new_tokens=4, decode_strategy="greedy_search")
    RESULT["hf"] = ids[0].numpy().tolist()
    tok = AutoTokenizer.from_pretrained(AIS_ID, from_aistudio=True)
    enc = AutoModel.from_pretrained(AIS_ID, from_aistudio=True)
    enc.eval()
    with paddle.no_grad():
        out = enc(**tok("hello paddle", return_tensors="pd"))[0]
    RESULT["aistudio"] = [list(out.shape), round(float(out.sum()), 4)]
    import os
    RESULT["hub_offline"] = [os.environ.get("HF_HUB_OFFLINE"),
                             os.environ.get("AISTUDIO_BOS_OFFLINE")]
"""

OFFLINE = ONLINE + """
    # what 'paddle-bundle rewrite' turns the hub load into: the installed snapshot folder
    snapshot = os.environ["HF_SNAPSHOT"]
    lm = AutoModelForCausalLM.from_pretrained(snapshot, from_hf_hub=True)
    tok = AutoTokenizer.from_pretrained(snapshot, from_hf_hub=True)
    lm.eval()
    ids, _ = lm.generate(input_ids=tok("def add(a, b):", return_tensors="pd")["input_ids"],
                         max_new_tokens=4, decode_strategy="greedy_search")
    RESULT["hf_by_path"] = ids[0].numpy().tolist()
    RESULT["missing_hf"] = failure(
        lambda: AutoModel.from_pretrained("nobody/none", from_hf_hub=True))
    RESULT["missing_aistudio"] = failure(
        lambda: AutoModel.from_pretrained("nobody/none", from_aistudio=True))
    RESULT["net"] = NET
    print("RESULT " + json.dumps(RESULT))
"""

HF_ID, AIS_ID = "tiny-hf/codegen", "tiny-ais/ernie"


def _script(body: str) -> str:
    head = f"HF_ID, AIS_ID = {HF_ID!r}, {AIS_ID!r}\n"
    return head + textwrap.dedent(body)


@pytest.mark.paddle
@pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here")
def test_hub_models_round_trip_and_load_by_name_offline(
        tmp_path: Path, caches: Callable[[str], dict[str, Path]]) -> None:
    from tools import hubs

    built = tmp_path / "built"
    for kind, out in (("codegen", built / "codegen"), ("ernie-sharded", built / "ernie")):
        subprocess.run([sys.executable, "tools/tiny_models.py", kind, str(out)], cwd=ROOT,
                       check=True, capture_output=True)
    served = tmp_path / "served"
    hubs.place(served, "hf", HF_ID, built / "codegen")
    hubs.place(served, "aistudio", AIS_ID, built / "ernie")

    online = caches("online")
    with hubs.start(served) as hub:
        env = {**os.environ, **hub.env(), "PPNLP_HOME": str(online["home"]),
               # community look-ups PaddleNLP makes on the side answer 404, as BOS does
               "PPNLP_ENDPOINT": hub.base_url + "/bos"}
        for key in ("PADDLE_BUNDLE_OFFLINE", *_offline.HUB_OFFLINE_ENV):
            env.pop(key, None)  # the online side
        script = _script(ONLINE + '\n    print("RESULT " + json.dumps(RESULT))\n')
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, cwd=tmp_path)
        seen = hub.requests()
    want = script_result(proc)
    assert any(r.path.startswith(f"/hf/{HF_ID}/resolve/") and r.method == "GET"
               for r in seen), seen
    assert any(r.path.startswith(f"/aistudio/api/v1/repos/{AIS_ID}/media/") for r in seen), seen

    bundle = tmp_path / "hubs.tar.zst"
    assert _main(["pack", f"hf:{HF_ID}", f"aistudio:{AIS_ID}", "-o", str(bundle),
                  "--home", str(online["home"]), "-q"]) == 0
    offline = caches("offline")
    assert _main(["install", str(bundle), "--home", str(offline["home"]), "-q"]) == 0

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HF_", "AISTUDIO_", "PPNLP_"))}
    env.update({"PADDLE_BUNDLE_OFFLINE": "1", "PPNLP_HOME": str(offline["home"]),
                "HF_HOME": str(offline["hf"].parent),
                "AISTUDIO_HUB_CACHE": str(offline["aistudio"]),
                "HF_SNAPSHOT": str(cache.hub_snapshot(offline["hf"] / ("models--" + HF_ID.replace(
                    "/", "--")), "hf"))})
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", _script(OFFLINE)], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    got = script_result(proc)
    assert got["net"] == []
    assert got["hf"] == want["hf"] == got["hf_by_path"]
    assert got["aistudio"] == want["aistudio"]
    assert got["hub_offline"] == ["1", "1"]
    for kind in ("hf", "aistudio"):
        name, message, _ = got[f"missing_{kind}"]
        assert name == "ModelNotInstalledError", got[f"missing_{kind}"]
        assert f"{kind}:nobody/none" in message and "is not installed" in message
