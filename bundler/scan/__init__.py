"""Refusing weights that would run code when loaded.

``paddle.load`` unpickles ``.pdparams``; a pickle can name any importable callable and call it.
This package walks pickles without unpickling them and refuses every global outside an
allowlist of what ``paddle.save``, numpy and PaddleNLP write (:mod:`bundler.scan.allowlist`).
:class:`FileScan` takes a file's bytes as they stream past, so pack, verify and install scan
in the same pass that hashes (never a second read); :func:`scan_paths` serves
``paddle-bundle scan`` for what arrived by other means.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import UnsafeWeightsError
from bundler.paths import resolve_within
from bundler.scan.allowlist import Allowlist, parse_global
from bundler.scan.formats import HEAD, TORCH_SUFFIXES, Walker, kind_of, walker_for
from bundler.scan.opcodes import Finding, Refused

__all__ = ["Allowlist", "FileScan", "Finding", "ScanResult", "aliases", "parse_global",
           "offline_allowlist", "refusal", "scan_file", "scan_paths", "scanned_chunks"]

#: How far from its end zipfile looks for an archive's end record (a comment's 64 KiB + 22).
ZIP_TAIL = (1 << 16) + 22

HINT = ("do not load it; if your site knowingly accepts that global, pass --allow-global "
        "MODULE.NAME (recorded in the bundle)")


class FileScan:
    """One file's bytes, fed in order; ``finding`` is set at the first problem.

    ``names`` are every name the content is reachable under (a copy stored once, a symlink
    to it): a pickle suffix on any of them makes it a pickle to some loader.
    """

    def __init__(self, names: Sequence[str], allow: Allowlist) -> None:
        self.names = tuple(names)
        self._allow = allow
        self._head = bytearray()
        self._walker: Walker | None = None
        self._decided = False
        self.kind: str | None = None
        self.finding: Finding | None = None  # a refusal
        self.malformed: Finding | None = None  # where it stops being loadable (no refusal)
        # the last bytes of a file named as torch weights: zipfile finds an archive by its end
        # record (data before it allowed), so one that starts otherwise may still be a zip
        torch_named = any(n.lower().endswith(TORCH_SUFFIXES) for n in self.names)
        self._tail: bytearray | None = bytearray() if torch_named else None
        self._size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._tail is not None:
            self._tail += memoryview(data)[-ZIP_TAIL:]
            del self._tail[:max(0, len(self._tail) - ZIP_TAIL)]
        self._size += len(data)
        if self._decided and self._walker is None:
            return
        try:
            if not self._decided:
                self._head += data
                if len(self._head) < HEAD:
                    return
                self._decide()
            elif self._walker is not None:
                self._walker.feed(data)
        except Refused as exc:
            self._stop(exc.finding)
        except Exception as exc:  # noqa: BLE001 - a walker bug must refuse, not pass or crash
            self._stop(Finding(-1, f"the scanner could not read it ({type(exc).__name__}: "
                                   f"{exc})"))

    def close(self) -> Finding | None:
        try:
            if not self._decided:
                self._decide()
            if self._walker is not None:
                self._walker.close()
        except Refused as exc:
            self._stop(exc.finding)
        except Exception as exc:  # noqa: BLE001 - as in feed
            self._stop(Finding(-1, f"the scanner could not read it ({type(exc).__name__}: "
                                   f"{exc})"))
        if self._tail is not None and self.finding is None and b"PK\x05\x06" in self._tail:
            at = self._size - len(self._tail) + self._tail.rfind(b"PK\x05\x06")
            self.finding = Finding(at, "a zip end record at the end of a file that does not "
                                       "start as a zip (zipfile, as PaddleNLP's load_torch "
                                       "uses it, would read an archive the scan never walked)")
        return self.finding

    def _stop(self, finding: Finding) -> None:
        self._walker = None  # nothing more to walk: refused, or no longer a pickle
        if finding.fatal:
            self.finding = finding
        else:
            self.malformed = finding

    def _decide(self) -> None:
        self._decided = True
        head = bytes(self._head[:HEAD])
        kinds = [kind_of(name, head) for name in self.names]
        self.kind = next((k for k in kinds if k is not None), None)
        if self.kind == "zip":
            self._tail = None  # walked as the zip it is, end records included
        if self.kind is not None:
            torch_named = any(n.lower().endswith(TORCH_SUFFIXES) for n in self.names)
            self._walker = walker_for(self.kind, self._allow, persistent_ids=torch_named)
            self._walker.feed(self._head)
        self._head = bytearray()


def refusal(path: str, finding: Finding) -> str:
    """The one line naming the file, the global (or the problem) and the offset."""
    return f"{path}: {finding.what} (byte offset {finding.offset}); loading it could run code"


def scanned_chunks(scan: FileScan, chunks: Iterable[bytes | memoryview]
                   ) -> Iterator[bytes | memoryview]:
    """``chunks`` unchanged, each shown to ``scan`` on the way: the scan rides along the read
    that hashes and writes."""
    for chunk in chunks:
        scan.feed(chunk)
        yield chunk
    scan.close()


def aliases(entries: Iterable[tuple[str, str | None, str | None]]) -> dict[str, list[str]]:
    """For each stored file, every name its bytes are reachable under.

    ``entries`` are ``(path, same_as, symlink target)``: a copy stored once (``same_as``) or
    a symlink adds its own name to the file it resolves to. Links are followed as the kernel
    does (:func:`bundler.paths.resolve_within`, component by component: ``x -> d/blob`` with
    ``d -> c`` is ``c/blob``, not the ``d/blob`` a lexical join gives).
    """
    entries = list(entries)
    same = {path: src for path, src, _ in entries if src is not None}
    links = {path: target for path, _, target in entries if target is not None}
    names: dict[str, list[str]] = {}
    for path, _, _ in entries:
        real = path
        if path in links:
            top = path.split("/", 1)[0]
            real = resolve_within(path, top, links) or path
        for _ in range(40):
            if real not in same:
                break
            real = same[real]
        names.setdefault(real, [real])
        if real != path:
            names[real].append(path)
    return names


@dataclass(frozen=True)
class ScanResult:
    path: Path
    kind: str | None  # pickle, zip, npy, or None (not a format that can run code)
    finding: Finding | None
    malformed: Finding | None = None


def scan_file(path: Path, allow: Allowlist, names: Sequence[str] = (),
              chunk: int = 1 << 20) -> ScanResult:
    """Scan one file on disk, streaming."""
    scan = FileScan((path.name, *names), allow)
    with open(path, "rb") as fh:
        while True:
            data = fh.read(chunk)
            if not data:
                break
            scan.feed(data)
            if scan.finding is not None:
                break
    scan.close()
    return ScanResult(path, scan.kind, scan.finding, scan.malformed)


def scan_paths(paths: Iterable[Path], allow: Allowlist) -> Iterator[ScanResult]:
    """Every regular file below ``paths``, in a stable order. A symlink to a regular file is
    scanned under its own name too (``model_state.pdparams -> blob`` is a pickle to
    ``paddle.load`` whatever ``blob`` is called); folders behind symlinks are not entered."""
    for top in paths:
        if top.is_file():
            yield scan_file(top, allow)
            continue
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_file():
                    yield scan_file(path, allow)


def offline_allowlist(requested: Sequence[str], trusted: bool,
                      extra: Sequence[str] = ()) -> tuple[Allowlist, str | None]:
    """The allowlist for verify and install: the built-in one, the globals given there
    (``--allow-global``), and those the bundle's manifest records only when a trusted signer
    vouches for the manifest (anyone can write a manifest). The second value is a note for
    when the manifest's globals were not honoured."""
    honoured = list(requested) if trusted else []
    note = None
    if requested and not trusted:
        left = sorted(set(requested) - set(extra))
        if left:
            note = (f"the bundle asks to allow {', '.join(left)}, which is honoured only for "
                    "a bundle signed by a trusted signer (--trust); pass --allow-global to "
                    "accept it here")
    return Allowlist([*honoured, *extra]), note


def raise_for(problems: Sequence[tuple[str, Finding]], where: str) -> None:
    """One :class:`UnsafeWeightsError` for every refused file (the first named in it)."""
    if not problems:
        return
    path, first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise UnsafeWeightsError(f"{where}: {refusal(path, first)}{more}",
                             [refusal(p, f) for p, f in problems], path=path,
                             global_name=first.global_name, offset=first.offset, hint=HINT)


