"""The manifest model: schema, round trips, and the one definition of a safe path."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.errors import ManifestError
from bundler.manifest import FileEntry, Manifest, ModelEntry, Origin, root_for
from bundler.paths import symlink_escape_reason, unsafe_reason

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "manifests/bundle-manifest.schema.json").read_text())


def test_example_manifest_follows_the_schema_and_parses() -> None:
    example = json.loads((ROOT / "manifests/example.json").read_text())
    jsonschema.validate(example, SCHEMA)
    manifest = Manifest.from_dict(example)
    assert manifest.to_dict() == example


def test_packed_manifest_follows_the_schema(bundle: Path) -> None:
    from bundler.verify import inspect

    manifest, _ = inspect(bundle)
    jsonschema.validate(manifest.to_dict(), SCHEMA)


def test_schema_rejects_what_the_parser_rejects() -> None:
    example = json.loads((ROOT / "manifests/example.json").read_text())
    example["files"][0]["path"] = "models/Salesforce/../../etc/passwd"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, SCHEMA)
    with pytest.raises(ManifestError):
        Manifest.from_dict(example)


def test_all_problems_are_collected() -> None:
    raw = {"schema_version": 1, "origin": {"tool_version": "x", "created": "y"},
           "models": [{"id": "Org/m", "kind": "community", "root": "models/Org/m"}],
           "files": [{"path": "models/Org/m/a", "type": "file", "size": -1,
                      "sha256": "nothex", "mode": "0644"},
                     {"path": "models/Org/m/b", "type": "fifo", "mode": "0644"}]}
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(raw)
    text = "\n".join(info.value.problems)
    assert "files[0].size" in text and "files[0].sha256" in text and "files[1].type" in text


@pytest.mark.parametrize(("files", "needle"), [
    pytest.param(["models/Org/m/a", "models/Org/m/a"], "listed twice", id="duplicate"),
    pytest.param(["models/Org/m/a", "models/Org/m/a/b"], "lies below the file", id="under-file"),
    pytest.param(["models/Other/x"], "not inside any model folder", id="outside-model"),
    pytest.param(["models/Org/m"], "not inside any model folder", id="the-root-itself"),
])
def test_structural_problems(files: list[str], needle: str) -> None:
    raw = {"schema_version": 1, "origin": {"tool_version": "x", "created": "y"},
           "models": [{"id": "Org/m", "kind": "community", "root": "models/Org/m"}],
           "files": [{"path": p, "type": "file", "size": 0, "sha256": "0" * 64, "mode": "0644"}
                     for p in files]}
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(raw)
    assert any(needle in p for p in info.value.problems), info.value.problems


def test_file_below_a_symlink_is_refused() -> None:
    manifest = Manifest(Origin("x", "y"), (ModelEntry.for_id("Org/m"),), (
        FileEntry("models/Org/m/dir", 0, None, 0o777, "sub"),
        FileEntry("models/Org/m/dir/x", 1, "0" * 64),
        FileEntry("models/Org/m/sub/y", 1, "0" * 64)))
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(manifest.to_dict())
    assert any("lies below the symlink" in p for p in info.value.problems)


# -- properties ----------------------------------------------------------------------------
segment = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
                  min_size=1, max_size=12)
arcname = st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/".join(parts))
hexsha = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    model_id = draw(st.sampled_from(["Org/m", "plain-name", "taskflow:task/model"]))
    model = ModelEntry.for_id(model_id, draw(st.lists(segment, max_size=3)))
    rels = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=6), min_size=1,
                         max_size=8, unique=True))
    files = tuple(FileEntry(f"{model.root}/{rel}", draw(st.integers(0, 2**40)), draw(hexsha),
                            draw(st.sampled_from([0o644, 0o755]))) for rel in sorted(rels))
    origin = Origin(tool_version="0.1", created="2026-01-01T00:00:00Z",
                    user=draw(segment), command=tuple(draw(st.lists(segment, max_size=3))))
    return Manifest(origin=origin, models=(model,), files=files)


@given(manifests())
def test_manifest_json_round_trip(manifest: Manifest) -> None:
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    assert Manifest.from_json(data).to_json() == data
    jsonschema.validate(json.loads(data), SCHEMA)


@given(st.text(max_size=40))
@settings(max_examples=500)
def test_a_safe_arcname_never_leaves_the_home(name: str) -> None:
    if unsafe_reason(name) is None:
        home = "/h/home"
        joined = os.path.normpath(os.path.join(home, name))
        assert joined.startswith(home + "/")
        assert posixpath.normpath(name) == name


@given(arcname, st.text(max_size=30))
@settings(max_examples=500)
def test_a_kept_symlink_resolves_inside_its_model(rel: str, target: str) -> None:
    root = "models/Org/m"
    name = f"{root}/{rel}"
    if unsafe_reason(name) is None and symlink_escape_reason(name, target, root) is None:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        assert resolved.startswith(root + "/")


@given(st.text(max_size=30))
def test_root_for_only_gives_safe_roots(model_id: str) -> None:
    try:
        kind, root = root_for(model_id)
    except ValueError:
        return
    assert unsafe_reason(root) is None
    assert root.startswith("models/" if kind == "community" else "taskflow/")
