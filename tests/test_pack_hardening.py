"""Regression tests for the pack/verify/inspect defects of issue 9 (items 1, 5, 7, 8, 9, 10,
14, 15, 16, 17): each fails on the code before the fix.

They use the real command line (``run_cli`` in a subprocess where the terminal output or a
hang matters), real tar for sparse members and pax global headers, and real ``sha256sum -c``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import zstandard

from bundler._io import atomic_output
from bundler.cli import _main, printable
from bundler.errors import UsageError
from bundler.fetch import fetch
from bundler.volumes import parse_sidecar, remove_abandoned_parts, sidecar_line
from tests.conftest import (
    ROOT,
    SMALL_MODEL,
    make_model,
    manifest_for,
    run_cli,
    tarinfo,
    tree,
    write_raw_bundle,
)

WEIGHTS = "models/Org/small/model_state.pdparams"


def pack(home: Path, out: Path | str, *extra: str) -> tuple[int, str, str]:
    return run_cli("pack", "Org/small", "-o", out, "--home", home, "-q", *extra)


def listing(folder: Path) -> dict[str, bytes]:
    """Every file directly in ``folder``, hidden ones included: name -> content."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- 1. pack -o never destroys what it did not write --------------------------------------
@pytest.mark.parametrize("split", [pytest.param((), id="one-file"),
                                   pytest.param(("--split-size", "64K"), id="split")])
@pytest.mark.parametrize("target", [
    pytest.param(WEIGHTS, id="weights-of-the-packed-model"),
    pytest.param("models/Org/small/new.tar.zst", id="new-file-in-the-packed-model"),
    pytest.param("models/Other/m/bundle.tar.zst", id="another-model-folder"),
    pytest.param("taskflow/bundle.tar.zst", id="taskflow-folder"),
])
def test_output_inside_the_model_folders_is_refused(online_home: Path, target: str,
                                                    split: tuple[str, ...]) -> None:
    (online_home / "models/Other/m").mkdir(parents=True)
    (online_home / "taskflow").mkdir()
    before = tree(online_home)
    rc, _, err = pack(online_home, online_home / target, *split)
    assert rc == 2, err
    assert "refusing to write a bundle there" in err and len(err.strip().splitlines()) == 1
    assert tree(online_home) == before  # the weights are still the weights, nothing added


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "AISTUDIO_HUB_CACHE"])
def test_output_inside_a_hub_cache_is_refused(online_home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              variable: str) -> None:
    cache = tmp_path / "hub-cache"
    (cache / "models--org--m").mkdir(parents=True)
    monkeypatch.setenv(variable, str(cache))
    rc, _, err = pack(online_home, cache / "models--org--m/b.tar.zst")
    assert rc == 2 and "hub cache: refusing to write a bundle there" in err, err
    assert not list(cache.rglob("b.tar.zst*"))


