"""``fetch -- CMD`` for programs that load from the Hugging Face hub and AI Studio.

The recorder notes what ``hf_hub_download`` / ``aistudio_hub_download`` (and the cache look-up
before them) hand PaddleNLP; the plan turns those paths into ``hf:org/name`` and
``aistudio:org/name`` models of their caches' ``models--org--name`` folders; the proof
installs them into scratch caches and runs the program offline there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bundler.errors import BundleError
from bundler.fetch import ChildReport, UsedFile, plan_from_report
from tests.conftest import AUDIT_RECORDER, ROOT, have_unshare, script_result
from tests.test_sources import AIS_ID, FILES, HF_ID, REV, make_hub_model, sha


def _env(base: Path) -> dict[str, str]:
    return {"HF_HOME": str(base / "hf"), "AISTUDIO_HUB_CACHE": str(base / "aistudio")}


def _report(files: list[UsedFile], absent: dict[str, tuple[str, ...]]) -> ChildReport:
    return ChildReport(endpoint="", paddlenlp="", paddle="", files=tuple(files),
                       absent=absent, error=None)


# -- the report -> plan mapping, without Paddle ----------------------------------------------
def test_plan_maps_hub_paths_to_hub_models_with_their_absent_names(tmp_path: Path) -> None:
    env = _env(tmp_path)
    hf_cache, ais_cache = tmp_path / "hf" / "hub", tmp_path / "aistudio"
    hf = make_hub_model(hf_cache, "Org/m", FILES)
    ais = make_hub_model(ais_cache, "Org/e", FILES, revision="master", branch="master")
    (hf / "refs" / "other").write_text("b" * 40)  # a branch of a revision not used
    home = tmp_path / "home"
    community = home / "models" / "Org" / "c" / "config.json"
    community.parent.mkdir(parents=True)
    community.write_text("{}")
    hf_root, ais_root = "hf/models--Org--m", "aistudio/models--Org--e"
    report = _report([
        UsedFile(str(hf / "snapshots" / REV / "config.json"), hf_root, "downloaded", "hf"),
        UsedFile(str(hf / "snapshots" / REV / "sub" / "tokenizer_config.json"), hf_root,
                 "cached", "hf"),
        UsedFile(str(ais / "snapshots" / "master" / "vocab.txt"), ais_root, "downloaded",
                 "aistudio"),
        UsedFile(str(community), "models/Org/c", "downloaded")],
        # a name the snapshot has is not absent, whatever a probe said earlier
        {hf_root: ("added_tokens.json", "config.json"), ais_root: ("model.safetensors",),
         "models/tiny-hf/unused": ("tokenizer_config.json",)})
    models, files = plan_from_report(home, report, [], command=True, env=env)
    by_id = {m.id: m for m in models}
    assert sorted(by_id) == ["Org/c", "aistudio:Org/e", "hf:Org/m"]
    assert (by_id["hf:Org/m"].kind, by_id["hf:Org/m"].root) == ("hf", hf_root)
    assert by_id["hf:Org/m"].absent_upstream == ("added_tokens.json",)
    assert (by_id["aistudio:Org/e"].kind, by_id["aistudio:Org/e"].root) == ("aistudio", ais_root)
    assert by_id["aistudio:Org/e"].absent_upstream == ("model.safetensors",)
    arcs = sorted(f.arcname for f in files)
    assert arcs == sorted([
        "models/Org/c/config.json",
        f"{hf_root}/snapshots/{REV}/config.json",
        f"{hf_root}/snapshots/{REV}/sub/tokenizer_config.json",
        f"{hf_root}/blobs/{sha(FILES['config.json'])}",
        f"{hf_root}/blobs/{sha(FILES['sub/tokenizer_config.json'])}", f"{hf_root}/refs/main",
        f"{ais_root}/snapshots/master/vocab.txt",
        f"{ais_root}/blobs/{sha(FILES['vocab.txt'])}", f"{ais_root}/refs/master"])
    links = {f.arcname: f.target for f in files if f.target is not None}
    assert links[f"{hf_root}/snapshots/{REV}/config.json"] == \
        f"../../blobs/{sha(FILES['config.json'])}"


def test_plan_refuses_a_hub_path_outside_the_commands_caches(tmp_path: Path) -> None:
    """A load with cache_dir=... elsewhere: offline the program would look there, where
    install cannot put it; nothing is packed and the message names the path."""
    other = make_hub_model(tmp_path / "elsewhere", "Org/m", FILES)
    path = other / "snapshots" / REV / "config.json"
    report = _report([UsedFile(str(path), "hf/models--Org--m", "downloaded", "hf")], {})
    with pytest.raises(BundleError, match="neither hub cache") as info:
        plan_from_report(tmp_path / "home", report, [], command=True, env=_env(tmp_path))
    assert str(path) in info.value.message


# -- end to end: a program loading from both hubs --------------------------------------------
APP = AUDIT_RECORDER + """
    import os
    from paddlenlp.transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    import paddle
    tok = AutoTokenizer.from_pretrained(HF_ID, from_hf_hub=True)
    lm = AutoModelForCausalLM.from_pretrained(HF_ID, from_hf_hub=True)
    lm.eval()
    ids, _ = lm.generate(input_ids=tok("def add(a, b):", return_tensors="pd")["input_ids"],
                         max_new_tokens=4, decode_strategy="greedy_search")
    RESULT["hf"] = ids[0].numpy().tolist()
    tok = AutoTokenizer.from_pretrained(AIS_ID, from_aistudio=True)
    enc = AutoModel.from_pretrained(AIS_ID, from_aistudio=True)
    enc.eval()
    with paddle.no_grad():
        out = enc(**tok("hello paddle", return_tensors="pd"))[0]
    RESULT["aistudio"] = [list(out.shape), round(float(out.sum()), 4)]
    RESULT["net"] = NET
    print("RESULT " + json.dumps(RESULT))
