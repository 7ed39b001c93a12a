"""Where each file of a bundle is served: the path PaddleNLP requests, below the mirror root.

PaddleNLP's server is one BOS bucket, ``paddlenlp``, reached three ways:

* community models: ``$PPNLP_ENDPOINT/models/community/<org>/<name>/<file>`` (default endpoint
  ``https://bj.bcebos.com/paddlenlp``);
* built-in names' resources: fixed URLs ``https://bj.bcebos.com/paddlenlp/models/...`` written
  in PaddleNLP's classes (``pretrained_resource_files_map``);
* Taskflow's static files: fixed URLs ``https://paddlenlp.bj.bcebos.com/taskflow/...`` (the same
  bucket, host-style) in each task class's ``resource_files_urls``.

A mirror root holds the bucket below ``paddlenlp/``, so ``http://mirror/paddlenlp`` stands for
both spellings of the bucket, and ``PPNLP_ENDPOINT=http://mirror/paddlenlp`` serves community
models to unmodified PaddleNLP.

A bundle's manifest records where a file lives in the cache, not the URL it came from. For
community models the two are the same path; for built-in names and Taskflow folders the URL is
looked up in PaddleNLP's own registries, so publishing those needs PaddleNLP importable (the
version the clients run). Files with no URL (a built-in model's ``config.json``, which
PaddleNLP writes from its code) are not served: clients never download them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bundler._bucket import bucket_rel
from bundler.errors import UsageError
from bundler.manifest import (
    HUB_KINDS,
    KIND_BUILTIN,
    KIND_COMMUNITY,
    KIND_TASKFLOW,
    FileEntry,
    Manifest,
    ModelEntry,
)
from bundler.paths import unsafe_reason

#: The folder below the mirror root that stands for PaddleNLP's bucket.
BUCKET_DIR = "paddlenlp"

#: cache file name (relative to the model folder) -> fixed URL, for one built-in or Taskflow
#: model; injectable so that tests and hosts without PaddleNLP can publish community models.
UrlLookup = Callable[[ModelEntry], Mapping[str, str]]


@dataclass(frozen=True)
class Placement:
    """One served file: ``url_path`` below the mirror root, with the content of ``entry``."""

    url_path: str
    sha256: str
    size: int
    source: str  # the manifest path it comes from


def bucket_path(url: str) -> str | None:
    """``paddlenlp/<path in the bucket>`` for a fixed URL of PaddleNLP's bucket, else None."""
    rel = bucket_rel(url)
    # .paddle-bundle/ holds the mirror's own served list (tree.SERVED_LIST)
    if rel and not unsafe_reason(rel) and not rel.startswith(".paddle-bundle"):
        return f"{BUCKET_DIR}/{rel}"
    return None


def kind_of(model: ModelEntry) -> str:
    """The model's kind, with an unprefixed id without ``org/`` taken as a built-in name
    (community ids are always ``org/name``; pack records a built-in name as community)."""
    if model.kind == KIND_COMMUNITY and "/" not in model.id:
        return KIND_BUILTIN
    return model.kind


def place(manifest: Manifest, model: ModelEntry, lookup: UrlLookup
          ) -> tuple[list[Placement], list[str]]:
    """Where each file of ``model`` is served, and the files that are not (with why)."""
    kind = kind_of(model)
    files = manifest.files_of(model)
    skipped: list[str] = []
    if kind in HUB_KINDS:
        return [], [f"{model.id}: {kind} hub models are not served by this mirror (PaddleNLP "
                    "reads them from the hub's own endpoint)"]
    urls: Mapping[str, str] = {}
    if kind in (KIND_BUILTIN, KIND_TASKFLOW):
        urls = lookup(model)
    placements: list[Placement] = []
    for entry in files:
        content = _content(manifest, entry)
        if content is None:
            skipped.append(f"{entry.path}: a link leading out of the model; not served")
            continue
        rel = entry.path[len(model.root) + 1:]
        if kind == KIND_COMMUNITY:
            url_path = f"{BUCKET_DIR}/models/community/{model.id}/{rel}"
        else:
            url = urls.get(rel)
            path = bucket_path(url) if url else None
            if path is None:
                skipped.append(f"{entry.path}: no download URL in PaddleNLP for it (written "
                               "by PaddleNLP itself on the client); not served")
                continue
            url_path = path
        placements.append(Placement(url_path, content.sha256 or "", content.size, entry.path))
    return placements, skipped


def _content(manifest: Manifest, entry: FileEntry) -> FileEntry | None:
    """The entry whose bytes ``entry`` has: itself, or the file a symlink inside the bundle
    leads to."""
    seen = 0
    while entry.is_symlink and seen < 40:
        assert entry.target is not None
        parts = entry.path.split("/")[:-1]
        for part in entry.target.split("/"):
            if part == "..":
                if not parts:
                    return None
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        target = manifest.file("/".join(parts))
        if target is None:
            return None
        entry, seen = target, seen + 1
    return None if entry.is_symlink else entry


# -- PaddleNLP's registries ------------------------------------------------------------------
def paddlenlp_urls(model: ModelEntry) -> dict[str, str]:
    """Cache file name -> fixed URL for a built-in name or a Taskflow folder, from the
    PaddleNLP installed here."""
    try:
        if kind_of(model) == KIND_TASKFLOW:
            return _taskflow_urls(model.root.split("/", 1)[1])
        return _builtin_urls(model.id)
    except ImportError as exc:
        raise UsageError(
            f"{model.id} is a {kind_of(model)} model: its download URLs are in PaddleNLP's "
            f"code, and PaddleNLP cannot be imported here ({exc})",
            hint="publish from a Python with paddlenlp installed (pip install "
                 "'paddle-bundle[paddle]'), the version the clients run") from None


def _builtin_urls(name: str) -> dict[str, str]:
    import paddlenlp.transformers as transformers

    found: dict[str, str] = {}
    for obj in list(vars(transformers).values()):
        maps = getattr(obj, "pretrained_resource_files_map", None) if isinstance(obj, type) \
            else None
        if not isinstance(maps, dict):
            continue
        for by_name in maps.values():
            url = by_name.get(name) if isinstance(by_name, dict) else None
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                # resolve_file_path stores a .pdparams URL as model_state.pdparams
                base = url.rsplit("/", 1)[-1]
                found.setdefault("model_state.pdparams" if base.endswith("pdparams")
                                 else base, url)
    return found


def _taskflow_urls(folder: str) -> dict[str, str]:
    """``folder`` is ``<task>/<model>`` below ``$PPNLP_HOME/taskflow``."""
    from paddlenlp.taskflow.taskflow import TASKS

    task, _, model = folder.partition("/")
    classes: list[type] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "task_class" and isinstance(value, type):
                    classes.append(value)
                else:
                    walk(value)

    walk(TASKS.get(task, {}))
    found: dict[str, str] = {}
    for cls in classes:
        resources = getattr(cls, "resource_files_urls", None)
        by_key = resources.get(model) if isinstance(resources, dict) else None
        if not isinstance(by_key, dict):
            continue
        for item in by_key.values():
            url = item[0] if isinstance(item, (list, tuple)) and item else None
            if isinstance(url, str):
                found.setdefault(url.rsplit("/", 1)[-1], url)
    return found
