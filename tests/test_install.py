from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundler.cli import _main
from bundler.errors import (
    InstallConflictError,
    InsufficientSpaceError,
    IntegrityError,
)
from bundler.install import install
from bundler.pack import pack
from tests.conftest import SMALL_MODEL, make_model, manifest_for, tarinfo, tree

GOOD = {"config.json": b"{}", "w.bin": b"weights" * 100}


def test_round_trip_into_another_home(bundle: Path, online_home: Path,
                                      offline_home: Path) -> None:
    result = install(bundle, home=offline_home)
    assert [o.status for o in result.outcomes] == ["installed"]
    assert tree(offline_home / "models") == tree(online_home / "models")
    # nothing but the model and our own state
    assert sorted(p.name for p in offline_home.iterdir()) == [".paddle-bundle", "models"]
    assert list((offline_home / ".paddle-bundle" / "staging").iterdir()) == []


def test_install_prints_full_path_and_snippet(bundle: Path, offline_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["install", str(bundle), "--home", str(offline_home), "-q"]) == 0
    out = capsys.readouterr().out
    path = offline_home.resolve() / "models/Org/small"
    assert f"Org/small: installed at {path}" in out
    assert _main(["install", str(bundle), "--home", str(offline_home)]) == 0
    out = capsys.readouterr().out
    assert "already installed" in out
    assert f'CodeGenForCausalLM.from_pretrained("{path}")' in out


