"""Benchmark paddle-bundle's pack and install against plain tar + zstd + sha256sum.

Run through ``make bench`` (or ``.venv/bin/python bench/bench.py --help``). It is a report,
not a test: it exits 0 whatever the figures are (a missed target is printed as MISS) and
non-zero only when one of the measured commands itself fails.

What is timed, per repetition, from the first process started to the last one reaped:

* pack, ours:      ``paddle-bundle pack Org/bench -o X --home H -q`` (bundle + .sha256 sidecar)
* pack, baseline:  ``tar -cf - -C H models/Org/bench | zstd -T0 -3 -q -o Y``, then
                   ``sha256sum`` over the same model files (the per-file checksums)
* install, ours:   ``paddle-bundle install X --home H2 -q`` into a fresh H2
* install, base:   ``zstd -dc Y | tar -xf - -C D`` into a fresh D, then ``sha256sum -c`` of
                   the pack-side list over the extracted files

Peak RSS is ``ru_maxrss`` of each child as returned by ``os.wait4``. Both sides run warm:
nothing is dropped from the page cache; the inputs are read once before timing, and
``sync`` runs (untimed) before every measured command so that one run's write-back does not
land in the next one's timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work"
MODEL_ID = "Org/bench"
MODEL_REL = Path("models") / "Org" / "bench"
DATA_VERSION = 1  # bump to regenerate cached data when the layout below changes
SHARDS = 4
HIDDEN = 2048
TENSOR_ELEMS = 16 << 20  # at most 32 MiB of float16 per tensor, generated one at a time

PACK_TARGET = 0.9  # ours / baseline wall time
SPLIT_TARGET = 1.05  # split pack/install may cost at most 5% more than one file
SPLIT_SIZE = "64M"
RSS_TARGET_MB = 300.0
FLAT_TOLERANCE = 1.20  # peak RSS at the largest size / at the smallest (run-to-run noise)


class BenchError(Exception):
    """A measured command failed: the benchmark cannot report on it."""


# -- sizes -------------------------------------------------------------------------------
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``512M`` -> 512 MiB; K/M/G/T are powers of 1024 (``512MiB``, ``1GB`` also accepted)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512M or 1G)")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size < SHARDS * HIDDEN * 2:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small")
    return size


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def label(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


# -- test data ---------------------------------------------------------------------------
def _shard_plan(size: int) -> list[list[tuple[str, list[int], int]]]:
    """Per shard: (tensor name, shape, element count), float16, totalling ``size`` bytes of
    tensor data (the safetensors headers add a few hundred bytes)."""
    elems_total = size // 2
    per_shard = [elems_total // SHARDS + (1 if i < elems_total % SHARDS else 0)
                 for i in range(SHARDS)]
    plan = []
    layer = 0
    for elems in per_shard:
        tensors = []
        while elems:
            n = min(elems, TENSOR_ELEMS)
            shape = [n // HIDDEN, HIDDEN] if n % HIDDEN == 0 else [n]
            tensors.append((f"llama.layers.{layer}.mlp.weight", shape, n))
            layer += 1
            elems -= n
        plan.append(tensors)
    return plan


def _write_shard(path: Path, tensors: list[tuple[str, list[int], int]], seed: int) -> None:
    import numpy as np  # only needed to generate data

    header: dict[str, Any] = {"__metadata__": {"format": "np"}}
    offset = 0
    for name, shape, n in tensors:
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for _, _, n in tensors:
            w = rng.standard_normal(n, dtype=np.float32)
            w *= 0.02
            fh.write(w.astype(np.float16).tobytes())


def generate(size: int, folder: Path) -> None:
    """Write the model folder: safetensors shards, their index and a config.json."""
    plan = _shard_plan(size)
    weight_map = {}
    for i, tensors in enumerate(plan):
        name = f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors"
        _write_shard(folder / name, tensors, seed=size * 131 + i)
        weight_map.update({t[0]: name for t in tensors})
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HIDDEN, "num_hidden_layers": len(weight_map),
              "dtype": "float16", "note": "random weights generated by bench/bench.py"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def ensure_model(size: int, log: IO[str]) -> Path:
    """A PaddleNLP home holding ``models/Org/bench`` with ``size`` bytes of float16 weights,
    generated once per size under bench-work/ and reused while its stamp matches.

    Generation runs in a child process so that numpy never enters this one: every process
    this script starts inherits its peak RSS (see :func:`rss_floor`)."""
    root = WORK / "data" / label(size)
    home = root / "home"
    stamp = root / "stamp.json"
    want = {"version": DATA_VERSION, "size": size, "shards": SHARDS, "hidden": HIDDEN}
    try:
        if json.loads(stamp.read_text()) == want and (home / MODEL_REL).is_dir():
            return home
    except (OSError, ValueError):
        pass
    shutil.rmtree(root, ignore_errors=True)
    tmp = WORK / "data" / f".{label(size)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    folder = tmp / "home" / MODEL_REL
    folder.mkdir(parents=True)
    print(f"generating {label(size)} of float16 weights in {root} (once) ...", file=log,
          flush=True)
    t0 = time.perf_counter()
    gen = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--generate-into",
                          str(folder), "--size", str(size)], check=False)
    if gen.returncode != 0:
        raise BenchError(f"generating the {label(size)} test model failed (numpy is needed: "
                         "it comes with `make setup`)")
    (tmp / "stamp.json").write_text(json.dumps(want) + "\n")
    os.replace(tmp, root)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return home


def model_files(home: Path) -> list[str]:
    """The model's files relative to ``home``, sorted (what the baseline hashes)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(home / MODEL_REL):
        dirnames.sort()
        out.extend(Path(dirpath, f).relative_to(home).as_posix() for f in sorted(filenames))
    return out


