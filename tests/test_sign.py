"""Issue 10: signed bundles. SSHSIG over OUT.sha256 made and checked by ssh-keygen itself,
interoperable both ways; every refusal is exit 3 and names the signer or what is wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bundler.cli import _main
from tests.conftest import SMALL_MODEL, make_model

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def keygen(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return key


def allowed_signers(path: Path, *entries: tuple[str, Path, str]) -> Path:
    """``(principal, key, options)`` lines in ssh-keygen's allowed_signers format."""
    lines = []
    for principal, key, options in entries:
        pub = Path(str(key) + ".pub").read_text().split()
        lines.append(" ".join(filter(None, [principal, options, pub[0], pub[1]])))
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: keygen(folder, name) for name in ("alice", "bob")}


@pytest.fixture
def trust(tmp_path: Path, keys: dict[str, Path]) -> Path:
    return allowed_signers(tmp_path / "allowed_signers",
                           ("alice@bank", keys["alice"], 'namespaces="paddle-bundle"'))


def pack(home: Path, out: Path, *extra: str) -> int:
    return _main(["pack", "Org/small", "-o", str(out), "--home", str(home), "-q", *extra])


@pytest.fixture
def signed(online_home: Path, tmp_path: Path, keys: dict[str, Path]) -> Path:
    out = tmp_path / "signed.tar.zst"
    assert pack(online_home, out, "--sign", str(keys["alice"])) == 0
    return out


def sig_of(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256.sig")


def sidecar_of(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256")


# -- interoperability ----------------------------------------------------------------------
def test_our_signature_verifies_with_ssh_keygen_alone(signed: Path, trust: Path) -> None:
    with open(sidecar_of(signed), "rb") as data:
        proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(trust), "-I",
                               "alice@bank", "-n", "paddle-bundle", "-s", str(sig_of(signed))],
                              stdin=data, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'Good "paddle-bundle" signature for alice@bank' in proc.stdout
    assert sig_of(signed).read_text().startswith("-----BEGIN SSH SIGNATURE-----")


def test_ssh_keygen_signature_is_accepted(online_home: Path, tmp_path: Path,
                                          keys: dict[str, Path], trust: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.tar.zst"
    assert pack(online_home, out) == 0
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["alice"]), "-n",
                    "paddle-bundle", str(sidecar_of(out))], check=True, capture_output=True)
    assert sig_of(out).exists()  # the name ssh-keygen itself gives
    offline = tmp_path / "offline"
    assert _main(["install", str(out), "--home", str(offline), "--trust", str(trust)]) == 0
    assert "signed by alice@bank with ED25519 key SHA256:" in capsys.readouterr().out
    capsys.readouterr()
    assert _main(["list", "--home", str(offline)]) == 0
    assert "signed by alice@bank" in capsys.readouterr().out


def test_verify_and_inspect_show_the_signer(signed: Path, trust: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["verify", str(signed), "--trust", str(trust)]) == 0
    assert "signed by alice@bank" in capsys.readouterr().out
    assert _main(["inspect", str(signed), "--trust", str(trust)]) == 0
    assert "signature: signed by alice@bank" in capsys.readouterr().out
    assert _main(["inspect", str(signed)]) == 0  # no trust file: read, not vouched for
    assert "(not checked: no allowed_signers given)" in capsys.readouterr().out


# -- refusals --------------------------------------------------------------------------------
def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    capsys.readouterr()
    assert _main(args) == 3
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    return err


