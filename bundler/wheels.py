"""The offline machine's software: a plain folder of wheels and a hash-pinned requirements.txt.

The far side of an air gap has Python and pip and nothing else, so a bundle can travel with
``OUT.python/``: wheels for paddle-bundle itself, the Paddle/PaddleNLP set its ``[paddle]``
(or ``[gpu]``) extra pins, and every dependency, resolved for the *offline* machine's Python
and platform, plus ``requirements.txt`` with a ``--hash`` for every wheel. One command with
nothing but pip installs it there (:data:`INSTALL_COMMAND`), in pip's hash-checking mode.

pip does all the resolving (``pip download --platform --python-version --only-binary=:all:``;
``pip install --dry-run --report`` to resolve without downloading). The one thing added here:
packages PyPI has only as source (jieba, seqeval) cannot be downloaded as wheels for another
platform, so they are built into wheels on this machine, and kept only when the result is pure
Python (``none-any``): anything compiled would fit this machine, not the target.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler import __version__
from bundler._io import atomic_write_bytes, sha256_file
from bundler.errors import BundleError, UsageError, WheelsUnavailableError

#: The command the offline side runs (in a venv of the user's choosing), FOLDER substituted.
INSTALL_COMMAND = ("python3 -m pip install --no-index --find-links {folder} "
                   "-r {folder}/requirements.txt")
#: Tested: 3.10, 3.11, 3.12; pip decides the rest (paddlepaddle 3.3.1 has wheels for 3.9-3.13).
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
ARCHES = ("x86_64", "aarch64")
#: glibc the platform names ``x86_64``/``aarch64`` stand for: RHEL 8, Debian 10, Ubuntu 20.04.
DEFAULT_GLIBC = (2, 28)
REQUIREMENTS = "requirements.txt"
#: Source-only packages are built at most this many times per resolve (each is one pip run).
MAX_SOURCE_BUILDS = 12

_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(x86_64|aarch64)")
#: A wheel file name (PEP 427), in the characters it may use: the name and version go into
#: requirements.txt, so a space, ``;`` or line break from an index's file name never does.
_WHEEL = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)"
                    r"(-\d[A-Za-z0-9_.]*)?(-[A-Za-z0-9_.]+){3}\.whl")
_NO_MATCH = re.compile(r"No matching distribution found for ([^;\s]+)")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


@dataclass(frozen=True)
class Target:
    """The offline machine: Python ``X.Y``, a manylinux platform tag, Paddle's CPU or GPU
    build, and extra indexes (Paddle's CUDA builds are not on PyPI)."""

    python: str
    platform: str  # manylinux_2_N_ARCH
    paddle: str = "cpu"
    extra_index_urls: tuple[str, ...] = ()
    #: another paddlepaddle release than the one the ``[paddle]`` set pins (3.3.1 has no
    #: aarch64 wheels, for one); the set is proven with the pinned one
    paddle_version: str | None = None

    @classmethod
    def parse(cls, python: str | None = None, platform_name: str | None = None,
              paddle: str = "cpu", extra_index_urls: Sequence[str] = (),
              paddle_version: str | None = None) -> Target:
        """From the command line; ``None`` means this machine's Python or architecture."""
        given = python is not None
        python = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
        if python not in PYTHONS:
            what = "--target-python" if given else "this machine's Python (the default)"
            raise UsageError(f"{what} {python} is not one of {', '.join(PYTHONS)}",
                             hint="the Paddle/PaddleNLP set is built for those; pass "
                                  "--target-python X.Y")
        name = platform_name or platform.machine()
        if name in ARCHES:
            name = f"manylinux_{DEFAULT_GLIBC[0]}_{DEFAULT_GLIBC[1]}_{name}"
        match = _MANYLINUX.fullmatch(name)
        # glibc 2.5 (manylinux1) is the oldest tag; below it pip would get no --platform at
        # all and resolve for this machine; a leading zero names no tag pip knows
        if (match is None or match.group(1) != "2" or int(match.group(2)) < 5
                or match.group(2) != str(int(match.group(2)))):
            what = "--target-platform" if platform_name else "this machine's architecture"
            raise UsageError(f"{what} {name} is not x86_64, aarch64 or "
                             "manylinux_2_N_x86_64/aarch64 (N >= 5)",
                             hint="e.g. --target-platform aarch64, or manylinux_2_17_x86_64 "
                                  "for glibc 2.17")
        if paddle not in ("cpu", "gpu"):
            raise UsageError(f"--paddle {paddle} is not cpu or gpu")
        if paddle_version is not None and not re.fullmatch(r"\d+(\.\d+)*\w*", paddle_version):
            raise UsageError(f"--paddle-version {paddle_version} is not a version number")
        return cls(python, name, paddle, tuple(extra_index_urls), paddle_version)

    @property
    def arch(self) -> str:
        match = _MANYLINUX.fullmatch(self.platform)
        assert match is not None
        return match.group(3)

    @property
    def glibc_minor(self) -> int:
        match = _MANYLINUX.fullmatch(self.platform)
        assert match is not None
        return int(match.group(2))

    def platform_tags(self) -> list[str]:
        """Every manylinux tag a system with this glibc runs (pip expands none of the
        ``manylinux_2_N`` ones itself): ``manylinux_2_N`` down to ``_2_5`` and the legacy
        aliases (PEP 600)."""
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(self.glibc_minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        for minor, alias in legacy.items():
            if minor <= self.glibc_minor and (self.arch == "x86_64" or minor == 17):
                tags.append(f"{alias}_{self.arch}")
        return tags

    def pip_args(self) -> list[str]:
        nodot = self.python.replace(".", "")
        args = ["--only-binary=:all:", "--python-version", self.python,
                "--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3",
                "--abi", "none"]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        return args

    def describe(self) -> str:
        return f"Python {self.python} on {self.platform} (Paddle {self.paddle.upper()})"

    def requirements(self, self_wheel: Path) -> list[str]:
        """paddle-bundle's wheel and its ``[paddle]``/``[gpu]`` set, as its metadata lists
        it (with ``paddle_version`` in place of the pinned Paddle release)."""
        paddle_dist = "paddlepaddle" if self.paddle == "cpu" else "paddlepaddle-gpu"
        reqs = [str(self_wheel)]
        for line in extra_requirements(self.extra):
            name = re.match(r"[A-Za-z0-9._-]+", line)
            if self.paddle_version and name and normalise(name.group(0)) == paddle_dist:
                line = f"{paddle_dist}=={self.paddle_version}"
            reqs.append(line)
        return reqs

    @property
    def extra(self) -> str:
        return "paddle" if self.paddle == "cpu" else "gpu"


@dataclass(frozen=True)
class Wheel:
    filename: str
    name: str
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelFolder:
    path: Path
    target: Target
    wheels: tuple[Wheel, ...]

    @property
    def requirements(self) -> Path:
        return self.path / REQUIREMENTS

    @property
    def size(self) -> int:
        return sum(w.size for w in self.wheels)


@dataclass(frozen=True)
class Resolution:
    """What pip would install on the target (``pip install --dry-run --report``)."""

    target: Target
    packages: dict[str, str]  # normalised name -> version
    urls: tuple[str, ...]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(extra: str) -> list[str]:
    """The requirements of paddle-bundle's ``extra``, from its installed metadata (the same
    pyproject the wheel is built from)."""
    from importlib import metadata

    reqs = []
    for line in metadata.requires("paddle-bundle") or []:
        spec, _, marker = line.partition(";")
        if re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            reqs.append(spec.strip())
    if not reqs:
        raise BundleError(f"paddle-bundle's metadata has no [{extra}] extra",
                          hint="reinstall paddle-bundle (pip install -e . in a checkout)")
    return reqs


def install_command(folder: Path | str) -> str:
    """:data:`INSTALL_COMMAND` for ``folder``, quoted for a shell (a stick mounted at
    ``/media/usb/My Stick`` is common; the name comes from the bundle's file name)."""
    return INSTALL_COMMAND.replace("{folder}/requirements.txt",
                                   shlex.quote(f"{folder}/{REQUIREMENTS}")
                                   ).format(folder=shlex.quote(str(folder)))


def folder_for(bundle: Path) -> Path:
    """``OUT.python``: where the wheel folder of bundle ``OUT`` lives."""
    return bundle.with_name(bundle.name + ".python")


# -- paddle-bundle's own wheel ---------------------------------------------------------------
def source_tree() -> Path | None:
    """The checkout this paddle-bundle runs from, if it runs from one (``pip install -e``)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'(?m)^name\s*=\s*"paddle-bundle"', text) else None


def build_self_wheel(dest: Path, run: Runner = _run) -> Path:
    """paddle-bundle's own wheel, into ``dest``: built from the checkout when running from
    one, else downloaded (``paddle-bundle==VERSION``) from the index."""
    dest.mkdir(parents=True, exist_ok=True)
    root = source_tree()
    if root is not None:
        args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dest),
                str(root)]
    else:
        args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--dest", str(dest), f"paddle-bundle=={__version__}"]
    proc = run(args)
    found = sorted(dest.glob("paddle_bundle-*.whl"))
    if proc.returncode != 0 or not found:
        raise BundleError(f"could not build or download paddle-bundle {__version__}'s wheel: "
                          f"{_last_error(proc)}",
                          hint="run from a source checkout (pip install -e .) or make the "
                               "wheel reachable through your index")
    return found[-1]


# -- resolving and downloading ---------------------------------------------------------------
def _last_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()
             if line.strip().startswith("ERROR:")]
    text = " ".join(line.removeprefix("ERROR:").strip() for line in lines[-3:])
    return text or f"pip exited with code {proc.returncode}"


def _build_pure(requirement: str, dest: Path, target: Target, run: Runner) -> bool:
    """Build ``requirement`` from its source release into ``dest``; ``True`` if it made a
    pure-Python wheel (usable on any target), which is kept. Anything else is removed."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    if name is None:
        return False
    with tempfile.TemporaryDirectory(prefix="paddle-bundle-sdist-") as tmp:
        proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary",
                    name.group(0), "--wheel-dir", tmp, requirement,
                    *(arg for url in target.extra_index_urls
                      for arg in ("--extra-index-url", url))])
        built = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(built) != 1 or not built[0].name.endswith(
                "-none-any.whl"):
            return False
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built[0]), dest / built[0].name)
    return True


