"""``install --force`` killed at every rename, unlink, rmdir, fsync and syncfs it makes (issue 9).

strace kills the real CLI with SIGKILL on entry to the k-th call of one of those syscalls, for
every k seen in an unkilled run, on both ways of swapping a model: ``renameat2
(RENAME_EXCHANGE)``, and two renames where the kernel lacks it (strace makes ``renameat2``
fail with ENOSYS). The bundle holds two models, so a kill can also fall between their swaps.
After each kill one command of some kind runs against the home (rotating: list, check,
offline mode, install, pack), and then each model folder must be the old version or the new
one, that command and the record must name that very version, the record must agree with the
folder file for file, and nothing may be left in pending/, trash/ or staging/.

Slow (a process per kill point, a few dozen per path); CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.cache import Cache
from bundler.cli import _main
from bundler.errors import InstallConflictError
from bundler.install import install
from bundler.pack import pack
from tests.conftest import ROOT, SMALL_MODEL, make_model, tree
from tests.test_install_hardening import listed

SYSCALLS = ("rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "fsync",
            "fdatasync", "syncfs")
NEXT = ("list", "check", "offline", "install", "pack")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace"),
]


def _strace(home: Path, bundle: Path, injects: list[str], log: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    # no -f: only the main thread, which makes every write, rename and fsync of install
    argv = ["strace", "-qq", "-e", f"trace={','.join(SYSCALLS)}",
            "-o", str(log or os.devnull)]
    for inject in injects:
        argv += ["-e", f"inject={inject}"]
    argv += [sys.executable, "-m", "bundler", "install", str(bundle), "--home", str(home),
             "--force", "-q"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def _calls(log: Path) -> list[tuple[str, int]]:
    """(syscall, its ordinal among calls of that name) for each traced call, in order."""
    seen: dict[str, int] = {}
    out = []
    for line in log.read_text().splitlines():
        match = re.match(r"(\w+)\(", line)
        if match and match.group(1) in SYSCALLS:
            name = match.group(1)
            seen[name] = seen.get(name, 0) + 1
            out.append((name, seen[name]))
    return out


IDS = ("Org/small", "Org/other")


def _two_models_two_versions(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(online home, v1, v2): two models in one bundle, v2 with other weights of the same
    size in both, so one swap can land without the other."""
    online = tmp_path / "online"
    for model_id in IDS:
        make_model(online, model_id, {**SMALL_MODEL, "model_state.pdparams": os.urandom(1000)})
    v1, v2 = tmp_path / "v1.tar.zst", tmp_path / "v2.tar.zst"
    pack(list(IDS), v1, home=online)
    for model_id in IDS:
        (online / "models" / model_id / "model_state.pdparams").write_bytes(os.urandom(1000))
    pack(list(IDS), v2, home=online)
    return online, v1, v2


def _said(kind: str, home: Path, v1: Path, tmp_path: Path,
          capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Run one command of ``kind``; which bundle it says each model came from."""
    if kind == "list":
        return listed(home, capsys)
    if kind == "check":
        assert _main(["check", "--home", str(home)]) == 0
        return {r.model.id: r.bundle for r in Cache(home).records()}
    if kind == "offline":
        from bundler._offline import OfflineResolver

        resolver = OfflineResolver(lambda: str(home / "models"))
        out = {}
        for model_id in IDS:
            resolver.require_installed(model_id)
            record = resolver.record(model_id)
            assert record is not None
            out[model_id] = record.bundle
        return out
    if kind == "pack":
        pack(list(IDS), tmp_path / "repack.tar.zst", home=home)
        return listed(home, capsys)
    assert kind == "install"
    try:
        install(v1, home=home)
    except InstallConflictError as exc:
        return {m: "v2.tar.zst" if f"{m}: a different version" in str(exc) else "v1.tar.zst"
                for m in IDS}
    return dict.fromkeys(IDS, "v1.tar.zst")


def _agree(home: Path, trees: dict[str, dict[str, bytes | str]], said: dict[str, str]) -> None:
    records = {r.model.id: r for r in Cache(home).records()}
    assert sorted(records) == sorted(IDS)
    for model_id in IDS:
        now = tree(home / "models" / model_id)
        assert now in (trees[f"v1:{model_id}"], trees[f"v2:{model_id}"]), \
            f"{model_id} is neither version"
        version = "v1" if now == trees[f"v1:{model_id}"] else "v2"
        assert said[model_id] == f"{version}.tar.zst", model_id
        assert records[model_id].bundle == f"{version}.tar.zst", model_id
        assert Cache(home).differences(records[model_id].files) == [], model_id
    state = home / ".paddle-bundle"
    for leftover in ("pending", "trash", "staging"):
        files = [p for p in (state / leftover).rglob("*") if not p.is_dir()]
        assert not files, f"left in {leftover}/: {files}"


@pytest.mark.parametrize("exchange", [pytest.param(True, id="exchange"),
                                      pytest.param(False, id="no-exchange")])
def test_kill_at_every_syscall_of_a_forced_swap(
        tmp_path: Path, exchange: bool, capsys: pytest.CaptureFixture[str]) -> None:
    online, v1, v2 = _two_models_two_versions(tmp_path)
    template = tmp_path / "template"
    install(v1, home=template)
    trees = {f"{v}:{m}": tree(h / "models" / m)
             for v, h in (("v1", template), ("v2", online)) for m in IDS}
    base = [] if exchange else ["renameat2:error=ENOSYS"]

    calibrate = tmp_path / "calibrate"
    shutil.copytree(template, calibrate, symlinks=True)
    log = tmp_path / "strace.log"
    proc = _strace(calibrate, v2, base, log)
    assert proc.returncode == 0, proc.stderr
    assert tree(calibrate / "models") == tree(online / "models")
    calls = _calls(log)
    names = {name for name, _ in calls}
    assert {"fsync", "renameat2", "rename"} <= names, names
    points = [(n, k) for n, k in calls if exchange or n != "renameat2"]
    assert len(points) >= 15, calls

    seen: set[tuple[str, ...]] = set()
    for i, (name, k) in enumerate(points):
        home = tmp_path / f"home{i}"
        shutil.copytree(template, home, symlinks=True)
        proc = _strace(home, v2, [*base, f"{name}:signal=KILL:when={k}"])
        assert proc.returncode in (-9, 137), (name, k, proc.returncode, proc.stderr[-500:])
        kind = NEXT[i % len(NEXT)]
        try:
            said = _said(kind, home, v1, tmp_path, capsys)
            _agree(home, trees, said)
        except AssertionError as exc:
            raise AssertionError(f"killed at {name} #{k} ({i + 1} of {len(points)}), then "
                                 f"'{kind}': {exc}") from exc
        seen.add(tuple(said[m] for m in IDS))
        shutil.rmtree(home)
    # the kills fell before the swaps, between them (one model new, one old) and after
    assert {("v1.tar.zst",) * 2, ("v2.tar.zst",) * 2} <= seen, seen
    assert len(seen) == 3, seen
