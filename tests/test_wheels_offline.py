"""The whole promise of issue 12, for real: ``fetch --python`` of a tiny CodeGen through a
local mirror writes the bundle and ``OUT.python/`` (every wheel the [paddle] set needs for
this machine's Python, from PyPI); then, inside ``unshare -n``, a fresh venv gets the set with
the one documented pip command (``--no-index``), the freshly installed ``paddle-bundle``
installs the bundle, and the model loads by name in offline mode. A tampered wheel fails
pip's hash check and our ``verify``.

Slow (one download of the set, ~300 MB, once per session; and a venv install of Paddle).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import wheels
from tests.conftest import ROOT, have_unshare
from tools import mirror

pytestmark = [pytest.mark.slow, pytest.mark.paddle,
              pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here")]

CODEGEN = "Salesforce/codegen-350M-mono"
#: A bare machine: no pip configuration (indexes, find-links, constraints) of this one.
BARE = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PADDLE_BUNDLE_", "PPNLP_", "VIRTUAL_ENV"))}
    return {**env, **BARE, **extra}


@pytest.fixture(scope="session")
def stick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``fetch CODEGEN --python -o stick/codegen.tar.zst`` through a local mirror."""
    root = tmp_path_factory.mktemp("mirror")
    proc = subprocess.run([sys.executable, "tools/tiny_models.py", "mirror-tree", str(root)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path_factory.mktemp("online")
    out = work / "stick" / "codegen.tar.zst"
    out.parent.mkdir()
    with mirror.start(root) as server:
        env = {**os.environ, **mirror.paddlenlp_env(server.endpoint)}
        env.pop("PPNLP_HOME", None)
        proc = subprocess.run([sys.executable, "-m", "bundler", "fetch", CODEGEN, "--python",
                               "-o", str(out), "--home", str(work / "home")],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "wheel folder" in proc.stdout and wheels.install_command("codegen.tar.zst.python") \
        in proc.stdout
    yield out.parent


def _venv(path: Path) -> Path:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True, capture_output=True)
    return path / "bin" / "python"


def test_fetch_python_writes_a_folder_the_sidecar_covers(stick: Path) -> None:
    bundle = stick / "codegen.tar.zst"
    folder = wheels.folder_for(bundle)
    names = {p.name for p in folder.iterdir()}
    assert "requirements.txt" in names
    prefixes = {n.split("-")[0].lower() for n in names}
    assert {"paddle_bundle", "paddlepaddle", "paddlenlp", "numpy", "click", "zstandard",
            "jieba"} <= prefixes
    assert all(n.endswith(".whl") for n in names - {"requirements.txt"})
    reqs = (folder / "requirements.txt").read_text()
    assert reqs.count("--hash=sha256:") == len(names) - 1
    sidecar = (stick / "codegen.tar.zst.sha256").read_text()
    assert all(f"  codegen.tar.zst.python/{n}\n" in sidecar for n in names)
    proc = subprocess.run(["sha256sum", "-c", "--strict", "codegen.tar.zst.sha256"],
                          cwd=stick, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    proc = subprocess.run([sys.executable, "-m", "bundler", "verify", str(bundle)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bare_python_to_loading_by_name_with_no_network(stick: Path, tmp_path: Path) -> None:
    """Everything after the copy runs in ``unshare -n``: no network interface at all."""
    bundle = stick / "codegen.tar.zst"
    folder = wheels.folder_for(bundle)
    home = tmp_path / "home"
    base = getattr(sys, "_base_executable", sys.executable)
    script = textwrap.dedent(f"""\
        set -eu
        cd {tmp_path}
        {base} -m venv venv
        . venv/bin/activate
        {wheels.install_command(folder)}
        paddle-bundle verify {bundle} -q
        paddle-bundle install {bundle} --home {home}
        paddle-bundle doctor --home {home}
        PADDLE_BUNDLE_OFFLINE=1 PPNLP_HOME={home} python -c '
        import json, bundler, paddlenlp
        from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained("{CODEGEN}")
        model = AutoModelForCausalLM.from_pretrained("{CODEGEN}")
        ids = tok("def hello():")["input_ids"]
        print("RESULT", json.dumps({{"bundler": bundler.__file__, "tokens": len(ids),
                                    "paddlenlp": paddlenlp.__version__}}))
        '
        """)
    proc = subprocess.run(["unshare", "-n", "--", "bash", "-c", script], capture_output=True,
                          text=True, env=_env(), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert "Successfully installed" in proc.stdout and "paddlepaddle-3.3.1" in proc.stdout
    assert f"{CODEGEN}: installed at {home / 'models' / CODEGEN}" in proc.stdout
    # same PaddleNLP as the bundle was proven with: no pip command printed after install
    assert "install the set that came with the bundle" not in proc.stdout
    assert "[fail]" not in proc.stdout and "[ok] offline hook" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    assert str(tmp_path / "venv") in line and '"paddlenlp": "3.0.0b4"' in line


def test_a_tampered_wheel_fails_pip_and_verify(stick: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stick"
    shutil.copytree(stick, copy, copy_function=os.link)  # hard links: the original stays
    folder = wheels.folder_for(copy / "codegen.tar.zst")
    victim = next(folder.glob("click-*.whl"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.unlink()  # a new file, not a write through the shared link
    victim.write_bytes(bytes(data))

    proc = subprocess.run([sys.executable, "-m", "bundler", "verify",
                           str(copy / "codegen.tar.zst")], capture_output=True, text=True)
    assert proc.returncode == 3 and f"{victim}: sha256 differs" in proc.stderr, proc.stderr

    python = _venv(tmp_path / "venv")
    proc = subprocess.run(["unshare", "-n", "--", str(python), "-m", "pip", "install",
                           "--no-index", "--find-links", str(folder), "-r",
                           str(folder / "requirements.txt")],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stderr and victim.name.split("-")[0] in proc.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, env=_env()).stdout
    assert "paddlepaddle" not in listed and "click" not in listed  # nothing installed
