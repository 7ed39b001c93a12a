"""What the pickle scan and the load-time guard cost (issue 10).

Run through ``make bench-scan`` (or ``.venv/bin/python bench/bench_scan.py --help``). A report,
not a test: it exits 0 whatever the figures are (a missed target is printed as MISS), non-zero
only when a measured command itself fails.

Measured in the same run against baselines with the scan switched off:

* ``pack`` and ``verify`` of a model whose ``model_state.pdparams`` is ``--size-mb`` of float32
  tensors pickled as ``paddle.save`` writes them (protocol 4, numpy ``_reconstruct``), in fresh
  processes, median of ``--repeat``; the ratio of CPU time (user + system) scan / no scan
  (target <= 1.10: the scan rides the read that hashes, it is never a second read; wall time
  is printed too, but on a shared machine it says more about the neighbours);
* the time spent in the scan's own calls during one read of that bundle, against the whole;
* peak RSS (VmHWM, median) of ``pack`` and ``verify`` with and without the scan (target:
  within 16 MiB: the walk holds the opcode it decodes, never a tensor);
* the walker alone over the same bytes in memory, in MB/s;
* ``paddle.load`` of a ``--load-mb`` checkpoint with offline mode's guard and without it
  (``PADDLE_BUNDLE_LOAD_GUARD=0``), CPU time of the call, median of ``--repeat`` processes
  (target <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work" / "scan"
RATIO_TARGET = 1.10
RSS_TARGET_MB = 16.0
LOAD_TARGET = 1.05

CHILD = """
    import json, os, sys, time
    mode, what, path = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "off":
        import bundler.pack, bundler.verify

        class NoScan:
            def __init__(self, *args):
                self.finding = None
            def feed(self, data):
                return None
            def close(self):
                return None

        bundler.pack.FileScan = NoScan
        bundler.verify.FileScan = NoScan
    from bundler.cli import _main
    t = time.perf_counter()
    if what == "pack":
        rc = _main(["pack", "Org/big", "-o", path, "--home", sys.argv[4], "-q"])
    else:
        rc = _main(["verify", path, "-q"])
    wall = time.perf_counter() - t
    times = os.times()
    cpu = times.user + times.system
    # VmHWM, not ru_maxrss: that one keeps the parent's high-water mark across exec
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"rc": rc, "wall": wall, "cpu": cpu, "rss_mb": rss}))
"""

LOAD = """
    import json, sys, time
    import bundler.offline
    import paddle
    t, c = time.perf_counter(), time.process_time()
    state = paddle.load(sys.argv[1], return_numpy=True)
    print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                      "n": len(state),
                      "guard": type(sys.modules["paddle.framework.io"].pickle).__name__}))