def test_output_reached_through_a_symlinked_folder_is_refused(online_home: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(online_home / "models/Org/small")
    before = tree(online_home)
    rc, _, err = pack(online_home, tmp_path / "link/model_state.pdparams")
    assert rc == 2 and "refusing to write a bundle there" in err, err
    assert tree(online_home) == before


def test_unrelated_files_named_like_volumes_survive(online_home: Path, tmp_path: Path) -> None:
    """`pack -o X` used to delete the user's X.000, X.001, ... without a word."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "X.000").write_bytes(b"my scan, page 1")
    (out / "X.001").write_bytes(b"my scan, page 2")
    assert pack(online_home, out / "X")[0] == 0
    assert (out / "X.000").read_bytes() == b"my scan, page 1"
    assert (out / "X.001").read_bytes() == b"my scan, page 2"
    assert run_cli("verify", out / "X")[0] == 0

    # as volumes the names are needed: refused before anything is written
    before = listing(out)
    rc, _, err = pack(online_home, out / "X", "--split-size", "64K")
    assert rc == 2 and "X.000 exists and is not a volume of an earlier bundle" in err, err
    assert listing(out) == before


@pytest.mark.parametrize("name", ["notes.txt", "state.json", "empty"])
def test_an_existing_file_that_is_not_a_bundle_is_not_overwritten(
        online_home: Path, tmp_path: Path, name: str) -> None:
    victim = tmp_path / name
    victim.write_bytes(b"" if name == "empty" else b"the user's own data\n")
    before = victim.read_bytes()
    for split in ((), ("--split-size", "64K")):
        rc, _, err = pack(online_home, victim, *split)
        assert rc == 2 and "is not a paddle-bundle bundle: refusing" in err, err
        assert victim.read_bytes() == before
        assert not (tmp_path / f"{name}.sha256").exists()
        assert not list(tmp_path.glob(f"{name}.0*"))


def test_a_sidecar_name_holding_other_data_is_not_overwritten(online_home: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / "b.tar.zst.sha256").write_text("shopping list: milk\n")
    rc, _, err = pack(online_home, tmp_path / "b.tar.zst")
    assert rc == 2 and "is not a sha256sum file" in err and "refusing to overwrite" in err, err
    assert (tmp_path / "b.tar.zst.sha256").read_text() == "shopping list: milk\n"
    assert not (tmp_path / "b.tar.zst").exists()


def test_a_symlink_as_output_is_refused(online_home: Path, tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "b.tar.zst").symlink_to(tmp_path / "real")
    rc, _, err = pack(online_home, tmp_path / "b.tar.zst")
    assert rc == 2 and "symbolic link" in err, err
    assert (tmp_path / "b.tar.zst").is_symlink() and (tmp_path / "real").read_bytes() == b"data"


def test_an_earlier_bundle_and_its_volumes_are_replaced(online_home: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    assert pack(online_home, out, "--split-size", "64K")[0] == 0
    first = sorted(p.name for p in tmp_path.glob("b.tar.zst.0*"))
    assert len(first) >= 4
    assert pack(online_home, out)[0] == 0  # one file: the old volumes go
    assert sorted(p.name for p in tmp_path.glob("b.tar.zst*")) == ["b.tar.zst",
                                                                  "b.tar.zst.sha256"]
    assert pack(online_home, out, "--split-size", "64K")[0] == 0  # and back
    assert sorted(p.name for p in tmp_path.glob("b.tar.zst.0*")) == first
    assert not out.exists()
    assert pack(online_home, out, "--split-size", "128K")[0] == 0  # fewer volumes
    rc, _, err = run_cli("verify", out)
    assert rc == 0, err
    assert pack(online_home, out)[0] == 0  # the same name again: replaced
    assert run_cli("verify", out)[0] == 0


def test_fetch_refuses_the_output_before_downloading(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import bundler.fetch

    home = tmp_path / "home"
    make_model(home, "Org/small", SMALL_MODEL)
    weights = home / WEIGHTS
    before = weights.read_bytes()

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch started PaddleNLP although -o is refused")

    monkeypatch.setattr(bundler.fetch, "run_child", no_download)
    with pytest.raises(UsageError, match="refusing to write a bundle there"):
        fetch(["Org/small"], weights, home=home)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a paddle-bundle bundle"):
        fetch(["Org/small"], tmp_path / "notes.txt", home=home)
    assert weights.read_bytes() == before
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- 5, 17. names: not UTF-8, odd characters, line breaks ---------------------------------
GBK = os.fsdecode("模型包".encode("gbk")) + ".tar.zst"  # not valid UTF-8 as bytes


@pytest.mark.parametrize("name", [
    pytest.param(GBK, id="gbk-not-utf8"),
    pytest.param("my bundle.tar.zst", id="space"),
    pytest.param("back\\slash.tar.zst", id="backslash"),
    pytest.param("-rf.tar.zst", id="leading-dash"),
    pytest.param("模型包.tar.zst", id="utf8-chinese"),
    pytest.param("*star?.tar.zst", id="glob-characters"),
])
@pytest.mark.parametrize("split", [pytest.param((), id="one-file"),
                                   pytest.param(("--split-size", "64K"), id="split")])
def test_odd_bundle_names_pack_verify_install_and_pass_sha256sum(
        online_home: Path, tmp_path: Path, name: str, split: tuple[str, ...]) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    out = stick / name
    rc, _, err = pack(online_home, out, *split)
    assert rc == 0, err
    sidecar = stick / (name + ".sha256")
    assert sidecar.is_file()
    check = subprocess.run(["sha256sum", "-c", "--strict", "--", sidecar.name], cwd=stick,
                           capture_output=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.count(b": OK") == len(list(stick.iterdir())) - 1
    rc, out_text, err = run_cli("verify", out)
    assert rc == 0 and "matches" in out_text, err
    rc, out_text, err = run_cli("install", out, "--home", tmp_path / "off", "-q")
    assert rc == 0, err
    assert (tmp_path / "off" / WEIGHTS).read_bytes() == (online_home / WEIGHTS).read_bytes()
    rc, listed, err = run_cli("list", "--home", tmp_path / "off")
    assert rc == 0 and printable(name) in listed, err
    assert json.loads(run_cli("list", "--json", "--home", tmp_path / "off")[1])["models"]


@pytest.mark.parametrize("name", ["a\nb.tar.zst", "a\rb.tar.zst", "tab\there", "esc\x1b[2J"])
def test_output_names_with_control_characters_are_refused(online_home: Path, tmp_path: Path,
                                                          name: str) -> None:
    rc, _, err = pack(online_home, tmp_path / name)
    assert rc == 2 and "control character" in err, err
    assert "\x1b" not in err and list(tmp_path.iterdir()) == [tmp_path / "online"]


def test_sidecar_lines_as_coreutils_writes_and_reads_them(tmp_path: Path) -> None:
    """Our writer and parser agree with sha256sum itself, escapes included."""
    names = ["plain", "sp ace", "back\\slash", "new\nline", os.fsdecode(b"\xc4\xa3\xb0")]
    for name in names:
        (tmp_path / name).write_bytes(name.encode("utf-8", "surrogateescape"))
    ours = b"".join(sidecar_line(n, __import__("hashlib").sha256(
        n.encode("utf-8", "surrogateescape")).hexdigest()) for n in names)
    theirs = subprocess.run(["sha256sum", "--", *names], cwd=tmp_path, capture_output=True,
                            check=True).stdout
    assert parse_sidecar(theirs) == parse_sidecar(ours)
    assert set(parse_sidecar(theirs)) == set(names)
    (tmp_path / "ours.sha256").write_bytes(ours)
    check = subprocess.run(["sha256sum", "-c", "--strict", "ours.sha256"], cwd=tmp_path,
                           capture_output=True)
    assert check.returncode == 0, check.stderr


# -- 7. nothing from a bundle reaches the terminal raw ------------------------------------
#: What a hostile bundle puts in its strings: clear screen, fake success, set the window
#: title, CSI through C1, a bidi override, a line separator, DEL.
HOSTILE = ("\x1b[2J\x1b[H\x1b]0;pwned\x07\r\nALL CHECKS PASSED\x9b31m\u202egnp.exe"
           "\u2028\x7f\u200b")


def raw_controls(text: str) -> list[str]:
    return sorted({ch for ch in text if ch != "\n" and not ch.isprintable()})


@pytest.fixture
def hostile_bundle(tmp_path: Path) -> Path:
    content = {"config.json": b"{}", "w\u202e.bin": b"weights"}
    manifest = manifest_for(content, model_id="Org/ev\u202eil\x9b")
    manifest["origin"].update(user=HOSTILE, host=HOSTILE, platform=HOSTILE, python=HOSTILE,
                              paddlenlp=HOSTILE, endpoint=HOSTILE, created=HOSTILE,
                              tool_version=HOSTILE, command=[HOSTILE, "pack"])
    members = [(tarinfo(f"models/Org/ev\u202eil\x9b/{rel}", size=len(data)), data)
               for rel, data in sorted(content.items())]
    return write_raw_bundle(tmp_path / "hostile.tar.zst", manifest, members)


@pytest.mark.parametrize("args", [pytest.param([], id="text"),
                                  pytest.param(["--json"], id="json")])
def test_inspect_escapes_every_control_character(hostile_bundle: Path,
                                                 args: list[str]) -> None:
    rc, out, err = run_cli("inspect", hostile_bundle, *args)
    assert rc == 0, err
    assert raw_controls(out + err) == []
    assert not any(line.startswith("ALL CHECKS") for line in out.split("\n"))
    if args:  # still the same JSON
        assert json.loads(out)["origin"]["user"] == HOSTILE
    else:
        assert "\\x1b[2J" in out and "\\u202e" in out and "\\x9b" in out


def test_install_list_check_escape_names_from_the_bundle(hostile_bundle: Path,
                                                         tmp_path: Path) -> None:
    home = tmp_path / "off"
    for args in (["verify", hostile_bundle], ["install", hostile_bundle, "--home", home],
                 ["list", "--home", home], ["list", "--json", "--home", home],
                 ["check", "--home", home]):
        rc, out, err = run_cli(*args)
        assert rc == 0, (args, err)
        assert raw_controls(out + err) == [], args
    (home / "models/Org/ev\u202eil\x9b/w\u202e.bin").write_bytes(b"tampered")
    rc, out, err = run_cli("check", "--home", home)
    assert rc == 3 and "w\\u202e.bin" in err
    assert raw_controls(out + err) == []


def test_error_messages_naming_members_are_escaped(tmp_path: Path) -> None:
    content = {"config.json": b"{}"}
    members = [(tarinfo("models/Org/evil/config.json", size=2), b"{}"),  # C0: refused by name
               (tarinfo(f"models/Org/evil/{HOSTILE.replace(chr(10), '')}", size=1), b"x"),
               # C1, DEL and bidi pass the path rules, and are named as not in the manifest
               (tarinfo("models/Org/evil/\x9b2J\u202eALL CHECKS PASSED\x7f", size=1), b"x")]
    bundle = write_raw_bundle(tmp_path / "b.tar.zst", manifest_for(content), members)
    for args in (["verify", bundle], ["install", bundle, "--home", tmp_path / "off"]):
        rc, out, err = run_cli(*args)
        assert rc == 3 and "not listed in the manifest" in err, err
        assert raw_controls(out + err) == [], args
        assert "Traceback" not in err


def test_printable_keeps_text_and_escapes_the_rest() -> None:
    assert printable("模型 model\u3000x é") == "模型 model\u3000x é"
    assert printable("a\x1b[2Jb\x9b\x7f\u202e\u2028\t") == \
        "a\\x1b[2Jb\\x9b\\x7f\\u202e\\u2028\\x09"
    assert printable(os.fsdecode(b"n\xb2")) == "n\\xb2"
    assert printable("\U000e0001") == "\\U000e0001"  # a tag character (format, invisible)
    assert printable("a\tb\n", keep="\t\n") == "a\tb\n"


# -- 8. tar features standard tar applies but the reader would not -------------------------
def _members_of(raw: bytes) -> list[tuple[bytes, str, bytes, int]]:
    """(type, name, stored data, end offset) of each header in a tar, walked by hand: the
    name and bytes a reader that ignores sparse maps and global headers would see."""
    out, off, pax_path = [], 0, None
    while off + 512 <= len(raw) and raw[off:off + 512] != bytes(512):
        info = tarfile.TarInfo.frombuf(raw[off:off + 512], "utf-8", "surrogateescape")
        size = int(raw[off + 124:off + 136].strip(b"\0 ") or b"0", 8)
        data = raw[off + 512:off + 512 + size]
        end = off + 512 + -(-size // 512) * 512
        if info.type == tarfile.XHDTYPE:
            match = re.search(rb"\d+ path=(.*)\n", data)
            pax_path = match.group(1).decode() if match else None
        elif info.type != tarfile.XGLTYPE:
            out.append((info.type, pax_path or info.name, data, end))
            pax_path = None
        off = end
    return out


def _bundle_around(tmp_path: Path, tar_bytes: bytes, start: int, name: str,
                   data: bytes) -> Path:
    """A bundle whose manifest lists ``name`` with ``data`` (what a naive reader sees), and
    whose archive is manifest.json followed by real tar's bytes from ``start``."""
    manifest = manifest_for({}, model_id="Org/sp", extra_files=[
        {"path": name, "type": "file", "size": len(data), "mode": "0644",
         "sha256": __import__("hashlib").sha256(data).hexdigest()}])
    raw = json.dumps(manifest).encode()
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarinfo("manifest.json", size=len(raw)), io.BytesIO(raw))
    body = head.getvalue().rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    members = tar_bytes[start:].rstrip(b"\0")
    members += b"\0" * (-len(members) % 512)
    whole = body + members + b"\0" * 1024
    whole += b"\0" * (-len(whole) % 10240)
    out = tmp_path / "b.tar.zst"
    out.write_bytes(zstandard.ZstdCompressor().compress(whole))
    return out


