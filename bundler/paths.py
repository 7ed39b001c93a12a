"""Path safety, in one place.

Every path inside a bundle (an *arcname*) is relative to the PaddleNLP home and written with
``/``. These pure functions decide what is acceptable; the manifest parser and the archive
reader both call them, so there is exactly one definition of "safe".
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

#: Top-level folders of a bundle's arcnames. ``models`` and ``taskflow`` live in the PaddleNLP
#: home; ``hf`` and ``aistudio`` stand for the Hugging Face hub cache and the AI Studio cache,
#: which live wherever those libraries keep them (:func:`bundler.cache.top_dirs`).
ALLOWED_TOPS = ("models", "taskflow", "hf", "aistudio")


def unsafe_reason(arcname: str) -> str | None:
    """Why ``arcname`` may not be written under a home, or ``None`` when it is fine.

    Rejects absolute paths, drive letters, backslashes, ``.``/``..`` and empty components, and
    control characters: anything that could escape the target or mean different things on
    different systems.
    """
    if not arcname:
        return "empty path"
    if "\x00" in arcname or any(ord(ch) < 0x20 for ch in arcname):
        return "control character in path"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in arcname):
        return "path is not valid UTF-8"
    if arcname.startswith("/"):
        return "absolute path"
    if "\\" in arcname:
        return "backslash in path"
    if len(arcname) >= 2 and arcname[1] == ":":
        return "drive letter in path"
    parts = arcname.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'.', '..' or empty component in path"
    return None


def is_within(arcname: str, root: str) -> bool:
    """True when ``arcname`` is ``root`` itself or lies below it (both already safe)."""
    return arcname == root or arcname.startswith(root + "/")


def symlink_escape_reason(arcname: str, target: str, root: str) -> str | None:
    """Why a symlink at ``arcname`` pointing to ``target`` leaves ``root``, or ``None``.

    Only relative targets that resolve, lexically, to a path strictly inside ``root`` are
    kept: that is what HF-style ``snapshots/ -> ../../blobs/`` links need and nothing more.
    """
    if not target:
        return "empty symlink target"
    if target.startswith("/"):
        return f"symlink points to absolute path {target!r}"
    if "\\" in target or "\x00" in target:
        return f"symlink target {target!r} has a backslash or NUL"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(arcname), target))
    if resolved == root or not is_within(resolved, root) or resolved.startswith("../"):
        return f"symlink points outside its model folder ({target!r})"
    return None


#: Symlinks followed while resolving one path, as the kernel's limit (ELOOP).
MAX_LINK_HOPS = 40


def resolve_within(arcname: str, root: str, links: Mapping[str, str]) -> str | None:
    """Where ``arcname`` leads once every symlink in ``links`` (arcname -> target) on the way
    is followed the way the kernel does, component by component; ``None`` when it leaves
    ``root`` at any step, or loops.

    A lexical ``normpath`` is not enough: for ``l -> ../../d0`` the text ``l/..`` collapses
    to the link's own folder, but the kernel follows ``l`` first and ``..`` then climbs from
    where it points.
    """
    hops = 0
    depth = root.count("/") + 1

    def walk(parts: list[str], rest: list[str]) -> list[str] | None:
        nonlocal hops
        for comp in rest:
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(parts) <= depth:
                    return None
                parts.pop()
                continue
            parts.append(comp)
            current = "/".join(parts)
            target = links.get(current)
            if target is not None:
                hops += 1
                if hops > MAX_LINK_HOPS or target.startswith("/"):
                    return None
                parts.pop()
                followed = walk(parts, target.split("/"))
                if followed is None:
                    return None
                parts = followed
        return parts

    start = root.split("/")
    if not is_within(arcname, root):
        return None
    resolved = walk(start, arcname.split("/")[depth:])
    if resolved is None:
        return None
    path = "/".join(resolved)
    return path if is_within(path, root) and path != root else None


_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
_FAT_ILLEGAL = set('<>:"|?*')


def portability_problems(arcnames: Iterable[str]) -> list[str]:
    """Names that cannot be written, or mean something else, on FAT32/exFAT/NTFS sticks and
    Windows or macOS machines: illegal characters, trailing dots or spaces, reserved device
    names, and paths that differ only by case."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name in arcnames:
        for part in name.split("/"):
            bad = sorted({ch for ch in part if ch in _FAT_ILLEGAL or ord(ch) < 0x20})
            if bad:
                problems.append(f"{name}: {''.join(bad)!r} is not allowed on FAT or Windows")
            if part.endswith((".", " ")):
                problems.append(f"{name}: {part!r} ends with a dot or space")
            if part.split(".")[0].upper() in _WINDOWS_RESERVED:
                problems.append(f"{name}: {part!r} is a reserved device name on Windows")
        folded = name.casefold()
        if folded in seen:
            problems.append(f"{name}: differs from {seen[folded]} only by case")
        else:
            seen[folded] = name
    return problems