"""


def make_weights(path: Path, size_mb: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    per = 16 * 1024 * 1024 // 4  # 16 MiB tensors
    state = {f"layer.{i}.weight": rng.standard_normal(per, dtype=np.float32)
             for i in range(max(1, size_mb // 16))}
    with open(path, "wb") as fh:
        pickle.dump(state, fh, protocol=4)


def child(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"bench_scan: a measured command failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def scan_share(bundle: Path) -> tuple[float, float]:
    """The time spent in the scan's own calls during one read of the bundle, and in all."""
    from bundler.archive import BundleReader
    from bundler.scan import Allowlist, FileScan

    start = time.perf_counter()
    spent = 0.0
    with BundleReader(bundle) as reader:
        reader.manifest()
        for member, chunks in reader.members():
            scan = FileScan([member.arcname], Allowlist())
            for chunk in chunks:
                t = time.perf_counter()
                scan.feed(chunk)
                spent += time.perf_counter() - t
            t = time.perf_counter()
            assert scan.close() is None
            spent += time.perf_counter() - t
        reader.finish()
    return spent, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024,
                        help="size of the pdparams packed and verified (default: %(default)s)")
    parser.add_argument("--load-mb", type=int, default=256,
                        help="size of the checkpoint paddle.load reads (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="median of (default: 3)")
    parser.add_argument("--no-load", action="store_true", help="skip the paddle.load part")
    args = parser.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "home"
    folder = home / "models" / "Org" / "big"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    weights = folder / "model_state.pdparams"
    make_weights(weights, args.size_mb)
    size = weights.stat().st_size
    print(f"pickle scan: {size / 1e6:.0f} MB pdparams (protocol 4, float32 ndarrays), "
          f"median of {args.repeat}")

    from bundler.scan import Allowlist, FileScan

    data = weights.read_bytes()
    t = time.perf_counter()
    scan = FileScan(["model_state.pdparams"], Allowlist())
    view = memoryview(data)
    for i in range(0, len(data), 1 << 20):
        scan.feed(view[i:i + (1 << 20)])
    assert scan.close() is None
    walker = time.perf_counter() - t
    del data, view
    print(f"  walker alone, in memory: {size / walker / 1e6:,.0f} MB/s")

    bundle = WORK / "big.tar.zst"
    for what in ("pack", "verify"):
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                runs[mode].append(child(CHILD, mode, what, str(bundle), str(home)))
        on = statistics.median(r["cpu"] for r in runs["on"])
        off = statistics.median(r["cpu"] for r in runs["off"])
        wall_on = statistics.median(r["wall"] for r in runs["on"])
        wall_off = statistics.median(r["wall"] for r in runs["off"])
        # median: zstd's worker buffers move pack's peak by +-15 MiB from run to run
        rss_on = statistics.median(r["rss_mb"] for r in runs["on"])
        rss_off = statistics.median(r["rss_mb"] for r in runs["off"])
        ratio = on / off
        print(f"  {what:<6} CPU scan {on:6.2f} s, no scan {off:6.2f} s: x{ratio:.3f} "
              f"{'OK' if ratio <= RATIO_TARGET else 'MISS'} (target <= {RATIO_TARGET}; wall "
              f"{wall_on:.2f} vs {wall_off:.2f} s); peak RSS {rss_on:.0f} vs {rss_off:.0f} MiB: "
              f"{rss_on - rss_off:+.1f} MiB "
              f"{'OK' if rss_on - rss_off <= RSS_TARGET_MB else 'MISS'}")
    inside = scan_share(bundle)
    print(f"  inside one verify read of the bundle: the scan took {inside[0]:.3f} s of "
          f"{inside[1]:.2f} s ({inside[0] / inside[1]:.1%})")
    if args.no_load:
        return 0
    ckpt = WORK / "load.pdparams"
    make_weights(ckpt, args.load_mb)
    env_on = {**os.environ, "PADDLE_BUNDLE_OFFLINE": "1", "PPNLP_HOME": str(home)}
    env_off = {**env_on, "PADDLE_BUNDLE_LOAD_GUARD": "0"}
    on_runs, off_runs = [], []
    for _ in range(args.repeat):
        off_runs.append(child(LOAD, str(ckpt), env=env_off))
        on_runs.append(child(LOAD, str(ckpt), env=env_on))
    assert all(r["guard"] == "GuardedPickle" for r in on_runs), on_runs
    on = statistics.median(r["cpu"] for r in on_runs)
    off = statistics.median(r["cpu"] for r in off_runs)
    wall_on = statistics.median(r["wall"] for r in on_runs)
    wall_off = statistics.median(r["wall"] for r in off_runs)
    print(f"load guard: paddle.load of {ckpt.stat().st_size / 1e6:.0f} MB, CPU guard {on:.3f} s, "
          f"no guard {off:.3f} s: x{on / off:.3f} "
          f"{'OK' if on / off <= LOAD_TARGET else 'MISS'} (target <= {LOAD_TARGET}; wall "
          f"{wall_on:.3f} vs {wall_off:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
