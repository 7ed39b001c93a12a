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
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler._offline import ENV_GUARD, ENV_OFFLINE, ENV_REPORT, read_resolved_homes
from bundler._offline import ENV_MIRROR as ENV_SITE_MIRROR
from bundler.capture.session import base_environment, run_command, write_hook

ISOLATION_NAMESPACE = "network namespace"
ISOLATION_GUARD = "socket guard"

#: The sandbox helper (:mod:`bundler.capture._sandbox`), run by path inside the namespaces.
SANDBOX = Path(__file__).resolve().with_name("_sandbox.py")

_ISOLATION: tuple[str, tuple[str, ...]] | None = None


def _candidates() -> list[tuple[str, ...]]:
    """Namespace prefixes to try, best first: as root a new mount and network namespace
    (else, without CAP_SYS_ADMIN, in a user namespace of its own); otherwise a user namespace
    too, mapped back to the caller's own uid/gid inside
    (``unshare -r`` alone would run the command as uid 0), else as its root."""
    helper = (sys.executable, "-I", "-S", str(SANDBOX))
    if os.geteuid() == 0:  # root without CAP_SYS_ADMIN (a container): a user namespace
        return [("unshare", "-m", "-n", "--", *helper),
                ("unshare", "-r", "-m", "-n", "--", *helper)]
    mapped = ("--uid", str(os.getuid()), "--gid", str(os.getgid()))
    return [("unshare", "-r", "-m", "-n", "--", *helper, *mapped),
            ("unshare", "-r", "-m", "-n", "--", *helper)]


def isolation() -> tuple[str, tuple[str, ...]]:
    """How the proof cuts the network here: ``(name, command prefix)``; found once. The
    prefix takes ``--hide DIR``... then ``--`` and the command (see ``_sandbox``)."""
    global _ISOLATION
    if _ISOLATION is None:
        _ISOLATION = (ISOLATION_GUARD, ())
        if os.environ.get("PADDLE_BUNDLE_PROVE_NO_NAMESPACE") != "1" and shutil.which("unshare"):
            with tempfile.TemporaryDirectory(prefix="paddle-bundle-probe-") as probe:
                for prefix in _candidates():
                    try:
                        ok = subprocess.run([*prefix, "--hide", probe, "--", "true"],
                                            capture_output=True, timeout=30).returncode == 0
                    except (OSError, subprocess.TimeoutExpired):
                        ok = False
                    if ok:
                        _ISOLATION = (ISOLATION_NAMESPACE, prefix)
                        break
    return _ISOLATION


def real_homes(extra: Sequence[Path] = ()) -> list[Path]:
    """The folders the proof hides (each under an empty tmpfs): ``extra`` (fetch's --home),
    this machine's PaddleNLP home(s) and hub caches as :func:`bundler.cache.top_dirs` finds
    them, and the default places (``~/.paddlenlp``, ``~/.cache/huggingface``,
    ``~/.cache/paddle``). Only folders that exist; none inside another; never ``/``, your
    home folder or a folder above it."""
    from bundler.cache import default_home, top_dirs

    user = Path(os.path.realpath(os.path.expanduser("~")))
    found = [*extra, default_home()]
    # yours, and every account's (``sudo paddle-bundle fetch`` runs with root's home while
    # the program may read /home/alice/.paddlenlp by path)
    for folder in [user, *_account_homes()]:
        found += [folder / ".paddlenlp", folder / ".cache" / "huggingface",
                  folder / ".cache" / "paddle"]
    tops = top_dirs(default_home(), os.environ)
    found += [tops["hf"], tops["aistudio"]]  # the caches themselves, not the folder above
    out: list[Path] = []
    for path in sorted({Path(os.path.realpath(p)) for p in found}, key=lambda p: len(p.parts)):
        if path.is_dir() and path not in (user, *user.parents) and not any(
                path == o or o in path.parents for o in out):
            out.append(path)
    return out


def _account_homes() -> list[Path]:
    """The home folders of this machine's accounts (``/etc/passwd``), ``/`` left out."""
    try:
        import pwd

        homes = {entry.pw_dir for entry in pwd.getpwall()}
    except (ImportError, OSError):
        return []
    return [Path(os.path.realpath(h)) for h in sorted(homes) if h and h != "/"]


def _hideable(folders: Sequence[Path], keep: Sequence[Path]) -> list[str]:
    """What to hide of ``folders`` without hiding ``keep`` (the scratch, the command's
    folder, this Python): a folder that holds none of them whole; one that holds one (your
    project inside the PaddleNLP home) folder by folder, down the way to what it holds, so
    ``<home>/models`` is hidden beside ``<home>/project``; a kept folder itself never."""
    kept = [Path(os.path.realpath(k)) for k in keep]
    out: list[str] = []

    def visit(folder: Path) -> None:
        if folder in kept:
            return
        if not any(folder in k.parents for k in kept):
            out.append(str(folder))
            return
        try:
            children = sorted(folder.iterdir())
        except OSError:
            return
        for child in children:
            if child.is_dir() and not child.is_symlink():
                visit(child)

    for folder in folders:
        visit(Path(os.path.realpath(folder)))
    return out


