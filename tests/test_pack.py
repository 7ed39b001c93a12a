from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from bundler.archive import Compression
from bundler.cli import _main
from bundler.errors import BundleError, ModelNotFoundError
from bundler.manifest import Manifest
from bundler.pack import PackOptions, pack
from tests.conftest import SMALL_MODEL, make_model


def members_of(bundle: Path) -> list[tarfile.TarInfo]:
    with open(bundle, "rb") as fh:
        stream = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return list(tar)


def test_manifest_is_first_member_and_lists_every_file(bundle: Path, online_home: Path) -> None:
    members = members_of(bundle)
    assert members[0].name == "manifest.json"
    names = [m.name for m in members[1:]]
    assert names == sorted(names)
    assert names == [f"models/Org/small/{rel}" for rel in sorted(SMALL_MODEL)]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")


def test_manifest_checksums_match_the_files(bundle: Path, online_home: Path) -> None:
    import hashlib

    with open(bundle, "rb") as fh:
        stream = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            first = tar.next()
            assert first is not None
            src = tar.extractfile(first)
            assert src is not None
            manifest = Manifest.from_json(src.read())
    assert [m.id for m in manifest.models] == ["Org/small"]
    for entry in manifest.files:
        content = (online_home / entry.path).read_bytes()
        assert entry.size == len(content)
        assert entry.sha256 == hashlib.sha256(content).hexdigest()


def test_standard_tools_read_the_bundle(bundle: Path, tmp_path: Path) -> None:
    """A machine with nothing installed can still check and unpack a bundle."""
    check = subprocess.run(["sha256sum", "-c", bundle.name + ".sha256"], cwd=bundle.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    out = tmp_path / "untar"
    out.mkdir()
    zstd = subprocess.run(f"zstd -dc {bundle} | tar -xf - -C {out}", shell=True,
                          capture_output=True, text=True)
    assert zstd.returncode == 0, zstd.stderr
    assert (out / "models/Org/small/model_state.pdparams").read_bytes() == \
        SMALL_MODEL["model_state.pdparams"]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_packing_twice_gives_identical_bytes(online_home: Path, tmp_path: Path,
                                             threads: int) -> None:
    a, b = tmp_path / "a" / "x.tar.zst", tmp_path / "b" / "x.tar.zst"
    a.parent.mkdir()
    b.parent.mkdir()
    pack(["Org/small"], a, home=online_home)
    pack(["Org/small"], b, home=online_home,
         options=PackOptions(compression=Compression(threads=threads)))
    assert a.read_bytes() == b.read_bytes()


def test_missing_model_names_it_and_writes_nothing(online_home: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.tar.zst"
    assert _main(["pack", "Org/small", "Nobody/missing", "-o", str(out), "--home",
                  str(online_home)]) == 1
    err = capsys.readouterr().err
    assert "Nobody/missing" in err and str(online_home / "models/Nobody/missing") in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.glob("out.tar.zst*")) == []


def test_interrupted_pack_leaves_no_output(online_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar.zst"

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(["Org/small"], out, home=online_home, progress=interrupt)
    assert list(tmp_path.iterdir()) == [online_home]


def test_file_changing_during_pack_is_refused(online_home: Path, tmp_path: Path) -> None:
    weights = online_home / "models/Org/small/model_state.pdparams"

    def grow(n: int) -> None:
        with open(weights, "ab") as fh:
            fh.write(b"more")

    with pytest.raises(BundleError, match="changed while it was being packed"):
        pack(["Org/small"], tmp_path / "o.tar.zst", home=online_home, progress=grow)
    assert not (tmp_path / "o.tar.zst").exists()


def test_taskflow_folder_and_internal_symlinks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tf = home / "taskflow" / "information_extraction" / "uie-base"
    (tf / "blobs").mkdir(parents=True)
    (tf / "blobs" / "abc").write_bytes(b"weights")
    (tf / "snapshots").mkdir()
    (tf / "snapshots" / "model.pdparams").symlink_to("../blobs/abc")
    result = pack(["taskflow:information_extraction/uie-base"], tmp_path / "t.tar.zst",
                  home=home)
    (model,) = result.manifest.models
    assert (model.kind, model.root) == ("taskflow", "taskflow/information_extraction/uie-base")
    link = result.manifest.file("taskflow/information_extraction/uie-base/snapshots/model.pdparams")
    assert link is not None and link.target == "../blobs/abc"


def test_symlink_leaving_the_model_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_model(home, "Org/m", {"config.json": "{}", "stolen": "-> /etc/passwd"})
    with pytest.raises(BundleError, match="points to absolute path"):
        pack(["Org/m"], tmp_path / "o.tar.zst", home=home)


def test_several_models_in_one_bundle(online_home: Path, tmp_path: Path) -> None:
    make_model(online_home, "Other/two", {"config.json": "{}", "w.bin": b"\x01" * 1000})
    make_model(online_home, "builtin-name", {"config.json": "{}"})
    result = pack(["Org/small", "Other/two", "builtin-name"], tmp_path / "m.tar.zst",
                  home=online_home)
    assert [m.root for m in result.manifest.models] == [
        "models/Org/small", "models/Other/two", "models/builtin-name"]


@pytest.mark.parametrize("bad", [
    pytest.param("../etc", id="dotdot"),
    pytest.param("/abs/olute", id="absolute"),
    pytest.param("a/b/c", id="too-deep"),
    pytest.param("taskflow:../x", id="taskflow-escape"),
])
def test_malformed_model_id_is_a_usage_error(online_home: Path, tmp_path: Path, bad: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = _main(["pack", bad, "-o", str(tmp_path / "o"), "--home", str(online_home)])
    assert rc == 2
    assert "not a model id" in capsys.readouterr().err


def test_pack_does_not_import_paddle(online_home: Path, tmp_path: Path) -> None:
    """The offline machine's Paddle may be broken: the core must not need it."""
    code = (
        "import sys\n"
        "from bundler.cli import _main\n"
        f"rc = _main(['pack', 'Org/small', '-o', {str(tmp_path / 'p.tar.zst')!r}, '--home', "
        f"{str(online_home)!r}, '-q'])\n"
        f"rc |= _main(['install', {str(tmp_path / 'p.tar.zst')!r}, '--home', "
        f"{str(tmp_path / 'h2')!r}, '-q'])\n"
        "assert rc == 0, rc\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddlenlp')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pack_missing_model_error_type(online_home: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="Nobody/missing") as info:
        pack(["Nobody/missing"], tmp_path / "o", home=online_home)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.exit_code == 1


def test_manifest_records_origin(bundle: Path) -> None:
    with open(bundle, "rb") as fh:
        head = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read(
            1 << 16)
    with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
        info = tar.next()
        assert info is not None
        src = tar.extractfile(info)
        assert src is not None
        raw = json.loads(src.read())
    assert raw["origin"]["tool"] == "paddle-bundle"
    assert raw["origin"]["command"] == ["paddle-bundle", "pack", "Org/small"]
    assert raw["origin"]["created"].endswith("Z")
