"""Shared content stored once, delta bundles against an installed state, portable names."""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.cli import _main
from bundler.errors import BundleError, DeltaBaseMissingError, IntegrityError
from bundler.install import install
from bundler.pack import PackOptions, load_installed_state, pack
from bundler.paths import portability_problems
from bundler.verify import inspect, verify
from tests.conftest import make_model, manifest_for, tarinfo, tree

VOCAB = os.urandom(50_000)
WEIGHTS = os.urandom(400_000)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "online"
    make_model(home, "Org/a", {"config.json": '{"a": 1}', "vocab.txt": VOCAB, "w.bin": WEIGHTS})
    make_model(home, "Org/b", {"config.json": '{"b": 2}', "vocab.txt": VOCAB, "w.bin": WEIGHTS})
    return home


def test_shared_content_is_stored_once_and_installed_everywhere(home: Path,
                                                                tmp_path: Path) -> None:
    shared = tmp_path / "shared.tar.zst"
    result = pack(["Org/a", "Org/b"], shared, home=home)
    alone = tmp_path / "a.tar.zst"
    pack(["Org/a"], alone, home=home)
    # two models for the price of one: only the two small configs are extra
    assert result.size < alone.stat().st_size + 5_000
    entry = result.manifest.file("models/Org/b/w.bin")
    assert entry is not None and entry.same_as == "models/Org/a/w.bin"
    assert verify(shared).ok
    install(shared, home=tmp_path / "off")
    assert tree(tmp_path / "off/models") == tree(home / "models")
    b = tmp_path / "off/models/Org/b/w.bin"
    assert b.stat().st_nlink == 1  # a copy, not a link: editing one model leaves the other


def test_shared_content_into_a_home_where_the_source_model_is_unchanged(
        home: Path, tmp_path: Path) -> None:
    """Org/a already installed (identical), Org/b new: b's copy comes from a's installed
    file."""
    off = tmp_path / "off"
    a_only = tmp_path / "a.tar.zst"
    pack(["Org/a"], a_only, home=home)
    install(a_only, home=off)
    both = tmp_path / "both.tar.zst"
    pack(["Org/a", "Org/b"], both, home=home)
    result = install(both, home=off)
    assert [o.status for o in result.outcomes] == ["unchanged", "installed"]
    assert (off / "models/Org/b/w.bin").read_bytes() == WEIGHTS


def test_standard_tar_extracts_shared_content(home: Path, tmp_path: Path) -> None:
    import subprocess

    shared = tmp_path / "shared.tar.zst"
    pack(["Org/a", "Org/b"], shared, home=home)
    out = tmp_path / "untar"
    out.mkdir()
    proc = subprocess.run(f"zstd -dc {shared} | tar -xf - -C {out}", shell=True,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "models/Org/b/w.bin").read_bytes() == WEIGHTS


def test_hardlink_without_same_as_is_refused(build_raw_bundle: Callable[..., Path],
                                             tmp_path: Path) -> None:
    files = {"w.bin": b"weights"}
    manifest = manifest_for(files, extra_files=[
        {"path": "models/Org/evil/x.bin", "type": "file", "size": 7,
         "sha256": manifest_for(files)["files"][0]["sha256"], "mode": "0644"}])
    members = [(tarinfo("models/Org/evil/w.bin", size=7), b"weights"),
               (tarinfo("models/Org/evil/x.bin", kind=tarfile.LNKTYPE,
                        linkname="models/Org/evil/w.bin"), b"")]
    path = build_raw_bundle("evil.tar.zst", manifest, members)
    with pytest.raises(IntegrityError) as info:
        install(path, home=tmp_path / "h")
    assert any("hardlink members are never installed" in p for p in info.value.problems)


