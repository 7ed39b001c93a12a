"""``paddle-bundle doctor``: can this machine load bundled models, and if not, what to do.

Every check is one :class:`Finding`. Paddle and PaddleNLP are imported in a child Python
(this one), never here: a broken install (a missing shared library, a numpy 2 clash) may crash
the importing process, and doctor must still answer. Nothing is written, except what every
reader of a home does: an install that was killed half-way is finished first (its lock file
made, its staging cleared; see ``Cache.recover``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "fail"
#: How long one import may take in the child before it counts as hung.
IMPORT_TIMEOUT = 300


@dataclass(frozen=True)
class Finding:
    """One line of the report. ``blocking``: models cannot be loaded until it is fixed."""

    status: str  # ok | warn | fail
    topic: str
    message: str
    fix: str | None = None

    @property
    def blocking(self) -> bool:
        return self.status == FAIL


def _version(dist: str) -> str | None:
    from bundler.wheels import installed_version

    return installed_version(dist)


def _import_in_child(module: str, python: str) -> tuple[bool, str]:
    """``(imported, last line of the error)``, from a fresh interpreter.

    Run in an empty folder: ``python -c`` puts the current folder first on ``sys.path``, so a
    ``paddle/`` or ``paddlenlp/`` (a source checkout) where doctor was started would be
    imported instead of what is installed, and the answer would be about that folder."""
    try:
        with tempfile.TemporaryDirectory(prefix="paddle-bundle-doctor-") as empty:
            proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                                  text=True, timeout=IMPORT_TIMEOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PADDLE_BUNDLE_OFFLINE": ""}, cwd=empty)
    except subprocess.TimeoutExpired:
        return False, f"import {module} did not finish in {IMPORT_TIMEOUT} s"
    except OSError as exc:
        return False, str(exc)
    if proc.returncode == 0:
        return True, ""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if proc.returncode < 0:
        return False, f"the interpreter died with signal {-proc.returncode}"
    return False, lines[-1] if lines else f"exit code {proc.returncode}"


def _software(python: str) -> list[Finding]:
    findings = [Finding(OK, "python", f"Python {sys.version.split()[0]} at {sys.executable}")]
    fix_set = ("install the set the bundle came with: python3 -m pip install --no-index "
               "--find-links OUT.python -r OUT.python/requirements.txt (or, online, "
               "pip install 'paddle-bundle[paddle]')")
    for dist, module in (("paddlepaddle", "paddle"), ("paddlenlp", "paddlenlp")):
        version = _version(dist) or (_version("paddlepaddle-gpu") if dist == "paddlepaddle"
                                     else None)
        if version is None:
            findings.append(Finding(FAIL, dist, f"{dist} is not installed in this Python",
                                    fix_set))
            continue
        imported, error = _import_in_child(module, python)
        if imported:
            findings.append(Finding(OK, dist, f"{dist} {version} imports"))
        else:
            findings.append(Finding(FAIL, dist, f"{dist} {version} is installed but "
                                    f"'import {module}' fails: {error}", fix_set))
    return findings


def offline_hook_finding() -> Finding:
    """Whether ``PADDLE_BUNDLE_OFFLINE=1`` takes effect in this environment: the start-up
    hook ``paddle_bundle_offline.pth`` (written by setup.py) in one of its site folders."""
    import site
    import sysconfig

    name = "paddle_bundle_offline.pth"
    # site.getsitepackages is missing in old virtualenv (< 20) environments
    folders = [sysconfig.get_paths()["purelib"], *getattr(site, "getsitepackages", list)()]
    for folder in dict.fromkeys(folders):
        if (Path(folder) / name).is_file():
            return Finding(OK, "offline hook", f"{name} is installed in {folder}: "
                           "PADDLE_BUNDLE_OFFLINE=1 switches offline mode on")
    return Finding(WARN, "offline hook", f"{name} is not in this Python's site-packages: "
                   "PADDLE_BUNDLE_OFFLINE=1 does nothing here",
                   "reinstall paddle-bundle from its wheel (pip install --no-index "
                   "--find-links OUT.python paddle-bundle), or 'import bundler.offline' "
                   "first in your program")


def unshare_finding() -> Finding:
    from bundler.capture.prove import ISOLATION_NAMESPACE, isolation

    name, prefix = isolation()
    if name == ISOLATION_NAMESPACE:
        return Finding(OK, "unshare", f"'{' '.join(prefix[:-1])}' works: offline runs and "
                       "fetch's proof can cut the network entirely")
    return Finding(WARN, "unshare", "'unshare -n' is not usable here: fetch proves bundles "
                   "with a socket guard instead of a network namespace",
                   "run as root or allow unprivileged user namespaces "
                   "(sysctl kernel.unprivileged_userns_clone=1)")


def mirror_finding() -> Finding | None:
    """With ``PADDLE_BUNDLE_MIRROR`` set: whether offline mode can read the mirror's served
    list from here (the one request doctor makes, and only then); None when it is not set."""
    from bundler._offline import ENV_MIRROR, _MirrorClient, mirror_endpoint, redact_url
    from bundler.errors import BundleError

    try:
        endpoint = mirror_endpoint()
        if endpoint is None:
            return None
        models, files = _MirrorClient(endpoint).listing()
    except BundleError as exc:
        return Finding(FAIL, "mirror", exc.message, exc.hint)
    kinds = sorted(set(models.values()))
    return Finding(OK, "mirror", f"{ENV_MIRROR}={redact_url(endpoint)} serves {len(models)} "
                   f"model(s) ({', '.join(kinds) or 'none'}), {len(files)} file(s): offline "
                   "mode takes what is not installed here from it")


def home_findings(home: Path) -> list[Finding]:
    from bundler.cache import installed_models
    from bundler.errors import BundleError

    try:
        home.stat()
    except FileNotFoundError:
        return [Finding(WARN, "home", f"{home} does not exist: no models installed",
                        "paddle-bundle install BUNDLE [--home DIR]")]
    except (OSError, ValueError) as exc:  # EACCES on a parent, ELOOP, a NUL in $PPNLP_HOME
        return [Finding(FAIL, "home", f"{home} cannot be read: "
                        f"{getattr(exc, 'strerror', None) or exc}",
                        "point --home or $PPNLP_HOME at a folder you can read")]
    if not home.is_dir():
        return [Finding(FAIL, "home", f"{home} is not a folder",
                        "point --home or $PPNLP_HOME at a folder")]
    try:
        models = installed_models(home)
    except (BundleError, OSError) as exc:
        return [Finding(FAIL, "home", f"{home} cannot be read: {exc}",
                        "paddle-bundle check --home DIR names what is damaged")]
    if not models:
        return [Finding(WARN, "home", f"{home}: no models installed",
                        "paddle-bundle install BUNDLE [--home DIR]")]
    findings = [Finding(OK, "home", f"{home}: {len(models)} model(s) installed")]
    findings += [Finding(OK, "model", f"{model_id} at {path}")
                 for model_id, path in sorted(models.items())]
    return findings


def diagnose(home: Path | None, *, python: str | None = None) -> list[Finding]:
    """Every finding, in the order they are printed. ``None``: the default home, which
    may be impossible to name (no $HOME and a user the password database does not know,
    as in a container run under an arbitrary uid): a finding, not a crash."""
    findings = _software(python or sys.executable)
    findings.append(offline_hook_finding())
    findings.append(unshare_finding())
    mirror = mirror_finding()
    if mirror is not None:
        findings.append(mirror)
    if home is None:
        from bundler.cache import default_home

        try:
            home = default_home()
        except RuntimeError as exc:
            findings.append(Finding(FAIL, "home", f"no home folder: {exc}",
                                    "pass --home DIR or set $PPNLP_HOME"))
            return findings
    findings.extend(home_findings(home))
    return findings


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.blocking for f in findings) else 0
