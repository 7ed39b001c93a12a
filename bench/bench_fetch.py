"""Benchmark the memory of ``paddle-bundle fetch`` on a model with over 1 GB of weights.

Run with ``.venv/bin/python bench/bench_fetch.py`` (never touches the internet). It is a
report, not a test: it exits 0 whatever the figures are (a missed target is printed as MISS)
and non-zero only when the fetch itself fails.

The claim under test: fetch needs no RAM in proportion to the weights (a 20 GB model must
fetch on a 24 GB machine). The model is a real PaddleNLP architecture (CodeGen) with a
``config.json`` that describes about 555 M parameters and one ``model.safetensors`` of float16
weights (~1.1 GB) with exactly the tensor names and shapes PaddleNLP expects, served by
``tools/mirror.py``. ``AutoModel`` therefore resolves (downloads) the real file and would
build a ~1.1 GB model if fetch let it; fetch must only resolve.

What is measured, in a driver process that runs the CLI in-process (``bundler.cli._main``):

* parent: ``ru_maxrss`` of the driver itself (download orchestration + packing);
* child:  ``ru_maxrss`` of its children, i.e. the PaddleNLP process (``RUSAGE_CHILDREN``);
  importing Paddle and PaddleNLP alone costs about 0.5 GB of that, shown as ``floor``.

``--control`` also loads the model the normal way (``AutoModel.from_pretrained`` of the
fetched folder) to show what the measurement would catch. MB = 2^20 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench-work" / "fetch"
MODEL_ID = "paddle-bundle-bench/codegen-1g"
DATA_VERSION = 1  # bump when the generated model changes
TARGET_MB = 1024.0
CHUNK = 16 << 20

#: A CodeGen that PaddleNLP can build: 11 layers of width 2048 ~ 555 M parameters.
CONFIG = {"vocab_size": 264, "n_layer": 11, "n_embd": 2048, "n_head": 16, "n_inner": 8192,
          "rotary_dim": 64, "n_ctx": 256, "n_positions": 256, "bos_token_id": 263,
          "eos_token_id": 263, "pad_token_id": 263, "dtype": "float16"}

sys.path.insert(0, str(REPO / "tools"))


def mb(n_bytes: float) -> float:
    return n_bytes / (1 << 20)


# -- the model -------------------------------------------------------------------------------
def _shapes(folder: Path) -> None:
    """(In a Paddle subprocess.) Write config.json with PaddleNLP's own ``save_pretrained`` and
    print the parameter names and shapes of the model it describes, built lazily."""
    import paddle
    from paddlenlp.transformers import CodeGenConfig, CodeGenForCausalLM
    from paddlenlp.transformers.model_utils import no_init_weights

    config = CodeGenConfig(**CONFIG)
    config.architectures = ["CodeGenForCausalLM"]
    config.save_pretrained(str(folder))
    with no_init_weights(_enable=True), paddle.LazyGuard():
        model = CodeGenForCausalLM(config)
    shapes = {k: [int(d) for d in v.shape] for k, v in model.state_dict().items()}
    print(json.dumps(shapes))


def generate(folder: Path) -> int:
    """config.json + model.safetensors (float16, random) in ``folder``; returns weight bytes.

    The safetensors file is written tensor by tensor in 16 MiB pieces, so generating a big
    model needs no big memory either.
    """
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--shapes-into", str(folder)],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"bench: could not build the config: {proc.stderr[-2000:]}")
    shapes: dict[str, list[int]] = json.loads(proc.stdout.strip().splitlines()[-1])
    header: dict[str, Any] = {"__metadata__": {"format": "np"}}
    offset = 0
    for name in sorted(shapes):
        n = 2
        for d in shapes[name]:
            n *= d
        header[name] = {"dtype": "F16", "shape": shapes[name], "data_offsets": [offset,
                                                                                offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = folder / "model.safetensors.part"
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        left = offset
        while left:
            n = min(left, CHUNK)
            fh.write(os.urandom(n))  # incompressible, like real weights
            left -= n
    tmp.rename(folder / "model.safetensors")
    (folder / "paddle-bundle-bench.json").write_text(json.dumps({"version": DATA_VERSION}))
    return offset


def ensure_model(mirror_root: Path) -> Path:
    from tiny_models import community_dir

    folder = community_dir(mirror_root, MODEL_ID)
    marker = folder / "paddle-bundle-bench.json"
    try:
        if json.loads(marker.read_text())["version"] == DATA_VERSION:
            return folder
    except (OSError, ValueError, KeyError):
        pass
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {MODEL_ID} in {folder} ...", file=sys.stderr, flush=True)
    generate(folder)  # the marker file is served too, but PaddleNLP never asks for it
    return folder


# -- measuring -------------------------------------------------------------------------------
DRIVER = r"""
import json, resource, sys, time
from bundler.cli import _main
t = time.monotonic()
rc = _main(sys.argv[2:])
wall = time.monotonic() - t
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": rc, "wall": wall, "parent_kb": self_kb, "child_kb": child_kb}, fh)
"""

FLOOR = r"""
import resource
import paddle, paddlenlp.transformers  # noqa: F401
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CONTROL = r"""
import resource, sys
from paddlenlp.transformers import AutoModel
AutoModel.from_pretrained(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure_fetch(endpoint: str, home: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    result = out.with_suffix(".rusage.json")
    argv = ["fetch", MODEL_ID, "-o", str(out), "--home", str(home), "-q"]
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(result), *argv],
                          env={**env, "PPNLP_ENDPOINT": endpoint}, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0 or not result.is_file():
        raise SystemExit(f"bench: fetch driver failed: {proc.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(result.read_text())
    if data["rc"] != 0:
        raise SystemExit(f"bench: paddle-bundle fetch failed (rc {data['rc']}): "
                         f"{proc.stderr[-2000:]}")
    return data


def rss_of(code: str, *args: str, env: dict[str, str]) -> float:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"bench: helper failed: {proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=WORK, help=f"scratch folder (default {WORK})")
    ap.add_argument("--control", action="store_true",
                    help="also load the model normally, to show the RSS a real load needs")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--shapes-into", type=Path, help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.shapes_into:
        _shapes(args.shapes_into)
        return 0

    import mirror

    work: Path = args.work.resolve()
    mirror_root = work / "mirror"
    folder = ensure_model(mirror_root)
    weights = (folder / "model.safetensors").stat().st_size
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    out = work / "fetched.tar.zst"
    env = dict(os.environ)
    env.pop("PPNLP_HOME", None)
    with mirror.start(mirror_root) as server:
        print(f"fetching {MODEL_ID} ({mb(weights):.0f} MB of weights) through "
              f"{server.endpoint} ...", file=sys.stderr, flush=True)
        data = measure_fetch(server.endpoint, home, out, env)
    floor = rss_of(FLOOR, env=env)
    res: dict[str, Any] = {
        "model": MODEL_ID, "weights_mb": round(mb(weights), 1),
        "bundle_mb": round(mb(out.stat().st_size), 1), "wall_s": round(data["wall"], 1),
        "child_peak_rss_mb": round(data["child_kb"] / 1024, 1),
        "parent_peak_rss_mb": round(data["parent_kb"] / 1024, 1),
        "import_floor_rss_mb": round(floor, 1), "target_mb": TARGET_MB,
    }
    if args.control:
        print("control: loading it the normal way ...", file=sys.stderr, flush=True)
        res["control_load_rss_mb"] = round(rss_of(
            CONTROL, str(home / "models" / MODEL_ID), env={**env, "PPNLP_HOME": str(home)}), 1)
    shutil.rmtree(home, ignore_errors=True)  # 2 x the weights; the mirror copy is reused
    for leftover in (out, out.with_name(out.name + ".sha256"), out.with_suffix(".rusage.json")):
        leftover.unlink(missing_ok=True)
    ok = max(res["child_peak_rss_mb"], res["parent_peak_rss_mb"]) < TARGET_MB
    print(f"fetch of {res['weights_mb']:.0f} MB of weights in {res['wall_s']} s -> bundle "
          f"{res['bundle_mb']:.0f} MB")
    print(f"  peak RSS, PaddleNLP child: {res['child_peak_rss_mb']:7.1f} MB   (import floor "
          f"{res['import_floor_rss_mb']:.1f} MB)")
    print(f"  peak RSS, parent:          {res['parent_peak_rss_mb']:7.1f} MB")
    if "control_load_rss_mb" in res:
        print(f"  control, AutoModel load:   {res['control_load_rss_mb']:7.1f} MB")
    print(f"  target < {TARGET_MB:.0f} MB for both: {'OK' if ok else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
