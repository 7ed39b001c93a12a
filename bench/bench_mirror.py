"""The fleet mirror: nginx throughput to many clients, and the cost of publishing.

Run through ``make bench`` (or ``.venv/bin/python bench/bench_mirror.py --help``). A report,
not a test: it exits 0 whatever the figures are, non-zero only when a measured command fails.

1. Throughput: ``--clients`` processes (32) each read every file of one published model,
   through a real nginx on loopback configured by ``mirror nginx-config`` (HTTP GET, as
   PaddleNLP does), against the same processes reading the same files from the local disk (the
   baseline, measured in the same run, page cache warm for both). Printed: total MB/s of each and
   their ratio.
2. Offline mode's mirror client (``PADDLE_BUNDLE_MIRROR``): ``--checked-clients`` processes
   (8) each download every file of the model as offline mode does (size, sha256 against the
   served list, written whole and renamed into a cache folder), against the same number of
   plain downloads that write the same files unchecked, as PaddleNLP's own download does
   (measured in the same run). Printed: total MB/s of each and their ratio: what the checks
   cost.
3. Publishing: ``mirror publish`` of a ``--size-mib`` (512) bundle into an empty root, against
   ``install`` of the same bundle into an empty home; both verify every byte and make it
   durable. Printed: seconds of each and the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK = REPO / "bench-work" / "mirror"
MODEL = "Bench/big"
CHUNK = 1 << 20


def make_bundle(work: Path, size_mib: int) -> Path:
    home = work / "online"
    folder = home / "models" / MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Bench"]}))
    shards = max(1, size_mib // 128)
    block = os.urandom(CHUNK)
    for i in range(shards):
        with open(folder / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as out:
            for j in range(size_mib // shards):
                out.write(block[j % 7:] + block[: j % 7])  # not one repeated block
    bundle = work / "big.tar.zst"
    run(["pack", MODEL, "-o", str(bundle), "--home", str(home), "-q", "--level", "1"])
    return bundle


def run(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True,
                          text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"paddle-bundle {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


def _get(conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    conn.request("GET", path)
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status}")
    return response


def _read_http(port: int, paths: list[str], start: float) -> int:
    while time.time() < start:
        time.sleep(0.001)
    total = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path in paths:
        response = _get(conn, path)
        while chunk := response.read(CHUNK):
            total += len(chunk)
    conn.close()
    return total


def _fetch_checked(endpoint: str, rels: list[str], out: str, start: float) -> int:
    from bundler._offline import _MirrorClient

    client = _MirrorClient(endpoint)
    client.listing()  # as offline mode: the list first, then the files of its generation
    while time.time() < start:
        time.sleep(0.001)
    total = 0
    folder = Path(out) / str(os.getpid())
    for rel in rels:
        dest = folder / rel.rsplit("/", 1)[-1]
        client.fetch(rel, str(dest), MODEL)
        total += dest.stat().st_size
        dest.unlink()  # 32 clients x 537 MB would otherwise fill the disk
    return total


def _download_plain(port: int, paths: list[str], out: str, start: float) -> int:
    """GET each file and write it to a file, no checks (the baseline of the checked client)."""
    while time.time() < start:
        time.sleep(0.001)
    total = 0
    folder = Path(out) / f"plain-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path in paths:
        response = _get(conn, path)
        dest = folder / path.rsplit("/", 1)[-1]
        with open(dest, "wb") as fh:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                total += len(chunk)
        dest.unlink()
    conn.close()
    return total


def _read_disk(files: list[Path], start: float) -> int:
    while time.time() < start:
        time.sleep(0.001)
    total = 0
    buffer = bytearray(CHUNK)
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                total += n
    return total


def parallel(clients: int, target: object, args: tuple[object, ...]) -> tuple[int, float]:
    """Total bytes and wall seconds of ``clients`` processes started together."""
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        start = time.time() + 1.0  # every process is up before the clock starts
        results = [pool.apply_async(target, (*args, start)) for _ in range(clients)]  # type: ignore[arg-type]
        total = sum(r.get(timeout=3600) for r in results)
        return total, time.time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="bundle size (512)")
    parser.add_argument("--clients", type=int, default=32, help="client processes (32)")
    parser.add_argument("--checked-clients", type=int, default=8,
                        help="offline-mode client processes, which write what they read (8)")
    args = parser.parse_args(argv)

    from tests.test_mirror import free_port, nginx_binary, nginx_files, wait_for_port

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        bundle = make_bundle(WORK, args.size_mib)
        publish_s = run(["mirror", "publish", str(bundle), "--root", str(WORK / "root"), "-q"])
        install_s = run(["install", str(bundle), "--home", str(WORK / "home"), "-q"])
        print(f"publish of a {args.size_mib} MiB bundle: {publish_s:.2f} s; install of it: "
              f"{install_s:.2f} s; publish / install = {publish_s / install_s:.2f}")

        folder = WORK / "root" / "paddlenlp" / "models" / "community" / MODEL
        files = sorted(p for p in folder.iterdir() if p.is_file())
        paths = [f"/paddlenlp/models/community/{MODEL}/{p.name}" for p in files]
        port = free_port()
        conf_text = subprocess.run(
            [sys.executable, "-m", "bundler", "mirror", "nginx-config", "--root",
             str(WORK / "root"), "--listen", f"127.0.0.1:{port}"], capture_output=True,
            text=True, check=True, cwd=REPO).stdout
        prefix = WORK / "nginx"
        conf = nginx_files(prefix, conf_text)
        server = subprocess.Popen([nginx_binary(), "-p", str(prefix), "-c", str(conf)])
        try:
            wait_for_port(port, server)
            _read_disk(files, 0)  # warm the page cache for both
            disk_bytes, disk_s = parallel(args.clients, _read_disk, (files,))
            http_bytes, http_s = parallel(args.clients, _read_http, (port, paths))
            n = args.checked_clients
            raw_bytes, raw_s = parallel(n, _download_plain, (port, paths, str(WORK / "out")))
            checked_bytes, checked_s = parallel(
                n, _fetch_checked, (f"http://127.0.0.1:{port}/paddlenlp",
                                    [p[len("/paddlenlp/"):] for p in paths], str(WORK / "out")))
        finally:
            server.terminate()
            server.wait(10)
        if http_bytes != disk_bytes:
            raise SystemExit(f"nginx served {http_bytes} bytes, the disk {disk_bytes}")
        disk_rate, http_rate = disk_bytes / disk_s / 1e6, http_bytes / http_s / 1e6
        each = disk_bytes / args.clients / 1e6
        print(f"{args.clients} clients reading {len(files)} files ({each:.0f} MB each): "
              f"nginx on loopback {http_rate:,.0f} MB/s total; local disk "
              f"{disk_rate:,.0f} MB/s total; nginx / disk = {http_rate / disk_rate:.2f}")
        if checked_bytes != raw_bytes:
            raise SystemExit(f"offline-mode clients got {checked_bytes} bytes, not {raw_bytes}")
        raw_rate, checked_rate = raw_bytes / raw_s / 1e6, checked_bytes / checked_s / 1e6
        print(f"{n} offline-mode clients (PADDLE_BUNDLE_MIRROR: size and sha256 checked) "
              f"{checked_rate:,.0f} MB/s total; {n} plain downloads writing the same files "
              f"{raw_rate:,.0f} MB/s total; checked / plain = {checked_rate / raw_rate:.2f}")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