def _sparse_file(folder: Path) -> Path:
    path = folder / "models/Org/sp/w.bin"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:  # 1 MiB hole, 4 KiB of data, 1 MiB hole
        fh.seek(1 << 20)
        fh.write(b"x" * 4096)
        fh.truncate(2 << 20)
    return path


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_real_tar_sparse_members_are_refused(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    _sparse_file(src)
    tar_bytes = subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", "-",
                                "models/Org/sp/w.bin"], cwd=src, capture_output=True,
                               check=True).stdout
    kind, name, data, _ = _members_of(tar_bytes)[-1]
    assert len(data) < 2 << 20  # tar stored the data, not the holes
    bundle = _bundle_around(tmp_path, tar_bytes, 0, name, data)
    # standard tar writes a 2 MiB file where a naive reader saw len(data) bytes
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(bundle.read_bytes())
    (tmp_path / "x").mkdir()
    subprocess.run(["tar", "-xf", "-"], input=plain, cwd=tmp_path / "x", check=True)
    assert (tmp_path / "x/models/Org/sp/w.bin").stat().st_size == 2 << 20

    for args in (["verify", bundle], ["install", bundle, "--home", tmp_path / "off"]):
        rc, _, err = run_cli(*args)
        assert rc == 3 and "sparse" in err, (args, err)
    assert not (tmp_path / "off/models").exists()


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_real_tar_pax_global_headers_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "models/Org/sp").mkdir(parents=True)
    (src / "models/Org/sp/w.bin").write_bytes(b"weights")
    tar_bytes = subprocess.run(["tar", "--format=pax", "--pax-option=comment=made by tar",
                                "-cf", "-", "models/Org/sp/w.bin"], cwd=src,
                               capture_output=True, check=True).stdout
    assert tarfile.TarInfo.frombuf(tar_bytes[:512], "utf-8", "strict").type == tarfile.XGLTYPE
    _, name, data, _ = _members_of(tar_bytes)[-1]
    bundle = _bundle_around(tmp_path, tar_bytes, 0, name, data)
    for args in (["verify", bundle], ["install", bundle, "--home", tmp_path / "off"]):
        rc, _, err = run_cli(*args)
        assert rc == 3 and "pax global header" in err, (args, err)
    assert not (tmp_path / "off/models").exists()