def warm(home: Path) -> None:
    """Read every input once so both sides start from a warm page cache."""
    for rel in model_files(home):
        with open(home / rel, "rb") as fh:
            while fh.read(1 << 22):
                pass


# -- running and measuring ---------------------------------------------------------------
@dataclass
class Run:
    wall: float = 0.0
    cpu: float = 0.0  # user + system seconds of every process of the run
    rss_mb: dict[str, float] = field(default_factory=dict)  # peak RSS per process name

    def peak(self) -> float:
        return max(self.rss_mb.values(), default=0.0)


def _reap(procs: list[tuple[str, subprocess.Popen[bytes]]], run: Run,
          errs: Sequence[IO[bytes]], argv_text: str) -> None:
    failures = []
    for (name, p), err in zip(procs, errs):
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        run.cpu += ru.ru_utime + ru.ru_stime
        run.rss_mb[name] = max(run.rss_mb.get(name, 0.0), ru.ru_maxrss / 1024)
        if p.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
            failures.append(f"{name} exited {p.returncode}: {text[-2000:]}")
    if failures:
        raise BenchError(f"command failed: {argv_text}\n  " + "\n  ".join(failures))


def run_steps(steps: list[list[tuple[str, list[str]]]], *, cwd: Path | None = None,
              stdout_file: Path | None = None) -> Run:
    """Run ``steps`` one after the other; each step is a pipeline of (name, argv). Wall time
    covers everything from the first process started to the last one reaped. The last
    step's stdout goes to ``stdout_file`` (or nowhere)."""
    os.sync()  # untimed: earlier runs' dirty pages are written back before we start
    run = Run()
    t0 = time.perf_counter()
    for i, pipeline in enumerate(steps):
        with contextlib.ExitStack() as stack:
            sink: Any = subprocess.DEVNULL
            if stdout_file is not None and i == len(steps) - 1:
                sink = stack.enter_context(open(stdout_file, "wb"))
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in pipeline]
            procs: list[tuple[str, subprocess.Popen[bytes]]] = []
            stack.callback(_kill_unreaped, procs)
            prev: Any = subprocess.DEVNULL
            for j, (name, argv) in enumerate(pipeline):
                last = j == len(pipeline) - 1
                p = subprocess.Popen(argv, cwd=cwd, stdin=prev, stderr=errs[j],
                                     stdout=sink if last else subprocess.PIPE)
                if prev is not subprocess.DEVNULL:
                    prev.close()  # the reader holds the only copy now (SIGPIPE works)
                prev = p.stdout
                procs.append((name, p))
            _reap(procs, run, errs, " | ".join(" ".join(a) for _, a in pipeline))
    run.wall = time.perf_counter() - t0
    return run


