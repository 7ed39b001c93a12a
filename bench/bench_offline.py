"""Benchmark offline mode: what switching it on costs, and whether loading gets slower.

Run with ``.venv/bin/python bench/bench_offline.py`` (``--help`` for options). It is a report,
not a test: it exits 0 whatever the figures are (a missed target is printed as MISS) and
non-zero only when a measured command itself fails.

Two measurements, each in fresh interpreters:

* ``import bundler.offline``: wall time of the import statement alone, median of ``--imports``
  runs, once with no bytecode cache (sources compiled every time: what a checkout with
  ``PYTHONDONTWRITEBYTECODE=1`` sees) and once with it (what a pip-installed package sees).
  Target: < 50 ms.
* loading by name: ``AutoTokenizer`` + ``AutoModelForCausalLM`` of the tiny CodeGen,
  ``AutoTokenizer`` + ``AutoModel`` of the tiny sharded ERNIE, ``AutoConfig`` and
  ``GenerationConfig``, timed inside the process after ``import paddlenlp``, ``--loops``
  times per process (the first load also pays PaddleNLP's lazy imports; the ratio is taken
  on the later, steady-state ones), median over ``--repeat`` processes of each side:

  - online: PaddleNLP as it is, every file in its cache, and a local mirror of the model
    server (tools/mirror.py) answering the probes it sends for files the cache lacks
    (``added_tokens.json``, ``chat_template.json``...), as on a machine with internet;
  - offline: the same cache installed by paddle-bundle, ``import bundler.offline`` first,
    no server at all (its guard would refuse any lookup, and the run reports none).

  Printed as the ratio offline / online. Target: <= 1.0 (offline no slower).

The tiny models are built once with tools/tiny_models.py and kept in bench-work/offline/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work" / "offline"
CODEGEN = "Salesforce/codegen-350M-mono"
ERNIE = "paddle-bundle-test/tiny-ernie-sharded"
IMPORT_TARGET_MS = 50.0
RATIO_TARGET = 1.0

IMPORT_PROBE = ("import time; t = time.perf_counter(); import bundler.offline; "
                "print((time.perf_counter() - t) * 1000)")

LOAD_PROBE = """
import json, sys, time
NET = []
def _record(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        NET.append(event)
sys.addaudithook(_record)
if sys.argv[1] == "offline":
    import bundler.offline
import paddlenlp
from paddlenlp.generation import GenerationConfig
from paddlenlp.transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
loads = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    AutoTokenizer.from_pretrained(CODEGEN)
    AutoModelForCausalLM.from_pretrained(CODEGEN)
    AutoTokenizer.from_pretrained(ERNIE)
    AutoModel.from_pretrained(ERNIE)
    AutoConfig.from_pretrained(CODEGEN)
    GenerationConfig.from_pretrained(CODEGEN)
    loads.append((time.perf_counter() - t) * 1000)
tokenizers = []
for _ in range(10):
    t = time.perf_counter()
    AutoTokenizer.from_pretrained(CODEGEN)
    AutoTokenizer.from_pretrained(ERNIE)
    tokenizers.append((time.perf_counter() - t) * 1000)
print("RESULT " + json.dumps({"loads_ms": loads, "tokenizers_ms": tokenizers, "net": len(NET)}))
"""


class BenchError(Exception):
    """A measured command failed: the benchmark cannot report on it."""


def _run(cmd: list[str], env: dict[str, str], cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:4])}... failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PPNLP_HOME", "PPNLP_ENDPOINT", "COMMUNITY_MODEL_PREFIX",
                        "PADDLE_BUNDLE_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# -- import cost -----------------------------------------------------------------------------
def bench_import(runs: int) -> dict[str, float]:
    """Median import time with and without a bytecode cache (kept out of the repo)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pycache-") as cache:
        for label, extra in (("no_pyc", {"PYTHONDONTWRITEBYTECODE": "1"}),
                             ("pyc", {"PYTHONDONTWRITEBYTECODE": ""})):
            env = {**_base_env(), "PYTHONPYCACHEPREFIX": cache, **extra}
            if label == "pyc":
                _run([sys.executable, "-c", "import bundler.offline"], env)  # warm the cache
            times = [float(_run([sys.executable, "-c", IMPORT_PROBE], env))
                     for _ in range(runs)]
            out[label] = statistics.median(times)
    return out


# -- load time -------------------------------------------------------------------------------
def prepare(work: Path) -> tuple[Path, Path]:
    """The mirror tree and an offline home installed from it; built once."""
    mirror, home = work / "mirror", work / "home"
    stamp = work / "ready"
    if stamp.is_file():
        return mirror, home
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _run([sys.executable, "tools/tiny_models.py", "mirror-tree", str(mirror)],
         {**_base_env(), "PPNLP_HOME": str(work / "build-home")})
    online = work / "online"
    sys.path.insert(0, str(REPO / "tools"))
    import tiny_models

    from bundler.install import install
    from bundler.pack import PackOptions, pack

    for model_id in (CODEGEN, ERNIE):
        shutil.copytree(tiny_models.community_dir(mirror, model_id), online / "models" / model_id)
    bundle = work / "models.tar.zst"
    pack([CODEGEN, ERNIE], bundle, home=online,
         options=PackOptions(absent_upstream={CODEGEN: ("added_tokens.json",
                                                        "chat_template.json")}))
    install(bundle, home=home)
    stamp.write_text("ok\n")
    return mirror, home


def _load_once(side: str, env: dict[str, str], script: Path, loops: int) -> dict[str, Any]:
    stdout = _run([sys.executable, str(script), side, str(loops)], env)
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    return result


def bench_load(repeat: int, loops: int, work: Path) -> dict[str, Any]:
    """Per side: one discarded warm-up process (page cache), then ``repeat`` processes,
    interleaved with the other side's so drift hits both alike. Each process loads
    ``loops`` times: the first load also pays PaddleNLP's lazy imports, the later ones are
    the steady state, where the difference between the sides shows."""
    mirror, home = prepare(work)
    sys.path.insert(0, str(REPO / "tools"))
    import mirror as mirror_tool

    script = work / "load_probe.py"
    script.write_text(f"CODEGEN = {CODEGEN!r}\nERNIE = {ERNIE!r}\n"
                      + textwrap.dedent(LOAD_PROBE), encoding="utf-8")
    env = {**_base_env(), "PPNLP_HOME": str(home)}
    runs: dict[str, list[list[float]]] = {"online": [], "offline": []}
    tokenizers: dict[str, list[float]] = {"online": [], "offline": []}
    offline_net = 0
    with mirror_tool.start(mirror) as server:
        envs = {"online": {**env, **server.env()}, "offline": env}
        for side in runs:
            _load_once(side, envs[side], script, 1)
        before = len(server.requests())
        for _ in range(repeat):
            for side in runs:
                result = _load_once(side, envs[side], script, loops)
                runs[side].append([float(t) for t in result["loads_ms"]])
                tokenizers[side].append(statistics.median(result["tokenizers_ms"]))
                if side == "offline":
                    offline_net += int(result["net"])
        requests = len(server.requests()) - before
    out: dict[str, Any] = {"offline_net": offline_net,
                           "mirror_requests_per_process": requests / repeat}
    for side, loads in runs.items():
        out[f"{side}_first_ms"] = statistics.median(run[0] for run in loads)
        out[f"{side}_warm_ms"] = statistics.median(
            statistics.median(run[1:]) if len(run) > 1 else run[0] for run in loads)
        out[f"{side}_all"] = loads
        out[f"{side}_tokenizers_ms"] = statistics.median(tokenizers[side])
    return out


def _verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imports", type=int, default=15, help="import runs per variant")
    parser.add_argument("--repeat", type=int, default=3, help="processes per side")
    parser.add_argument("--loops", type=int, default=4, help="loads per process")
    parser.add_argument("--work", type=Path, default=WORK, help="where the models are kept")
    args = parser.parse_args(argv)
    try:
        from importlib import metadata

        nlp = metadata.version("paddlenlp")
    except Exception:  # noqa: BLE001 - only for the header
        nlp = "?"
    print(f"paddle-bundle offline mode: paddlenlp {nlp}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores")
    try:
        imp = bench_import(args.imports)
        load = bench_load(args.repeat, max(1, args.loops), args.work)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    worst = max(imp.values())
    print(f"import bundler.offline, fresh interpreter, median of {args.imports}: "
          f"{imp['no_pyc']:.1f} ms without bytecode cache, {imp['pyc']:.1f} ms with it "
          f"[target < {IMPORT_TARGET_MS:.0f} ms: {_verdict(worst < IMPORT_TARGET_MS)}]")
    ratio = load["offline_warm_ms"] / load["online_warm_ms"]
    first = load["offline_first_ms"] / load["online_first_ms"]
    print(f"load by name (2 tokenizers, 2 models, 2 configs), median of {args.repeat} "
          f"processes x {args.loops} loads:")
    print(f"  online, PaddleNLP from its cache + local mirror: "
          f"{load['online_warm_ms']:8.1f} ms  (first load {load['online_first_ms']:.0f} ms; "
          f"{load['mirror_requests_per_process']:.0f} probes to the mirror per process)")
    print(f"  offline, paddle-bundle offline mode:             "
          f"{load['offline_warm_ms']:8.1f} ms  (first load {load['offline_first_ms']:.0f} ms; "
          f"{load['offline_net']} lookups/connects in all runs)")
    print(f"  ratio offline/online: {ratio:.2f} (first load: {first:.2f}) "
          f"[target <= {RATIO_TARGET:.1f}: {_verdict(ratio <= RATIO_TARGET)}]")
    tok = load["offline_tokenizers_ms"] / load["online_tokenizers_ms"]
    print(f"  the two AutoTokenizer loads alone (where the probes are): online "
          f"{load['online_tokenizers_ms']:.1f} ms, offline {load['offline_tokenizers_ms']:.1f} ms,"
          f" ratio {tok:.2f}")
    for side in ("online", "offline"):
        print(f"  {side} runs (ms): " + " | ".join(
            ", ".join(f"{t:.0f}" for t in run) for run in load[f"{side}_all"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
