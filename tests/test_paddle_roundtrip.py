"""Genuine PaddleNLP files across the air gap: tiny real models packed, installed with no
network, then loaded by full path and run.

Paddle is imported only in subprocesses (it takes seconds and reads PPNLP_HOME at import),
once to build the models and once to load them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, have_unshare

pytestmark = pytest.mark.paddle

CODEGEN = "Salesforce/codegen-350M-mono"
ERNIE = "paddle-bundle-test/tiny-ernie-sharded"


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=600)


@pytest.fixture(scope="module")
def online_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("online")
    code = (
        "import sys; sys.path.insert(0, 'tools')\n"
        "from pathlib import Path\n"
        "import tiny_models as t\n"
        f"t.build_codegen(Path({str(home)!r}) / 'models' / {CODEGEN!r})\n"
        f"t.build_ernie_sharded(Path({str(home)!r}) / 'models' / {ERNIE!r})\n"
    )
    proc = _python(code, {"PPNLP_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


@pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here, so the "
                    "no-network claim cannot be proven")
def test_real_models_round_trip_with_no_network(online_home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "stick" / "models.tar.zst"
    bundle.parent.mkdir()
    pack = subprocess.run([sys.executable, "-m", "bundler", "pack", CODEGEN, ERNIE, "-o",
                           str(bundle), "--home", str(online_home)],
                          capture_output=True, text=True)
    assert pack.returncode == 0, pack.stderr
    manifest = json.loads(subprocess.run(
        [sys.executable, "-m", "bundler", "inspect", str(bundle), "--json"],
        capture_output=True, text=True, check=True).stdout)
    names = {f["path"].rsplit("/", 1)[1] for f in manifest["files"]}
    assert {"model.safetensors.index.json", "model_state.pdparams", "vocab.json",
            "merges.txt", "vocab.txt"} <= names
    assert sum(n.endswith(".safetensors") for n in names) >= 2  # really sharded

    offline_home = tmp_path / "offline-home"
    install = subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "bundler",
                              "install", str(bundle), "--home", str(offline_home)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    codegen_dir = offline_home / "models" / CODEGEN
    ernie_dir = offline_home / "models" / ERNIE
    assert f"installed at {codegen_dir}" in install.stdout

    # the user's script loads by name; rewrite turns the names into the installed folders,
    # after which it runs with no network and no offline mode at all
    app = tmp_path / "app.py"
    app.write_text(
        "import json\n"
        "from paddlenlp.transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer\n"
        f"CODEGEN = {CODEGEN!r}  # our code model\n"
        "tok = AutoTokenizer.from_pretrained(CODEGEN)\n"
        "lm = AutoModelForCausalLM.from_pretrained(CODEGEN); lm.eval()\n"
        "ids = tok('def f():', return_tensors='pd')\n"
        "out, _ = lm.generate(**ids, max_new_tokens=5, decode_strategy='greedy_search')\n"
        f"etok = AutoTokenizer.from_pretrained({ERNIE!r})\n"
        f"em = AutoModel.from_pretrained(pretrained_model_name_or_path={ERNIE!r}); em.eval()\n"
        "enc = etok('hello world', return_tensors='pd')\n"
        "seq, pooled = em(**enc)\n"
        "print(json.dumps({'generated': out.shape[-1], 'hidden': seq.shape[-1]}))\n")
    rewrite = subprocess.run([sys.executable, "-m", "bundler", "rewrite", str(app), "--home",
                              str(offline_home), "--in-place"], capture_output=True, text=True)
    assert rewrite.returncode == 0, rewrite.stderr
    assert f"CODEGEN = {CODEGEN!r}  # our code model" in app.read_text()  # never changed
    assert f"AutoTokenizer.from_pretrained('{codegen_dir}')" in app.read_text()  # the call is
    assert f"pretrained_model_name_or_path='{ernie_dir}'" in app.read_text()
    env = {k: v for k, v in os.environ.items() if k != "PADDLE_BUNDLE_OFFLINE"}
    run = subprocess.run(["unshare", "-n", "--", sys.executable, str(app)], capture_output=True,
                         text=True, cwd=tmp_path, env={**env, "PPNLP_HOME": str(offline_home)},
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"generated": 5, "hidden": 32}
