"""The wheel folder for the offline machine (bundler.wheels): targets, requirements.txt, the
sidecar lines and verify, the pip command install prints; and, marked slow, real resolves
against PyPI for another Python, for aarch64, and the refusal of a set with no wheels."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from bundler import wheels
from bundler.cli import _main
from bundler.errors import UsageError, WheelsUnavailableError
from bundler.wheels import Target


# -- targets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("python", "platform", "want"), [
    pytest.param("3.10", "x86_64", "manylinux_2_28_x86_64", id="alias-x86_64"),
    pytest.param("3.12", "aarch64", "manylinux_2_28_aarch64", id="alias-aarch64"),
    pytest.param("3.11", "manylinux_2_17_x86_64", "manylinux_2_17_x86_64", id="full-tag"),
])
def test_target_platform_names(python: str, platform: str, want: str) -> None:
    target = Target.parse(python, platform)
    assert target.platform == want
    args = target.pip_args()
    assert args[args.index("--python-version") + 1] == python
    assert f"cp{python.replace('.', '')}" in args and "--only-binary=:all:" in args


def test_platform_tags_cover_older_manylinux_and_legacy_aliases() -> None:
    # paddlepaddle 3.3.1 is tagged manylinux1_x86_64: pip does not expand manylinux_2_28 to it
    x86 = Target.parse("3.11", "x86_64").platform_tags()
    assert x86[0] == "manylinux_2_28_x86_64" and "manylinux_2_5_x86_64" in x86
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(x86)
    assert "manylinux_2_29_x86_64" not in x86
    arm = Target.parse("3.11", "aarch64").platform_tags()
    assert "manylinux2014_aarch64" in arm and not any("x86_64" in t for t in arm)
    assert not any("manylinux1" in t or "manylinux2010" in t for t in arm)
    old = Target.parse("3.11", "manylinux_2_12_x86_64").platform_tags()
    assert "manylinux2014_x86_64" not in old and "manylinux2010_x86_64" in old


@pytest.mark.parametrize(("kwargs", "words"), [
    pytest.param({"python": "2.7"}, "--target-python 2.7", id="python"),
    pytest.param({"platform_name": "win_amd64"}, "--target-platform win_amd64", id="platform"),
    pytest.param({"platform_name": "manylinux_2_28_ppc64le"}, "ppc64le", id="arch"),
    pytest.param({"platform_name": "manylinux_2_4_x86_64"}, "N >= 5", id="glibc-2.4"),
    pytest.param({"platform_name": "manylinux_2_028_x86_64"}, "_2_028_", id="leading-zero"),
    pytest.param({"platform_name": "manylinux_02_28_x86_64"}, "_02_28_", id="leading-zero-2"),
    pytest.param({"paddle": "tpu"}, "--paddle tpu", id="paddle"),
    pytest.param({"paddle_version": "3.2; rm"}, "--paddle-version", id="version"),
])
def test_bad_targets_are_usage_errors(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        Target.parse(**kwargs)


def test_a_default_target_that_does_not_fit_names_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No --target-platform given on an arm64 Mac-style machine: the message must not claim
    the user passed one."""
    monkeypatch.setattr(wheels.platform, "machine", lambda: "arm64")
    with pytest.raises(UsageError, match="^this machine's architecture arm64 is not"):
        Target.parse("3.11")


def test_cli_refuses_a_bad_target_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "py"
    assert _main(["python", "-o", str(out), "--target-python", "3.7"]) == 2
    assert not out.exists()


def test_the_set_is_the_extra_of_paddle_bundle_s_own_metadata() -> None:
    reqs = Target.parse("3.11", "x86_64").requirements(Path("pb.whl"))
    assert reqs[0] == "pb.whl"
    assert "paddlepaddle==3.3.1" in reqs and "paddlenlp==3.0.0b4" in reqs and "numpy<2" in reqs
    other = Target.parse("3.11", "aarch64", paddle_version="3.2.2").requirements(Path("x"))
    assert "paddlepaddle==3.2.2" in other and "paddlepaddle==3.3.1" not in other
    gpu = Target.parse("3.11", "x86_64", "gpu").requirements(Path("x"))
    assert any(r.startswith("paddlepaddle-gpu") for r in gpu)


