"""``install --force`` killed at every rename, unlink, rmdir, fsync and syncfs it makes (issue 9).

strace kills the real CLI with SIGKILL on entry to the k-th call of one of those syscalls, for
every k seen in an unkilled run, on both ways of swapping a model: ``renameat2
(RENAME_EXCHANGE)``, and two renames where the kernel lacks it (strace makes ``renameat2``
fail with ENOSYS). After each kill one command of some kind runs against the home (rotating:
list, check, offline mode, install, pack), and then the model folder must be the old version or
the new one, the record must name that very version and agree with it file for file, and
nothing may be left in pending/, trash/ or staging/.

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

from bundler.install import install
from tests.conftest import ROOT, tree
from tests.test_install_hardening import _consistent, _next_command, two_versions

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


@pytest.mark.parametrize("exchange", [pytest.param(True, id="exchange"),
                                      pytest.param(False, id="no-exchange")])
def test_kill_at_every_syscall_of_a_forced_swap(
        tmp_path: Path, exchange: bool, capsys: pytest.CaptureFixture[str]) -> None:
    online, v1, v2 = two_versions(tmp_path)
    template = tmp_path / "template"
    install(v1, home=template)
    v1_tree, v2_tree = tree(template / "models"), tree(online / "models")
    base = [] if exchange else ["renameat2:error=ENOSYS"]

    calibrate = tmp_path / "calibrate"
    shutil.copytree(template, calibrate, symlinks=True)
    log = tmp_path / "strace.log"
    proc = _strace(calibrate, v2, base, log)
    assert proc.returncode == 0, proc.stderr
    assert tree(calibrate / "models") == v2_tree
    calls = _calls(log)
    names = {name for name, _ in calls}
    assert {"fsync", "syncfs", "renameat2", "rename", "unlink"} <= names, names
    points = [(n, k) for n, k in calls if exchange or n != "renameat2"]
    assert len(points) >= 15, calls

    outcomes = {"v1.tar.zst": 0, "v2.tar.zst": 0}
    for i, (name, k) in enumerate(points):
        home = tmp_path / f"home{i}"
        shutil.copytree(template, home, symlinks=True)
        proc = _strace(home, v2, [*base, f"{name}:signal=KILL:when={k}"])
        assert proc.returncode in (-9, 137), (name, k, proc.returncode, proc.stderr[-500:])
        kind = NEXT[i % len(NEXT)]
        try:
            said = _next_command(kind, home, v1, tmp_path, capsys)
            _consistent(home, v1_tree, v2_tree, said)
        except AssertionError as exc:
            raise AssertionError(f"killed at {name} #{k} ({i + 1} of {len(points)}), then "
                                 f"'{kind}': {exc}") from exc
        outcomes[said] += 1
        shutil.rmtree(home)
    # the kills fell both before and after the swap
    assert outcomes["v1.tar.zst"] and outcomes["v2.tar.zst"], outcomes