def _pip_for_target(command: Sequence[str], target: Target, built: Path,
                    requirements: Sequence[str], run: Runner) -> None:
    """Run a pip command for ``target``; a requirement that exists only as source is built
    into a pure wheel in ``built`` and the command retried. Refuses, naming what is missing,
    when there is no wheel for the target."""
    tried: set[str] = set()
    for _ in range(MAX_SOURCE_BUILDS + 1):
        proc = run([*command, *target.pip_args(), "--find-links", str(built), *requirements])
        if proc.returncode == 0:
            return
        output = proc.stderr + "\n" + proc.stdout
        missing = _NO_MATCH.findall(output)
        if not missing:
            raise BundleError(f"pip failed for {target.describe()}: {_last_error(proc)}",
                              hint="see the message above; pip's own output names the cause")
        requirement = missing[-1]
        if requirement in tried or not _build_pure(requirement, built, target, run):
            raise WheelsUnavailableError(
                f"no wheel of {requirement} for {target.describe()}: {_last_error(proc)}",
                missing=requirement,
                hint="choose another --target-python/--target-platform, or for Paddle's "
                     "CUDA builds pass --extra-index-url of Paddle's package index")
        tried.add(requirement)
    raise WheelsUnavailableError(f"more than {MAX_SOURCE_BUILDS} packages exist only as "
                                 "source", missing="", hint="build their wheels by hand")