def test_a_member_named_twice_is_refused(tmp_path: Path) -> None:
    """A GNU long name and a pax path for one member: tar and a reader could disagree."""
    long = "models/Org/evil/" + "n" * 120
    manifest = manifest_for({"n" * 120: b"x"})
    data = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarinfo("manifest.json", size=len(data)), io.BytesIO(data))
    gnu = buf.getvalue().rstrip(b"\0")
    gnu += b"\0" * (-len(gnu) % 512)
    member = tarinfo(long, size=1)
    pax = tarinfo("pax", kind=tarfile.XHDTYPE)
    record = f"path={long}\n".encode()
    record = f"{len(record) + 4} ".encode() + record
    pax.size = len(record)
    raw = (gnu + pax.tobuf(tarfile.USTAR_FORMAT) + record + b"\0" * (-len(record) % 512)
           + member.tobuf(tarfile.GNU_FORMAT, "utf-8") + b"x" + b"\0" * 511 + b"\0" * 10240)
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(zstandard.ZstdCompressor().compress(raw))
    rc, _, err = run_cli("verify", bundle)
    assert rc == 3 and "GNU long name and a pax path" in err, err


# -- 9, 10, 16. the sidecar and the bundle: present, regular, readable ---------------------
@pytest.mark.parametrize("sidecar", [
    pytest.param(b"\xff\xfe\x00g\x00a\x00r\x00b\x00a\x00g\x00e", id="utf16-not-utf8"),
    pytest.param(b"\xb2\xe2\xca\xd4 not a checksum\n", id="gbk-garbage"),
    pytest.param(b"", id="empty"),
    pytest.param(b"0123  b.tar.zst\n", id="short-digest"),
])
def test_a_sidecar_that_is_there_but_malformed_fails_integrity(bundle: Path, tmp_path: Path,
                                                               sidecar: bytes) -> None:
    (bundle.parent / (bundle.name + ".sha256")).write_bytes(sidecar)
    for args in (["verify", bundle], ["verify", "--quick", bundle],
                 ["install", bundle, "--home", tmp_path / "off"]):
        rc, out, err = run_cli(*args)
        assert rc == 3, (args, out, err)
        assert "is not a sha256sum file" in err and "no .sha256 sidecar" not in out
    assert not (tmp_path / "off/models").exists()


