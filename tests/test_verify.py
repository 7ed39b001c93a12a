from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.cli import _main
from bundler.install import install
from bundler.verify import check, verify
from tests.conftest import run_cli


def test_good_bundle_verifies_with_its_sidecar(bundle: Path) -> None:
    report = verify(bundle)
    assert report.ok and report.problems == ()
    assert report.sidecar == bundle.with_name(bundle.name + ".sha256")
    assert report.sha256 == {
        bundle.name: bundle.with_name(bundle.name + ".sha256").read_text().split()[0]}


def test_verify_cli_exit_codes(bundle: Path) -> None:
    rc, out, err = run_cli("verify", bundle)
    assert rc == 0 and "OK" in out, err
    data = bytearray(bundle.read_bytes())
    data[-5000] ^= 1
    bundle.write_bytes(bytes(data))
    rc, out, err = run_cli("verify", bundle)
    assert rc == 3
    assert "Traceback" not in err
    assert "problem" in err


def test_verify_lists_every_problem_not_only_the_first(tmp_path: Path, build_raw_bundle
                                                       ) -> None:
    from tests.conftest import manifest_for, tarinfo

    files = {"a.bin": b"aaaa", "b.bin": b"bbbb", "c.bin": b"cccc"}
    members = [
        (tarinfo("models/Org/evil/a.bin", size=4), b"AAAA"),  # checksum differs
        (tarinfo("models/Org/evil/b.bin", size=4), b"BBBB"),  # checksum differs
        (tarinfo("models/Org/evil/x.bin", size=1), b"x"),  # not in manifest
    ]  # c.bin missing
    path = build_raw_bundle("many.tar.zst", manifest_for(files), members)
    report = verify(path)
    joined = "\n".join(report.problems)
    assert len(report.problems) == 4, joined
    for needle in ("a.bin: sha256 differs", "b.bin: sha256 differs", "x.bin: not listed",
                   "c.bin: listed in the manifest but missing"):
        assert needle in joined


def test_sidecar_mismatch_is_reported(bundle: Path) -> None:
    sidecar = bundle.with_name(bundle.name + ".sha256")
    sidecar.write_text("0" * 64 + "  " + bundle.name + "\n")
    report = verify(bundle)
    assert not report.ok
    assert any("differs from bundle.tar.zst.sha256" in p for p in report.problems)


def test_check_reports_drift_by_file(bundle: Path, offline_home: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    install(bundle, home=offline_home)
    assert _main(["check", "--home", str(offline_home)]) == 0
    folder = offline_home / "models/Org/small"
    (folder / "vocab.json").write_text(json.dumps({"a": 1}))
    (folder / "config.json").unlink()
    (folder / "added.txt").write_text("note")
    (results,) = check(offline_home)
    assert sorted(results.drift) == ["models/Org/small/config.json: missing",
                                     "models/Org/small/vocab.json: changed (size 8, expected "
                                     "16)"]
    assert results.extra == ("models/Org/small/added.txt",)
    capsys.readouterr()
    assert _main(["check", "Org/small", "--home", str(offline_home)]) == 3
    err = capsys.readouterr().err
    assert "config.json: missing" in err and "vocab.json: changed" in err


def test_check_same_size_change_is_caught_by_hash(bundle: Path, offline_home: Path) -> None:
    install(bundle, home=offline_home)
    weights = offline_home / "models/Org/small/model_state.pdparams"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    (result,) = check(offline_home, ["Org/small"])
    assert result.drift == ("models/Org/small/model_state.pdparams: changed (sha256 differs)",)


def test_check_unknown_model(offline_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["check", "Nobody/here", "--home", str(offline_home)]) == 1
    assert "was not installed by paddle-bundle" in capsys.readouterr().err


def test_inspect_reads_manifest(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["inspect", str(bundle), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in data["models"]] == ["Org/small"]
    assert all(len(f["sha256"]) == 64 for f in data["files"])
    assert _main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "model Org/small [community]" in out and "model_state.pdparams" in out


def test_inspect_reads_only_the_head(bundle: Path, online_home: Path, tmp_path: Path) -> None:
    """inspect must not depend on the data after the manifest: cut it off and it still works."""
    from bundler.verify import inspect

    big = online_home / "models/Org/small/model_state.pdparams"
    big.write_bytes(b"\x00" * 1000 + bytes(range(256)) * 40000)
    out = tmp_path / "big.tar.zst"
    from bundler.pack import pack

    pack(["Org/small"], out, home=online_home)
    head = tmp_path / "head.tar.zst"
    head.write_bytes(out.read_bytes()[:64 * 1024])
    manifest, _ = inspect(head)
    assert manifest.file("models/Org/small/model_state.pdparams") is not None


def test_list_json_is_the_state_of_the_home(bundle: Path, offline_home: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    install(bundle, home=offline_home)
    capsys.readouterr()
    assert _main(["list", "--home", str(offline_home), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (model,) = data["models"]
    assert model["id"] == "Org/small" and model["bundle"] == "bundle.tar.zst"
    assert {f["path"].rsplit("/", 1)[1] for f in model["files"]} >= {"config.json"}
    assert model["size"] == sum(f["size"] for f in model["files"])
    assert _main(["list", "--home", str(offline_home)]) == 0
    assert "Org/small" in capsys.readouterr().out


def test_bundle_renamed_with_its_sidecar_still_verifies(bundle: Path) -> None:
    sidecar = bundle.with_name(bundle.name + ".sha256")
    renamed = bundle.with_name("codegen.tar.zst")
    bundle.rename(renamed)
    sidecar.rename(renamed.with_name("codegen.tar.zst.sha256"))
    report = verify(renamed)
    assert report.ok, report.problems
    assert report.sidecar == renamed.with_name("codegen.tar.zst.sha256")


def test_damaged_install_record_is_a_warning_not_a_crash(
        bundle: Path, offline_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install(bundle, home=offline_home)
    record = offline_home / ".paddle-bundle/installed/models/Org/small.json"
    record.write_text("{broken")
    capsys.readouterr()
    assert _main(["list", "--home", str(offline_home)]) == 0
    err = capsys.readouterr().err
    assert "warning: install record" in err and "is damaged" in err
    assert _main(["check", "Org/small", "--home", str(offline_home)]) == 3
    assert "install the model's bundle again" in capsys.readouterr().err