def _build_source_only(target: Target, self_wheel: Path, built: Path, run: Runner) -> None:
    """Build a pure wheel of every package the set takes from a source release.

    ``--only-binary=:all:`` does not fail for a package whose newest release is source
    only: pip silently takes an older release that has a wheel (seqeval 0.0.10, which wants
    keras, for 1.2.2, which wants scikit-learn; without scipy ``import paddlenlp`` fails).
    So the set is first resolved as ``pip install`` would resolve it here, and each release
    that comes as source is built into ``built``, where the target's resolve finds it.
    """
    with tempfile.TemporaryDirectory(prefix="paddle-bundle-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        proc = run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                    "--quiet", "--report", str(report), "--target", str(Path(tmp) / "t"),
                    "--find-links", str(built),
                    *(arg for url in target.extra_index_urls
                      for arg in ("--extra-index-url", url)),
                    *target.requirements(self_wheel)])
        if proc.returncode != 0:
            return  # (e.g. a set for another Python only): the target's resolve says why
        data = json.loads(report.read_text(encoding="utf-8"))
    for item in data.get("install", []):
        url = str(item.get("download_info", {}).get("url", ""))
        meta = item.get("metadata", {})
        if url.endswith(".whl") or not meta.get("name"):
            continue
        requirement = f"{meta['name']}=={meta.get('version', '')}"
        if not _build_pure(requirement, built, target, run):
            raise WheelsUnavailableError(
                f"{requirement} exists only as source and does not build into a pure-Python "
                f"wheel here, so there is none for {target.describe()}", missing=requirement,
                hint="build its wheel on a machine like the target and add it with "
                     "--find-links (PIP_FIND_LINKS)")