def _kill_unreaped(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Only after a failure to start or reap one of a pipeline's processes."""
    for _, p in procs:
        if p.returncode is None:
            p.kill()
            p.wait()


def rss_floor() -> float:
    """Peak RSS reported for ``true``: the least any child of this script can show.

    ``ru_maxrss`` of a child that was forked (or vforked) and then exec'ed starts at the
    parent's resident size, so small tools such as tar or sha256sum read as this floor."""
    return run_steps([[("true", ["true"])]]).peak()


def rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def paddle_bundle() -> list[str]:
    exe = shutil.which("paddle-bundle") or str(REPO / ".venv" / "bin" / "paddle-bundle")
    if os.access(exe, os.X_OK):
        return [exe]
    return [sys.executable, "-m", "bundler"]


class Bench:
    def __init__(self, size: int, log: IO[str]) -> None:
        self.size = size
        self.log = log
        self.pb = paddle_bundle()
        self.home = ensure_model(size, log)
        self.files = model_files(self.home)
        self.run_dir = WORK / "run"
        rm(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.ours_bundle = self.run_dir / "ours.tar.zst"
        self.base_bundle = self.run_dir / "baseline.tar.zst"
        self.base_sums = self.run_dir / "baseline.sha256"
        self.ours_home = self.run_dir / "install-home"
        self.base_dir = self.run_dir / "extract"
        warm(self.home)

    # pack ---------------------------------------------------------------------------------
    def pack_ours(self) -> Run:
        for p in (self.ours_bundle, Path(f"{self.ours_bundle}.sha256")):
            rm(p)
        run = run_steps([[("paddle-bundle", [*self.pb, "pack", MODEL_ID,
                                             "-o", str(self.ours_bundle),
                                             "--home", str(self.home), "-q"])]])
        if not Path(f"{self.ours_bundle}.sha256").is_file():
            raise BenchError(f"pack did not write {self.ours_bundle}.sha256")
        return run

    def pack_baseline(self) -> Run:
        for p in (self.base_bundle, self.base_sums):
            rm(p)
        return run_steps(
            [[("tar", ["tar", "-cf", "-", "-C", str(self.home), MODEL_REL.as_posix()]),
              ("zstd", ["zstd", "-T0", "-3", "-q", "-o", str(self.base_bundle)])],
             [("sha256sum", ["sha256sum", "--", *self.files])]],
            cwd=self.home, stdout_file=self.base_sums)

    # install ------------------------------------------------------------------------------
    def install_ours(self) -> Run:
        rm(self.ours_home)
        run = run_steps([[("paddle-bundle", [*self.pb, "install", str(self.ours_bundle),
                                             "--home", str(self.ours_home), "-q"])]])
        if not (self.ours_home / MODEL_REL / "config.json").is_file():
            raise BenchError(f"install did not produce {self.ours_home / MODEL_REL}")
        return run

    def install_baseline(self) -> Run:
        rm(self.base_dir)
        self.base_dir.mkdir()
        return run_steps(
            [[("zstd", ["zstd", "-dc", str(self.base_bundle)]),
              ("tar", ["tar", "-xf", "-", "-C", str(self.base_dir)])],
             [("sha256sum", ["sha256sum", "--quiet", "-c", str(self.base_sums)])]],
            cwd=self.base_dir)

    # split volumes against one file (issue: at most 5% more) ---------------------------
    def splitpack_ours(self) -> Run:
        for p in self.run_dir.glob("split.tar.zst*"):
            rm(p)
        out = self.run_dir / "split.tar.zst"
        run = run_steps([[("paddle-bundle", [*self.pb, "pack", MODEL_ID, "-o", str(out),
                                             "--home", str(self.home), "--split-size",
                                             SPLIT_SIZE, "-q"])]])
        if not (self.run_dir / "split.tar.zst.000").is_file():
            raise BenchError("split pack wrote no volumes")
        return run

    def splitpack_baseline(self) -> Run:
        return self.pack_ours()

    def splitinstall_ours(self) -> Run:
        rm(self.ours_home)
        return run_steps([[("paddle-bundle", [*self.pb, "install",
                                             str(self.run_dir / "split.tar.zst"),
                                             "--home", str(self.ours_home), "-q"])]])

    def splitinstall_baseline(self) -> Run:
        return self.install_ours()

    def cleanup(self) -> None:
        rm(self.run_dir)


def compare(bench: Bench, what: str, reps: int) -> dict[str, Any]:
    """Alternate ours and the baseline, swapping which goes first each repetition."""
    ours_fn = getattr(bench, f"{what}_ours")
    base_fn = getattr(bench, f"{what}_baseline")
    ours: list[Run] = []
    base: list[Run] = []
    for rep in range(reps):
        order = [("ours", ours_fn, ours), ("baseline", base_fn, base)]
        if rep % 2:
            order.reverse()
        for _, fn, acc in order:
            acc.append(fn())
        print(f"  {what} {rep + 1}/{reps}: ours {ours[-1].wall:6.2f} s "
              f"(cpu {ours[-1].cpu:5.2f} s, rss {ours[-1].peak():5.0f} MB)   "
              f"baseline {base[-1].wall:6.2f} s (cpu {base[-1].cpu:5.2f} s)",
              file=bench.log, flush=True)
    med_o = statistics.median(r.wall for r in ours)
    med_b = statistics.median(r.wall for r in base)
    return {
        "ours_s": med_o, "baseline_s": med_b, "ratio": med_o / med_b,
        "ours_cpu_s": statistics.median(r.cpu for r in ours),
        "baseline_cpu_s": statistics.median(r.cpu for r in base),
        "ours_rss_mb": max(r.peak() for r in ours),
        "baseline_rss_mb": {k: max(r.rss_mb[k] for r in base) for k in base[0].rss_mb},
        "ours_runs_s": [r.wall for r in ours], "baseline_runs_s": [r.wall for r in base],
    }


def flat(sizes: list[int], reps: int, log: IO[str]) -> dict[str, Any]:
    """Our peak RSS at each size, the highest of ``reps`` runs (it varies from run to run
    with how far zstd's worker threads fall behind, so one run says little)."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        bench = Bench(size, log)
        packs: list[Run] = []
        insts: list[Run] = []
        try:
            for _ in range(reps):
                packs.append(bench.pack_ours())
                insts.append(bench.install_ours())
                print(f"  {label(size)}: pack {packs[-1].wall:6.2f} s rss "
                      f"{packs[-1].peak():5.0f} MB   install {insts[-1].wall:6.2f} s rss "
                      f"{insts[-1].peak():5.0f} MB", file=log, flush=True)
        finally:
            bench.cleanup()
        rows.append({"size": label(size), "bytes": size,
                     "pack_rss_mb": max(r.peak() for r in packs),
                     "install_rss_mb": max(r.peak() for r in insts),
                     "pack_rss_runs_mb": [r.peak() for r in packs],
                     "install_rss_runs_mb": [r.peak() for r in insts],
                     "pack_runs_s": [r.wall for r in packs],
                     "install_runs_s": [r.wall for r in insts]})
    out: dict[str, Any] = {"reps": reps, "rows": rows}
    if len(rows) >= 2:
        out["pack_ratio"] = rows[-1]["pack_rss_mb"] / rows[0]["pack_rss_mb"]
        out["install_ratio"] = rows[-1]["install_rss_mb"] / rows[0]["install_rss_mb"]
    return out


# -- machine and report ------------------------------------------------------------------
def _cmd_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    for line in _cmd_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    # Asked of a child interpreter: importing ssl and zstandard here would raise the RSS
    # floor of every process this script starts.
    libs = _cmd_output([sys.executable, "-c", "import ssl, zstandard; print(ssl.OPENSSL_VERSION);"
                        " print(f'{zstandard.__version__} ({zstandard.backend})')"]).splitlines()
    openssl, zstd_py = (libs + ["", ""])[:2]
    return {
        "nproc": _cmd_output(["nproc"]).strip(), "cpu": cpu,
        "sha_ni": "sha_ni" in Path("/proc/cpuinfo").read_text(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "openssl": openssl, "zstandard": zstd_py,
        "zstd_cli": _cmd_output(["zstd", "--version"]).strip(),
        "tar": _cmd_output(["tar", "--version"]).splitlines()[0:1],
        "sha256sum": _cmd_output(["sha256sum", "--version"]).splitlines()[0:1],
        "filesystem": _cmd_output(["df", "-T", str(REPO)]).splitlines()[-1:],
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(res: dict[str, Any]) -> list[str]:
    """Print the tables; return the list of misses."""
    misses = []
    m = res["machine"]
    print()
    print(f"paddle-bundle benchmark  {res['date']}  model {res['size']} float16 "
          f"({SHARDS} shards), median of {res['reps']}")
    print(f"machine: {m['nproc']} cores, {m['cpu']}, {m['mem_gb']} GB RAM; "
          f"load average {res['load_before']} before, {res['load_after']} after")
    print("warm page cache on both sides (nothing dropped); sync (untimed) before each run")
    print()
    print(f"{'':10}{'ours s':>9}{'baseline s':>12}{'ratio':>8}{'target':>9}  result"
          f"{'ours cpu s':>13}{'base cpu s':>12}")
    for what in ("pack", "install"):
        r = res[what]
        ok = r["ratio"] <= PACK_TARGET
        if not ok:
            misses.append(f"{what} wall time: ours/baseline = {r['ratio']:.3f} "
                          f"> {PACK_TARGET} ({r['ours_s']:.2f} s vs {r['baseline_s']:.2f} s)")
        print(f"{what:10}{r['ours_s']:9.2f}{r['baseline_s']:12.2f}{r['ratio']:8.3f}"
              f"{'<= ' + str(PACK_TARGET):>9}  {verdict(ok)}"
              f"{r['ours_cpu_s']:13.2f}{r['baseline_cpu_s']:12.2f}")
    print()
    print(f"split volumes ({SPLIT_SIZE}) against one file, both ours:")
    print(f"{'':10}{'split s':>9}{'one file s':>12}{'ratio':>8}{'target':>9}  result")
    for what, name in (("splitpack", "pack"), ("splitinstall", "install")):
        r = res.get(what)
        if r is None:
            continue
        ok = r["ratio"] <= SPLIT_TARGET
        if not ok:
            misses.append(f"split {name}: split/one file = {r['ratio']:.3f} > {SPLIT_TARGET}")
        print(f"{name:10}{r['ours_s']:9.2f}{r['baseline_s']:12.2f}{r['ratio']:8.3f}"
              f"{'<= ' + str(SPLIT_TARGET):>9}  {verdict(ok)}")
    print()
    print(f"{'peak RSS':10}{'ours MB':>9}{'target':>12}  result   baseline processes MB")
    for what in ("pack", "install"):
        r = res[what]
        ok = r["ours_rss_mb"] <= RSS_TARGET_MB
        if not ok:
            misses.append(f"{what} peak RSS {r['ours_rss_mb']:.0f} MB > {RSS_TARGET_MB:.0f} MB")
        base = ", ".join(f"{k} {v:.0f}" for k, v in r["baseline_rss_mb"].items())
        print(f"{what:10}{r['ours_rss_mb']:9.0f}{'<= ' + str(int(RSS_TARGET_MB)):>12}  "
              f"{verdict(ok)}     {base}")
    print(f"(any process this script starts reads at least {res['rss_floor_mb']:.0f} MB, its "
          "own size at spawn: ru_maxrss carries over exec)")
    fl = res.get("flat")
    if fl:
        print()
        sizes = [row["size"] for row in fl["rows"]]
        print(f"RSS flatness (ours): highest peak RSS MB of {fl['reps']} runs at "
              f"{', '.join(sizes)}")
        for what in ("pack", "install"):
            vals = "".join(f"{row[what + '_rss_mb']:9.0f}" for row in fl["rows"])
            ratio = fl.get(f"{what}_ratio")
            if ratio is None:
                print(f"{what:10}{vals}")
                continue
            ok = ratio <= FLAT_TOLERANCE
            if not ok:
                misses.append(f"{what} peak RSS grows with size: {sizes[-1]}/{sizes[0]} "
                              f"= {ratio:.2f}")
            print(f"{what:10}{vals}   {sizes[-1]}/{sizes[0]} = {ratio:.2f} (expected ~1)  "
                  f"{'flat' if ok else 'MISS: grows with size'}")
        spread = "; ".join(
            f"{row['size']} pack {min(row['pack_rss_runs_mb']):.0f}-"
            f"{max(row['pack_rss_runs_mb']):.0f}, install {min(row['install_rss_runs_mb']):.0f}-"
            f"{max(row['install_rss_runs_mb']):.0f}" for row in fl["rows"])
        print(f"(range over the runs, MB: {spread})")
    print()
    if misses:
        for miss in misses:
            print(f"MISS  {miss}")
    else:
        print("all targets met")
    return misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("512M"),
                    help="model size for the timed comparison (default 512M; K/M/G = 1024^n)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per side (median; 3)")
    ap.add_argument("--flat-sizes", "--sizes", dest="flat_sizes", type=parse_sizes,
                    default=parse_sizes("256M,1G"),
                    help="sizes for the RSS-flatness check (default 256M,1G)")
    ap.add_argument("--flat-reps", type=int, default=3,
                    help="runs per size for the RSS-flatness check; the highest peak counts (3)")
    ap.add_argument("--skip-flat", action="store_true", help="skip the RSS-flatness check")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.generate_into:
        generate(args.size, args.generate_into)
        return 0
    if args.reps < 1 or args.flat_reps < 1:
        ap.error("--reps and --flat-reps must be at least 1")
    missing = [t for t in ("tar", "zstd", "sha256sum") if shutil.which(t) is None]
    if missing:
        print(f"bench: needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 2

    log = sys.stderr
    res: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "size": label(args.size), "size_bytes": args.size, "reps": args.reps,
        "machine": machine(), "load_before": loadavg(),
        "paddle_bundle": " ".join(paddle_bundle()), "rss_floor_mb": rss_floor(),
        "notes": "warm page cache on both sides; sync (untimed) before each run; "
                 "MB = 2^20 bytes",
    }
    try:
        bench = Bench(args.size, log)
        try:
            print(f"timed comparison at {label(args.size)}:", file=log, flush=True)
            res["pack"] = compare(bench, "pack", args.reps)
            res["bundle_bytes"] = {"ours": bench.ours_bundle.stat().st_size,
                                   "baseline": bench.base_bundle.stat().st_size}
            res["install"] = compare(bench, "install", args.reps)
            print(f"split volumes of {SPLIT_SIZE} against one file:", file=log, flush=True)
            res["splitpack"] = compare(bench, "splitpack", args.reps)
            res["splitinstall"] = compare(bench, "splitinstall", args.reps)
        finally:
            bench.cleanup()
        if not args.skip_flat and args.flat_sizes:
            print("RSS flatness:", file=log, flush=True)
            res["flat"] = flat(args.flat_sizes, args.flat_reps, log)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    res["load_after"] = loadavg()
    res["rss_floor_mb"] = max(res["rss_floor_mb"], rss_floor())
    res["misses"] = report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
