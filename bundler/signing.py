"""Signed bundles: who made this, checked before anything is extracted.

A signature is OpenSSH's SSHSIG over the ``.sha256`` sidecar (which lists the sha256 of the
bundle file or of every volume), in namespace ``paddle-bundle``, stored beside it as
``OUT.sha256.sig`` - exactly what ``ssh-keygen -Y sign -n paddle-bundle OUT.sha256`` writes, so
``ssh-keygen -Y verify`` checks it with nothing else installed. All cryptography is
``ssh-keygen``'s own; this module only runs it and explains its answers.

Trust is an ``allowed_signers`` file (ssh-keygen's format: principals, ``namespaces=``,
``valid-after``/``valid-before``, ``cert-authority``). A *trust policy* - the file
``<home>/.paddle-bundle/allowed_signers``, or the one ``PADDLE_BUNDLE_TRUST`` names - makes a
trusted signature mandatory for every install into that home; no option switches it off.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bundler._io import atomic_write_bytes, open_regular
from bundler.cache import STATE_DIRNAME
from bundler.errors import BundleError, SignatureError, UsageError
from bundler.volumes import MAX_SIDECAR_BYTES, BundleFiles, parse_sidecar, sidecar_path

NAMESPACE = "paddle-bundle"
#: Names an allowed_signers file that makes signatures mandatory, whatever the home.
POLICY_ENV = "PADDLE_BUNDLE_TRUST"
POLICY_NAME = "allowed_signers"
MAX_SIGNATURE_BYTES = 64 * 1024  # an SSHSIG is well under 2 KiB
_TIMEOUT = 60


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle: the principal ``allowed_signers`` names for the key, the key's
    fingerprint, and the file that trusted it (``None`` when no trust file was given: the
    signature was read, not verified)."""

    principal: str | None
    key: str  # e.g. "ED25519 key SHA256:Rmmo..."
    trusted_by: Path | None

    def describe(self) -> str:
        if self.trusted_by is None:
            return f"signed with {self.key} (not checked: no allowed_signers given)"
        return f"signed by {self.principal} with {self.key} (trusted by {self.trusted_by})"


def signature_path(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name + ".sig")


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise BundleError("ssh-keygen is not installed; it signs and checks bundles",
                          hint="install OpenSSH's client tools (openssh-client)")
    return found


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        return subprocess.run([_ssh_keygen(), *args], input=data, capture_output=True,
                              timeout=_TIMEOUT, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise BundleError(f"ssh-keygen {args[0]} {args[1]} did not answer in {_TIMEOUT} s",
                          hint="is it waiting for a passphrase? use ssh-agent") from None


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    """ssh-keygen's own reason, on one line."""
    lines = [line.strip() for line in proc.stderr.decode("utf-8", "replace").splitlines()
             if line.strip() and not line.startswith("Signing data")]
    return "; ".join(lines[-3:]) or f"ssh-keygen exited {proc.returncode}"


def sign(sidecar: Path, key: Path) -> Path:
    """Sign ``sidecar`` with the OpenSSH private ``key`` (or a public key held by
    ssh-agent); writes ``sidecar.sig`` atomically and returns its path."""
    key = Path(key)
    if not key.is_file():
        raise UsageError(f"signing key {key} does not exist",
                         hint="give an OpenSSH private key, e.g. ~/.ssh/id_ed25519")
    data = sidecar.read_bytes()
    proc = _run(["-Y", "sign", "-f", str(key), "-n", NAMESPACE], data)
    if proc.returncode != 0 or not proc.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise BundleError(f"could not sign {sidecar} with {key}: {_said(proc)}",
                          hint="check the key (ssh-keygen -y -f KEY) and its passphrase")
    out = signature_path(sidecar)
    atomic_write_bytes(out, proc.stdout)
    return out


def policies_for(home: Path | None) -> list[tuple[Path, str]]:
    """The trust policies in force, and what put each there: ``PADDLE_BUNDLE_TRUST``, and
    ``<home>/.paddle-bundle/allowed_signers`` when it exists. Both apply: a variable in
    someone's environment must not stand in for the home's own policy."""
    found: list[tuple[Path, str]] = []
    env = os.environ.get(POLICY_ENV)
    if env:
        found.append((Path(env), POLICY_ENV))
    if home is not None:
        path = Path(home) / STATE_DIRNAME / POLICY_NAME
        if os.path.lexists(path):
            found.append((path, f"the trust policy of {home}"))
    return found


def _readable_policy(path: Path, why: str, error: type[BundleError]) -> None:
    """A policy that is missing, not a regular file, or writable by others is refused: a
    trust list anyone can append to trusts anyone."""
    try:
        st = path.stat()
    except OSError as exc:
        raise error(f"allowed_signers {path} ({why}) cannot be read ({exc.strerror or exc})",
                    hint="create it, or fix the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"allowed_signers {path} ({why}) is not a regular file",
                    hint="point it at an allowed_signers file (see ssh-keygen(1))")
    if st.st_mode & 0o022:
        raise error(f"allowed_signers {path} ({why}) is writable by group or others, so "
                    "anyone could add a signer", hint=f"chmod go-w {path}")


def read_signature(files: BundleFiles) -> tuple[bytes, bytes] | None:
    """The sidecar's bytes and its signature's, read once each; ``None`` when unsigned."""
    if files.sidecar is None:
        return None
    sig_path = signature_path(files.sidecar)
    try:
        # open_regular: a FIFO put where the signature is expected would block forever
        with open_regular(sig_path, SignatureError) as fh:
            sig = fh.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(f"signature {sig_path} cannot be read ({exc.strerror or exc})",
                             hint="copy the .sha256.sig written with the bundle again"
                             ) from None
    if len(sig) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{sig_path} is larger than any SSH signature",
                             hint="copy the .sha256.sig written with the bundle again")
    try:
        with open_regular(files.sidecar, SignatureError) as fh:
            data = fh.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise SignatureError(f"{files.sidecar} cannot be read ({exc.strerror or exc})",
                             hint="copy the .sha256 file written with the bundle again"
                             ) from None
    return data, sig