# -- requirements.txt and the sidecar ------------------------------------------------------------
def fake_wheel(folder: Path, name: str, version: str, payload: bytes = b"x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", payload)
    return path


def test_requirements_pin_every_wheel_by_version_and_sha256(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    a = fake_wheel(folder, "paddle_bundle", "0.1.0")
    b = fake_wheel(folder, "Jinja2", "3.1.6")
    result = wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))
    text = (folder / "requirements.txt").read_text()
    for path, pin in ((a, "paddle-bundle==0.1.0"), (b, "jinja2==3.1.6")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{pin} \\\n    --hash=sha256:{digest}" in text
    assert {w.name for w in result.wheels} == {"paddle-bundle", "jinja2"}
    assert wheels.INSTALL_COMMAND.format(folder="<this folder>") in text


@pytest.mark.parametrize("name", [
    "evil-1.0 ;python_version<'3'-py3-none-any.whl",
    "evil-1.0\nhttp:x.whl#egg=x-py3-none-any.whl",
    "evil-1.0-py3-none-any.whl.txt",
])
def test_a_file_name_that_is_not_a_wheel_name_never_reaches_requirements(
        tmp_path: Path, name: str) -> None:
    """The name and version go into requirements.txt: an index serving a file named with a
    marker or a line break must not add a line pip would read."""
    folder = tmp_path / "w"
    fake_wheel(folder, "click", "8.1.7")
    (folder / name).write_bytes(b"x")
    with pytest.raises(Exception, match="is not a wheel"):
        wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))
    assert not (folder / "requirements.txt").exists()


def test_two_versions_of_one_package_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    fake_wheel(folder, "numpy", "1.26.4")
    fake_wheel(folder, "numpy", "1.26.3")
    with pytest.raises(Exception, match="several wheels of numpy"):
        wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))


@pytest.fixture
def bundle_with_folder(bundle: Path) -> Path:
    folder = wheels.folder_for(bundle)
    fake_wheel(folder, "paddle_bundle", "0.1.0")
    fake_wheel(folder, "click", "8.1.7")
    wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))
    wheels.add_to_sidecar(bundle, folder)
    return bundle


def test_sidecar_lists_the_folder_and_sha256sum_checks_it(bundle_with_folder: Path) -> None:
    sidecar = bundle_with_folder.with_name(bundle_with_folder.name + ".sha256").read_text()
    assert f"  {bundle_with_folder.name}.python/requirements.txt\n" in sidecar
    assert f"  {bundle_with_folder.name}.python/click-8.1.7-py3-none-any.whl\n" in sidecar
    assert sidecar.splitlines()[0].endswith(f"  {bundle_with_folder.name}")
    proc = subprocess.run(["sha256sum", "-c", "--strict", bundle_with_folder.name + ".sha256"],
                          cwd=bundle_with_folder.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for quick in ([], ["--quick"]):
        assert _main(["verify", str(bundle_with_folder), "-q", *quick]) == 0
    # adding again replaces the lines instead of listing files twice
    wheels.add_to_sidecar(bundle_with_folder, wheels.folder_for(bundle_with_folder))
    again = bundle_with_folder.with_name(bundle_with_folder.name + ".sha256").read_text()
    assert again == sidecar


@pytest.mark.parametrize("damage", ["tamper", "remove", "add"])
def test_verify_fails_for_a_changed_wheel_folder(bundle_with_folder: Path, damage: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = wheels.folder_for(bundle_with_folder)
    wheel = folder / "click-8.1.7-py3-none-any.whl"
    if damage == "tamper":
        data = bytearray(wheel.read_bytes())
        data[10] ^= 1
        wheel.write_bytes(bytes(data))
    elif damage == "remove":
        wheel.unlink()
    else:
        wheel = fake_wheel(folder, "evil", "1.0")
    for quick in ([], ["--quick"]):
        assert _main(["verify", str(bundle_with_folder), *quick]) == 3
        assert str(wheel) in capsys.readouterr().err


@pytest.mark.parametrize("folder_kind", ["wheels", "empty"])
def test_verify_fails_for_a_wheel_folder_the_sidecar_does_not_list(
        bundle: Path, capsys: pytest.CaptureFixture[str], folder_kind: str) -> None:
    """OUT.python/ dropped beside a (signed) bundle fetched without --python, or left from an
    older bundle of that name: verify must not pass it in silence."""
    folder = wheels.folder_for(bundle)
    folder.mkdir()
    if folder_kind == "wheels":
        fake_wheel(folder, "evil", "1.0")
        wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))
    for quick in ([], ["--quick"]):
        assert _main(["verify", str(bundle), *quick]) == 3
        assert "none of its files is in the bundle's .sha256 file" in capsys.readouterr().err
    folder.rename(bundle.with_name("elsewhere"))
    assert _main(["verify", str(bundle), "-q"]) == 0
    # copied without its .sha256 file: nothing vouches for the folder either
    bundle.with_name("elsewhere").rename(folder)
    bundle.with_name(bundle.name + ".sha256").unlink()
    assert _main(["verify", str(bundle)]) == 3
    assert "none of its files is in the bundle's .sha256 file" in capsys.readouterr().err


