"""The bundle manifest: what a bundle holds, as plain frozen data.

``manifest.json`` is the first member of every bundle. It is the contract between the online
and the offline machine, described by ``manifests/bundle-manifest.schema.json``. Constructing
the dataclasses directly trusts the values; :meth:`Manifest.from_json` is the validating way in
and collects every problem before raising, so a damaged manifest is reported in full.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bundler.errors import ManifestError, UsageError
from bundler.paths import (
    ALLOWED_TOPS,
    resolve_within,
    symlink_escape_reason,
    unsafe_reason,
)

SCHEMA_VERSION = 1
_GLOBAL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
MANIFEST_ARCNAME = "manifest.json"
#: A manifest larger than this is refused before parsing (about 60,000 files; a
#: model has tens).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

KIND_COMMUNITY = "community"
#: A PaddleNLP built-in name (``bert-base-chinese``) whose files come from fixed resource URLs
#: on PaddleNLP's bucket rather than ``$PPNLP_ENDPOINT/models/community``; same folder.
KIND_BUILTIN = "builtin"
KIND_TASKFLOW = "taskflow"
TASKFLOW_PREFIX = "taskflow:"
#: Models from the Hugging Face hub (``from_hf_hub=True``) and AI Studio (``from_aistudio=True``)
#: keep those libraries' own cache layout, ``models--org--name/{blobs,snapshots,refs}``, below
#: these top folders of the bundle (each mapped to its cache on disk by bundler.cache).
KIND_HF = "hf"
KIND_AISTUDIO = "aistudio"
HUB_KINDS = (KIND_HF, KIND_AISTUDIO)
#: What may sit in a hub model folder: contents by hash, one folder of links per revision,
#: branch -> revision files, and huggingface_hub's markers for files absent upstream.
HUB_SUBFOLDERS = ("blobs", "snapshots", "refs", ".no_exist")
_HUB_NAME = re.compile(r"[\w][\w.-]*")

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Stands in for a checksum not yet known; same length as a real one (see archive.py).
PLACEHOLDER_SHA256 = "0" * 64


def root_for(model_id: str, kind: str | None = None) -> tuple[str, str]:
    """``(kind, root)`` of a model id, with ``root`` relative to the home.

    ``Salesforce/codegen-350M-mono`` lives in ``models/Salesforce/codegen-350M-mono`` (as
    PaddleNLP's ``os.path.join(MODEL_HOME, name)``), ``taskflow:information_extraction/uie-base``
    in ``taskflow/information_extraction/uie-base``. Raises ``ValueError`` for ids that would
    not name a folder below those two. ``kind`` ``builtin`` is accepted for an unprefixed id
    (a built-in name lives where a community id would); the default is ``community``.
    """
    wanted = kind
    prefix, sep, repo_id = model_id.partition(":")
    if sep and prefix in HUB_KINDS:
        return prefix, f"{prefix}/{hub_folder_name(prefix, repo_id)}"
    if model_id.startswith(TASKFLOW_PREFIX):
        kind, rel = KIND_TASKFLOW, model_id[len(TASKFLOW_PREFIX) :].strip("/")
        top = "taskflow"
    else:
        kind, rel, top = KIND_COMMUNITY, model_id, "models"
        if wanted == KIND_BUILTIN:
            kind = KIND_BUILTIN
    root = f"{top}/{rel}"
    reason = unsafe_reason(rel) or unsafe_reason(root)
    if reason:
        raise ValueError(f"{model_id!r} is not a model id ({reason})")
    if kind in (KIND_COMMUNITY, KIND_BUILTIN) and rel.count("/") > 1:
        raise ValueError(f"{model_id!r} is not a model id (expected 'org/name' or 'name')")
    return kind, root


def hub_folder_name(kind: str, repo_id: str) -> str:
    """``models--org--name``: the folder huggingface_hub (and PaddleNLP's AI Studio client, a
    copy of it) keeps a repository in. Raises ``ValueError`` for a repo id either hub refuses:
    AI Studio needs ``org/name``; no part may hold ``--`` or ``..`` (the folder name would
    stop naming one repository) or start with anything but a letter, digit or ``_``."""
    parts = repo_id.split("/")
    ref = f"{kind}:{repo_id}"
    allowed = (2,) if kind == KIND_AISTUDIO else (1, 2)
    if len(parts) not in allowed or len(repo_id) > 96:
        shape = "'org/name'" if kind == KIND_AISTUDIO else "'org/name' or 'name'"
        raise ValueError(f"{ref!r} is not a model id (expected {kind}:{shape})")
    for part in parts:
        if not _HUB_NAME.fullmatch(part) or "--" in part or ".." in part:
            raise ValueError(f"{ref!r} is not a model id ({part!r} is not a repository name)")
    return "--".join(["models", *parts])


def hub_ref(kind: str, folder_name: str) -> str:
    """The model ref (``hf:org/name``) of a hub cache folder ``models--org--name``; raises
    ``ValueError`` for anything else."""
    head, _, rest = folder_name.partition("--")
    model_id = f"{kind}:{rest.replace('--', '/')}"
    if head != "models" or root_for(model_id)[1] != f"{kind}/{folder_name}":
        raise ValueError(f"{folder_name!r} is not a {kind} model folder (models--org--name)")
    return model_id


def parse_model_ids(ids: Iterable[str]) -> list[ModelEntry]:
    """Model ids from the command line, de-duplicated; a malformed one is a usage error."""
    models: list[ModelEntry] = []
    for model_id in ids:
        try:
            model = ModelEntry.for_id(model_id)
        except ValueError as exc:
            raise UsageError(str(exc),
                             hint="use 'org/name', 'taskflow:<task>/<model>', 'hf:org/name' "
                                  "or 'aistudio:org/name'") from None
        if model not in models:
            models.append(model)
    return models


@dataclass(frozen=True)
class FileEntry:
    """One file (or symlink) of a model, at ``path`` relative to the home."""

    path: str
    size: int
    sha256: str | None
    mode: int = 0o644
    target: str | None = None  # set for symlinks only
    #: Same content as this earlier file of the bundle, which the archive stores only once.
    same_as: str | None = None
    #: Not in the archive: a delta bundle relies on the copy already installed.
    from_base: bool = False

    @property
    def is_symlink(self) -> bool:
        return self.target is not None

    @property
    def in_archive(self) -> bool:
        """Whether the archive has a member for this entry (a delta's base files do not)."""
        return not self.from_base

    def to_dict(self) -> dict[str, Any]:
        if self.target is not None:
            return {"path": self.path, "type": "symlink", "target": self.target,
                    "mode": f"{self.mode:04o}"}
        data: dict[str, Any] = {"path": self.path, "type": "file", "size": self.size,
                                "sha256": self.sha256, "mode": f"{self.mode:04o}"}
        if self.same_as is not None:
            data["same_as"] = self.same_as
        if self.from_base:
            data["from_base"] = True
        return data


@dataclass(frozen=True)
class ModelEntry:
    """One model folder. ``absent_upstream`` names optional files the server did not have,
    so the offline side can tell "absent upstream" from "missing from the bundle"."""

    id: str
    kind: str
    root: str
    absent_upstream: tuple[str, ...] = ()

    @classmethod
    def for_id(cls, model_id: str, absent_upstream: Iterable[str] = (),
               kind: str | None = None) -> ModelEntry:
        kind, root = root_for(model_id, kind)
        return cls(model_id, kind, root, tuple(sorted(set(absent_upstream))))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "root": self.root,
                "absent_upstream": list(self.absent_upstream)}


@dataclass(frozen=True)
class Proof:
    """How ``fetch`` proved the bundle before writing it: ``command`` ran offline from a
    scratch install of the bundle and exited 0, with the network cut by ``isolation``
    (``network namespace`` or ``socket guard``), with these versions."""

    command: tuple[str, ...]
    isolation: str
    tool_version: str
    paddlenlp: str | None = None
    paddlepaddle: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"command": list(self.command), "isolation": self.isolation,
                "tool_version": self.tool_version, "paddlenlp": self.paddlenlp,
                "paddlepaddle": self.paddlepaddle}