def test_unsigned_refused_with_trust(bundle: Path, trust: Path, offline_home: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _refused(["install", str(bundle), "--home", str(offline_home), "--trust", str(trust)],
             capsys, "is not signed", ".sha256.sig is missing")
    assert not (offline_home / "models").exists()


def test_unknown_signer_refused(online_home: Path, tmp_path: Path, keys: dict[str, Path],
                                trust: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bob.tar.zst"
    assert pack(online_home, out, "--sign", str(keys["bob"])) == 0
    _refused(["verify", str(out), "--trust", str(trust)], capsys,
             "signed by ED25519 key SHA256:", "does not trust", "No principal matched")


@pytest.mark.parametrize("options,why", [
    pytest.param('valid-before="20200101"', "expired", id="expired"),
    pytest.param('valid-after="29990101"', "not yet valid", id="not-yet-valid"),
    pytest.param('namespaces="git"', "", id="other-namespace-only"),
])
def test_key_outside_its_validity_or_namespace_refused(signed: Path, tmp_path: Path,
                                                       keys: dict[str, Path], options: str,
                                                       why: str,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    limited = allowed_signers(tmp_path / "limited", ("alice@bank", keys["alice"], options))
    err = _refused(["install", str(signed), "--home", str(tmp_path / "off"), "--trust",
                    str(limited)], capsys, str(signed))
    assert why in err, err
    assert not (tmp_path / "off" / "models").exists()


def test_wrong_namespace_refused(online_home: Path, tmp_path: Path, keys: dict[str, Path],
                                 trust: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.tar.zst"
    assert pack(online_home, out) == 0
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["alice"]), "-n", "file",
                    str(sidecar_of(out))], check=True, capture_output=True)
    _refused(["verify", str(out), "--trust", str(trust)], capsys, "alice@bank",
             "namespace does not match")


def test_signature_over_another_sidecar_refused(signed: Path, online_home: Path,
                                                tmp_path: Path, trust: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (online_home / "models" / "Org" / "small" / "extra.txt").write_text("more")
    other = tmp_path / "other.tar.zst"
    assert pack(online_home, other) == 0
    shutil.copy(sig_of(signed), sig_of(other))
    _refused(["install", str(other), "--home", str(tmp_path / "off"), "--trust", str(trust)],
             capsys, "alice@bank", "does not verify", "incorrect signature")


def test_bundle_and_sidecar_swapped_after_signing_refused(
        signed: Path, online_home: Path, tmp_path: Path, trust: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The attack a sidecar alone cannot stop: a new bundle and a matching new .sha256."""
    (online_home / "models" / "Org" / "small" / "model_state.pdparams").write_bytes(b"evil")
    sig = sig_of(signed).read_bytes()
    assert pack(online_home, signed) == 0  # rewrites the bundle and its sidecar
    assert not sig_of(signed).exists()  # pack drops the old signature, which signs other bytes
    sig_of(signed).write_bytes(sig)
    _refused(["install", str(signed), "--home", str(tmp_path / "off"), "--trust", str(trust)],
             capsys, "does not verify")
    assert not (tmp_path / "off" / "models").exists()


def test_sidecar_edited_after_signing_refused(signed: Path, trust: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sidecar = sidecar_of(signed)
    sidecar.write_text(sidecar.read_text() + "\n")  # same checksums, other bytes
    _refused(["verify", str(signed), "--trust", str(trust)], capsys, "does not verify")


# -- the trust policy of a home ----------------------------------------------------------------
def _policy(home: Path, trust: Path) -> Path:
    state = home / ".paddle-bundle"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "allowed_signers"
    shutil.copy(trust, path)
    path.chmod(0o644)
    return path


def test_home_policy_makes_signatures_mandatory(bundle: Path, signed: Path, trust: Path,
                                                offline_home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(offline_home, trust)
    _refused(["install", str(bundle), "--home", str(offline_home)], capsys, "is not signed",
             str(policy))
    assert not (offline_home / "models").exists()
    assert _main(["install", str(signed), "--home", str(offline_home), "-q"]) == 0
    assert (offline_home / "models" / "Org" / "small" / "config.json").exists()


def test_env_policy_makes_signatures_mandatory(bundle: Path, trust: Path, offline_home: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PADDLE_BUNDLE_TRUST", str(trust))
    _refused(["install", str(bundle), "--home", str(offline_home)], capsys, "is not signed",
             "PADDLE_BUNDLE_TRUST")
    monkeypatch.setenv("PADDLE_BUNDLE_TRUST", str(trust.with_name("gone")))
    _refused(["install", str(bundle), "--home", str(offline_home)], capsys, "gone",
             "cannot be read")
    assert not (offline_home / "models").exists()


def test_trust_flag_cannot_bypass_the_home_policy(online_home: Path, tmp_path: Path,
                                                  keys: dict[str, Path], trust: Path,
                                                  offline_home: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _policy(offline_home, trust)  # trusts alice only
    out = tmp_path / "bob.tar.zst"
    assert pack(online_home, out, "--sign", str(keys["bob"])) == 0
    bob_trust = allowed_signers(tmp_path / "bob_trust", ("bob@x", keys["bob"], ""))
    _refused(["install", str(out), "--home", str(offline_home), "--trust", str(bob_trust)],
             capsys, "does not trust")
    assert not (offline_home / "models").exists()


def test_writable_policy_refused(signed: Path, trust: Path, offline_home: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(offline_home, trust)
    policy.chmod(0o666)
    _refused(["install", str(signed), "--home", str(offline_home)], capsys,
             "writable by group or others")


def test_missing_trust_file_is_a_usage_error(signed: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["verify", str(signed), "--trust", str(tmp_path / "nope")]) == 2
    assert "--trust" in capsys.readouterr().err


def test_missing_signing_key_is_a_usage_error_before_packing(
        online_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.tar.zst"
    assert pack(online_home, out, "--sign", str(tmp_path / "nokey")) == 2
    assert not out.exists()


# -- split bundles -----------------------------------------------------------------------------
def test_signature_covers_every_volume(tmp_path: Path, keys: dict[str, Path], trust: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "on"
    make_model(home, "Org/small", {**SMALL_MODEL, "big.bin": os.urandom(400_000)})
    out = tmp_path / "split.tar.zst"
    assert pack(home, out, "--split-size", "128K", "--sign", str(keys["alice"])) == 0
    volumes = sorted(tmp_path.glob("split.tar.zst.0*"))
    assert len(volumes) >= 3
    lines = sidecar_of(out).read_text().splitlines()
    assert [line.split()[1] for line in lines] == [v.name for v in volumes]
    assert _main(["install", str(out), "--home", str(tmp_path / "off"), "--trust",
                  str(trust), "-q"]) == 0
    # a sidecar that leaves the last volume out, signed by a trusted key: still refused
    sidecar_of(out).write_text("\n".join(lines[:-1]) + "\n")
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["alice"]), "-n",
                    "paddle-bundle", str(sidecar_of(out))], check=True, capture_output=True,
                   input=b"y\n")
    assert _main(["verify", str(out), "--trust", str(trust)]) == 3
    assert volumes[-1].name in capsys.readouterr().err


# -- the fleet mirror checks signatures as install does ---------------------------------------
def test_mirror_publish_honours_trust_and_the_mirrors_own_policy(
        bundle: Path, signed: Path, trust: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mirror"
    _refused(["mirror", "publish", str(bundle), "--root", str(root), "--trust", str(trust)],
             capsys, "is not signed")
    _policy(root, trust)  # ROOT/.paddle-bundle/allowed_signers: every publish must be signed
    _refused(["mirror", "publish", str(bundle), "--root", str(root)], capsys, "is not signed")
    assert not (root / "paddlenlp").exists() or not any((root / "paddlenlp").rglob("*.json"))
    assert _main(["mirror", "publish", str(signed), "--root", str(root), "-q"]) == 0
    assert _main(["mirror", "list", "--root", str(root), "--json"]) == 0
    listed = capsys.readouterr().out
    assert "alice@bank" in listed


def test_sidecar_swapped_between_its_two_reads_refused(signed: Path, trust: Path) -> None:
    """Review rv10: the sidecar is read once to check the bundle's bytes and once with its
    signature. A stick that answers the first read with a sidecar for another bundle and the
    second with the signed one must not pass: the digest checked must be the one signed."""
    from bundler.errors import SignatureError
    from bundler.signing import require_trusted
    from bundler.volumes import locate

    good = sidecar_of(signed).read_bytes()
    other = b"ab" * 32  # the digest of some other bundle
    assert other not in good
    sidecar_of(signed).write_bytes(other + b"  " + signed.name.encode() + b"\n")
    files = locate(signed)  # the first read: the other bundle's digest
    sidecar_of(signed).write_bytes(good)  # the second read: what alice signed
    with pytest.raises(SignatureError, match="changed while it was being checked"):
        require_trusted(files, trust=trust, home=None)


def test_env_policy_cannot_replace_the_home_policy(online_home: Path, tmp_path: Path,
                                                   keys: dict[str, Path], trust: Path,
                                                   offline_home: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Review rv10: PADDLE_BUNDLE_TRUST naming a file that trusts bob made the home's own
    policy (alice only) be ignored; both must accept the signer."""
    _policy(offline_home, trust)  # trusts alice only
    out = tmp_path / "bob.tar.zst"
    assert pack(online_home, out, "--sign", str(keys["bob"])) == 0
    bob_trust = allowed_signers(tmp_path / "bob_trust", ("bob@x", keys["bob"], ""))
    monkeypatch.setenv("PADDLE_BUNDLE_TRUST", str(bob_trust))
    _refused(["install", str(out), "--home", str(offline_home)], capsys, "does not trust")
    assert not (offline_home / "models").exists()


def test_fifo_in_place_of_the_signature_is_refused_not_waited_on(signed: Path, trust: Path
                                                                 ) -> None:
    """Review rv10: the signature was opened with a plain open(): a FIFO put there by a
    hostile stick made verify and install block forever."""
    import threading

    from bundler.errors import SignatureError
    from bundler.signing import require_trusted
    from bundler.volumes import locate

    sig_of(signed).unlink()
    os.mkfifo(sig_of(signed))
    outcome: list[object] = []

    def check() -> None:
        try:
            require_trusted(locate(signed), trust=trust, home=None)
        except SignatureError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the old code's open() so the test can end
        fd = os.open(sig_of(signed), os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(5)
        pytest.fail("require_trusted blocked on a FIFO")
    assert outcome and "not a regular file" in str(outcome[0])