def test_verify_reads_no_file_outside_the_folder_through_a_symlink(
        bundle_with_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wheel swapped for a symlink to a file elsewhere (here with the same bytes, so its
    sha256 matches): a problem, and the target is not what verify vouches for."""
    folder = wheels.folder_for(bundle_with_folder)
    wheel = folder / "click-8.1.7-py3-none-any.whl"
    elsewhere = tmp_path / "elsewhere.whl"
    elsewhere.write_bytes(wheel.read_bytes())
    wheel.unlink()
    wheel.symlink_to(elsewhere)
    assert _main(["verify", str(bundle_with_folder), "--quick"]) == 3
    assert f"{wheel}: a symbolic link" in capsys.readouterr().err


# -- the pip command after install -------------------------------------------------------------
@pytest.mark.parametrize(("have", "proven", "advice"), [
    pytest.param(None, "3.0.0b4", "PaddleNLP is not installed", id="missing"),
    pytest.param("2.8.1", "3.0.0b4", "has PaddleNLP 2.8.1, the bundle was proven with 3.0.0b4",
                 id="other-version"),
    pytest.param("3.0.0b4", "3.0.0b4", None, id="same-version"),
])
def test_install_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, have: str | None,
                        proven: str, advice: str | None) -> None:
    bundle = tmp_path / "b.tar.zst"
    monkeypatch.setattr(wheels, "installed_version", lambda dist: have)
    assert wheels.install_advice(bundle, proven, {}) is None  # no folder: nothing to offer
    fake_wheel(wheels.folder_for(bundle), "click", "8.1.7")
    wheels.write_requirements(wheels.folder_for(bundle), Target.parse("3.11", "x86_64"))
    listed = dict(wheels.sidecar_entries(wheels.folder_for(bundle), bundle))
    text = wheels.install_advice(bundle, proven, listed)
    if advice is None:
        assert text is None
    else:
        assert text is not None and advice in text
        assert text.endswith(wheels.install_command(wheels.folder_for(bundle)))


def test_install_prints_the_pip_command_when_paddlenlp_differs(
        bundle_with_folder: Path, offline_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(wheels, "installed_version", lambda dist: None)
    assert _main(["install", str(bundle_with_folder), "--home", str(offline_home)]) == 0
    out = capsys.readouterr().out
    assert wheels.install_command(wheels.folder_for(bundle_with_folder)) in out


@pytest.mark.parametrize("how", ["unlisted", "edited"])
def test_install_does_not_recommend_a_folder_the_sidecar_does_not_cover(
        bundle_with_folder: Path, offline_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], how: str) -> None:
    """A wheel folder dropped beside a bundle (or left from an older bundle of that name), or
    a requirements.txt edited to pin other wheels: install names it and prints no pip
    command (pip would install whatever that requirements.txt pins)."""
    folder = wheels.folder_for(bundle_with_folder)
    sidecar = bundle_with_folder.with_name(bundle_with_folder.name + ".sha256")
    if how == "unlisted":
        sidecar.write_bytes(b"".join(line for line in sidecar.read_bytes().splitlines(True)
                                     if b".python/" not in line))
    else:
        fake_wheel(folder, "evil", "1.0")
        wheels.write_requirements(folder, Target.parse("3.11", "x86_64"))
    monkeypatch.setattr(wheels, "installed_version", lambda dist: None)
    assert _main(["install", str(bundle_with_folder), "--home", str(offline_home)]) == 0
    out = capsys.readouterr().out
    assert "pip install" not in out
    assert f"{folder} is beside the bundle, but the bundle's .sha256 file" in out


def test_the_pip_command_is_quoted_for_a_shell(tmp_path: Path) -> None:
    import shlex

    folder = tmp_path / "My Stick" / "app;rm -rf ~.tar.zst.python"
    words = shlex.split(wheels.install_command(folder))
    assert words[-3:] == [str(folder), "-r", f"{folder}/requirements.txt"]


# -- real resolves against PyPI (slow: pip reads the index) ------------------------------------
@pytest.fixture(scope="module")
def self_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheels.build_self_wheel(tmp_path_factory.mktemp("self"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pure wheels built from source-only packages (jieba), shared by the resolves."""
    return tmp_path_factory.mktemp("built")


@pytest.mark.slow
@pytest.mark.parametrize(("python", "platform", "paddle_version"), [
    pytest.param("3.12", "x86_64", None, id="py312-x86_64"),
    # paddlepaddle 3.3.1 has no Linux aarch64 wheels; 3.2.2 is the newest that has
    pytest.param("3.10", "aarch64", "3.2.2", id="py310-aarch64"),
])
def test_resolve_for_another_target(python: str, platform: str, paddle_version: str | None,
                                    self_wheel: Path, built: Path) -> None:
    target = Target.parse(python, platform, paddle_version=paddle_version)
    resolution = wheels.resolve(target, self_wheel=self_wheel, built=built)
    pkgs = resolution.packages
    assert pkgs["paddle-bundle"] == "0.1.0"
    assert pkgs["paddlepaddle"] == (paddle_version or "3.3.1")
    assert pkgs["paddlenlp"] == "3.0.0b4" and pkgs["numpy"].startswith("1.")
    assert {"click", "zstandard", "tqdm", "jieba", "datasets", "pyarrow"} <= set(pkgs)
    nodot = python.replace(".", "")
    arch = platform
    paddle_url = next(u for u in resolution.urls if "/paddlepaddle-" in u)
    assert f"-cp{nodot}-cp{nodot}-" in paddle_url and arch in paddle_url
    for url in resolution.urls:
        name = url.rsplit("/", 1)[-1]
        assert name.endswith(".whl"), url
        assert name.endswith(("-none-any.whl", f"_{arch}.whl")), url
        other = "aarch64" if arch == "x86_64" else "x86_64"
        assert other not in name, url


@pytest.mark.slow
@pytest.mark.parametrize(("python", "platform", "why"), [
    pytest.param("3.14", "x86_64", "(from versions: none)", id="py314"),  # cp39..cp313 only
    pytest.param("3.11", "aarch64", "3.2.2", id="aarch64"),  # no Linux aarch64 wheels
])
def test_a_set_with_no_wheels_is_refused_naming_what_is_missing(
        python: str, platform: str, why: str, tmp_path: Path) -> None:
    """The command: exit 1, one line naming the requirement and what exists, nothing
    written."""
    out = tmp_path / "py"
    proc = subprocess.run([sys.executable, "-m", "bundler", "python", "-o", str(out),
                           "--target-python", python, "--target-platform", platform],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"no wheel of paddlepaddle==3.3.1 for Python {python}" in message
    assert why in message  # pip's own list of what exists (or of what Pythons it wants)
    assert not out.exists() and not out.with_name("py.partial").exists()


# -- source-only releases ------------------------------------------------------------------------
def fake_pip(tmp_path: Path, sdists: dict[str, str], pure: bool = True
             ) -> tuple[wheels.Runner, list[list[str]]]:
    """A pip that reports ``sdists`` (name -> version) as coming from source releases, and
    builds each into a wheel (pure or not); records every command."""
    import json as _json

    calls: list[list[str]] = []

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        args = list(args)
        calls.append(args)
        if "--report" in args:
            items = [{"metadata": {"name": "click", "version": "8.1.7"},
                      "download_info": {"url": "https://x/click-8.1.7-py3-none-any.whl"}}]
            items += [{"metadata": {"name": n, "version": v},
                       "download_info": {"url": f"https://x/{n}-{v}.tar.gz"}}
                      for n, v in sdists.items()]
            Path(args[args.index("--report") + 1]).write_text(_json.dumps({"install": items}))
        elif "wheel" in args:
            name, version = args[-1].split("==")
            tag = "py3-none-any" if pure else "cp311-cp311-linux_x86_64"
            dest = Path(args[args.index("--wheel-dir") + 1])
            (dest / f"{name}-{version}-{tag}.whl").write_bytes(b"w")
        return subprocess.CompletedProcess(args, 0, "", "")

    return run, calls


def test_source_only_releases_are_built_before_the_target_resolve(tmp_path: Path) -> None:
    """--only-binary would silently take seqeval 0.0.10 (a wheel) for 1.2.2 (source only),
    whose dependencies differ: the release the set resolves to here is built instead."""
    run, calls = fake_pip(tmp_path, {"seqeval": "1.2.2"})
    built = tmp_path / "built"
    wheels._build_source_only(Target.parse("3.10", "aarch64"), Path("pb.whl"), built, run)
    assert [p.name for p in built.iterdir()] == ["seqeval-1.2.2-py3-none-any.whl"]
    assert "--platform" not in calls[0]  # resolved as pip install resolves it here
    assert calls[1][-1] == "seqeval==1.2.2" and "--no-binary" in calls[1]


def test_a_source_only_release_that_compiles_is_refused(tmp_path: Path) -> None:
    run, _ = fake_pip(tmp_path, {"fastcrc": "0.1"}, pure=False)
    with pytest.raises(WheelsUnavailableError, match="fastcrc==0.1 exists only as source"):
        wheels._build_source_only(Target.parse("3.10", "aarch64"), Path("pb.whl"),
                                  tmp_path / "built", run)
    assert not (tmp_path / "built").exists() or not list((tmp_path / "built").iterdir())


def test_fetch_python_names_the_written_bundle_when_the_folder_fails(
        bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> wheels.WheelFolder:
        raise WheelsUnavailableError("no wheel of paddlepaddle==3.3.1 for Python 3.14",
                                     missing="paddlepaddle==3.3.1", hint="choose another")

    monkeypatch.setattr(wheels, "build_folder", refuse)
    with pytest.raises(WheelsUnavailableError) as info:
        wheels.attach_to_bundle(bundle, Target.parse("3.11", "x86_64"))
    text = str(info.value)
    assert text.startswith(f"{bundle} is written, but not its wheel folder")
    assert "no wheel of paddlepaddle==3.3.1" in text and "paddle-bundle python -o" in text
    assert "python" not in bundle.with_name(bundle.name + ".sha256").read_text()


def test_a_signed_sidecar_covers_the_wheel_folder(bundle_with_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """fetch --python --sign signs the sidecar after the folder's lines are in it: a trusted
    verify passes, and a wheel changed afterwards fails it (exit 3) naming the wheel."""
    from bundler.signing import sign
    from tests.test_sign import allowed_signers, keygen

    key = keygen(tmp_path, "alice")
    trust = allowed_signers(tmp_path / "allowed_signers", ("alice@site", key, ""))
    sidecar = bundle_with_folder.with_name(bundle_with_folder.name + ".sha256")
    sign(sidecar, key)
    assert _main(["verify", str(bundle_with_folder), "--trust", str(trust), "-q"]) == 0
    wheel = wheels.folder_for(bundle_with_folder) / "click-8.1.7-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"x")
    assert _main(["verify", str(bundle_with_folder), "--trust", str(trust)]) == 3
    assert str(wheel) in capsys.readouterr().err


# -- where the folder is written ------------------------------------------------------------------
def pip_writing_wheels(calls: list[list[str]]) -> wheels.Runner:
    """A pip whose ``wheel`` makes paddle-bundle's wheel and whose ``download`` writes two
    wheels into ``--dest``; its resolve reports wheels only."""
    import json as _json

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        args = list(args)
        calls.append(args)
        if "--report" in args:
            Path(args[args.index("--report") + 1]).write_text(_json.dumps({"install": []}))
        elif "wheel" in args or ("download" in args and "--no-deps" in args):
            flag = "--wheel-dir" if "--wheel-dir" in args else "--dest"
            fake_wheel(Path(args[args.index(flag) + 1]), "paddle_bundle", "0.1.0")
        elif "download" in args:
            dest = Path(args[args.index("--dest") + 1])
            fake_wheel(dest, "paddle_bundle", "0.1.0")
            fake_wheel(dest, "click", "8.1.7")
        return subprocess.CompletedProcess(args, 0, "", "")

    return run


@pytest.mark.parametrize("kind", ["project", "requirements-only", "symlink"])
def test_a_folder_that_is_not_a_wheel_folder_is_never_replaced(tmp_path: Path,
                                                               kind: str) -> None:
    """-o pointed at a project (it has a requirements.txt too) or at a symlink: refused
    before pip runs; nothing in it is removed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("flask==3.0\n")
    (project / "app.py").write_text("print('mine')\n")
    if kind == "requirements-only":
        (project / "app.py").unlink()
    dest = project
    if kind == "symlink":
        dest = tmp_path / "link"
        dest.symlink_to(project)
    calls: list[list[str]] = []
    with pytest.raises(UsageError, match="is not a wheel folder"):
        wheels.build_folder(dest, Target.parse("3.11", "x86_64"),
                            run=pip_writing_wheels(calls))
    assert calls == []
    assert (project / "requirements.txt").read_text() == "flask==3.0\n"
    assert kind == "requirements-only" or (project / "app.py").is_file()


def test_fetch_python_refuses_a_foreign_folder_before_fetching(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OUT.python is a folder of the user's: exit 2 before any download or pack, not after
    a fetch of many minutes ("bundle is written, but not its wheel folder")."""
    import bundler.fetch

    out = tmp_path / "app.tar.zst"
    mine = wheels.folder_for(out)
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")

    def fetched(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch ran")

    monkeypatch.setattr(bundler.fetch, "fetch", fetched)
    assert _main(["fetch", "-o", str(out), "--python", "--target-python", "3.11",
                  "--no-prove", "ernie-3.0-nano-zh"]) == 2
    assert (mine / "notes.txt").read_text() == "keep" and not out.exists()


def test_an_earlier_wheel_folder_is_replaced_whole_and_user_partial_is_left(
        tmp_path: Path) -> None:
    dest = tmp_path / "py"
    mine = tmp_path / "py.partial"  # a folder of the user's, not ours
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    target = Target.parse("3.11", "x86_64")
    calls: list[list[str]] = []
    wheels.build_folder(dest, target, run=pip_writing_wheels(calls))
    fake_wheel(dest, "stale", "0.9")  # a wheel from an older set
    wheels.write_requirements(dest, target)
    folder = wheels.build_folder(dest, target, run=pip_writing_wheels(calls))
    assert sorted(p.name for p in dest.iterdir()) == [
        "click-8.1.7-py3-none-any.whl", "paddle_bundle-0.1.0-py3-none-any.whl",
        "requirements.txt"]
    assert {w.name for w in folder.wheels} == {"click", "paddle-bundle"}
    assert (mine / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["py", "py.partial"]
    assert dest.stat().st_mode & 0o777 == 0o755
