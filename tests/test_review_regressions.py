"""Hostile and edge cases found in review, each reproduced before it was fixed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from bundler.cli import _main
from bundler.errors import InstallConflictError, IntegrityError, ManifestError
from bundler.install import install
from bundler.manifest import Manifest
from bundler.pack import PackOptions, pack
from bundler.paths import resolve_within, unsafe_reason
from bundler.verify import verify
from tests.conftest import make_model, manifest_for, tarinfo, tree


def test_symlink_chain_cannot_climb_out_through_another_link(
        build_raw_bundle: Callable[..., Path], tmp_path: Path) -> None:
    """``l -> ../../d0`` passes a lexical check, and ``x -> l/../../../../dev/zero`` looks
    like it stays inside too, but the kernel follows ``l`` before the ``..``."""
    deep = "d0/d1/d2"
    links = [
        {"path": f"models/Org/evil/{deep}/l", "type": "symlink", "target": "../../../d0",
         "mode": "0777"},
        {"path": f"models/Org/evil/{deep}/x", "type": "symlink",
         "target": "l/../../../../dev/zero", "mode": "0777"},
    ]
    manifest = manifest_for({"config.json": b"{}"}, extra_files=links)
    members = [(tarinfo("models/Org/evil/config.json", size=2), b"{}")] + [
        (tarinfo(e["path"], kind=tarfile.SYMTYPE, linkname=e["target"]), b"") for e in links]
    path = build_raw_bundle("chain.tar.zst", manifest, members)
    with pytest.raises(ManifestError) as info:
        install(path, home=tmp_path / "home")
    assert any("through other links" in p for p in info.value.problems)
    assert not (tmp_path / "home/models").exists()


@pytest.mark.parametrize(("links", "path", "expected"), [
    pytest.param({}, "m/o/n/a", "m/o/n/a", id="plain"),
    pytest.param({"m/o/n/l": "sub"}, "m/o/n/l", "m/o/n/sub", id="one-link"),
    pytest.param({"m/o/n/a/l": "../../../x"}, "m/o/n/a/l", None, id="climbs-out"),
    pytest.param({"m/o/n/a/b/l": "../.."}, "m/o/n/a/b/l", "m/o/n", id="the-root-itself"),
    pytest.param({"m/o/n/a": "b", "m/o/n/b": "a"}, "m/o/n/a", None, id="loop"),
])
def test_resolve_within(links: dict[str, str], path: str, expected: str | None) -> None:
    result = resolve_within(path, "m/o/n", links)
    assert result == (None if expected == "m/o/n" else expected)


def test_verify_reports_a_wrong_sidecar_on_a_large_bundle(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/big", {"config.json": "{}", "w.bin": os.urandom(3 << 20)})
    out = tmp_path / "b.tar.zst"
    pack(["Org/big"], out, home=home)
    sidecar = tmp_path / "b.tar.zst.sha256"
    text = sidecar.read_text()
    sidecar.write_text(("0" if text[0] != "0" else "1") + text[1:])
    report = verify(out)
    assert any("sha256 differs from b.tar.zst.sha256" in p for p in report.problems)
    assert _main(["verify", str(out)]) == 3
    assert "unexpected" not in capsys.readouterr().err


@pytest.mark.parametrize(("first", "second"), [
    pytest.param("Salesforce/codegen", "Salesforce", id="new-model-contains-installed"),
    pytest.param("ernie", "ernie/x", id="new-model-inside-installed"),
])
def test_a_model_never_goes_inside_another(tmp_path: Path, first: str, second: str) -> None:
    online, home = tmp_path / "on", tmp_path / "home"
    make_model(online, first, {"config.json": "{}"})
    make_model(tmp_path / "on2", second, {"config.json": '{"x": 1}'})
    a, b = tmp_path / "a.tar.zst", tmp_path / "b.tar.zst"
    pack([first], a, home=online)
    pack([second], b, home=tmp_path / "on2")
    install(a, home=home)
    before = tree(home / "models")
    for force in (False, True):
        with pytest.raises(InstallConflictError, match="inside another"):
            install(b, home=home, force=force)
    assert tree(home / "models") == before


def test_model_without_files_is_refused() -> None:
    raw = manifest_for({"a": b"x"})
    raw["models"].append({"id": "Org/empty", "kind": "community", "root": "models/Org/empty"})
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(raw)
    assert "model Org/empty: has no files" in info.value.problems


def test_surrogates_are_not_safe_names() -> None:
    assert unsafe_reason("models/Org/m/\udcff.json") == "path is not valid UTF-8"


def _raw(members: list[tuple[tarfile.TarInfo, bytes]], manifest: dict[str, object],
         tail: bytes = b"") -> bytes:
    data = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarinfo("manifest.json", size=len(data)), io.BytesIO(data))
        for info, content in members:
            tar.addfile(info, io.BytesIO(content))
    return zstandard.ZstdCompressor().compress(buf.getvalue() + tail)


def test_trailing_zeros_past_the_record_are_refused(tmp_path: Path) -> None:
    files = {"a.bin": b"abc"}
    bundle = tmp_path / "t.tar.zst"
    bundle.write_bytes(_raw([(tarinfo("models/Org/evil/a.bin", size=3), b"abc")],
                            manifest_for(files), tail=b"\0" * (4 << 20)))
    with pytest.raises(IntegrityError) as info:
        install(bundle, home=tmp_path / "h")
    assert any("truncated or has damaged tar headers" in p
               or "more data than its manifest lists" in p for p in info.value.problems)


def test_member_bigger_than_the_manifest_allows_stops_early(tmp_path: Path) -> None:
    """A member not in the manifest declaring far more data than the manifest lists is not
    decompressed to the end: the archive's size is bounded by its manifest."""
    files = {"a.bin": b"abc"}
    big = 64 << 20
    bundle = tmp_path / "bomb.tar.zst"
    bundle.write_bytes(_raw([(tarinfo("models/Org/evil/a.bin", size=3), b"abc"),
                             (tarinfo("models/Org/evil/zz", size=big), b"\0" * big)],
                            manifest_for(files)))
    report = verify(bundle)
    assert any("more data than its manifest lists" in p for p in report.problems)