def test_a_sidecar_naming_the_bundle_in_gbk_is_read(online_home: Path, tmp_path: Path) -> None:
    """A sidecar that is not UTF-8 because the NAME is not: read, and really compared."""
    out = tmp_path / GBK
    assert pack(online_home, out)[0] == 0
    assert b"\xc4\xa3" in (tmp_path / (GBK + ".sha256")).read_bytes()
    assert run_cli("verify", out)[0] == 0
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    out.write_bytes(bytes(data))
    rc, _, err = run_cli("verify", "--quick", out)
    assert rc == 3 and "sha256 differs" in err, err


def _run_with_timeout(*args: str | Path) -> tuple[int, str, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "bundler", *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} blocked on a FIFO")
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_a_sidecar_that_is_not_a_regular_file_fails_integrity(bundle: Path, tmp_path: Path,
                                                               kind: str) -> None:
    sidecar = bundle.parent / (bundle.name + ".sha256")
    sidecar.unlink()
    if kind == "FIFO":
        os.mkfifo(sidecar)  # used to block verify and install for ever
    else:
        sidecar.mkdir()
    for args in (["verify", bundle], ["verify", "--quick", bundle],
                 ["install", bundle, "--home", tmp_path / "off"]):
        rc, _, err = _run_with_timeout(*args)
        assert rc == 3 and kind in err and "not a regular file" in err, (args, err)
    assert not (tmp_path / "off/models").exists()