def test_reinstall_is_idempotent_and_rewrites_nothing(bundle: Path, offline_home: Path) -> None:
    install(bundle, home=offline_home)
    weights = offline_home / "models/Org/small/model_state.pdparams"
    before = weights.stat()
    result = install(bundle, home=offline_home)
    assert [o.status for o in result.outcomes] == ["unchanged"]
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_different_version_refused_then_forced(bundle: Path, online_home: Path,
                                               offline_home: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    install(bundle, home=offline_home)
    (online_home / "models/Org/small/model_state.pdparams").write_bytes(b"v2" * 1000)
    v2 = tmp_path / "v2.tar.zst"
    pack(["Org/small"], v2, home=online_home)
    before = tree(offline_home / "models")
    with pytest.raises(InstallConflictError, match="--force"):
        install(v2, home=offline_home)
    assert tree(offline_home / "models") == before
    assert _main(["install", str(v2), "--home", str(offline_home)]) == 1
    assert "different version" in capsys.readouterr().err
    result = install(v2, home=offline_home, force=True)
    assert [o.status for o in result.outcomes] == ["replaced"]
    assert (offline_home / "models/Org/small/model_state.pdparams").read_bytes() == b"v2" * 1000
    assert list((offline_home / ".paddle-bundle" / "trash").glob("*")) == []


def test_free_space_checked_before_writing(bundle: Path, offline_home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    with pytest.raises(InsufficientSpaceError, match="not enough space"):
        install(bundle, home=offline_home)
    assert not (offline_home / "models").exists()


# -- hostile and damaged bundles ---------------------------------------------------------
def _evil_link_manifest(target: str) -> dict[str, Any]:
    return manifest_for(GOOD, extra_files=[{"path": "models/Org/evil/link", "type": "symlink",
                                            "target": target, "mode": "0777"}])


def good_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [(tarinfo(f"models/Org/evil/{rel}", size=len(c)), c) for rel, c in GOOD.items()]


HOSTILE: list[Any] = [
    pytest.param(manifest_for(GOOD), [(tarinfo("/etc/evil", size=3), b"bad")],
                 "absolute path", id="absolute-member"),
    pytest.param(manifest_for(GOOD), [(tarinfo("models/Org/evil/../../../x", size=3), b"bad")],
                 "'..'", id="dotdot-member"),
    pytest.param(manifest_for(GOOD),
                 [(tarinfo("models/Org/evil/link", kind=tarfile.SYMTYPE, linkname="/etc"), b"")],
                 "not listed in the manifest", id="symlink-not-in-manifest"),
    pytest.param(_evil_link_manifest("../../../../etc/passwd"), [],
                 "points outside its model folder", id="symlink-escape-in-manifest"),
    pytest.param(_evil_link_manifest("/etc/passwd"), [],
                 "absolute path", id="symlink-absolute-in-manifest"),
    pytest.param(manifest_for({**GOOD, "hard": GOOD["w.bin"]}),
                 [(tarinfo("models/Org/evil/hard", kind=tarfile.LNKTYPE,
                           linkname="models/Org/evil/w.bin"), b"")],
                 "hardlink members are never installed unless", id="hardlink"),
    pytest.param(manifest_for(GOOD),
                 [(tarinfo("models/Org/evil/dev", kind=tarfile.CHRTYPE), b"")],
                 "device members are never installed", id="device"),
    pytest.param(manifest_for(GOOD),
                 [(tarinfo("models/Org/evil/fifo", kind=tarfile.FIFOTYPE), b"")],
                 "fifo members are never installed", id="fifo"),
    pytest.param(manifest_for(GOOD), [(tarinfo("models/Org/evil/extra.py", size=2), b"x=")],
                 "not listed in the manifest", id="member-not-in-manifest"),
    pytest.param(manifest_for({**GOOD, "gone.bin": b"zz"}), [],
                 "missing from the archive", id="manifest-entry-missing"),
    pytest.param(manifest_for({**GOOD, "big.bin": b"12345"}),
                 [(tarinfo("models/Org/evil/big.bin", size=4), b"1234")],
                 "size 4 differs", id="size-mismatch"),
    pytest.param(manifest_for({**GOOD, "sum.bin": b"1234"}),
                 [(tarinfo("models/Org/evil/sum.bin", size=4), b"9999")],
                 "sha256 differs", id="checksum-mismatch"),
    pytest.param(manifest_for(GOOD), good_members()[:1],
                 "appears twice", id="duplicate-member"),
    pytest.param({**manifest_for(GOOD), "models": [{"id": "../../x", "kind": "community",
                                                     "root": "../../x", "absent_upstream": []}]},
                 [], "not a model id", id="model-root-escape"),
    pytest.param({**manifest_for(GOOD), "schema_version": 99}, [], "newer", id="future-schema"),
    pytest.param(b"{not json", [], "not valid JSON", id="manifest-not-json"),
]


@pytest.mark.parametrize(("manifest", "extra", "message"), HOSTILE)
def test_hostile_bundle_is_refused_and_nothing_written(
        manifest: Any, extra: list[tuple[tarfile.TarInfo, bytes]], message: str,
        build_raw_bundle: Callable[..., Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    make_model(home, "Org/keep", {"config.json": "{}"})
    before = tree(tmp_path)
    path = build_raw_bundle("evil.tar.zst", manifest, good_members() + extra)
    before[path.name] = path.read_bytes()
    with pytest.raises(IntegrityError) as info:
        install(path, home=home)
    text = str(info.value) + "\n".join(info.value.problems)
    assert message in text
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith("home/.paddle-bundle")}
    assert after == before
    assert list((home / ".paddle-bundle" / "staging").glob("*")) == []
    # the CLI says it in a short report, exit 3, no traceback
    assert _main(["install", str(path), "--home", str(home)]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err


def test_manifest_not_first_is_refused(tmp_path: Path, build_raw_bundle: Callable[..., Path]
                                       ) -> None:
    import io

    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarinfo("models/Org/x/a", size=1), io.BytesIO(b"a"))
    path = tmp_path / "plain.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    with pytest.raises(IntegrityError, match="not manifest.json"):
        install(path, home=tmp_path / "home")


@pytest.mark.parametrize("damage", ["flip", "truncate-half", "truncate-tail", "garbage"])
def test_damaged_bundle_is_refused(bundle: Path, offline_home: Path, damage: str) -> None:
    data = bytearray(bundle.read_bytes())
    if damage == "flip":
        data[len(data) * 2 // 3] ^= 0x40
    elif damage == "truncate-half":
        del data[len(data) // 2:]
    elif damage == "truncate-tail":
        del data[-20:]
    else:
        data += b"trailing garbage"
    bundle.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        install(bundle, home=offline_home)
    assert not (offline_home / "models").exists()


def test_relocation_to_any_home(bundle: Path, tmp_path: Path) -> None:
    for home in (tmp_path / "a" / ".paddlenlp", tmp_path / "b c" / "深度"):
        install(bundle, home=home)
        assert (home / "models/Org/small/config.json").read_bytes() == \
            SMALL_MODEL["config.json"].encode()  # type: ignore[union-attr]


def test_kill_9_mid_install_leaves_old_model_and_next_install_works(
        online_home: Path, tmp_path: Path) -> None:
    """A real ``kill -9`` while a large file is being extracted."""
    home = tmp_path / "home"
    install_v1 = tmp_path / "v1.tar.zst"
    pack(["Org/small"], install_v1, home=online_home)
    install(install_v1, home=home)
    before = tree(home / "models")
    big = online_home / "models/Org/small/model_state.pdparams"
    big.write_bytes(os.urandom(64 << 20))
    v2 = tmp_path / "v2.tar.zst"
    pack(["Org/small"], v2, home=online_home)
    code = ("import time, bundler.install as i\n"
            "orig = i.StagingSink.write_file\n"
            "def slow(self, entry, chunks):\n"
            "    def gen():\n"
            "        for c in chunks:\n"
            "            time.sleep(0.05); yield c\n"
            "    return orig(self, entry, gen())\n"
            "i.StagingSink.write_file = slow\n"
            f"i.install(__import__('pathlib').Path({str(v2)!r}), home={str(home)!r}, force=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    staging = home / ".paddle-bundle" / "staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        staged = [p for p in staging.rglob("*") if p.is_file() and p.stat().st_size > 0]
        if staged:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("install never started writing to staging")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tree(home / "models") == before  # old model, untouched
    assert any(staging.rglob("*"))  # the killed run left staging behind...
    result = install(v2, home=home, force=True)  # ...which the next run clears
    assert [o.status for o in result.outcomes] == ["replaced"]
    assert hashlib.sha256((home / "models/Org/small/model_state.pdparams").read_bytes()
                          ).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert list(staging.glob("*")) == []


def test_internal_symlinks_survive_the_round_trip(tmp_path: Path) -> None:
    home = tmp_path / "on"
    make_model(home, "Org/hf", {"blobs/abc": b"w" * 10,
                                "snapshots/main/model.bin": "-> ../../blobs/abc"})
    out = tmp_path / "hf.tar.zst"
    pack(["Org/hf"], out, home=home)
    install(out, home=tmp_path / "off")
    link = tmp_path / "off/models/Org/hf/snapshots/main/model.bin"
    assert link.is_symlink() and link.read_bytes() == b"w" * 10


def test_install_missing_bundle_is_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["install", str(tmp_path / "nope.tar.zst"), "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.tar.zst does not exist" in err[0]


def test_concurrent_install_is_refused(bundle: Path, offline_home: Path) -> None:
    import fcntl

    from bundler.errors import LockedError

    state = offline_home / ".paddle-bundle"
    state.mkdir(parents=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockedError, match="another paddle-bundle install"):
            install(bundle, home=offline_home)
    finally:
        os.close(fd)
