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
        # again, over the filled caches: cache hits are bundled just the same
        again = subprocess.run([sys.executable, "-m", "bundler", "fetch", "-o",
                                str(tmp_path / "again.tar.zst"), "--", sys.executable,
                                "app.py"], env=env, cwd=work, capture_output=True, text=True)
        seen_again = hub.requests()[len(seen):]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert again.returncode == 0, again.stderr[-4000:]
    assert not [r for r in seen_again if r.method == "GET" and (
        "/resolve/" in r.path or "/media/" in r.path)], seen_again
    want = script_result(proc)  # the command's own output passes through
    assert want["net"], "the online run must have used the network (the stand-ins)"
    assert any(r.path.startswith(f"/hf/{HF_ID}/resolve/") and r.method == "GET"
               for r in seen), seen
    assert any(r.path.startswith(f"/aistudio/api/v1/repos/{AIS_ID}/media/") for r in seen), seen

    show = subprocess.run([sys.executable, "-m", "bundler", "inspect", "--json", str(bundle)],
                          env=clean, capture_output=True, text=True, cwd=ROOT)
    assert show.returncode == 0, show.stderr
    manifest = json.loads(show.stdout)
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
    show = subprocess.run([sys.executable, "-m", "bundler", "inspect", "--json",
                           str(tmp_path / "again.tar.zst")], env=clean, capture_output=True,
                          text=True, cwd=ROOT)
    cached = json.loads(show.stdout)
    assert sorted((f["path"], f.get("sha256")) for f in cached["files"]) == \
        sorted((f["path"], f.get("sha256")) for f in manifest["files"])
    # the same models; absent names only where the run probed (over a filled cache
    # PaddleNLP finds model_state.pdparams before it asks the hub for model.safetensors)
    assert [(m["id"], m["kind"], m["root"]) for m in cached["models"]] == \
        [(m["id"], m["kind"], m["root"]) for m in manifest["models"]]
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


# -- the recorder's hub wrappers, on stand-in modules (no Paddle) ----------------------------
class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class EntryNotFoundError(Exception):
    def __init__(self, status: int | None = 404) -> None:
        super().__init__(f"{status} Client Error. Entry Not Found")
        self.response = _Response(status) if status is not None else None


class RepositoryNotFoundError(Exception):  # huggingface_hub's name for a 401, too
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Client Error. Repository Not Found")
        self.response = _Response(status)


class HfHubHTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Server Error")
        self.response = _Response(status)


class ConnectionError(OSError):  # noqa: A001 - the name requests gives it
    pass


def _stand_in_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       answers: dict[str, BaseException | None]) -> tuple[object, Path]:
    """``paddlenlp.utils.download`` as the recorder sees it: the hub probes call the metadata
    functions through their modules and turn every error into False, as the real ones do;
    ``answers[filename]`` is what the metadata call raises (None: the file is there)."""
    import types

    hf_api = types.ModuleType("huggingface_hub.hf_api")
    amod = types.ModuleType("paddlenlp.utils.download.aistudio_hub_download")
    bmod = types.ModuleType("paddlenlp.utils.download.bos_download")

    def metadata(url: str, **kwargs: object) -> object:
        exc = answers.get(url.rsplit("/", 1)[-1])
        if exc is not None:
            raise exc
        return object()

    hf_api.get_hf_file_metadata = metadata  # type: ignore[attr-defined]
    amod.get_aistudio_file_metadata = metadata  # type: ignore[attr-defined]
    for name in ("get_bos_file_metadata", "http_get"):
        setattr(bmod, name, lambda *a, **k: None)
    bmod.ENDPOINT = bmod.ENDPOINT_v2 = "http://bos"  # type: ignore[attr-defined]
    bmod.bos_url = lambda repo_id, filename, **kw: f"http://bos/{repo_id}/{filename}"  # type: ignore[attr-defined]
    for module in (hf_api, amod, bmod):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    cache = tmp_path / "hf" / "hub" / "models--Org--m" / "snapshots" / REV
    cache.mkdir(parents=True)

    def file_exist(repo_id: str, filename: str, **kwargs: object) -> bool:
        probe = (sys.modules[amod.__name__].get_aistudio_file_metadata
                 if kwargs.get("from_aistudio")
                 else sys.modules[hf_api.__name__].get_hf_file_metadata)
        try:
            probe(f"http://hub/{repo_id}/{filename}")
        except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError):
            return False
        return True

    def hub_download(repo_id: str, filename: str, **kwargs: object) -> str:
        exc = answers.get(filename)
        if exc is not None:
            raise exc
        (cache / filename).write_text("x")
        return str(cache / filename)

    no_exist = object()  # huggingface_hub's _CACHED_NO_EXIST

    def try_cache(repo_id: str, filename: str, *args: object) -> object:
        if filename == "cached.json":
            (cache / filename).write_text("x")
            return str(cache / filename)
        return no_exist if filename == "remembered.json" else None

    dl = types.SimpleNamespace(
        bos_download=lambda *a, **k: None, bos_aistudio_hf_file_exist=file_exist,
        bos_aistudio_hf_try_to_load_from_cache=try_cache,
        hf_hub_download=hub_download, aistudio_hub_download=hub_download)
    return dl, cache