@dataclass(frozen=True)
class Origin:
    """Who, what and when made a bundle. ``created`` is ISO 8601 UTC."""

    tool_version: str
    created: str
    user: str = ""
    host: str = ""
    platform: str = ""
    python: str = ""
    paddlenlp: str | None = None
    paddlepaddle: str | None = None
    command: tuple[str, ...] = ()
    endpoint: str | None = None
    proof: Proof | None = None
    #: ``MODULE.NAME`` globals the maker accepted in weights beyond the built-in allowlist
    #: (``--allow-global``); honoured offline only for a trusted signer's bundle.
    allowed_globals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tool": "paddle-bundle", "tool_version": self.tool_version,
                "created": self.created, "user": self.user, "host": self.host,
                "platform": self.platform, "python": self.python,
                "paddlenlp": self.paddlenlp, "paddlepaddle": self.paddlepaddle,
                "command": list(self.command), "endpoint": self.endpoint}
        if self.proof is not None:
            data["proof"] = self.proof.to_dict()
        if self.allowed_globals:
            data["allowed_globals"] = list(self.allowed_globals)
        return data


@dataclass(frozen=True)
class Manifest:
    origin: Origin
    models: tuple[ModelEntry, ...]
    files: tuple[FileEntry, ...]
    schema_version: int = SCHEMA_VERSION
    _by_path: Mapping[str, FileEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {f.path: f for f in self.files})

    # -- queries -------------------------------------------------------------------------
    def file(self, path: str) -> FileEntry | None:
        return self._by_path.get(path)

    def model_of(self, path: str) -> ModelEntry | None:
        """The model whose folder holds ``path`` (or is it): one dict look-up per parent."""
        by_root = self._models_by_root()
        model = by_root.get(path)
        if model is not None:
            return model
        return next((by_root[p] for p in _parents(path) if p in by_root), None)

    def files_of(self, model: ModelEntry) -> tuple[FileEntry, ...]:
        """The files below ``model.root``, in manifest order. Grouped once for all models,
        so asking for each model of a bundle stays linear in its size."""
        return self._files_by_root().get(model.root, ())

    def _models_by_root(self) -> Mapping[str, ModelEntry]:
        cached: Mapping[str, ModelEntry] | None = self.__dict__.get("_models_cache")
        if cached is None:
            cached = {m.root: m for m in self.models}
            object.__setattr__(self, "_models_cache", cached)
        return cached

    def _files_by_root(self) -> Mapping[str, tuple[FileEntry, ...]]:
        cached: Mapping[str, tuple[FileEntry, ...]] | None = self.__dict__.get("_files_cache")
        if cached is None:
            roots = self._models_by_root()
            grouped: dict[str, list[FileEntry]] = {}
            for entry in self.files:
                # every enclosing root, not only the innermost: nested roots are invalid
                # but a caller may still ask before validation
                for root in (*_parents(entry.path), entry.path):
                    if root in roots:
                        grouped.setdefault(root, []).append(entry)
            cached = {root: tuple(files) for root, files in grouped.items()}
            object.__setattr__(self, "_files_cache", cached)
        return cached

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def with_hashes(self, sha256_by_path: Mapping[str, str]) -> Manifest:
        files = tuple(f if f.is_symlink else replace(f, sha256=sha256_by_path.get(f.path, f.sha256))
                      for f in self.files)
        if any(f.sha256 == PLACEHOLDER_SHA256 for f in files):
            raise ValueError("a file's checksum is still a placeholder")
        return replace(self, files=files)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "origin": self.origin.to_dict(),
                "models": [m.to_dict() for m in self.models],
                "files": [f.to_dict() for f in self.files]}

    def to_json(self) -> bytes:
        """Canonical bytes: the same manifest always serialises to the same bytes, and a
        placeholder checksum serialises to the same length as a real one."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, source: str = MANIFEST_ARCNAME) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ManifestError(f"{source} is not valid JSON: {exc}",
                                hint="the bundle is damaged; copy it again") from None
        return cls.from_dict(raw, source=source)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = MANIFEST_ARCNAME) -> Manifest:
        problems: list[str] = []
        manifest = _parse(raw, problems)
        if manifest is not None:
            problems.extend(validate(manifest))
        if problems or manifest is None:
            raise ManifestError(f"{source} is invalid ({len(problems)} problems)", problems,
                                hint="the bundle is damaged or was not made by paddle-bundle")
        return manifest


# -- parsing and validation --------------------------------------------------------------
def _parse(raw: Any, problems: list[str]) -> Manifest | None:
    if not isinstance(raw, dict):
        problems.append("manifest is not a JSON object")
        return None
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            problems.append(f"schema_version {version} is newer than this paddle-bundle "
                            f"understands ({SCHEMA_VERSION}): upgrade paddle-bundle")
        else:
            problems.append(f"schema_version must be {SCHEMA_VERSION}, got {version!r}")
        return None
    origin = _parse_origin(raw.get("origin"), problems)
    models = _parse_list(raw.get("models"), "models", _parse_model, problems)
    files = _parse_list(raw.get("files"), "files", _parse_file, problems)
    if origin is None or models is None or files is None:
        return None
    return Manifest(origin=origin, models=tuple(models), files=tuple(files))


def _parse_list(value: Any, name: str, parse: Any, problems: list[str]) -> list[Any] | None:
    if not isinstance(value, list):
        problems.append(f"'{name}' must be a list")
        return None
    out = []
    for i, item in enumerate(value):
        if len(problems) >= MAX_PROBLEMS:
            return None
        parsed = parse(item, f"{name}[{i}]", problems)
        if parsed is not None:
            out.append(parsed)
    return out if len(out) == len(value) else None


def _str(obj: Mapping[str, Any], key: str, where: str, problems: list[str],
         optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        problems.append(f"{where}.{key} must be a string")
        return None
    return value


def _parse_origin(value: Any, problems: list[str]) -> Origin | None:
    if not isinstance(value, dict):
        problems.append("'origin' must be an object")
        return None
    ok = len(problems)
    strings = {k: _str(value, k, "origin", problems, optional=True)
               for k in ("tool_version", "created", "user", "host", "platform", "python",
                         "paddlenlp", "paddlepaddle", "endpoint")}
    command = value.get("command", [])
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        problems.append("origin.command must be a list of strings")
    if strings["tool_version"] is None or strings["created"] is None:
        problems.append("origin.tool_version and origin.created are required")
    proof = _parse_proof(value.get("proof"), problems)
    allowed = value.get("allowed_globals", [])
    if not isinstance(allowed, list) or not all(isinstance(g, str) and _GLOBAL.fullmatch(g)
                                                for g in allowed):
        problems.append("origin.allowed_globals must be a list of MODULE.NAME strings")
    if len(problems) != ok:
        return None
    return Origin(tool_version=strings["tool_version"] or "", created=strings["created"] or "",
                  user=strings["user"] or "", host=strings["host"] or "",
                  platform=strings["platform"] or "", python=strings["python"] or "",
                  paddlenlp=strings["paddlenlp"], paddlepaddle=strings["paddlepaddle"],
                  command=tuple(command), endpoint=strings["endpoint"], proof=proof,
                  allowed_globals=tuple(allowed))


def _parse_proof(value: Any, problems: list[str]) -> Proof | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append("origin.proof must be an object")
        return None
    ok = len(problems)
    command = value.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        problems.append("origin.proof.command must be a list of strings")
    isolation = _str(value, "isolation", "origin.proof", problems)
    tool = _str(value, "tool_version", "origin.proof", problems)
    pnlp = _str(value, "paddlenlp", "origin.proof", problems, optional=True)
    paddle = _str(value, "paddlepaddle", "origin.proof", problems, optional=True)
    if len(problems) != ok or isolation is None or tool is None or not isinstance(command, list):
        return None
    return Proof(tuple(command), isolation, tool, pnlp, paddle)


def _parse_model(value: Any, where: str, problems: list[str]) -> ModelEntry | None:
    if not isinstance(value, dict):
        problems.append(f"{where} must be an object")
        return None
    ok = len(problems)
    model_id = _str(value, "id", where, problems)
    kind = _str(value, "kind", where, problems)
    root = _str(value, "root", where, problems)
    absent = value.get("absent_upstream", [])
    if not isinstance(absent, list) or not all(isinstance(a, str) for a in absent):
        problems.append(f"{where}.absent_upstream must be a list of strings")
    if len(problems) != ok or model_id is None or kind is None or root is None:
        return None
    return ModelEntry(model_id, kind, root, tuple(absent))


def _parse_file(value: Any, where: str, problems: list[str]) -> FileEntry | None:
    if not isinstance(value, dict):
        problems.append(f"{where} must be an object")
        return None
    ok = len(problems)
    path = _str(value, "path", where, problems)
    mode_text = _str(value, "mode", where, problems)
    mode = 0
    if mode_text is not None:
        try:
            mode = int(mode_text, 8)
        except ValueError:
            problems.append(f"{where}.mode must be an octal string like '0644'")
        if not 0 <= mode <= 0o777:
            problems.append(f"{where}.mode {mode_text} is not a permission mode")
    kind = value.get("type")
    if kind == "symlink":
        target = _str(value, "target", where, problems)
        if len(problems) != ok or path is None:
            return None
        return FileEntry(path, 0, None, mode, target)
    if kind != "file":
        problems.append(f"{where}.type must be 'file' or 'symlink'")
        return None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(f"{where}.size must be a non-negative integer")
    sha256 = _str(value, "sha256", where, problems)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        problems.append(f"{where}.sha256 must be 64 lowercase hex digits")
    same_as = _str(value, "same_as", where, problems, optional=True)
    from_base = value.get("from_base", False)
    if not isinstance(from_base, bool):
        problems.append(f"{where}.from_base must be true or false")
    if len(problems) != ok or path is None or not isinstance(size, int):
        return None
    return FileEntry(path, size, sha256, mode, None, same_as, bool(from_base))


#: Stop collecting after this many problems: a hostile manifest can have millions.
MAX_PROBLEMS = 50


def validate(manifest: Manifest) -> list[str]:
    """Every reason ``manifest`` could not be installed safely; empty when it can (at most
    :data:`MAX_PROBLEMS`, then a count).

    Checks what the per-field parsing cannot: model roots that match their ids and do not
    nest, every model with at least one file, file paths that are safe and belong to exactly
    one model, no duplicates, no file below a symlink or below another file, symlinks that
    stay in their model folder when followed as the kernel would, through each other.
    Linear in the number of files and models.
    """
    problems = _Problems()
    roots: set[str] = set()
    hub_roots: set[str] = set()
    for model in manifest.models:
        try:
            kind, root = root_for(model.id, model.kind)
        except ValueError as exc:
            problems.add(str(exc))
            continue
        if (kind, root) != (model.kind, model.root):
            problems.add(f"model {model.id!r} must have kind {kind!r} and root {root!r}")
        if root.split("/", 1)[0] not in ALLOWED_TOPS:
            problems.add(f"model root {root!r} is outside {ALLOWED_TOPS}")
        if root in roots:
            problems.add(f"model folder {root!r} is listed twice")
        roots.add(root)
        if kind in HUB_KINDS:
            hub_roots.add(root)
    for root in sorted(roots):
        clash = next((p for p in _parents(root) if p in roots), None)
        if clash:
            problems.add(f"model folders {clash!r} and {root!r} overlap")
    seen: set[str] = set()
    links = {f.path: f.target for f in manifest.files if f.target is not None}
    paths = {f.path for f in manifest.files}
    owned: set[str] = set()
    for entry in manifest.files:
        if problems.full:
            break
        reason = unsafe_reason(entry.path)
        if reason:
            problems.add(f"{entry.path!r}: {reason}")
            continue
        if entry.path in seen:
            problems.add(f"{entry.path}: listed twice")
        seen.add(entry.path)
        parents = _parents(entry.path)
        owner = next((p for p in parents if p in roots), None)
        if owner is None:
            problems.add(f"{entry.path}: not inside any model folder of the bundle")
            continue
        owned.add(owner)
        clash = next((p for p in parents if p in paths), None)
        if clash:
            kind = "symlink" if clash in links else "file"
            problems.add(f"{entry.path}: lies below the {kind} {clash}")
        if entry.target is not None:
            reason = symlink_escape_reason(entry.path, entry.target, owner)
            if reason is None and resolve_within(entry.path, owner, links) is None:
                reason = f"symlink leads outside its model folder through other links " \
                         f"({entry.target!r})"
            if reason:
                problems.add(f"{entry.path}: {reason}")
        if owner in hub_roots:
            reason = _hub_layout_problem(entry, owner, links, paths)
            if reason:
                problems.add(f"{entry.path}: {reason}")
        if entry.same_as is not None:
            for problem in _same_as_problems(entry, manifest):
                problems.add(problem)
        if entry.from_base and (entry.is_symlink or entry.same_as is not None):
            problems.add(f"{entry.path}: only a plain file can come from the base")
    for model in manifest.models:
        if model.root in roots and model.root not in owned and not problems.full:
            problems.add(f"model {model.id}: has no files")
    return problems.done()


class _Problems:
    """A capped list of problems, so a hostile manifest cannot make a million of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def add(self, problem: str) -> None:
        if self.full:
            self.dropped += 1
        else:
            self.items.append(problem)

    def done(self) -> list[str]:
        if self.full:
            return [*self.items, "... stopped counting: the manifest has more problems"]
        return self.items


