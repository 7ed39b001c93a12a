"""Benchmark ``paddle-bundle rewrite`` over a codebase the size of PaddleNLP's own tree.

Run with ``.venv/bin/python bench/bench_rewrite.py`` (``--help`` for options). It is a
report, not a test: it exits 0 whatever the figures are (a missed target prints MISS) and
non-zero only when a measured command fails or the fast path's results differ from the
unfiltered ones.

The tree: copies of the installed ``paddlenlp`` package's own sources (found in this
Python's site-packages), as many as it takes to reach ``--files`` files (2,565 by default,
the size of PaddleNLP's source tree in issue 9), built once under
``bench-work/rewrite/`` (git-ignored).  The home: a few installed model ids, one of them
named literally in the package's code, so ``--diff`` has changes to show.

Measured, each as a separate process, wall time and CPU (user + system, workers included),
peak RSS of the largest process (``ru_maxrss`` via ``wait4``) and of the whole process tree
(summed, sampled from /proc every 250 ms):

* ``paddle-bundle rewrite TREE --diff`` and ``--check``, as a user runs them (all cores);
* the baseline, in one process: what the rewrite did for every file before it had a
  pre-filter -- libcst's parse, position and scope analysis (its visit is not even counted)
  -- over every ``--baseline-stride``-th file of the tree, scaled to the whole tree by
  bytes (the whole tree would take over 20 minutes; the sample is the same kind of file).
  The same process then plans the sample with ``prefilter=False`` and with the
  pre-filter, one process each, and compares the two: they must be identical.

Target: ``--diff`` over the tree in under 60 s (issue 9: 8 minutes over PaddleNLP's tree).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work" / "rewrite"
TARGET_S = 60.0
#: Model ids to install: the first is the one literal id in paddlenlp 3.0.0b4's own code
#: (paddlenlp/taskflow/document_intelligence.py); the others are common ids.
MODEL_IDS = ("ernie-layoutx-base-uncased", "ernie-3.0-medium-zh", "bert-base-uncased",
             "Salesforce/codegen-350M-mono")

REFERENCE = r"""
import json, sys, time
from pathlib import Path
import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, ScopeProvider
from bundler.rewrite import plan_rewrites, unified_diff

files = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
installed = json.loads(sys.argv[2])
t, c = time.perf_counter(), time.process_time()
for path in files:  # what the rewrite did for every file before: parse, positions, scopes
    wrapper = MetadataWrapper(cst.parse_module(path.read_bytes()), unsafe_skip_copy=True)
    wrapper.resolve(PositionProvider)
    wrapper.resolve(ScopeProvider)
baseline = (time.perf_counter() - t, time.process_time() - c)
t, c = time.perf_counter(), time.process_time()
full = plan_rewrites(files, installed, jobs=1, prefilter=False)
full_diff = b"".join(unified_diff(p) for p in full)
full = (time.perf_counter() - t, time.process_time() - c, full)
t, c = time.perf_counter(), time.process_time()
fast = plan_rewrites(files, installed, jobs=1)
fast_diff = b"".join(unified_diff(p) for p in fast)
fast_s = (time.perf_counter() - t, time.process_time() - c)
plans = full[2]
print(json.dumps({"baseline": baseline, "full": full[:2], "fast": fast_s,
                  "identical": fast == plans and fast_diff == full_diff,
                  "changed": sum(p.changed for p in plans),
                  "findings": sum(len(p.result.findings) for p in plans)}))
