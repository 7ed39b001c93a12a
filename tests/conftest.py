"""Shared fixtures: model folders from dicts, real bundles, and hand-made hostile bundles."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import settings

from bundler.cli import _main

ROOT = Path(__file__).resolve().parent.parent

# Property tests check what holds, not how fast: a 2-core machine shared with other work must
# not turn hypothesis's per-example deadline into a flaky failure (speed lives in make bench).
settings.register_profile("paddle-bundle", deadline=None)
settings.load_profile("paddle-bundle")


def make_model(home: Path, model_id: str, files: Mapping[str, bytes | str]) -> Path:
    """A model folder under ``home`` from ``{relative path: content}``; a ``str`` value
    starting with ``->`` makes a symlink to what follows."""
    folder = home / "models" / model_id
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:].strip())
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


SMALL_MODEL: dict[str, bytes | str] = {
    "config.json": json.dumps({"architectures": ["CodeGenForCausalLM"], "n_layer": 2}),
    "tokenizer_config.json": "{}",
    "vocab.json": json.dumps({"a": 0, "b": 1}),
    "model_state.pdparams": os.urandom(300_000),
}


@pytest.fixture
def online_home(tmp_path: Path) -> Path:
    home = tmp_path / "online"
    make_model(home, "Org/small", SMALL_MODEL)
    return home


@pytest.fixture
def offline_home(tmp_path: Path) -> Path:
    return tmp_path / "offline"


@pytest.fixture
def bundle(online_home: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle.tar.zst"
    assert _main(["pack", "Org/small", "-o", str(out), "--home", str(online_home), "-q"]) == 0
    return out


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """Run the real console entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-m", "bundler", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


# -- hand-made bundles, for the things pack never writes ---------------------------------
def tarinfo(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE, linkname: str = "",
            mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mode = size, kind, linkname, mode
    return info


def write_raw_bundle(path: Path, manifest: Mapping[str, Any] | bytes,
                     members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A bundle written with plain tarfile + zstd: ``manifest.json`` first, then ``members``
    exactly as given, hostile ones included."""
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarinfo("manifest.json", size=len(data)), io.BytesIO(data))
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()))
    return path


def manifest_for(files: Mapping[str, bytes], model_id: str = "Org/evil",
                 extra_files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    import hashlib

    entries: list[dict[str, Any]] = [
        {"path": f"models/{model_id}/{rel}", "type": "file", "size": len(content),
         "sha256": hashlib.sha256(content).hexdigest(), "mode": "0644"}
        for rel, content in files.items()]
    entries.extend(extra_files or [])
    return {"schema_version": 1,
            "origin": {"tool_version": "test", "created": "2026-01-01T00:00:00Z"},
            "models": [{"id": model_id, "kind": "community", "root": f"models/{model_id}",
                        "absent_upstream": []}],
            "files": entries}


def tree(root: Path) -> dict[str, bytes | str]:
    """Everything below ``root`` (symlinks as '-> target'), to compare before and after."""
    out: dict[str, bytes | str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


@pytest.fixture
def build_raw_bundle(tmp_path: Path) -> Callable[..., Path]:
    def build(name: str, manifest: Mapping[str, Any] | bytes,
              members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
        return write_raw_bundle(tmp_path / name, manifest, members)

    return build


@pytest.fixture(scope="session")
def families_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue-8 families (tools/tiny_models.py families-tree) as a BOS mirror tree, built
    once per session: tests/test_fetch_families.py and tests/test_capture_families.py serve it."""
    root = tmp_path_factory.mktemp("families")
    proc = subprocess.run([sys.executable, "tools/tiny_models.py", "families-tree", str(root)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def have_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


#: Prepended to scripts run under unshare -n: an audit hook that records every DNS lookup and
#: connect attempt (they must stay empty), a RESULT dict to print, and ``failure(call)``.
#: Indented by four spaces, as the scripts are dedented before running.
AUDIT_RECORDER = """
    import json, sys, time
    NET = []
    def _record(event, args):
        if event in ("socket.getaddrinfo", "socket.connect", "socket.gethostbyname",
                     "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto",
                     "socket.sendmsg"):
            NET.append([event, repr(args)[:200]])
    sys.addaudithook(_record)
    RESULT = {}
    def failure(call):
        t = time.perf_counter()
        try:
            call()
        except Exception as exc:
            return [type(exc).__name__, str(exc), time.perf_counter() - t]
        return None
"""


def script_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``RESULT {json}`` line a script printed (after AUDIT_RECORDER), once it exited 0."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result