def _hub_layout_problem(entry: FileEntry, root: str, links: Mapping[str, str],
                        paths: set[str]) -> str | None:
    """Why ``entry`` does not belong in a hub cache folder, or ``None``.

    Only what huggingface_hub writes is accepted: ``blobs/<hash>`` and ``refs/<branch>``
    files, ``snapshots/<revision>/<file>`` (links into ``blobs/``, or plain files where the
    cache could not link), and ``.no_exist/<revision>/<file>`` markers. A link anywhere else,
    or one that does not end in this folder's ``blobs/``, is refused.
    """
    parts = entry.path[len(root) + 1:].split("/")
    where = parts[0]
    if where not in HUB_SUBFOLDERS:
        return f"not part of a hub cache folder (expected one of {', '.join(HUB_SUBFOLDERS)})"
    if where == "blobs" and len(parts) != 2:
        return "blobs/ holds files directly, no folders"
    if where in ("snapshots", ".no_exist") and len(parts) < 3:
        return f"{where}/ holds one folder per revision"
    if entry.target is None:
        return None
    if where != "snapshots":
        return f"a symlink in {where}/; only snapshots/ links to blobs/"
    resolved = resolve_within(entry.path, root, links)
    if resolved is None or resolved.rsplit("/", 1)[0] != f"{root}/blobs":
        return f"symlink {entry.target!r} does not lead to a file in {root}/blobs"
    if resolved not in paths:
        return f"symlink {entry.target!r} leads to a blob the bundle does not have"
    return None


def _same_as_problems(entry: FileEntry, manifest: Manifest) -> list[str]:
    """A shared-content entry must point back at an earlier plain file with the same bytes:
    the archive stores that file and a tar hard link to it."""
    source = manifest.file(entry.same_as or "")
    if source is None or source.is_symlink or source.same_as or source.from_base:
        return [f"{entry.path}: same_as {entry.same_as!r} is not a stored file of the bundle"]
    if not source.path < entry.path:
        return [f"{entry.path}: same_as {entry.same_as!r} must come earlier in the bundle"]
    if (source.size, source.sha256) != (entry.size, entry.sha256):
        return [f"{entry.path}: same_as {entry.same_as!r} has a different size or sha256"]
    return []


def _parents(path: str) -> Sequence[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