def resolve(target: Target, *, self_wheel: Path, built: Path, run: Runner = _run
            ) -> Resolution:
    """What the wheel folder for ``target`` would hold, without downloading the wheels
    (pip reads the metadata PyPI serves beside each wheel, PEP 658)."""
    _build_source_only(target, self_wheel, built, run)
    with tempfile.TemporaryDirectory(prefix="paddle-bundle-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        _pip_for_target([sys.executable, "-m", "pip", "install", "--dry-run",
                         "--ignore-installed", "--quiet", "--report", str(report),
                         "--target", str(Path(tmp) / "target")],
                        target, built, target.requirements(self_wheel), run)
        data = json.loads(report.read_text(encoding="utf-8"))
    packages: dict[str, str] = {}
    urls: list[str] = []
    for item in data.get("install", []):
        meta = item.get("metadata", {})
        packages[normalise(str(meta.get("name", "")))] = str(meta.get("version", ""))
        urls.append(str(item.get("download_info", {}).get("url", "")))
    return Resolution(target, packages, tuple(urls))


def build_folder(dest: Path, target: Target, *, run: Runner = _run,
                 built: Path | None = None) -> WheelFolder:
    """Write ``dest``: every wheel ``target`` needs and ``requirements.txt`` hashing each.

    Built in ``dest.partial`` and renamed into place only when complete; an earlier folder
    of that name is replaced (never anything else: a folder without a ``requirements.txt``
    is refused).
    """
    dest = check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name: never a folder of the user's that happens to be called NAME.partial
    partial = Path(tempfile.mkdtemp(prefix=dest.name + ".partial-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="paddle-bundle-wheels-") as tmp:
            built = built or Path(tmp) / "built"
            built.mkdir(parents=True, exist_ok=True)
            self_wheel = build_self_wheel(Path(tmp) / "self", run)
            _build_source_only(target, self_wheel, built, run)
            _pip_for_target([sys.executable, "-m", "pip", "download", "--quiet",
                             "--dest", str(partial)],
                            target, built, target.requirements(self_wheel), run)
        folder = write_requirements(partial, target)
        os.chmod(partial, 0o755)  # mkdtemp makes it 0700
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=dest.name + ".old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(partial, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return WheelFolder(dest, target, folder.wheels)


def check_destination(dest: Path) -> Path:
    """``dest`` made absolute, or :class:`UsageError` when something that is not a wheel
    folder of ours is there (checked by ``fetch --python`` before it fetches anything)."""
    dest = Path(os.path.abspath(dest))
    if (dest.exists() or dest.is_symlink()) and not is_wheel_folder(dest):
        raise UsageError(f"{dest} exists and is not a wheel folder written by paddle-bundle "
                         "(only wheels and its requirements.txt)",
                         hint="choose another -o, or remove it")
    return dest


def is_wheel_folder(path: Path) -> bool:
    """Whether ``path`` is a folder :func:`build_folder` wrote (and may replace): a real
    folder holding only wheels and a ``requirements.txt`` that starts as ours does. Never
    a project folder that happens to have a requirements.txt."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        with open(path / REQUIREMENTS, "rb") as fh:
            head = fh.read(len(_HEADER))
        entries = list(path.iterdir())
    except OSError:
        return False
    return head == _HEADER and all(
        not p.is_symlink() and p.is_file() and (p.name == REQUIREMENTS or p.suffix == ".whl")
        for p in entries)


_HEADER = b"# paddle-bundle "


def write_requirements(folder: Path, target: Target) -> WheelFolder:
    """``requirements.txt`` pinning every wheel in ``folder`` by version and sha256."""
    wheels: list[Wheel] = []
    for path in sorted(folder.iterdir()):
        if path.name == REQUIREMENTS:
            continue
        match = _WHEEL.fullmatch(path.name)
        if match is None:
            raise BundleError(f"{path} is not a wheel", hint="pip downloaded something else; "
                              "report it")
        wheels.append(Wheel(path.name, normalise(match["name"]), match["version"],
                            sha256_file(path), path.stat().st_size))
    names = [w.name for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BundleError(f"{folder} holds several wheels of {', '.join(twice)}",
                          hint="remove the folder and build it again")
    lines = [f"# paddle-bundle {__version__}: {target.describe()}",
             f"# install offline: {INSTALL_COMMAND.format(folder='<this folder>')}"]
    for wheel in wheels:
        lines.append(f"{wheel.name}=={wheel.version} \\\n    --hash=sha256:{wheel.sha256}")
    atomic_write_bytes(folder / REQUIREMENTS, ("\n".join(lines) + "\n").encode())
    return WheelFolder(folder, target, tuple(wheels))


# -- the bundle's sidecar --------------------------------------------------------------------
def sidecar_entries(folder: Path, bundle: Path) -> list[tuple[str, str]]:
    """``(name, sha256)`` for every file of ``folder``, named relative to the bundle's
    folder (``OUT.python/NAME``) so ``sha256sum -c OUT.sha256`` checks them too."""
    return [(f"{folder.name}/{path.name}", sha256_file(path))
            for path in sorted(folder.iterdir()) if path.is_file()]


def attach_to_bundle(bundle: Path, target: Target, *, run: Runner = _run) -> WheelFolder:
    """``fetch --python``: write ``OUT.python/`` beside the written bundle ``OUT`` and add
    its files to ``OUT.sha256`` (before any signature is made over the sidecar)."""
    try:
        folder = build_folder(folder_for(bundle), target, run=run)
    except BundleError as exc:
        exc.message = (f"{bundle} is written, but not its wheel folder "
                       f"{folder_for(bundle).name}/: {exc.message}")
        exc.hint = (f"{exc.hint}; or write the wheel folder on its own with paddle-bundle "
                    "python -o DIR (pip checks it by its requirements.txt; the bundle's "
                    ".sha256 file does not list it)")
        raise
    add_to_sidecar(bundle, folder.path)
    return folder


def add_to_sidecar(bundle: Path, folder: Path) -> None:
    """List every file of ``folder`` in ``bundle``'s sidecar (replacing earlier lines for
    it), so ``verify`` and ``sha256sum -c`` check them."""
    from bundler.volumes import sidecar_line, sidecar_path

    sidecar = sidecar_path(bundle)
    prefix = f"  {folder.name}/".encode()
    kept = [line for line in sidecar.read_bytes().splitlines(keepends=True)
            if prefix not in line]
    added = b"".join(sidecar_line(n, d) for n, d in sidecar_entries(folder, bundle))
    atomic_write_bytes(sidecar, b"".join(kept) + added)


def folder_problems(base: Path, expected: dict[str, str]) -> list[str]:
    """``verify``: every file of ``OUT.python/`` the sidecar lists, checked; files in the
    folder it does not list, and listed files that are gone, named."""
    folder = folder_for(base)
    prefix = f"{folder.name}/"
    listed = {name[len(prefix):]: digest for name, digest in expected.items()
              if name.startswith(prefix)}
    if not listed:
        if folder.exists() or folder.is_symlink():  # (no sidecar at all: nor does it)
            # dropped beside the bundle, or left from an older bundle of this name: nothing
            # (no signature either) vouches for it, and pip would install what it pins
            return [f"{folder}: beside the bundle, but none of its files is in the bundle's "
                    ".sha256 file (from another bundle, or added later): remove it, or write "
                    "the bundle again with fetch --python"]
        return []
    problems = []
    for name, digest in sorted(listed.items()):
        path = folder / name
        if "/" in name or not path.is_file():
            problems.append(f"{path}: missing (listed in the .sha256 file)")
        elif path.is_symlink():  # never written so; verify reads nothing outside the folder
            problems.append(f"{path}: a symbolic link, not the file the .sha256 file lists")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 differs from the .sha256 file")
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name not in listed:
                problems.append(f"{path}: not listed in the .sha256 file")
    return problems


# -- the offline side ------------------------------------------------------------------------
def installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def install_advice(bundle: Path, proven_with: str | None,
                   expected: Mapping[str, str]) -> str | None:
    """After ``install``: the pip command for the bundle's wheel folder, when there is one
    and this Python lacks PaddleNLP or has another version than the bundle was proven with.

    Offered only when the bundle's sidecar (``expected``, checked and trusted as the bundle
    is) lists the folder's ``requirements.txt`` with its sha256: pip then checks every wheel
    against it. A folder the sidecar does not cover (dropped beside the bundle, or left from
    an older bundle of that name) is named, not recommended."""
    folder = folder_for(bundle)
    requirements = folder / REQUIREMENTS
    if not requirements.is_file():
        return None
    have = installed_version("paddlenlp")
    if have is not None and (proven_with is None or have == proven_with):
        return None
    why = ("PaddleNLP is not installed in this Python" if have is None else
           f"this Python has PaddleNLP {have}, the bundle was proven with {proven_with}")
    want = expected.get(f"{folder.name}/{REQUIREMENTS}")
    if want is None or sha256_file(requirements) != want:
        how = "does not list" if want is None else "has another sha256 for"
        return (f"{why}; {folder} is beside the bundle, but the bundle's .sha256 file {how} "
                f"its {REQUIREMENTS}: not installing from it (check it with paddle-bundle "
                "verify, or write it again with paddle-bundle python -o)")
    return f"{why}; install the set that came with the bundle: {install_command(folder)}"