@pytest.mark.parametrize("kind", ["hf", "aistudio"])
def test_recorder_hub_404_is_absent_other_answers_fail_and_downloads_are_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    from bundler.capture.recorder import Recorder, patch_download

    answers: dict[str, BaseException | None] = {
        "config.json": None, "added_tokens.json": EntryNotFoundError(404),
        "gone.json": EntryNotFoundError(None),  # AI Studio's client drops the response
        "private.json": RepositoryNotFoundError(401), "busy.json": HfHubHTTPError(503),
        "cut.json": ConnectionError("Connection refused")}
    dl, cache = _stand_in_download(tmp_path, monkeypatch, answers)
    rec = Recorder(str(tmp_path / "home"))
    patch_download(rec, dl)
    flag = {"from_aistudio": True} if kind == "aistudio" else {"from_hf_hub": True}
    root = f"{kind}/models--Org--m"
    exist = dl.bos_aistudio_hf_file_exist  # type: ignore[attr-defined]
    assert exist("Org/m", "config.json", **flag) is True
    assert exist("Org/m", "added_tokens.json", **flag) is False
    assert exist("Org/m", "gone.json", **flag) is False
    assert rec.absent == {root: {"added_tokens.json", "gone.json"}} and not rec.failures
    for name, why in (("private.json", "401"), ("busy.json", "503")):
        assert exist("Org/m", name, **flag) is False
        assert rec.failures[-1]["kind"] == "http" and why in rec.failures[-1]["message"]
        assert name not in rec.absent[root]
    download = dl.hf_hub_download if kind == "hf" else dl.aistudio_hub_download  # type: ignore[attr-defined]
    path = download(repo_id="Org/m", filename="config.json", subfolder="")
    assert rec.files[path] == {"root": root, "how": "downloaded", "kind": kind,
                               "url": rec.files[path]["url"]}
    # the cache look-up resolve_file_path makes first, positionally, as PaddleNLP calls it
    look = dl.bos_aistudio_hf_try_to_load_from_cache  # type: ignore[attr-defined]
    hit = look("Org/m", "cached.json", None, "", None, None, True, kind == "aistudio",
               kind == "hf")
    assert rec.files[hit]["how"] == "cached" and rec.files[hit]["kind"] == kind
    assert rec.files[hit]["root"] == root
    look("Org/m", "remembered.json", None, "", None, None, True, kind == "aistudio",
         kind == "hf")
    assert "remembered.json" in rec.absent[root]
    with pytest.raises(ConnectionError):
        download(repo_id="Org/m", filename="cut.json", subfolder="")
    assert rec.failures[-1]["kind"] == "network"
    assert rec.failures[-1]["message"] == "connection refused"


def test_the_proof_installs_hub_models_into_its_scratch_caches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof installs in this process: hub models must land in the scratch caches the
    offline run reads, not in the user's own caches, and the user's variables come back."""
    from bundler.capture.prove import run_offline
    from bundler.cli import _main

    online = tmp_path / "online"
    for name, value in _env(online).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    make_hub_model(online / "hf" / "hub", "Org/m", FILES)
    make_hub_model(online / "aistudio", "Org/e", FILES, revision="master", branch="master")
    bundle = tmp_path / "b.tar.zst"
    assert _main(["pack", "hf:Org/m", "aistudio:Org/e", "-o", str(bundle),
                  "--home", str(online / "home"), "-q"]) == 0
    user = tmp_path / "user"  # the proof's user: caches of their own, without these models
    for name, value in _env(user).items():
        monkeypatch.setenv(name, value)
    check = textwrap.dedent("""
        import os, sys
        hf = os.path.join(os.environ["HF_HOME"], "hub", "models--Org--m", "snapshots",
                          sys.argv[1], "config.json")
        ais = os.path.join(os.environ["AISTUDIO_HUB_CACHE"], "models--Org--e", "snapshots",
                           "master", "vocab.txt")
        sys.exit(0 if open(hf, "rb").read() == sys.argv[2].encode()
                 and os.path.isfile(ais) else 1)
    """)
    outcome = run_offline(bundle, [sys.executable, "-c", check, REV,
                                   FILES["config.json"].decode()], scratch_parent=tmp_path)
    assert outcome.returncode == 0, outcome.tail
    assert not (user / "hf").exists() and not (user / "aistudio").exists()
    assert os.environ["HF_HOME"] == str(user / "hf")
    assert os.environ["AISTUDIO_HUB_CACHE"] == str(user / "aistudio")
