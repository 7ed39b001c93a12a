"""Split volumes for FAT32 sticks, read-only media, quick verification."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bundler.cli import _main
from bundler.errors import IntegrityError, UsageError
from bundler.install import install
from bundler.pack import PackOptions, pack
from bundler.verify import verify
from bundler.volumes import FAT32_MAX, parse_size
from tests.conftest import make_model, tree

SPLIT = 64 * 1024


@pytest.mark.parametrize(("text", "size"), [
    pytest.param("64K", 65536, id="kib"),
    pytest.param("700M", 700 * 1024**2, id="mib"),
    pytest.param("4G", 4 * 1024**3, id="gib"),
    pytest.param("1048576", 1048576, id="bytes"),
    pytest.param("2gb", 2 * 1024**3, id="lowercase-gb"),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12Q", "-5M", "1K", "4.5G"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_fat32_limit() -> None:
    assert FAT32_MAX == 4 * 1024**3 - 1


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "online"
    make_model(home, "Org/big", {"config.json": "{}", "w.bin": os.urandom(400_000),
                                 "x.bin": os.urandom(50_000)})
    return home


@pytest.fixture
def split(home: Path, tmp_path: Path) -> Path:
    stick = tmp_path / "stick"
    stick.mkdir()
    out = stick / "b.tar.zst"
    assert _main(["pack", "Org/big", "-o", str(out), "--home", str(home), "--split-size",
                  "64K", "-q"]) == 0
    return out


def volumes(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".[0-9][0-9][0-9]"))


def test_split_pack_writes_volumes_and_one_sidecar(split: Path) -> None:
    parts = volumes(split)
    assert len(parts) >= 6
    assert not split.exists()
    assert all(p.stat().st_size == SPLIT for p in parts[:-1])
    assert 0 < parts[-1].stat().st_size <= SPLIT
    listed = [ln.split("  ")[1] for ln in (split.parent / "b.tar.zst.sha256").read_text()
              .splitlines()]
    assert listed == [p.name for p in parts]
    check = subprocess.run(["sha256sum", "-c", "b.tar.zst.sha256"], cwd=split.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_volumes_concatenated_are_a_plain_bundle(split: Path, tmp_path: Path) -> None:
    """With nothing installed: cat the volumes into zstd and tar."""
    out = tmp_path / "untar"
    out.mkdir()
    proc = subprocess.run(f"cat {split}.* | zstd -dc | tar -xf - -C {out}", shell=True,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "models/Org/big/w.bin").stat().st_size == 400_000


def test_split_is_deterministic_and_same_content_as_unsplit(home: Path, tmp_path: Path
                                                            ) -> None:
    single, split = tmp_path / "single.tar.zst", tmp_path / "split.tar.zst"
    pack(["Org/big"], single, home=home)
    pack(["Org/big"], split, home=home, options=PackOptions(split_size=SPLIT))
    joined = b"".join(p.read_bytes() for p in volumes(split))
    assert joined == single.read_bytes()
    first = [p.read_bytes() for p in volumes(split)]
    pack(["Org/big"], split, home=home, options=PackOptions(split_size=SPLIT))
    assert [p.read_bytes() for p in volumes(split)] == first


@pytest.mark.parametrize("name", ["b.tar.zst", "b.tar.zst.000", "b.tar.zst.003"])
def test_verify_and_install_take_base_or_any_volume(split: Path, tmp_path: Path,
                                                    name: str) -> None:
    target = split.parent / name
    assert verify(target).ok
    result = install(target, home=tmp_path / f"h-{name}")
    assert [o.status for o in result.outcomes] == ["installed"]


def test_install_from_read_only_stick(split: Path, tmp_path: Path, home: Path) -> None:
    stick = split.parent
    for p in stick.iterdir():
        p.chmod(0o444)
    stick.chmod(0o555)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in stick.iterdir()}
    try:
        assert _main(["verify", str(split)]) == 0
        assert _main(["install", str(split), "--home", str(tmp_path / "off"), "-q"]) == 0
        after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in stick.iterdir()}
        assert after == before  # nothing written next to the bundle
        assert stat.S_IMODE(stick.stat().st_mode) == 0o555
    finally:
        stick.chmod(0o755)
    assert tree(tmp_path / "off/models") == tree(home / "models")


def _expect_refusal(target: Path, home: Path, needle: str,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["install", str(target), "--home", str(home)]) == 3
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err
    assert not (home / "models").exists()


def test_missing_middle_volume(split: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    (split.parent / "b.tar.zst.002").unlink()
    _expect_refusal(split, tmp_path / "h", "volume " + str(split.parent / "b.tar.zst.002")
                    + " is missing", capsys)
    assert _main(["verify", str(split)]) == 3


def test_missing_middle_volume_without_sidecar(split: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (split.parent / "b.tar.zst.sha256").unlink()
    (split.parent / "b.tar.zst.002").unlink()
    _expect_refusal(split, tmp_path / "h", "b.tar.zst.002 is missing", capsys)


def test_swapped_volumes(split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = split.parent / "b.tar.zst.001", split.parent / "b.tar.zst.002"
    tmp = split.parent / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    _expect_refusal(split, tmp_path / "h", "b.tar.zst.001", capsys)


def test_duplicated_volume(split: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copyfile(split.parent / "b.tar.zst.001", split.parent / "b.tar.zst.002")
    _expect_refusal(split, tmp_path / "h", "b.tar.zst.00", capsys)


def test_truncated_volume(split: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    victim = split.parent / "b.tar.zst.001"
    victim.write_bytes(victim.read_bytes()[:1000])
    _expect_refusal(split, tmp_path / "h", f"volume {victim} is 1000 bytes", capsys)


def test_quick_verify_checks_volumes_against_sidecar(split: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["verify", "--quick", str(split)]) == 0
    assert "quick" in capsys.readouterr().out
    victim = split.parent / "b.tar.zst.004"
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    assert _main(["verify", "--quick", str(split)]) == 3
    assert "b.tar.zst.004: sha256 differs" in capsys.readouterr().err


def test_repacking_removes_stale_volumes_and_single_file(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.tar.zst"
    pack(["Org/big"], out, home=home, options=PackOptions(split_size=SPLIT))
    assert len(volumes(out)) >= 6
    pack(["Org/big"], out, home=home)
    assert volumes(out) == [] and out.is_file()
    assert verify(out).ok
    pack(["Org/big"], out, home=home, options=PackOptions(split_size=128 * 1024))
    assert not out.exists() and verify(out).ok


def test_warns_when_the_stick_is_too_small(home: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    with caplog.at_level(logging.WARNING, logger="bundler"):
        pack(["Org/big"], tmp_path / "o.tar.zst", home=home)
    assert "will likely not fit" in caplog.text


def test_split_and_fat32_are_exclusive(home: Path, tmp_path: Path) -> None:
    assert _main(["pack", "Org/big", "-o", str(tmp_path / "o"), "--home", str(home),
                  "--fat32", "--split-size", "1G"]) == 2


def test_integrity_error_is_raised_for_garbage_volume(split: Path, tmp_path: Path) -> None:
    (split.parent / "b.tar.zst.sha256").unlink()
    victim = split.parent / "b.tar.zst.002"
    victim.write_bytes(os.urandom(victim.stat().st_size))
    with pytest.raises(IntegrityError, match="b.tar.zst.00"):
        install(split, home=tmp_path / "h")


def _can_mount_read_only(path: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "--", "sh", "-c",
         f"mount --bind {path} {path} && mount -o remount,ro,bind {path}"],
        capture_output=True)
    return probe.returncode == 0


def test_install_from_a_read_only_mount(split: Path, tmp_path: Path, home: Path) -> None:
    """A real read-only file system (a bind mount remounted ro in a private mount
    namespace): even root cannot write next to the bundle there."""
    import sys

    stick = split.parent
    if not _can_mount_read_only(stick):
        pytest.skip("mount namespaces are not permitted here, so no read-only mount")
    off = tmp_path / "off"
    script = (f"mount --bind {stick} {stick} && mount -o remount,ro,bind {stick} && "
              f"! touch {stick}/probe 2>/dev/null && "
              f"{sys.executable} -m bundler verify {split} && "
              f"{sys.executable} -m bundler install {split}.003 --home {off} -q")
    proc = subprocess.run(["unshare", "-m", "--", "sh", "-c", script], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert tree(off / "models") == tree(home / "models")