"""


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    tree_rss_mb: float
    returncode: int
    stdout: bytes
    stderr: bytes


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _tree_rss_kb(root: int) -> int:
    total = 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def measure(argv: list[str], cwd: Path | None = None) -> Run:
    """Run ``argv``; wall, CPU and peak RSS of the process and everything it started."""
    out_path, err_path = WORK / "stdout.txt", WORK / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.25):
                peak[0] = max(peak[0], _tree_rss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu, max_rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        # The pool's forkserver outlives the CLI by a moment; as subreaper we inherit it
        # (and through it its workers' usage) and reap it here.
        while True:
            try:
                _, _, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            cpu += usage.ru_utime + usage.ru_stime
            max_rss = max(max_rss, usage.ru_maxrss)
        done.set()
        sampler.join()
    return Run(wall, cpu, max_rss / 1024, peak[0] / 1024, proc.returncode,
               out_path.read_bytes(), err_path.read_bytes())


def become_subreaper() -> None:
    """Orphaned descendants (the CLI's pool) become our children, so their CPU counts."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def package_sources() -> tuple[Path, str, list[Path]]:
    spec = importlib.util.find_spec("paddlenlp")  # located, not imported (no Paddle needed)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("paddlenlp is not installed in this Python (run `make setup`)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package, importlib.metadata.version("paddlenlp"), sorted(package.rglob("*.py"))


def build_tree(package: Path, sources: list[Path], files: int) -> Path:
    """Whole copies of the package, the last one partial, ``files`` .py files in all."""
    tree = WORK / "tree"
    stamp = WORK / "tree.stamp"
    want = f"{package} {len(sources)} {files}\n"
    if stamp.is_file() and stamp.read_text() == want:
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    copied = 0
    copy = 0
    while copied < files:
        for source in sources[: files - copied]:
            dest = tree / f"copy{copy:02}" / "paddlenlp" / source.relative_to(package)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            copied += 1
        copy += 1
    stamp.write_text(want)
    return tree


def build_home() -> tuple[Path, dict[str, str]]:
    home = WORK / "home"
    for model_id in MODEL_IDS:
        folder = home / "models" / model_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text("{}\n")
    base = home.resolve() / "models"
    return home, {model_id: str(base / model_id) for model_id in MODEL_IDS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2565, help="files in the tree (2565)")
    parser.add_argument("--baseline-stride", type=int, default=24,
                        help="the baseline runs on every Nth file of the tree (24)")
    parser.add_argument("--jobs", type=int, default=None, help="passed to rewrite --jobs")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    package, version, sources = package_sources()
    tree = build_tree(package, sources, args.files)
    home, installed = build_home()
    tree_files = sorted(tree.rglob("*.py"))
    tree_bytes = sum(p.stat().st_size for p in tree_files)
    sample = tree_files[:: args.baseline_stride]
    sample_bytes = sum(p.stat().st_size for p in sample)
    (WORK / "sample.txt").write_text("".join(f"{p}\n" for p in sample))

    load = os.getloadavg()
    print(f"paddle-bundle rewrite benchmark  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} before")
    print(f"tree: {len(tree_files)} files, {tree_bytes / 2**20:.1f} MB: copies of paddlenlp "
          f"{version}'s {len(sources)} .py files ({package})")
    print(f"installed ids: {', '.join(MODEL_IDS)}")
    print()

    cli = [sys.executable, "-m", "bundler", "rewrite", str(tree), "--home", str(home)]
    if args.jobs:
        cli += ["--jobs", str(args.jobs)]
    results: dict[str, Run] = {}
    for mode in ("diff", "check"):
        run = measure([*cli, f"--{mode}"], cwd=REPO)
        if run.returncode not in (0, 1, 4):  # 4: some file skipped (reported), not a failure
            sys.stderr.write(run.stderr.decode(errors="replace"))
            print(f"rewrite --{mode} failed with exit code {run.returncode}")
            return 1
        results[mode] = run
    summary = results["diff"].stderr.decode(errors="replace").strip().splitlines()[-1]

    ref_run = measure([sys.executable, "-c", REFERENCE, str(WORK / "sample.txt"),
                       json.dumps(installed)], cwd=REPO)
    if ref_run.returncode != 0:
        sys.stderr.write(ref_run.stderr.decode(errors="replace"))
        print("the baseline run failed")
        return 1
    ref = json.loads(ref_run.stdout)
    scale = tree_bytes / sample_bytes  # the sample's seconds, scaled to the tree by bytes
    base_s, base_cpu = (seconds * scale for seconds in ref["baseline"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    print(f"rewrite --diff: {summary}")
    print()
    print(f"{'':40}{'wall s':>8}{'files/s':>9}{'cpu s':>8}{'cpu/cores':>10}{'RSS MB':>8}"
          f"{'all procs':>10}")
    for mode, run in results.items():
        print(f"{'rewrite --' + mode + ' (all cores)':40}{run.wall_s:8.1f}"
              f"{len(tree_files) / run.wall_s:9.1f}{run.cpu_s:8.1f}{run.cpu_s / cores:10.1f}"
              f"{run.max_rss_mb:8.0f}{run.tree_rss_mb:10.0f}")
    rows = (("baseline: libcst parse+positions+scopes", ref["baseline"]),
            ("  rewrite, no pre-filter, 1 process", ref["full"]),
            ("  rewrite, pre-filter, 1 process", ref["fast"]))
    for index, (label, (seconds, cpu)) in enumerate(rows):
        rss = f"{ref_run.max_rss_mb:8.0f}" if index == 0 else ""
        print(f"{label:40}{seconds * scale:8.1f}{len(tree_files) / (seconds * scale):9.1f}"
              f"{cpu * scale:8.1f}{cpu * scale:10.1f}{rss}")
    print(f"  (one process each, measured on every {args.baseline_stride}th file: {len(sample)} "
          f"files, {sample_bytes / 2**20:.2f} MB, and scaled x {scale:.1f} by bytes; "
          f"RSS: the largest of the three)")
    print(f"  pre-filtered results identical to the unfiltered ones on those files: "
          f"{'yes' if ref['identical'] else 'NO'} ({ref['changed']} changed, "
          f"{ref['findings']} findings)")
    print()
    for mode, run in results.items():
        verdict = "PASS" if run.wall_s < TARGET_S else "MISS"
        print(f"rewrite --{mode}: {run.wall_s:.1f} s wall [target < {TARGET_S:.0f} s: {verdict}]; "
              f"ratio to the baseline {run.wall_s / base_s:.3f} ({base_s / run.wall_s:.1f}x "
              f"faster); CPU ratio {run.cpu_s / base_cpu:.3f} ({base_cpu / run.cpu_s:.1f}x less)")
    big_file(home)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after; on a busy machine "
          f"compare the CPU columns (cpu/cores is the wall time an idle machine would need)")
    return 0 if ref["identical"] else 1


DIFF_REFERENCE = r"""
import difflib, json, sys, time
from pathlib import Path
from bundler.rewrite import FileRewrite, RewriteResult, unified_diff
lines = [f"x{i} = [{i}, 'generated', {i * 7}]\n" for i in range(int(sys.argv[1]))]
old = "".join(lines)
new = "".join(l.replace("'generated'", "'/models/generated'") if i % 100 == 0 else l
              for i, l in enumerate(lines))
plan = FileRewrite(Path("gen.py"), old, new, RewriteResult(new))
t = time.perf_counter()
ours = unified_diff(plan)
ours_s = time.perf_counter() - t
ref_s, same = None, None
if sys.argv[2] == "difflib":  # minutes on a few MB (issue 13: 730 s), so only on smaller files
    t = time.perf_counter()
    ref = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/gen.py",
                                       "b/gen.py", lineterm="\n"))
    ref_s = time.perf_counter() - t
    same = ours.decode().splitlines()[2:] == ref.splitlines()[2:]
print(json.dumps({"bytes": len(old), "ours": ours_s, "difflib": ref_s, "same": same}))
"""


def big_file(home: Path) -> None:
    """Issue 13: a 5 MB generated module used to take 1.8 GB and 88 s to --check (libcst),
    and difflib 730 s to --diff.  Now it is one warning (over --max-size), and the diff of a
    file that size is linear: both measured here."""
    folder = WORK / "big"
    folder.mkdir(parents=True, exist_ok=True)
    gen = folder / "generated.py"
    row = b"x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
    gen.write_bytes(b"# generated\n" + row * 140_000
                    + f'm = A.from_pretrained("{MODEL_IDS[1]}")\n'.encode())
    run = measure([sys.executable, "-m", "bundler", "rewrite", str(folder), "--home", str(home),
                   "--check"], cwd=REPO)
    print()
    print(f"5 MB generated module ({gen.stat().st_size / 1e6:.1f} MB), rewrite --check: "
          f"{run.wall_s:.2f} s wall, {run.max_rss_mb:.0f} MB RSS, exit {run.returncode} "
          "(one warning: over --max-size; was 88 s and 1.8 GB)")
    for lines, against in (("20000", "difflib"), ("150000", "-")):
        diff_run = measure([sys.executable, "-c", DIFF_REFERENCE, lines, against], cwd=REPO)
        if diff_run.returncode != 0:
            sys.stderr.write(diff_run.stderr.decode(errors="replace"))
            continue
        res = json.loads(diff_run.stdout)
        line = (f"diff of a {res['bytes'] / 1e6:.1f} MB file, {int(lines) // 100} changed lines: "
                f"unified_diff {res['ours']:.3f} s")
        if res["difflib"] is not None:
            line += (f", difflib {res['difflib']:.2f} s (ratio {res['ours'] / res['difflib']:.4f});"
                     f" same hunks: {'yes' if res['same'] else 'NO'}")
        print(line)


if __name__ == "__main__":
    sys.exit(main())
