"""How install and inspect scale with the number of models in one bundle.

Run through ``make bench`` (or ``.venv/bin/python bench/bench_scale.py --help``). A report, not
a test: it exits 0 whatever the figures are (a missed target is printed as MISS), non-zero only
when a measured command itself fails.

For N models of one small file each (1k, 2k, 4k, 8k by default) it times, in fresh
processes: ``install`` into an empty home, ``inspect`` (text) and ``inspect --json``, and, as
the baseline measured in the same run, ``verify`` (one pass over the stream, linear by
construction). Linear work means the time *per model* stays flat: the report prints it, and
the ratio of time per model at the largest N to the smallest, which must stay under
:data:`LINEAR_TARGET` (quadratic work would give about largest/smallest, 8 at 8k/1k). The
verdict is on CPU time (user + system of the child): install's wall time is mostly waiting for
the disk (a mkdir and a file per model), which on a shared machine says more about the
neighbours than about the code.

The bundles are written directly (tar + zstd, manifest first, as docs/format.md says) so that
building them does not depend on ``pack``'s own speed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work" / "scale"
LINEAR_TARGET = 2.0  # time per model at the largest N / at the smallest
COMMANDS = ("install", "inspect", "inspect --json", "verify")


def write_bundle(path: Path, n: int) -> None:
    """N models ``Org/mNNNNN`` with one 64-byte ``config.json`` each."""
    models, files, members = [], [], []
    for i in range(n):
        root = f"models/Org/m{i:05d}"
        data = json.dumps({"i": i}).ljust(64).encode()
        models.append({"id": root[len("models/"):], "kind": "community", "root": root,
                       "absent_upstream": []})
        files.append({"path": f"{root}/config.json", "type": "file", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "mode": "0644"})
        members.append((f"{root}/config.json", data))
    manifest = json.dumps({"schema_version": 1,
                           "origin": {"tool_version": "bench", "created": "2026-01-01T00:00:00Z"},
                           "models": models, "files": files}, indent=1).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", manifest), *members]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()))


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def measure(n: int, reps: int) -> dict[str, tuple[float, float]]:
    bundle = WORK / f"models-{n}.tar.zst"
    if not bundle.exists():
        write_bundle(bundle, n)
    cli = [sys.executable, "-m", "bundler"]
    best: dict[str, tuple[float, float]] = {}
    for _ in range(reps):
        home = WORK / f"home-{n}"
        shutil.rmtree(home, ignore_errors=True)
        runs = {
            "install": cli + ["install", str(bundle), "--home", str(home), "-q"],
            "inspect": cli + ["inspect", str(bundle)],
            "inspect --json": cli + ["inspect", "--json", str(bundle)],
            "verify": cli + ["verify", "-q", str(bundle)],
        }
        for name, argv in runs.items():
            wall, cpu = timed(argv)
            old_wall, old_cpu = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(wall, old_wall), min(cpu, old_cpu))
        shutil.rmtree(home, ignore_errors=True)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1000,2000,4000,8000",
                        help="numbers of models, comma-separated (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=2, help="best of REPS (default: 2)")
    args = parser.parse_args(argv)
    counts = sorted(int(x) for x in args.models.split(",") if x.strip())
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    results = {n: measure(n, args.reps) for n in counts}
    print(f"scaling with the number of models (1 file each), best of {args.reps}; "
          "wall s / CPU s (user + system) / CPU ms per model:")
    print(f"  {'models':>7}  " + "  ".join(f"{c:>26}" for c in COMMANDS))
    for n, res in results.items():
        cells = [f"{res[c][0]:6.2f} {res[c][1]:6.2f} {res[c][1] / n * 1e3:6.3f}"
                 for c in COMMANDS]
        print(f"  {n:>7}  " + "  ".join(f"{cell:>26}" for cell in cells))
    small, large = counts[0], counts[-1]
    print(f"time per model at {large} / at {small} (linear ~1, quadratic ~{large / small:.0f}; "
          f"target < {LINEAR_TARGET} in CPU; wall also waits for a shared disk):")
    for c in COMMANDS:
        cpu = (results[large][c][1] / large) / (results[small][c][1] / small)
        wall = (results[large][c][0] / large) / (results[small][c][0] / small)
        verdict = "OK" if cpu < LINEAR_TARGET else "MISS"
        print(f"  {c:<15} CPU {cpu:5.2f}  wall {wall:5.2f}  {verdict}")
    base = results[large]["verify"][1]
    print(f"at {large} models, CPU against verify of the same bundle ({base:.2f} s): "
          + ", ".join(f"{c} x{results[large][c][1] / base:.2f}" for c in COMMANDS[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