"""


@pytest.mark.paddle
@pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here")
def test_fetch_command_captures_hub_loads_proves_and_runs_them_offline(tmp_path: Path) -> None:
    from tools import hubs

    built = tmp_path / "built"
    for kind, out in (("codegen", built / "codegen"), ("ernie-sharded", built / "ernie")):
        subprocess.run([sys.executable, "tools/tiny_models.py", kind, str(out)], cwd=ROOT,
                       check=True, capture_output=True)
    served = tmp_path / "served"
    hubs.place(served, "hf", HF_ID, built / "codegen")
    hubs.place(served, "aistudio", AIS_ID, built / "ernie")
    work = tmp_path / "work"
    work.mkdir()
    (work / "app.py").write_text(f"HF_ID, AIS_ID = {HF_ID!r}, {AIS_ID!r}\n"
                                 + textwrap.dedent(APP))
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGINGFACE_", "AISTUDIO_", "PPNLP_",
                                  "PADDLE_BUNDLE_"))}
    clean.pop("XDG_CACHE_HOME", None)
    online = tmp_path / "online"
    bundle = tmp_path / "app.tar.zst"
    with hubs.start(served) as hub:
        env = {**clean, **hub.env(), "PPNLP_HOME": str(online / "home"), **_env(online),
               # the community look-ups PaddleNLP makes on the side answer 404, as BOS does
               "PPNLP_ENDPOINT": hub.base_url + "/bos"}
        proc = subprocess.run([sys.executable, "-m", "bundler", "fetch", "-o", str(bundle),
                               "--", sys.executable, "app.py"], env=env, cwd=work,
                              capture_output=True, text=True)
        seen = hub.requests()
    assert proc.returncode == 0, proc.stderr[-4000:]
    want = script_result(proc)  # the command's own output passes through
    assert want["net"], "the online run must have used the network (the stand-ins)"
    assert any(r.path.startswith(f"/hf/{HF_ID}/resolve/") and r.method == "GET"
               for r in seen), seen
    assert any(r.path.startswith(f"/aistudio/api/v1/repos/{AIS_ID}/media/") for r in seen), seen

    show = subprocess.run([sys.executable, "-m", "bundler", "inspect", "--json", str(bundle)],
                          env=clean, capture_output=True, text=True, cwd=ROOT)
    assert show.returncode == 0, show.stderr
    manifest = json.loads(show.stdout)
    manifest = manifest.get("manifest", manifest)
    proof = manifest["origin"]["proof"]
    assert proof["command"] == [sys.executable, "app.py"]
    assert proof["isolation"] == "network namespace"
    models = {m["id"]: m for m in manifest["models"]}
    hf_ref, ais_ref = f"hf:{HF_ID}", f"aistudio:{AIS_ID}"
    assert models[hf_ref]["kind"] == "hf" and models[ais_ref]["kind"] == "aistudio"
    assert all(m["kind"] in ("hf", "aistudio") for m in models.values()), models
    paths = {f["path"] for f in manifest["files"]}
    hf_root = models[hf_ref]["root"]
    assert f"{hf_root}/refs/main" in paths
    assert any(p.startswith(f"{hf_root}/snapshots/") and p.endswith("/config.json")
               for p in paths)
    assert any(p.startswith(f"{hf_root}/blobs/") for p in paths)
    shards = [p for p in paths if p.startswith(models[ais_ref]["root"] + "/snapshots/")
              and (".pdparams" in p or ".safetensors" in p)]
    assert shards, sorted(paths)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for ref in (hf_ref, ais_ref):  # what the hub answered 404 for is recorded, never bundled
        snaps = {p.split("/snapshots/", 1)[1].split("/", 1)[1] for p in paths
                 if p.startswith(models[ref]["root"] + "/snapshots/")}
        assert not set(models[ref]["absent_upstream"]) & snaps, (models[ref], sorted(snaps))
    assert models[hf_ref]["absent_upstream"], models[hf_ref]

    # a fresh machine: fresh home and caches, no network at all
    offline = tmp_path / "offline"
    target = {**clean, "PPNLP_HOME": str(offline / "home"), **_env(offline)}
    got = subprocess.run([sys.executable, "-m", "bundler", "install", str(bundle), "-q"],
                         env=target, capture_output=True, text=True, cwd=ROOT)
    assert got.returncode == 0, got.stderr
    assert (offline / "hf" / "hub" / hf_root.split("/", 1)[1] / "refs" / "main").is_file()
    assert (offline / "aistudio" / models[ais_ref]["root"].split("/", 1)[1]).is_dir()
    run = subprocess.run(["unshare", "-n", sys.executable, "app.py"],
                         env={**target, "PADDLE_BUNDLE_OFFLINE": "1"}, cwd=work,
                         capture_output=True, text=True)
    result = script_result(run)
    assert result["net"] == []
    assert result["hf"] == want["hf"]
    assert result["aistudio"] == want["aistudio"]