def _state(home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    capsys.readouterr()
    assert _main(["list", "--json", "--home", str(home)]) == 0
    state = tmp_path / "state.json"
    state.write_text(capsys.readouterr().out)
    return state


def test_delta_bundle_holds_only_what_the_target_lacks(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    off = tmp_path / "off"
    v1 = tmp_path / "v1.tar.zst"
    pack(["Org/a"], v1, home=home)
    install(v1, home=off)
    state = _state(off, capsys, tmp_path)  # carried back to the online machine
    (home / "models/Org/a/config.json").write_text('{"a": 2}')  # v2 changes one small file
    delta = tmp_path / "delta.tar.zst"
    assert _main(["pack", "Org/a", "-o", str(delta), "--home", str(home),
                  "--exclude-installed", str(state), "-q"]) == 0
    assert delta.stat().st_size < 20_000  # the 450 KB of unchanged files stay behind
    manifest, _ = inspect(delta)
    assert {f.path for f in manifest.files if f.from_base} == {
        "models/Org/a/vocab.txt", "models/Org/a/w.bin"}
    assert verify(delta).ok
    result = install(delta, home=off, force=True)
    assert [o.status for o in result.outcomes] == ["replaced"]
    assert tree(off / "models/Org/a") == tree(home / "models/Org/a")
    assert _main(["check", "--home", str(off)]) == 0


def test_delta_refused_without_its_base(home: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    off = tmp_path / "off"
    v1 = tmp_path / "v1.tar.zst"
    pack(["Org/a"], v1, home=home)
    install(v1, home=off)
    state = load_installed_state(_state(off, capsys, tmp_path))
    delta = tmp_path / "delta.tar.zst"
    pack(["Org/a"], delta, home=home, options=PackOptions(exclude_installed=state))
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(DeltaBaseMissingError) as info:
        install(delta, home=elsewhere)
    assert "models/Org/a/w.bin: missing" in info.value.problems
    assert not (elsewhere / "models").exists()
    assert _main(["install", str(delta), "--home", str(elsewhere)]) == 1
    err = capsys.readouterr().err
    assert "relies on 3 installed file(s)" in err and "w.bin: missing" in err
    # a base that changed since is as good as missing
    (off / "models/Org/a/w.bin").write_bytes(os.urandom(400_000))
    with pytest.raises(DeltaBaseMissingError, match="relies on 1 installed"):
        install(delta, home=off, force=True)


def test_delta_member_for_a_base_file_is_refused(build_raw_bundle: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    files = {"w.bin": b"weights"}
    manifest = manifest_for(files)
    manifest["files"][0]["from_base"] = True
    path = build_raw_bundle("d.tar.zst", manifest,
                            [(tarinfo("models/Org/evil/w.bin", size=7), b"weights")])
    report = verify(path)
    assert any("comes from the installed base" in p for p in report.problems)


@pytest.mark.parametrize(("name", "needle"), [
    pytest.param("models/Org/m/a:b.json", "not allowed", id="colon"),
    pytest.param("models/Org/m/what?.txt", "not allowed", id="question-mark"),
    pytest.param("models/Org/m/trailing.", "ends with a dot", id="trailing-dot"),
    pytest.param("models/Org/m/space ", "ends with a dot or space", id="trailing-space"),
    pytest.param("models/Org/m/CON.txt", "reserved device name", id="con"),
    pytest.param("models/Org/m/lpt1", "reserved device name", id="lpt1"),
])
def test_unportable_names(name: str, needle: str) -> None:
    (problem,) = portability_problems([name])
    assert needle in problem


def test_case_only_difference() -> None:
    problems = portability_problems(["models/Org/m/Vocab.txt", "models/Org/m/vocab.txt"])
    assert problems == ["models/Org/m/vocab.txt: differs from models/Org/m/Vocab.txt only by "
                        "case"]
    assert portability_problems(["models/Org/m/vocab.txt", "models/Org/m/merges.txt"]) == []


def test_unportable_names_warn_or_refuse(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/m", {"config.json": "{}", "a:b.json": "{}"})
    with caplog.at_level(logging.WARNING, logger="bundler"):
        pack(["Org/m"], tmp_path / "w.tar.zst", home=home)
    assert "not portable" in caplog.text and "a:b.json" in caplog.text
    with pytest.raises(BundleError, match="not portable"):
        pack(["Org/m"], tmp_path / "p.tar.zst", home=home, options=PackOptions(portable=True))
    assert not (tmp_path / "p.tar.zst").exists()


def test_list_json_round_trips_into_exclude(home: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    off = tmp_path / "off"
    b = tmp_path / "b.tar.zst"
    pack(["Org/a", "Org/b"], b, home=home)
    install(b, home=off)
    state = load_installed_state(_state(off, capsys, tmp_path))
    assert state["models/Org/b/w.bin"] == (len(WEIGHTS), json.loads(json.dumps(
        inspect(b)[0].to_dict()))["files"][-1]["sha256"])