def test_a_fifo_as_bundle_or_volume_does_not_block(split_bundle: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.tar.zst"
    os.mkfifo(fifo)
    for command in ("verify", "inspect", "install"):
        rc, _, err = _run_with_timeout(command, fifo, *(
            ["--home", tmp_path / "off"] if command == "install" else []))
        assert rc == 1 and "is a FIFO (named pipe), not a bundle file" in err, (command, err)
    volume = split_bundle.with_name(split_bundle.name + ".001")
    volume.unlink()
    os.mkfifo(volume)
    rc, _, err = _run_with_timeout("verify", split_bundle)
    assert rc == 1 and "not a volume file" in err, err


@pytest.fixture
def split_bundle(online_home: Path, tmp_path: Path) -> Path:
    (tmp_path / "stick").mkdir()
    out = tmp_path / "stick/b.tar.zst"
    assert pack(online_home, out, "--split-size", "64K")[0] == 0
    return out


@pytest.mark.parametrize("command", ["verify", "inspect", "install"])
def test_a_directory_as_bundle_says_so(bundle: Path, tmp_path: Path, command: str) -> None:
    rc, _, err = run_cli(command, tmp_path, *(
        ["--home", tmp_path / "off"] if command == "install" else []))
    assert rc == 1, err
    assert "is a directory, not a bundle file" in err and "does not exist" not in err
    assert f"e.g. {bundle}" in err  # the bundle inside it, named
    assert len(err.strip().splitlines()) == 1


# -- 14. a malformed --exclude-installed state ---------------------------------------------
@pytest.mark.parametrize("content", [
    pytest.param(b'{"models": [{"files": [[1, 2]]}]}', id="file-entry-a-list"),
    pytest.param(b'{"models": [[]]}', id="model-a-list"),
    pytest.param(b'{"models": "x"}', id="models-a-string"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    pytest.param(b'{"models": [{"files": [{"type": "file", "path": "../../etc/passwd", '
                 b'"size": 1, "sha256": "' + b"0" * 64 + b'"}]}]}', id="unsafe-path"),
    pytest.param(b'{"models": [{"files": [{"type": "file", "path": "models/a/b", '
                 b'"size": true, "sha256": "abc"}]}]}', id="bad-size-and-sha"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"", id="empty"),
])
def test_malformed_state_is_one_usage_error(online_home: Path, tmp_path: Path,
                                            content: bytes) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    rc, _, err = run_cli("pack", "Org/small", "-o", tmp_path / "b.tar.zst", "--home",
                         online_home, "--exclude-installed", state)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not the output of 'paddle-bundle list --json'" in lines[0], err
    assert "unexpected" not in err
    assert not (tmp_path / "b.tar.zst").exists()


def test_a_fifo_as_state_does_not_block(online_home: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "state.json")
    rc, _, err = _run_with_timeout("pack", "Org/small", "-o", tmp_path / "b.tar.zst",
                                   "--home", online_home, "--exclude-installed",
                                   tmp_path / "state.json")
    assert rc == 2 and "not a regular file" in err, err


# -- 15. temporary files of a killed pack ----------------------------------------------------
KILLED_PACK = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from bundler.archive import BundleWriter
    from bundler.pack import PackOptions, pack
    finish = BundleWriter.finish
    def finish_then_die(self, manifest):  # as kill -9 once every byte is written
        finish(self, manifest)
        os.kill(os.getpid(), signal.SIGKILL)
    BundleWriter.finish = finish_then_die
    pack(["Org/big"], Path(sys.argv[2]), home=Path(sys.argv[1]),
         options=PackOptions(split_size=int(sys.argv[3]) or None))
""")


@pytest.mark.parametrize("split", [0, 64 * 1024])
def test_the_next_pack_removes_what_a_killed_pack_left(tmp_path: Path, split: int) -> None:
    home = tmp_path / "home"
    make_model(home, "Org/big", {"config.json": "{}", "w.bin": os.urandom(3 << 20)})
    stick = tmp_path / "stick"
    stick.mkdir()
    out = stick / "b.tar.zst"
    proc = subprocess.run([sys.executable, "-c", KILLED_PACK, home, out, str(split)],
                          cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = list(stick.glob(".b.tar.zst.*.part"))
    assert sum(p.stat().st_size for p in left) > 3 << 20  # today: they stay for ever
    assert len(left) == 1 if not split else len(left) > (3 << 20) // split
    kept = {".b.tar.zst.keep.part": "not ours: wrong name",
            ".other.tar.zst.abcdefgh.part": "not ours: another output"}
    if os.geteuid() == 0:  # root can make a file another user owns
        kept[".b.tar.zst.someone1.part"] = "not ours: another user's"
    for name, text in kept.items():
        (stick / name).write_text(text)
        if "someone" in name:
            os.chown(stick / name, 12345, 12345)
    (stick / ".b.tar.zst.symlink1.part").symlink_to(home / "models/Org/big/w.bin")
    rc, _, err = run_cli("pack", "Org/big", "-o", out, "--home", home)
    assert rc == 0 and "left by an interrupted pack" in err, err
    assert "another pack" not in err
    assert sorted(p.name for p in stick.iterdir()) == sorted([
        *kept, ".b.tar.zst.symlink1.part", "b.tar.zst", "b.tar.zst.sha256"])
    assert all((stick / name).read_text() == text for name, text in kept.items())


def test_a_part_still_being_written_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    with atomic_output(out) as fh:
        fh.write(b"in progress")
        parts = list(tmp_path.glob(".b.tar.zst.*.part"))
        assert len(parts) == 1
        assert remove_abandoned_parts(out) == []
        assert parts[0].exists()
    assert out.read_bytes() == b"in progress"


def test_quiet_pack_to_the_same_name_twice_prints_nothing(online_home: Path,
                                                          tmp_path: Path) -> None:
    """Replacing one's own bundle is the normal case: no warning, no prompt."""
    for _ in range(2):
        assert pack(online_home, tmp_path / "b.tar.zst") == (0, "", "")
    assert _main(["verify", str(tmp_path / "b.tar.zst"), "-q"]) == 0
