"""The proof: install a new bundle into a scratch home and run the program offline from it.

Before ``fetch`` writes a bundle it installs it into a scratch home (and scratch HF hub and AI
Studio caches), then runs the same command there with offline mode switched on and no network:

* in a fresh network namespace (``unshare -n``; as root, or ``unshare -r -n`` with user
  namespaces) where one can be made: the program has no route anywhere, whatever it does;
* otherwise under offline mode's socket guard alone (an audit hook that refuses every
  non-loopback DNS lookup and connect before it happens).

Offline mode notes every refusal (a model not installed, a file missing from the bundle, a
blocked network access) in a report folder (``PADDLE_BUNDLE_OFFLINE_REPORT``), which is how a
failed proof can say what the offline run needed that the capture did not get.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler._offline import ENV_GUARD, ENV_OFFLINE, ENV_REPORT
from bundler.capture.session import base_environment, run_command, write_hook

ISOLATION_NAMESPACE = "network namespace"
ISOLATION_GUARD = "socket guard"

_ISOLATION: tuple[str, tuple[str, ...]] | None = None


def isolation() -> tuple[str, tuple[str, ...]]:
    """How the proof cuts the network here: ``(name, command prefix)``; found once."""
    global _ISOLATION
    if _ISOLATION is None:
        _ISOLATION = (ISOLATION_GUARD, ())
        if os.environ.get("PADDLE_BUNDLE_PROVE_NO_NAMESPACE") != "1" and shutil.which("unshare"):
            for prefix in (("unshare", "-n", "--"), ("unshare", "-r", "-n", "--")):
                try:
                    ok = subprocess.run([*prefix, "true"], capture_output=True,
                                        timeout=30).returncode == 0
                except (OSError, subprocess.TimeoutExpired):
                    ok = False
                if ok:
                    _ISOLATION = (ISOLATION_NAMESPACE, prefix)
                    break
    return _ISOLATION


@dataclass(frozen=True)
class ProofRun:
    """What the offline run did: its exit code, offline mode's refusals, its last output."""

    returncode: int
    isolation: str
    refusals: tuple[dict[str, str], ...]
    tail: str
    scratch_home: Path


#: The variables that say where the hub caches are (bundler.cache.hf_hub_cache and
#: aistudio_hub_cache read them).
HUB_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "AISTUDIO_HUB_CACHE")


#: Proxy settings the proof drops (in any case): HTTP clients honour them unasked.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")


def offline_environment(scratch: Path, hook_folder: Path, refusals: Path,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Offline mode over the scratch home and caches (docs/fetch.md, the proof)."""
    env = base_environment(hook_folder, base)
    for name in ("PPNLP_ENDPOINT", *HUB_CACHE_VARS):
        env.pop(name, None)
    # A proxy on loopback passes the socket guard (loopback is not "the network") and would
    # carry the proof's requests to the internet: the offline machine has none.
    for name in [k for k in env if k.lower() in _PROXY_VARIABLES]:
        del env[name]
    env.update({"PPNLP_HOME": str(scratch / "home"), "HF_HOME": str(scratch / "hf"),
                "AISTUDIO_HUB_CACHE": str(scratch / "aistudio"), ENV_OFFLINE: "1",
                ENV_GUARD: "1", ENV_REPORT: str(refusals)})
    return env


def run_offline(bundle: Path, command: Sequence[str], *, scratch_parent: Path,
                debug: bool = False,
                prepare: Callable[[Path, dict[str, str]], None] | None = None,
                collect: Callable[[Path], None] | None = None,
                cwd: str | None = None) -> ProofRun:
    """Install ``bundle`` into a scratch home below ``scratch_parent`` and run ``command``
    offline from it, in the current directory or ``<scratch>/<cwd>``. ``prepare(scratch,
    env)`` runs before the command (it may add files and arguments), ``collect(scratch)``
    after it; then everything scratch is removed."""
    from bundler.install import install

    name, prefix = isolation()
    scratch = Path(tempfile.mkdtemp(prefix=".paddle-bundle-proof-", dir=scratch_parent))
    try:
        refusals = scratch / "refusals"
        refusals.mkdir()
        env = offline_environment(scratch, write_hook(scratch / "hook"), refusals)
        with hub_caches_of(env):  # hf: and aistudio: models go to the scratch caches
            install(bundle, home=scratch / "home")
        if prepare is not None:
            prepare(scratch, env)
        log = scratch / "output.log"
        with open(log, "wb") as out:
            sink = None if debug else out
            code = run_command([*prefix, *command], env, stdout=sink, stderr=sink,
                               cwd=scratch / cwd if cwd else None)
        if collect is not None:
            collect(scratch)
        return ProofRun(code, name, _read_refusals(refusals), _tail(log), scratch / "home")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def hub_caches_of(env: Mapping[str, str]) -> Iterator[None]:
    """This process's hub cache variables as ``env`` has them, for the duration: ``install``
    (in this process) puts hub models where the command run with ``env`` looks for them."""
    saved = {name: os.environ.get(name) for name in HUB_CACHE_VARS}
    try:
        for name in HUB_CACHE_VARS:
            if env.get(name) is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = env[name]
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _read_refusals(folder: Path) -> tuple[dict[str, str], ...]:
    found: list[dict[str, str]] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and str(item.get("message")) not in seen:
                seen.add(str(item.get("message")))
                found.append({k: str(item.get(k) or "") for k in ("error", "message", "model")})
    return tuple(found)


def _tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])[:400]