def test_more_than_999_volumes_with_few_descriptors(tmp_path: Path) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/big", {"config.json": "{}", "w.bin": os.urandom(1010 * 65536)})
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
            "from bundler.cli import _main; import sys; "
            f"sys.exit(_main(['pack', 'Org/big', '-o', {str(out)!r}, '--home', {str(home)!r}, "
            "'--split-size', '64K', '-q']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out.parent / "b.tar.zst.1000").is_file()
    assert verify(out.parent / "b.tar.zst.101").ok
    assert verify(out).ok


def test_one_file_bundle_named_with_digits(tmp_path: Path) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/m", {"config.json": "{}"})
    out = tmp_path / "release.20240101"
    pack(["Org/m"], out, home=home)
    assert verify(out).ok
    install(out, home=tmp_path / "off")


def test_damaged_record_does_not_block_reinstall(tmp_path: Path) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/m", {"config.json": "{}"})
    out = tmp_path / "b.tar.zst"
    pack(["Org/m"], out, home=home)
    off = tmp_path / "off"
    install(out, home=off)
    (off / ".paddle-bundle/installed/models/Org/m.json").write_text("{garbage")
    result = install(out, home=off)
    assert [o.status for o in result.outcomes] == ["unchanged"]
    assert _main(["check", "--home", str(off)]) == 0


def test_snippet_never_reads_through_a_link_out_of_the_model(tmp_path: Path) -> None:
    from bundler.install import load_snippet
    from bundler.manifest import ModelEntry

    folder = tmp_path / "models/Org/m"
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to("/dev/zero")
    snippet = load_snippet(ModelEntry.for_id("Org/m"), folder)
    assert "AutoModel.from_pretrained" in snippet


def test_huge_source_date_epoch_is_clamped(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    make_model(home, "Org/m", {"config.json": "{}"})
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "999999999999")
    result = pack(["Org/m"], tmp_path / "b.tar.zst", home=home, options=PackOptions())
    assert result.manifest.origin.created == "9999-12-31T23:59:59Z"


def test_killed_between_swap_and_record_is_reconciled(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The new model is in place but its record is still the old one (killed in between):
    the next run promotes the pending record, so check does not report false drift."""
    import bundler.cache as cache_mod

    online, off = tmp_path / "on", tmp_path / "off"
    make_model(online, "Org/m", {"config.json": "{}", "w.bin": b"v1" * 1000})
    v1, v2 = tmp_path / "v1.tar.zst", tmp_path / "v2.tar.zst"
    pack(["Org/m"], v1, home=online)
    install(v1, home=off)
    (online / "models/Org/m/w.bin").write_bytes(b"v2" * 1000)
    pack(["Org/m"], v2, home=online)
    real_replace = os.replace

    def killed(src: object, dst: object) -> None:
        if str(dst).endswith("installed/models/Org/m.json"):  # the record is committed
            raise KeyboardInterrupt  # as if killed right after the swap
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        install(v2, home=off, force=True)
    monkeypatch.setattr(cache_mod.os, "replace", real_replace)
    assert (off / "models/Org/m/w.bin").read_bytes() == b"v2" * 1000
    assert install(v2, home=off).outcomes[0].status == "unchanged"  # recovery ran first
    assert _main(["check", "--home", str(off)]) == 0
    assert not list((off / ".paddle-bundle/pending").rglob("*.json"))


def test_pending_record_for_a_swap_that_never_happened_is_dropped(tmp_path: Path) -> None:
    online, off = tmp_path / "on", tmp_path / "off"
    make_model(online, "Org/m", {"config.json": "{}", "w.bin": b"v1" * 1000})
    v1 = tmp_path / "v1.tar.zst"
    pack(["Org/m"], v1, home=online)
    install(v1, home=off)
    record = off / ".paddle-bundle/installed/models/Org/m.json"
    pending = off / ".paddle-bundle/pending/models/Org/m.json"
    pending.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(record.read_text())
    data["files"][-1]["size"] = 5  # describes a model that is not on disk
    pending.write_text(json.dumps(data))
    install(v1, home=off)
    assert not pending.exists()
    assert _main(["check", "--home", str(off)]) == 0
