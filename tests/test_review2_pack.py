"""Regression tests for what a second adversarial review of the issue 9 fixes found: each
fails on the code before its fix.

Like ``test_pack_hardening.py`` they use real archives, the real command line and, where the
claim is "standard tools agree", real GNU tar.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.conftest import ROOT, make_model, manifest_for, run_cli, tarinfo, tree


def _with_checksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _bundle_of_blocks(path: Path, manifest: dict[str, object], blocks: bytes) -> Path:
    """``manifest.json`` then raw tar ``blocks`` (headers and data as given), zstd'ed."""
    data = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarinfo("manifest.json", size=len(data)), io.BytesIO(data))
    head = buf.getvalue()[:512 + len(data) + (-len(data)) % 512]
    body = head + blocks + b"\0" * 1024
    body += b"\0" * (-len(body) % tarfile.RECORDSIZE)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(body))
    return path


# -- a ustar name prefix in a header that is not ustar ------------------------------------
@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", [pytest.param(tarfile.GNU_FORMAT, id="old-gnu-magic"),
                                 pytest.param("v7", id="v7-no-magic")])
def test_a_name_prefix_standard_tar_ignores_is_refused(tmp_path: Path,
                                                       fmt: int | str) -> None:
    """Python's tarfile joins the 155-byte prefix field to the name whatever the header's
    magic; GNU tar only for POSIX ustar magic. A GNU (or v7) header with a prefix
    ``models/Org/evil`` and the name ``.bashrc`` was verified and installed as
    ``models/Org/evil/.bashrc``, while ``zstd -dc | tar -x`` writes ``.bashrc`` in the
    current folder: the bundle is not what was checked."""
    content = b"echo pwned\n"
    info = tarinfo(".bashrc", size=len(content))
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT if fmt != "v7" else
                                  tarfile.USTAR_FORMAT))
    if fmt == "v7":
        header[257:265] = b"\0" * 8  # no magic, no version: a V7 header
    header[345:345 + len("models/Org/evil")] = b"models/Org/evil"
    blocks = _with_checksum(header) + content + b"\0" * (-len(content) % 512)
    bundle = _bundle_of_blocks(tmp_path / "evil.tar.zst", manifest_for({".bashrc": content}),
                               blocks)

    (tmp_path / "x").mkdir()  # what standard tools make of it
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(bundle.read_bytes())
    subprocess.run(["tar", "-xf", "-"], input=plain, cwd=tmp_path / "x", check=True)
    assert (tmp_path / "x/.bashrc").read_bytes() == content
    assert not (tmp_path / "x/models").exists()

    for args in (["verify", bundle], ["install", bundle, "--home", tmp_path / "off"]):
        rc, _, err = run_cli(*args)
        assert rc == 3 and "prefix" in err, (args, err)
        assert len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "off/models").exists()


# -- pack -o through a bind mount of a model folder ----------------------------------------
def _can_bind_mount() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "mount", "--bind", "/", "/mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_bind_mount(), reason="needs unshare -m and mount --bind (root)")
@pytest.mark.parametrize("mounted", [pytest.param("models/Org/small", id="the-model-folder"),
                                     pytest.param("models/Org/small/sub", id="a-folder-in-it"),
                                     pytest.param("models", id="the-home-models-folder")])
def test_output_through_a_bind_mount_of_a_model_folder_is_refused(
        online_home: Path, tmp_path: Path, mounted: str) -> None:
    """The protected folders were compared by resolved path only: ``-o`` through a bind
    mount of the model being packed wrote the bundle and its sidecar into the model's
    folder with exit 0 (and the next pack shipped them as part of the model)."""
    (online_home / "models/Org/small/sub").mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = tree(online_home)
    script = ('mount --bind "$1" "$2" && exec "$3" -m bundler pack Org/small -o "$2/b.tar.zst" '
              '--home "$4" -q')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", online_home / mounted,
                           mnt, sys.executable, online_home], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to write a bundle there" in proc.stderr
    assert tree(online_home) == before