def check_signature(data: bytes, sig: bytes, allowed: Path | None, what: str) -> Signer:
    """Who signed ``data``: verified against ``allowed`` when given, else only read."""
    with tempfile.TemporaryDirectory(prefix="paddle-bundle-sig-") as tmp:
        sig_file = Path(tmp) / "sig"
        sig_file.write_bytes(sig)
        plain = _run(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig_file)], data)
        key = _key_of(plain) if plain.returncode == 0 else None
        if allowed is None:
            if key is None:
                raise SignatureError(f"{what} does not verify: {_said(plain)}",
                                     hint="copy the bundle, its .sha256 and .sha256.sig again")
            return Signer(None, key, None)
        found = _run(["-Y", "find-principals", "-s", str(sig_file), "-f", str(allowed)], b"")
        principals = [p for p in found.stdout.decode("utf-8", "replace").splitlines() if p]
        if found.returncode != 0 or not principals:
            raise SignatureError(
                f"{what} is signed by {key or 'a key'} that {allowed} does not trust now "
                f"({_said(found)})",
                hint="add the signer's key to allowed_signers, or renew an expired one")
        reasons = []
        for principal in principals:
            proc = _run(["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE,
                         "-s", str(sig_file)], data)
            if proc.returncode == 0:
                return Signer(principal, _key_of(proc) or key or "?", allowed)
            reasons.append(f"{principal}: {_said(proc)}")
        if plain.returncode != 0:
            reasons.append(_said(plain))
        raise SignatureError(
            f"{what} has a signature by {', '.join(principals)} that does not verify "
            f"({'; '.join(reasons)}): the sidecar was changed after signing, or the signature "
            f"is for another file or namespace than {NAMESPACE!r}",
            hint="do not install it; ask the signer for the bundle again")


def _key_of(proc: subprocess.CompletedProcess[bytes]) -> str | None:
    """``ED25519 key SHA256:...`` from ssh-keygen's "Good ... signature ... with ..." line."""
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith("Good ") and " with " in line:
            return line.rsplit(" with ", 1)[1].strip()
    return None


def require_trusted(files: BundleFiles, *, trust: Path | None,
                    home: Path | None) -> Signer | None:
    """Check a bundle's signature before anything of it is extracted.

    ``trust`` (``--trust``) and each trust policy (:func:`policies_for`) must accept the
    signer when present: a ``--trust`` file cannot stand in for the policy. With neither,
    an existing signature is only read (its key is reported) and ``None`` means unsigned.
    Raises :class:`SignatureError` (exit 3) naming the signer or what is wrong.
    """
    if trust is not None and not Path(trust).is_file():
        raise UsageError(f"--trust {trust} does not exist or is not a file",
                         hint="give an allowed_signers file (see ssh-keygen(1))")
    checks: list[tuple[Path, str]] = []
    if trust is not None:
        _readable_policy(Path(trust), "--trust", UsageError)
        checks.append((Path(trust), "--trust"))
    for policy in policies_for(home):
        _readable_policy(policy[0], policy[1], SignatureError)
        if all(policy[0].resolve() != c[0].resolve() for c in checks):
            checks.append(policy)
    what = f"bundle {files.base}"
    if files.sidecar_problem is not None and checks:
        raise SignatureError(files.sidecar_problem,
                             hint="copy the .sha256 file written with the bundle again")
    signed = read_signature(files)
    if signed is None:
        if checks:
            required = " and ".join(f"{p} ({why})" for p, why in checks)
            missing = (f"{signature_path(files.sidecar)} is missing" if files.sidecar
                       else f"it has no {sidecar_path(files.base).name} to sign")
            raise SignatureError(f"{what} is not signed ({missing}), and {required} requires "
                                 "a trusted signature", hint="ask for a signed bundle "
                                 "(paddle-bundle pack --sign KEY)")
        return None
    data, sig = signed
    try:
        listed = parse_sidecar(data)
    except ValueError as exc:
        raise SignatureError(f"{files.sidecar} is not a sha256sum file: {exc}",
                             hint="copy the .sha256 file written with the bundle again"
                             ) from None
    # a one-file bundle's sidecar may name it under another name (renamed): the digest, which
    # is what the bundle is checked against, must still be the one that was signed
    if listed != files.expected and not (len(listed) == 1 and not files.split and
                                         list(listed.values()) == list(files.expected.values())):
        raise SignatureError(f"{files.sidecar} changed while it was being checked",
                             hint="make sure nothing writes to the stick, and run it again")
    uncovered = [p.name for p in files.parts if p.name not in files.expected]
    if uncovered:
        raise SignatureError(f"the signature of {what} does not cover {uncovered[0]}",
                             hint="every volume must be listed in the signed .sha256")
    if not checks:
        return check_signature(data, sig, None, what)
    signers = [check_signature(data, sig, allowed, what) for allowed, _why in checks]
    return signers[0]