@dataclass(frozen=True)
class ProofRun:
    """What the offline run did: its exit code, offline mode's refusals, its last output."""

    returncode: int
    isolation: str
    refusals: tuple[dict[str, str], ...]
    tail: str
    scratch_home: Path
    #: PaddleNLP homes / caches offline mode resolved models in outside the scratch: the
    #: program chose its own (it set PPNLP_HOME, passed cache_dir), the proof did not test it
    foreign_homes: tuple[str, ...] = ()
    #: False when the namespace could not be set up and the command never ran (``tail`` then
    #: says why: ``unshare`` or the sandbox helper failed)
    started: bool = True


#: The variables that say where the hub caches are (bundler.cache.hf_hub_cache and
#: aistudio_hub_cache read them).
HUB_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "AISTUDIO_HUB_CACHE")


#: Proxy settings the proof drops (in any case): HTTP clients honour them unasked.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")


def offline_environment(scratch: Path, hook_folder: Path, refusals: Path,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Offline mode over the scratch home and caches (docs/fetch.md, the proof)."""
    env = base_environment(hook_folder, base)
    # A site mirror (PADDLE_BUNDLE_MIRROR, docs/fleet.md) would let offline mode download
    # what the bundle lacks, through the socket guard: the proof tests the bundle alone.
    for name in ("PPNLP_ENDPOINT", ENV_SITE_MIRROR, *HUB_CACHE_VARS):
        env.pop(name, None)
    # A proxy on loopback passes the socket guard (loopback is not "the network") and would
    # carry the proof's requests to the internet: the offline machine has none.
    for name in [k for k in env if k.lower() in _PROXY_VARIABLES]:
        del env[name]
    env.update({"PPNLP_HOME": str(scratch / "home"), "HF_HOME": str(scratch / "hf"),
                "AISTUDIO_HUB_CACHE": str(scratch / "aistudio"), ENV_OFFLINE: "1",
                ENV_GUARD: "1", ENV_REPORT: str(refusals)})
    return env


def run_offline(bundle: Path, command: Sequence[str], *,
                scratch_parent: Path | None = None, hide: Sequence[Path] = (),
                debug: bool = False,
                prepare: Callable[[Path, dict[str, str]], None] | None = None,
                collect: Callable[[Path], None] | None = None,
                cwd: str | None = None) -> ProofRun:
    """Install ``bundle`` into a scratch home below ``scratch_parent`` (default: the system's
    temporary folder, ``$TMPDIR``: never beside the bundle, which may be on a USB stick) and
    run ``command`` offline from it, in the current directory or ``<scratch>/<cwd>``.

    In a namespace the real homes (``hide`` plus :func:`real_homes`) are hidden under empty
    folders and loopback is up. ``prepare(scratch, env)`` runs before the command (it may add
    files and arguments), ``collect(scratch)`` after it; then everything scratch is removed.
    A Ctrl-C while the command runs is :class:`KeyboardInterrupt` once it has exited."""
    from bundler.install import install

    name, prefix = isolation()
    scratch = Path(tempfile.mkdtemp(prefix=f"{PROOF_PREFIX}{os.getpid()}-",
                                    dir=scratch_parent))
    try:
        refusals = scratch / "refusals"
        refusals.mkdir()
        env = offline_environment(scratch, write_hook(scratch / "hook"), refusals)
        with hub_caches_of(env):  # hf: and aistudio: models go to the scratch caches
            install(bundle, home=scratch / "home")
        if prepare is not None:
            prepare(scratch, env)
        workdir = scratch / cwd if cwd else Path.cwd()
        full = list(command)
        if prefix:
            hidden = _hideable(real_homes(hide), [scratch, workdir, Path(sys.prefix),
                                                  Path(sys.executable).parent])
            full = [*prefix, *(a for h in hidden for a in ("--hide", h)),
                    "--ready", str(scratch / "ready"), "--", *command]
        log = scratch / "output.log"
        with open(log, "wb") as out:
            sink = None if debug else out
            code = run_command(full, env, stdout=sink, stderr=sink,
                               cwd=scratch / cwd if cwd else None)
        if collect is not None:
            collect(scratch)
        homes = tuple(h for h in read_resolved_homes(refusals)
                      if not _within(Path(h), scratch))
        return ProofRun(code, name, _read_refusals(refusals), _tail(log), scratch / "home",
                        homes, started=not prefix or (scratch / "ready").exists())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: The scratch folders' names: ``<prefix><pid>-<random>``, so a later fetch can tell the
#: ones whose process is gone (killed by SIGKILL, a power cut) and remove them.
PROOF_PREFIX = "paddle-bundle-proof-"


def _within(path: Path, folder: Path) -> bool:
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == base or base in real.parents


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