# -- rewrite: sources nested deeper than Python's parser allows ----------------------------
@pytest.mark.parametrize("deep", [
    pytest.param("x = " + "-" * 20000 + "1\n", id="unary-minus"),
    pytest.param("x = " + "[" * 5000 + "]" * 5000 + "\n", id="brackets"),
    pytest.param("x = 1" + " + 1" * 20000 + "\n", id="long-sum"),
    pytest.param("x = a" + ".b" * 20000 + "\n", id="attribute-chain"),
])
def test_rewrite_reports_a_source_nested_too_deeply(tmp_path: Path, deep: str) -> None:
    """CPython's parser refuses these (the pre-filter's ``ast.parse`` fails, so the file
    went on to libcst), and libcst's parser then ran for minutes or overflowed the stack:
    one such file (generated data, a minified module) killed ``rewrite`` of a whole tree
    with SIGSEGV and no message, or hung it. Now it is a parse error like any other, and
    the rest of the tree is still rewritten."""
    home = tmp_path / "home"
    make_model(home, "Org/small", {"config.json": "{}"})
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(
        "from paddlenlp.transformers import AutoModel\n"
        "model = AutoModel.from_pretrained('Org/small')  # from_pretrained\n")
    (project / "deep.py").write_text("# from_pretrained\n" + deep)
    proc = subprocess.run([sys.executable, "-m", "bundler", "rewrite", str(project), "--home",
                           str(home), "--check", "-j", "1"], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "deep.py:" in proc.stderr and "nested too deeply" in proc.stderr
    assert "1 of 2 file(s) would change" in proc.stderr


# -- pack -o NAME and a one-file bundle named NAME.000 ------------------------------------
@pytest.mark.parametrize("split", [pytest.param((), id="one-file"),
                                   pytest.param(("--split-size", "64K"), id="split")])
def test_a_one_file_bundle_named_like_a_volume_is_not_replaced(online_home: Path,
                                                               tmp_path: Path,
                                                               split: tuple[str, ...]) -> None:
    """``rel.000`` with its own ``rel.000.sha256`` is a bundle of its own (a name ending in
    digits, which every command accepts), not volume 0 of ``rel``: ``pack -o rel`` deleted
    it (one file) or overwrote it (split), exit 0, leaving its sidecar behind."""
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = run_cli("pack", "Org/small", "-o", out / "rel.000", "--home", online_home,
                         "-q")
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = run_cli("pack", "Org/small", "-o", out / "rel", "--home", online_home, "-q",
                         *split)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {n: after.get(n) for n in before} == before, err  # rel.000 and its sidecar kept
    if split:
        assert rc == 2 and "refusing to overwrite or delete it" in err
    else:
        assert rc == 0, err
        assert run_cli("verify", out / "rel.000")[0] == 0
        assert run_cli("verify", out / "rel")[0] == 0


def test_a_one_file_bundle_named_like_a_volume_is_checked_against_its_own_sidecar(
        online_home: Path, tmp_path: Path) -> None:
    """``rel.000`` was always taken for volume 0 of a split bundle ``rel``: its own
    ``rel.000.sha256`` was ignored ("OK ...; no .sha256 sidecar"), so a copy damaged on the
    stick was not caught by the sidecar, and ``verify --quick`` could not check it at all."""
    bundle = tmp_path / "rel.000"
    rc, _, err = run_cli("pack", "Org/small", "-o", bundle, "--home", online_home, "-q")
    assert rc == 0, err
    rc, out, err = run_cli("verify", bundle)
    assert rc == 0 and "matches rel.000.sha256" in out, out + err
    assert run_cli("verify", bundle, "--quick")[0] == 0
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 0xFF  # damage the last byte, which holds only tar padding
    bundle.write_bytes(bytes(data))
    for args in (["verify", bundle, "--quick"], ["verify", bundle]):
        rc, out, err = run_cli(*args)
        assert rc == 3 and "rel.000.sha256" in err, (args, out, err)


@pytest.mark.parametrize("deep", [
    pytest.param("x = " + "[" * 5000 + "]" * 5000 + "\n", id="brackets"),
    pytest.param("x = " + "-" * 20000 + "1\n%time y = 1\n", id="unary-minus-and-a-magic"),
])
def test_rewrite_reports_a_notebook_cell_nested_too_deeply(tmp_path: Path, deep: str) -> None:
    """Notebook cells are parsed with libcst directly (to decide whether to mask magics),
    past the pre-filter: the same cells killed or hung ``rewrite`` of the notebook."""
    home = tmp_path / "home"
    make_model(home, "Org/small", {"config.json": "{}"})
    cells = ["from paddlenlp.transformers import AutoModel\n"
             "model = AutoModel.from_pretrained('Org/small')\n", deep]
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                           "execution_count": None, "source": text} for text in cells],
                "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "deep.ipynb"
    path.write_text(json.dumps(notebook))
    proc = subprocess.run([sys.executable, "-m", "bundler", "rewrite", str(path), "--home",
                           str(home), "--check", "-j", "1"], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "[cell 2]:1: warning [parse-error]: cannot parse, skipped: " in proc.stderr
    assert "skipped: \n" not in proc.stderr  # says why
    assert "1 of 1 file(s) would change" in proc.stderr


# -- pack -o into paddle-bundle's own records; a damaged record's warning -------------------
def test_output_inside_the_records_folder_is_refused(online_home: Path, tmp_path: Path
                                                     ) -> None:
    """``-o <home>/.paddle-bundle/installed/models/Org/x.json`` was written with exit 0:
    every later ``list`` and ``check`` then warned about a damaged record."""
    bundle = tmp_path / "b.tar.zst"
    assert run_cli("pack", "Org/small", "-o", bundle, "--home", online_home, "-q")[0] == 0
    home = tmp_path / "off"
    assert run_cli("install", bundle, "--home", home, "-q")[0] == 0
    records = home / ".paddle-bundle/installed/models/Org"
    before = tree(home)
    rc, _, err = run_cli("pack", "Org/small", "-o", records / "other.json", "--home", home,
                         "-q")
    assert rc == 2 and "refusing to write a bundle there" in err, err
    assert tree(home) == before
    rc, out, err = run_cli("list", "--home", home)
    assert rc == 0 and not err and "Org/small" in out


def test_a_damaged_record_is_named_in_one_short_line(online_home: Path, tmp_path: Path
                                                      ) -> None:
    """The warning quoted the exception's repr, which for a record that is not UTF-8 holds
    the whole file: a 300 KB line on the terminal for one damaged record."""
    bundle = tmp_path / "b.tar.zst"
    assert run_cli("pack", "Org/small", "-o", bundle, "--home", online_home, "-q")[0] == 0
    home = tmp_path / "off"
    assert run_cli("install", bundle, "--home", home, "-q")[0] == 0
    (home / ".paddle-bundle/installed/models/Org/junk.json").write_bytes(
        b"\xb5" + bytes(range(256)) * 400)
    for command in ("list", "check"):
        rc, out, err = run_cli(command, "--home", home)
        assert "junk.json is damaged" in err, (command, err[:500])
        assert max(len(line) for line in err.splitlines()) < 500, (command, len(err))


# -- rewrite over a folder holding a FIFO or a link to a device ----------------------------
@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero"])
def test_rewrite_skips_a_source_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """``rewrite DIR`` read every ``*.py`` with ``read_bytes``: a FIFO named ``x.py``
    blocked it for ever, a symlink to ``/dev/zero`` read until memory ran out."""
    home = tmp_path / "home"
    make_model(home, "Org/small", {"config.json": "{}"})
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("m = AutoModel.from_pretrained('Org/small')\n")
    odd = project / "odd.py"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    proc = subprocess.run([sys.executable, "-m", "bundler", "rewrite", str(project), "--home",
                           str(home), "--check", "-j", "1"], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=60)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "odd.py:1: warning [unreadable]: cannot read, skipped: " in proc.stderr
    assert "not a regular file" in proc.stderr
    assert "1 of 2 file(s) would change" in proc.stderr
