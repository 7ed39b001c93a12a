"""The ``paddle-bundle`` command line: parse, call the library, show the result.

The only module that imports click and tqdm. Expected failures become one line on stderr and
a documented exit code (0 ok, 1 error, 2 usage, 3 integrity); see :func:`_main`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bundler import __version__
from bundler.errors import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_USAGE,
    BundleError,
    UsageError,
)

if TYPE_CHECKING:
    from bundler.fetch import DownloadEvent

PROG = "paddle-bundle"


# -- output helpers ------------------------------------------------------------------------
def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def printable(text: str, keep: str = "") -> str:
    """``text`` with every character a terminal could act on written as an escape.

    Everything printed that may hold a string from a bundle (manifest fields, member and
    file names, messages naming them) goes through here: C0 and C1 controls and DEL (screen
    clearing, cursor moves, title setting), bidirectional overrides and other invisible
    format characters (text that reads differently than it is), line and paragraph
    separators, and bytes of file names that are not UTF-8 become ``\\xNN``, ``\\uNNNN``
    or ``\\UNNNNNNNN``. Ordinary text in any script, spaces included, is unchanged.
    ``keep`` lists controls to let through (a diff's tabs and line ends).
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch in keep or unicodedata.category(ch) == "Zs":
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _echo(text: str = "", *, err: bool = False) -> None:
    """Print one line, made :func:`printable`: every command prints through here."""
    click.echo(printable(text), err=err)


def _echo_json(data: Any) -> None:
    """JSON with non-ASCII text kept readable, but anything :func:`printable` would escape
    written as a JSON ``\\u`` escape: still the same JSON, harmless on a terminal."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if not text.isprintable():
        text = "".join(ch if ch == "\n" or ch.isprintable() or unicodedata.category(ch) == "Zs"
                       else _json_escape(ch) for ch in text)
    click.echo(text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _err(message: str) -> None:
    _echo(f"{PROG}: error: {message}", err=True)


class Progress:
    """A tqdm byte bar on a terminal; nothing otherwise. The library only sees callables."""

    def __init__(self, desc: str, quiet: bool) -> None:
        self.desc = desc
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="B", unit_scale=True,
                             unit_divisor=1024, leave=False, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def _progress(desc: str, quiet: bool) -> Iterator[Progress]:
    bar = Progress(desc, quiet)
    try:
        yield bar
    finally:
        bar.close()


def _home_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="PaddleNLP home (default: $PPNLP_HOME, else ~/.paddlenlp).")(func)


def _quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-q", "--quiet", is_flag=True, help="No progress, no summary.")(func)


def _resolve_home(home: Path | None) -> Path:
    from bundler.cache import default_home

    return home if home is not None else default_home()


def _target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The offline machine a wheel folder is for (``fetch --python``, ``python``)."""
    for option in reversed([
        click.option("--target-python", metavar="X.Y", default=None,
                     help="The offline machine's Python (3.10, 3.11, 3.12; default: this "
                          "one's)."),
        click.option("--target-platform", metavar="PLATFORM", default=None,
                     help="x86_64 or aarch64 (manylinux, glibc >= 2.28), or a tag such as "
                          "manylinux_2_17_x86_64 (default: this machine's architecture)."),
        click.option("--paddle", type=click.Choice(["cpu", "gpu"]), default="cpu",
                     show_default=True,
                     help="paddle-bundle's [paddle] set (paddlepaddle) or [gpu] set "
                          "(paddlepaddle-gpu: add Paddle's --extra-index-url)."),
        click.option("--paddle-version", metavar="VERSION", default=None,
                     help="Another paddlepaddle release than the one the set pins (which "
                          "has no aarch64 wheels); the set is proven with the pinned one."),
        click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
                     help="Passed to pip (repeatable): Paddle's CUDA builds are not on PyPI."),
    ]):
        func = option(func)
    return func


def _target(python: str | None, platform: str | None, paddle: str,
            paddle_version: str | None, extra_index_urls: tuple[str, ...]) -> Any:
    from bundler.wheels import Target

    return Target.parse(python, platform, paddle, extra_index_urls, paddle_version)


def _echo_wheel_folder(folder: Path) -> None:
    from bundler.wheels import REQUIREMENTS, install_command

    count = sum(1 for p in folder.iterdir() if p.name != REQUIREMENTS)
    size = sum(p.stat().st_size for p in folder.iterdir())
    _echo(f"wheel folder {folder}: {count} wheels, {_human(size)}; on the offline machine, in "
          "a venv: " + install_command(folder.name))


def _echo_install_advice(bundle: Path, manifest: Any) -> None:
    """The pip command for the bundle's wheel folder, when this Python lacks its PaddleNLP."""
    from bundler.volumes import locate
    from bundler.wheels import install_advice

    origin = manifest.origin
    proven = origin.proof.paddlenlp if origin.proof is not None else None
    files = locate(bundle)
    advice = install_advice(files.base, proven or origin.paddlenlp, files.expected)
    if advice:
        _echo(advice)


# -- commands ------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Carry PaddleNLP models across an air gap.

    \b
    Online:   paddle-bundle fetch -o bundle.tar.zst -- python app.py
    Offline:  paddle-bundle verify bundle.tar.zst && paddle-bundle install bundle.tar.zst
              paddle-bundle run -- python app.py   (load by name, no network)

    Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure.
    """


def _output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How the bundle is written; shared by pack and fetch so neither drops one."""
    for option in reversed([
        click.option("--level", type=click.IntRange(1, 19), default=3, show_default=True,
                     help="zstd compression level."),
        click.option("--threads", type=click.IntRange(0, 256), default=0,
                     help="Compression threads (default: one per core)."),
        click.option("--split-size", "split_size", metavar="SIZE", default=None,
                     help="Write volumes OUT.000, OUT.001, ... of at most SIZE (4G, 700M, 64K)."),
        click.option("--fat32", is_flag=True,
                     help="Volumes of at most 4 GiB - 1 byte, the FAT32 file size limit."),
        click.option("--exclude-installed", "state", metavar="STATE.json", default=None,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Leave out files the target already has ('paddle-bundle list "
                          "--json' from it): a delta bundle."),
        click.option("--portable", is_flag=True,
                     help="Refuse file names that break on FAT or Windows (default: warn)."),
    ]):
        func = option(func)
    return func


# -- signing and the pickle scan (issue 10) ---------------------------------------------------
def _sign_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """pack and fetch: sign the final sidecar; accept more globals in pickled weights."""
    func = click.option("--allow-global", "allow_globals", multiple=True,
                        metavar="MODULE.NAME",
                        help="Accept this global in pickled weights (.pdparams...) beyond the "
                             "built-in allowlist; recorded in the bundle (repeatable).")(func)
    return click.option("--sign", "sign_key", default=None, metavar="KEY",
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="Sign OUT.sha256 with this OpenSSH private key (ssh-keygen -Y "
                             "sign, namespace paddle-bundle) -> OUT.sha256.sig.")(func)


def _trust_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """verify and install: who must have signed; which extra globals this site accepts."""
    func = click.option("--allow-global", "allow_globals", multiple=True,
                        metavar="MODULE.NAME",
                        help="Accept this global in pickled weights beyond the built-in "
                             "allowlist (repeatable).")(func)
    return click.option("--trust", default=None, metavar="ALLOWED_SIGNERS",
                        type=click.Path(path_type=Path),
                        help="Require a signature by a signer of this allowed_signers file "
                             "(ssh-keygen(1) format). A trust policy (HOME/.paddle-bundle/"
                             "allowed_signers or $PADDLE_BUNDLE_TRUST) applies as well.")(func)


def _checked_globals(allow_globals: tuple[str, ...]) -> tuple[str, ...]:
    from bundler.scan import parse_global

    for text in allow_globals:
        try:
            parse_global(text)
        except ValueError as exc:
            raise UsageError(f"--allow-global {exc}", hint="write it as module.name, e.g. "
                             "numpy.core.multiarray.scalar") from None
    return tuple(sorted(set(allow_globals)))


def _check_key(sign_key: Path | None) -> None:
    """Before any packing, so a typo does not cost a whole pack."""
    if sign_key is not None and not sign_key.is_file():
        raise UsageError(f"--sign {sign_key} does not exist or is not a file",
                         hint="give an OpenSSH private key, e.g. ~/.ssh/id_ed25519")


def _sign_last(sidecar: Path, sign_key: Path | None, quiet: bool) -> None:
    """The very last step of pack and fetch: the sidecar is final."""
    if sign_key is None:
        return
    from bundler.signing import sign

    sig = sign(sidecar, sign_key)
    if not quiet:
        _echo(f"signed {sidecar.name} -> {sig.name}")


def _signer_line(signer: Any) -> str:
    return signer.describe() if signer is not None else "not signed"


def _pack_options(command: tuple[str, ...], level: int, threads: int, split_size: str | None,
                  fat32: bool, state: Path | None, portable: bool, **extra: Any) -> Any:
    from bundler.archive import Compression
    from bundler.pack import PackOptions, load_installed_state
    from bundler.volumes import FAT32_MAX, parse_size

    if fat32 and split_size:
        raise click.UsageError("give --split-size or --fat32, not both")
    split = FAT32_MAX if fat32 else parse_size(split_size) if split_size else None
    exclude = load_installed_state(state) if state is not None else {}
    return PackOptions(compression=Compression(level=level, threads=threads),
                       command=command, split_size=split, exclude_installed=exclude,
                       portable=portable, **extra)


def _packed_summary(result: Any) -> str:
    m = result.manifest
    where = (f"{len(result.parts)} volumes {result.parts[0].name}..{result.parts[-1].name}"
             if len(result.parts) > 1 or result.parts[0] != result.path else str(result.path))
    return (f"packed {len(m.models)} model(s), {len(m.files)} files, "
            f"{_human(m.total_size)} -> {where} ({_human(result.size)}); "
            f"sha256 in {result.sidecar.name}")


@cli.command()
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Bundle file to write (e.g. bundle.tar.zst).")
@_home_option
@_output_options
@_sign_options
@_quiet_option
def pack(models: tuple[str, ...], out: Path, home: Path | None, level: int, threads: int,
         split_size: str | None, fat32: bool, state: Path | None, portable: bool,
         sign_key: Path | None, allow_globals: tuple[str, ...], quiet: bool) -> int:
    """Pack cached MODELS into one checksummed bundle.

    MODEL is a community id (Salesforce/codegen-350M-mono), found in HOME/models/<id>, a
    Taskflow folder written taskflow:<path under HOME/taskflow>, or hf:org/name /
    aistudio:org/name for a model PaddleNLP loaded with from_hf_hub=True / from_aistudio=True
    (found in the Hugging Face or AI Studio cache; docs/format.md).
    """
    from bundler.pack import pack as do_pack

    _check_key(sign_key)
    options = _pack_options((PROG, "pack", *models), level, threads, split_size, fat32, state,
                            portable, allow_globals=_checked_globals(allow_globals))
    with _progress("pack", quiet) as bar:
        result = do_pack(models, out, home=_resolve_home(home), options=options,
                         progress=bar.update, on_start=bar.start)
    if not quiet:
        _echo(_packed_summary(result))
    _sign_last(result.sidecar, sign_key, quiet)
    return EXIT_OK


class _DownloadBars:
    """One tqdm bar per file the fetch child downloads, on a terminal only."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def event(self, event: DownloadEvent) -> None:
        if not self.enabled:
            return
        if event.kind == "start":
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(total=event.size, desc=printable(event.name.rsplit("/", 1)[-1]),
                             unit="B",
                             unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)
        elif event.kind == "bytes" and self._bar is not None:
            self._bar.update(event.amount)
        elif event.kind == "done":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _FetchCommand(click.Command):
    """``fetch``: what follows ``--`` is the user's command, kept apart from MODELS."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["paddle_bundle.command"] = tuple(args[cut + 1:])
            args = args[:cut]
        return super().parse_args(ctx, args)


@cli.command(cls=_FetchCommand)
@click.argument("models", nargs=-1)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Bundle file to write (e.g. bundle.tar.zst).")
@_home_option
@click.option("--task", default=None, metavar="TASK",
              help="Load through Taskflow(TASK, model=MODEL), built and run once, instead of "
                   "from_pretrained; MODEL may be left out for the task's default.")
@click.option("--task-arg", "task_args", multiple=True, metavar="KEY=VALUE",
              help="A Taskflow argument (repeatable); VALUE is JSON if it parses, else a "
                   "string: --task-arg 'schema=[\"时间\"]' --task-arg precision=float32.")
@click.option("--prove/--no-prove", default=True, show_default=True,
              help="Before writing the bundle, install it into a scratch home and run the "
                   "same command (or loads) offline with no network; write it only if that "
                   "succeeds.")
@click.option("--mirror", default=None, metavar="URL",
              help="A mirror of PaddleNLP's bucket (bj.bcebos.com/paddlenlp) for community, "
                   "built-in and Taskflow downloads [env: PADDLE_BUNDLE_FETCH_MIRROR].")
@click.option("--scratch", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              metavar="DIR", help="Where the proof installs the bundle to run it offline "
                                  "[default: $TMPDIR]; never beside -o.")
@_output_options
@_sign_options
@click.option("--python", "with_python", is_flag=True,
              help="Also write OUT.python/: wheels of paddle-bundle, Paddle, PaddleNLP and "
                   "every dependency for the offline machine, with a hash-pinned "
                   "requirements.txt; OUT.sha256 covers them.")
@_target_options
@_quiet_option
@click.pass_context
def fetch(ctx: click.Context, models: tuple[str, ...], out: Path, home: Path | None,
          task: str | None, task_args: tuple[str, ...], prove: bool, mirror: str | None,
          scratch: Path | None, level: int, threads: int, split_size: str | None,
          fat32: bool, state: Path | None, portable: bool, sign_key: Path | None,
          allow_globals: tuple[str, ...], with_python: bool, target_python: str | None,
          target_platform: str | None, paddle: str, paddle_version: str | None,
          extra_index_urls: tuple[str, ...], quiet: bool) -> int:
    """Bundle what PaddleNLP obtains for a program, or for MODELS, into one bundle.

    \b
    paddle-bundle fetch -o app.tar.zst -- python app.py      (your program, unchanged)
    paddle-bundle fetch Salesforce/codegen-350M-mono -o codegen.tar.zst
    paddle-bundle fetch --task information_extraction paddlenlp/PP-UIE-0.5B \\
        --task-arg 'schema=["时间"]' --task-arg precision=float32 -o uie.tar.zst

    With a command after --, runs it with a recorder in every Python it starts and bundles
    every file PaddleNLP obtained for it (downloads and cache hits, community ids, built-in
    names, Taskflow's files); its output and exit code pass through, and a command that fails
    writes no bundle. With MODELS, PaddleNLP's own loaders resolve each by name (config, slow
    and fast tokenizer, weights, generation config; with --task, Taskflow(TASK, model=MODEL,
    KEY=VALUE...) built and run once). Either way, by default the bundle is written only after
    the same command (or loads) ran offline from a scratch install of it. Needs paddlenlp.
    """
    from bundler.fetch import fetch as do_fetch
    from bundler.fetch import fetch_command, parse_task_args

    command: tuple[str, ...] = ctx.meta.get("paddle_bundle.command", ())
    if "paddle_bundle.command" in ctx.meta and not command:
        raise UsageError("no command after --: paddle-bundle fetch -o OUT -- python app.py")
    if command and (models or task or task_args):
        raise UsageError("give MODELS (and --task) or a command after --, not both")
    if not command and not models and not task:
        raise UsageError("fetch needs a MODEL (or --task TASK), or a command after --: "
                         "paddle-bundle fetch -o OUT -- python app.py")
    if command:
        tool = (PROG, "fetch", *(("--mirror", mirror) if mirror else ()), "--", *command)
    else:
        tool = (PROG, "fetch", *models, *(("--task", task) if task else ()),
                *(arg for pair in task_args for arg in ("--task-arg", pair)))
    _check_key(sign_key)
    options = _pack_options(tool, level, threads, split_size, fat32, state, portable,
                            allow_globals=_checked_globals(allow_globals))
    python_target = (_target(target_python, target_platform, paddle, paddle_version,
                             extra_index_urls) if with_python else None)
    if python_target is not None:  # refused now, not after the whole fetch
        from bundler.wheels import check_destination, folder_for

        check_destination(folder_for(out))
    downloads = _DownloadBars(quiet)
    try:
        with _progress("pack", quiet) as bar:
            if command:
                result = fetch_command(command, out, home=_resolve_home(home), options=options,
                                       prove=prove, mirror=mirror, progress=bar.update,
                                       on_start=bar.start, scratch=scratch,
                                       python=python_target)
            else:
                result = do_fetch(models, out, home=_resolve_home(home), task=task,
                                  task_args=parse_task_args(task_args), options=options,
                                  progress=bar.update, on_start=bar.start,
                                  on_download=downloads.event, prove=prove, mirror=mirror,
                                  scratch=scratch, python=python_target)
    finally:
        downloads.close()
    if not quiet:
        proven = (f"proven offline ({result.proof.isolation}); " if result.proof else
                  "not proven (--no-prove); ")
        _echo(f"fetched from {result.endpoint} ({len(result.downloaded)} files "
              f"downloaded, {len(result.cached)} already cached); {proven}"
                   f"{_packed_summary(result.pack)}")
        if python_target is not None:
            from bundler.wheels import folder_for

            _echo_wheel_folder(folder_for(out))
    _sign_last(result.pack.sidecar, sign_key, quiet)
    return EXIT_OK


def _print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        _echo(f"  {problem}", err=True)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True,
              help="Only compare the file(s) with BUNDLE.sha256, at disk speed.")
@_trust_options
@_home_option
@_quiet_option
def verify(bundle: Path, quick: bool, trust: Path | None, allow_globals: tuple[str, ...],
           home: Path | None, quiet: bool) -> int:
    """Check every file of BUNDLE against its manifest, and BUNDLE against BUNDLE.sha256.

    BUNDLE is the bundle file, or the base name or any one volume of a split bundle.
    """
    from bundler.verify import verify as do_verify
    from bundler.volumes import locate

    files = locate(bundle)
    with _progress("verify", quiet) as bar:
        bar.start(files.size)
        report = do_verify(bundle, progress=bar.update, quick=quick, trust=trust,
                           home=_resolve_home(home),
                           allow_globals=_checked_globals(allow_globals))
    if not report.ok:
        _err(f"{bundle}: {len(report.problems)} problem(s) found")
        _print_problems(report.problems)
        return EXIT_INTEGRITY
    if not quiet:
        sidecar = f"matches {report.sidecar.name}" if report.sidecar else "no .sha256 sidecar"
        parts = f"{len(files.parts)} volumes, " if files.split else ""
        if quick:
            _echo(f"{bundle}: OK, {parts}{sidecar} (quick: contents not decompressed)")
        else:
            m = report.manifest
            assert m is not None
            _echo(f"{bundle}: OK, {parts}{len(m.models)} model(s), {len(m.files)} files, "
                       f"{_human(m.total_size)}; {sidecar}")
        _echo(f"{bundle}: {_signer_line(report.signer)}")
    return EXIT_OK


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--trust", default=None, metavar="ALLOWED_SIGNERS",
              type=click.Path(path_type=Path),
              help="Check the signature against this allowed_signers file.")
def inspect(bundle: Path, as_json: bool, trust: Path | None) -> int:
    """Show what BUNDLE holds and who made it, reading only its head."""
    from bundler.errors import SignatureError
    from bundler.signing import require_trusted
    from bundler.verify import inspect as do_inspect
    from bundler.volumes import locate

    manifest, size = do_inspect(bundle)
    try:
        signature = _signer_line(require_trusted(locate(bundle), trust=trust, home=None))
    except SignatureError as exc:
        signature = f"REFUSED: {exc}"
    if as_json:
        _echo_json(manifest.to_dict())
        return EXIT_OK
    o = manifest.origin
    _echo(f"bundle:   {bundle} ({_human(size)})")
    _echo(f"created:  {o.created} by {o.user}@{o.host} with paddle-bundle "
               f"{o.tool_version}")
    _echo(f"software: paddlenlp {o.paddlenlp or '-'}, paddlepaddle {o.paddlepaddle or '-'},"
               f" python {o.python or '-'}, {o.platform or '-'}")
    if o.command:
        _echo(f"command:  {' '.join(o.command)}")
    if o.endpoint:
        _echo(f"endpoint: {o.endpoint}")
    _echo(f"signature: {signature}")
    if o.allowed_globals:
        _echo(f"allows:   {', '.join(o.allowed_globals)} in pickled weights (--allow-global)")
    if o.proof is not None:
        p = o.proof
        _echo(f"proven:   {' '.join(p.command)} ran offline from a scratch install "
              f"({p.isolation}; paddle-bundle {p.tool_version}, paddlenlp "
              f"{p.paddlenlp or '-'}, paddlepaddle {p.paddlepaddle or '-'})")
    for model in manifest.models:
        files = manifest.files_of(model)
        size_m = sum(f.size for f in files)
        _echo()
        _echo(f"model {model.id} [{model.kind}] -> {model.root} "
                   f"({len(files)} files, {_human(size_m)})")
        if model.absent_upstream:
            _echo(f"  absent upstream: {', '.join(model.absent_upstream)}")
        for f in files:
            rel = f.path[len(model.root) + 1:]
            if f.is_symlink:
                _echo(f"  {'link':>10}  {'-> ' + str(f.target):<64}  {rel}")
            else:
                note = (f"  (same content as {f.same_as}, stored once)" if f.same_as else
                        "  (not in the bundle: relies on the installed copy)" if f.from_base
                        else "")
                _echo(f"  {_human(f.size):>10}  {f.sha256}  {rel}{note}")
    return EXIT_OK


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@_home_option
@click.option("--force", is_flag=True, help="Replace a different installed version.")
@_trust_options
@_quiet_option
def install(bundle: Path, home: Path | None, force: bool, trust: Path | None,
            allow_globals: tuple[str, ...], quiet: bool) -> int:
    """Verify BUNDLE and install its models into the PaddleNLP cache, atomically."""
    from bundler.install import install as do_install
    from bundler.install import load_snippet

    with _progress("install", quiet) as bar:
        result = do_install(bundle, home=_resolve_home(home), force=force,
                            progress=bar.update, on_start=bar.start, trust=trust,
                            allow_globals=_checked_globals(allow_globals))
    if not quiet:
        _echo(f"{bundle}: {_signer_line(result.signer)}")
    for outcome in result.outcomes:
        status = "already installed" if outcome.status == "unchanged" else outcome.status
        _echo(f"{outcome.model.id}: {status} at {outcome.path}")
        if not quiet:
            for line in load_snippet(outcome.model, outcome.path).split("\n"):
                _echo(line)  # its own line breaks; anything else in it is escaped
    _echo_install_advice(bundle, result.manifest)
    return EXIT_OK


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_home_option
@click.option("--allow-global", "allow_globals", multiple=True, metavar="MODULE.NAME",
              help="Accept this global in pickled weights beyond the built-in allowlist.")
@_quiet_option
def scan(paths: tuple[Path, ...], home: Path | None, allow_globals: tuple[str, ...],
         quiet: bool) -> int:
    """Scan files or folders (default: HOME) for pickled weights that would run code.

    The same scan pack, verify and install run on a bundle, for models that arrived by
    other means: every .pdparams, .pdopt, .pkl, .pt, .bin, .npy... (and any file whose
    content is a pickle, a torch zip or a .npy) is walked without unpickling it, and a
    global outside the allowlist is named with its byte offset. Exit 3 if any is found.
    """
    from bundler.scan import Allowlist, refusal, scan_paths

    allow = Allowlist(_checked_globals(allow_globals))
    scanned = pickles = 0
    refused = []
    for result in scan_paths(paths or (_resolve_home(home),), allow):
        scanned += 1
        pickles += result.kind is not None
        if result.finding is not None:
            refused.append(result)
            _echo(refusal(str(result.path), result.finding), err=True)
        elif result.malformed is not None and not quiet:
            _echo(f"{result.path}: not a loadable {result.kind} ("
                  f"{result.malformed.describe()}); it cannot run code", err=True)
    if not quiet:
        _echo(f"scanned {scanned} files, {pickles} in a pickle format: "
              + (f"{len(refused)} would run code" if refused else "none names a global "
                 "outside the allowlist"))
    return EXIT_INTEGRITY if refused else EXIT_OK


@cli.command(name="list")
@_home_option
@click.option("--json", "as_json", is_flag=True, help="Models, files and sha256 as JSON.")
def list_(home: Path | None, as_json: bool) -> int:
    """List the models paddle-bundle installed in HOME."""
    from bundler.cache import Cache

    cache = Cache(_resolve_home(home))
    records = cache.records()
    if as_json:
        data = {"home": str(cache.home), "models": [
            {**r.model.to_dict(), "path": str(cache.model_path(r.model)), "size": r.size,
             "bundle": r.bundle, "manifest_sha256": r.manifest_sha256,
             "installed_at": r.installed_at, "bundle_created": r.bundle_created,
             "signer": r.signer or None,
             "files": [f.to_dict() for f in r.files]} for r in records]}
        _echo_json(data)
        return EXIT_OK
    if not records:
        _echo(f"no models installed by paddle-bundle in {cache.home}")
        return EXIT_OK
    for r in records:
        _echo(f"{r.model.id:<40} {'[' + r.model.kind + ']':<11} {_human(r.size):>10}  "
              f"from {r.bundle} "
              f"({r.installed_at})  {cache.model_path(r.model)}"
              + (f"  [{r.signer}]" if r.signer else ""))
    return EXIT_OK


@cli.command()
@click.argument("models", nargs=-1)
@_home_option
def check(models: tuple[str, ...], home: Path | None) -> int:
    """Re-hash installed MODELS (default: all) against what was installed."""
    from bundler.verify import check as do_check

    results = do_check(_resolve_home(home), models)
    drifted = [r for r in results if r.drift]
    for r in results:
        state = f"{len(r.drift)} problem(s)" if r.drift else "ok"
        _echo(f"{r.record.model.id}: {state}", err=bool(r.drift))
        _print_problems(r.drift)
        for extra in r.extra:
            _echo(f"  note: {extra} was added after install", err=True)
    if not results:
        _echo("no models installed by paddle-bundle to check")
    return EXIT_INTEGRITY if drifted else EXIT_OK


@cli.command(context_settings={"ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@_home_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(home: Path | None, command: tuple[str, ...]) -> int:
    """Run COMMAND with PaddleNLP in offline mode; exit with its exit code.

    Every Python that COMMAND starts loads models by name (and Taskflow) from HOME's cache,
    with no network: PADDLE_BUNDLE_OFFLINE=1 is set for it, and PPNLP_HOME when --home is
    given. The switch reaches them through the same start-up hook fetch's proof uses (a
    sitecustomize first on PYTHONPATH), so a script that starts another Python behaves as
    it did in the proof.

    \b
    paddle-bundle run --home /data/ppnlp -- python serve.py
    """
    from bundler._offline import run_offline

    return run_offline(command, home=home)


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--home", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Home the installed models are looked up in (default: $PPNLP_HOME, else "
                   "~/.paddlenlp); it must exist.")
@click.option("--target-home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write paths under this home instead (the offline machine's, when "
                   "rewriting on the online side); it need not exist here.")
@click.option("--diff", "mode", flag_value="diff", default=True,
              help="Print a unified diff (the default); write nothing. `patch -p1` or "
                   "`git apply` in this folder gives exactly what --in-place writes.")
@click.option("--in-place", "mode", flag_value="in-place",
              help="Rewrite the files, atomically each.")
@click.option("--check", "mode", flag_value="check",
              help="Write nothing; exit 0 if nothing would change, 1 if something would, "
                   "4 if a file could not be read or parsed (for CI).")
@click.option("--add-offline-import", is_flag=True,
              help="Also add 'import bundler.offline' to modules that call Taskflow "
                   "(shown by --diff, written by --in-place).")
@click.option("--max-size", "max_mb", type=click.FloatRange(min=0, min_open=True),
              default=2.0, show_default=True,
              help="Skip (and report) files larger than this many MB.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes reading the files (default: one per core).")
def rewrite(paths: tuple[Path, ...], home: Path | None, target_home: Path | None, mode: str,
            add_offline_import: bool, max_mb: float, jobs: int | None) -> int:
    """Point installed model ids in PaddleNLP from_pretrained(...) calls at their folders.

    PATH is a .py file, a notebook (.ipynb) or a folder of them. Only the id argument of
    calls that resolve to PaddleNLP changes; variables are never changed (the call gets the
    folder instead). Everything else that names a model (other libraries' loaders,
    Taskflow, hub downloads, computed ids) is reported.
    """
    from bundler.cache import default_home, installed_hub_models, installed_models
    from bundler.errors import EXIT_SKIPPED
    from bundler.rewrite import (
        SKIPPED_KINDS,
        FileChangedError,
        apply,
        default_jobs,
        plan_rewrites,
        unified_diff,
    )

    lookup = home if home is not None else default_home()
    target = target_home if target_home is not None else lookup
    found = installed_models(lookup)
    base = Path(os.path.abspath(os.path.expanduser(target))) / "models"
    installed = {model_id: str(base / model_id) for model_id in found}
    installed.update({ref: str(path) for ref, path in installed_hub_models(lookup).items()})
    # Folder names are the home's, possibly from a bundle: never write a control character
    # into a user's source (nor onto the terminal through --diff).
    installed = {k: v for k, v in installed.items() if k.isprintable() and v.isprintable()}
    plans = plan_rewrites(paths, installed, add_offline_import=add_offline_import,
                          jobs=jobs if jobs is not None else default_jobs(),
                          max_bytes=int(max_mb * 1_000_000))
    changed = [p for p in plans if p.changed]
    skipped = 0
    to_terminal = sys.stdout.isatty()
    for plan in plans:
        skipped += any(f.kind in SKIPPED_KINDS for f in plan.result.findings)
        for finding in plan.result.findings:
            level = "warning" if finding.kind in SKIPPED_KINDS else "note"
            _echo(f"{finding.location}: {level} [{finding.kind}]: {finding.message}", err=True)
        if not plan.changed:
            continue
        if mode == "diff":
            diff = unified_diff(plan)
            if to_terminal:  # the user's own source: tabs and line ends kept, nothing acts
                click.echo(printable(diff.decode(plan.encoding, "replace"), keep="\t\r\n"),
                           nl=False)
            else:  # byte for byte, so that `patch -p1` reproduces --in-place exactly
                click.echo(diff, nl=False)
        elif mode == "in-place":
            try:
                apply(plan)
            except (FileChangedError, OSError) as exc:  # one file; the others are still written
                why = exc.message if isinstance(exc, FileChangedError) else (exc.strerror or exc)
                _echo(f"{plan.path}: warning [unreadable]: not written: {why}", err=True)
                changed.remove(plan)
                skipped += 1
    verb = {"diff": "would change", "check": "would change", "in-place": "changed"}[mode]
    ids = sum(len(p.result.changes) for p in changed)
    _echo(f"{len(changed)} of {len(plans)} file(s) {verb} ({ids} model id(s) -> full "
          f"paths under {target}); {len(found)} installed model(s) known"
          + (f"; {skipped} file(s) skipped: cannot read or parse" if skipped else ""),
          err=True)
    if skipped:
        return EXIT_SKIPPED
    if mode == "check" and changed:
        return EXIT_ERROR
    return EXIT_OK


# -- mirror (issue 11): serve installed bundles to a fleet from nginx -----------------------
class _RootPath(click.Path):
    """A folder path that may not be empty: ``--root "$MIRROR"`` with the variable unset
    would otherwise be the current folder (a mirror made in cron's / or the home)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty (an unset variable?); give the mirror root, or '.' for the "
                      "current folder", param, ctx)
        return super().convert(value, param, ctx)


def _root_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--root", type=_RootPath(file_okay=False, path_type=Path),
                        required=True, help="The mirror root nginx serves.")(func)


@cli.group()
def mirror() -> None:
    """Serve models to many offline machines from nginx (docs/fleet.md)."""


@mirror.command(name="publish")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@_root_option
@_trust_options
@_quiet_option
def mirror_publish(bundles: tuple[Path, ...], root: Path, trust: Path | None,
                   allow_globals: tuple[str, ...], quiet: bool) -> int:
    """Verify BUNDLES as install does and serve their models from ROOT, atomically.

    Signatures are checked as install checks them: --trust, $PADDLE_BUNDLE_TRUST and the
    mirror's own policy ROOT/.paddle-bundle/allowed_signers each must accept the signer.
    """
    from bundler.mirror import publish
    from bundler.volumes import locate

    with _progress("publish", quiet) as bar:
        bar.start(sum(locate(b).size for b in bundles))
        result = publish(bundles, root, trust=trust,
                         allow_globals=_checked_globals(allow_globals), progress=bar.update)
    for outcome in result.outcomes:
        status = "already published" if outcome.status == "unchanged" else outcome.status
        _echo(f"{printable(outcome.model.id)}: {status} ({len(outcome.model.files)} files, "
              f"generation {result.index.generation})")
        for note in outcome.model.skipped:
            _echo(f"  note: {printable(note)}", err=True)
    return EXIT_OK


@mirror.command(name="list")
@_root_option
@click.option("--json", "as_json", is_flag=True, help="The index as JSON.")
def mirror_list(root: Path, as_json: bool) -> int:
    """List the models ROOT serves, with their bundle, signer and time of publishing."""
    from bundler.mirror import Mirror

    mirror = Mirror(root)
    index = mirror.index()
    problem = mirror.link_problem()
    if problem:
        _echo(f"warning: {problem}; listing generation {index.generation}, the newest on the "
              "disk ('paddle-bundle mirror prune --root DIR' restores the link)", err=True)
    if as_json:
        _echo_json(json.loads(index.to_json()))
        return EXIT_OK
    if not index.models:
        _echo(f"nothing published in {root}")
    for m in index.models:
        signer = f"signed by {m.signer}" if m.signer else "unsigned"
        _echo(f"{printable(m.id):<40} {'[' + m.kind + ']':<11} {_human(m.size):>10}  "
              f"from {printable(m.bundle)} ({m.published_at}, {printable(signer)})")
    return EXIT_OK


@mirror.command(name="check")
@click.argument("models", nargs=-1)
@_root_option
def mirror_check(models: tuple[str, ...], root: Path) -> int:
    """Re-hash the files ROOT serves for MODELS (default: all), and check that
    .paddle-bundle/current leads to a generation (exit 3 when anything is wrong)."""
    from bundler.mirror import Mirror

    mirror = Mirror(root)
    results = mirror.check(models)
    link = mirror.link_problem()
    if not results and not link:
        _echo(f"nothing published in {root}")
    for model_id, problems in results:
        _echo(f"{printable(model_id)}: {f'{len(problems)} problem(s)' if problems else 'ok'}",
              err=bool(problems))
        _print_problems(problems)
    if any(p for _, p in results):
        _echo("hint: publish the bundles of the damaged models again ('paddle-bundle mirror "
              "publish BUNDLE --root DIR'): damaged files are written anew", err=True)
    if link:
        _echo(f"{link}: nginx serves only clients pinned to an older generation; run "
              "'paddle-bundle mirror prune --root DIR' to restore it to the newest generation "
              "(checked above)", err=True)
    return EXIT_INTEGRITY if link or any(p for _, p in results) else EXIT_OK


@mirror.command(name="remove")
@click.argument("models", nargs=-1, required=True)
@_root_option
@click.option("--purge", is_flag=True,
              help="Also unlink MODELS' files from the older generations kept for clients "
                   "still loading, at once (a compromised model): those clients get 404 "
                   "and fail instead of loading it. Works on a model already removed.")
def mirror_remove(models: tuple[str, ...], root: Path, purge: bool) -> int:
    """Stop serving MODELS (clients already loading them finish first, unless --purge)."""
    from bundler.mirror import remove

    index = remove(root, models, purge=purge)
    done = "removed and purged from every older generation" if purge else "removed"
    for model_id in models:
        _echo(f"{printable(model_id)}: {done} (generation {index.generation})")
    return EXIT_OK


@mirror.command(name="prune")
@_root_option
def mirror_prune(root: Path) -> int:
    """Delete generations superseded over 15 minutes ago (run it from cron). Restores a
    missing .paddle-bundle/current to the newest generation."""
    from bundler.mirror import Mirror, prune

    mirror = Mirror(root)
    link = mirror.link_problem()
    removed = prune(root)
    if link and removed is not None:
        _echo(f"restored {mirror.current_link} to generation {mirror.index().generation}")
    if removed is None:
        _echo("another mirror command is changing the root; it prunes when it finishes")
    else:
        _echo(f"removed generation(s) {', '.join(map(str, removed))}" if removed
              else "nothing to remove")
    return EXIT_OK


@mirror.command(name="nginx-config")
@_root_option
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="ADDR:PORT")
@click.option("--allow", multiple=True, metavar="CIDR",
              help="A network allowed to read (repeatable; default: loopback only).")
def mirror_nginx_config(root: Path, listen: str, allow: tuple[str, ...]) -> int:
    """Print the nginx configuration that serves ROOT (static files, GET/HEAD only)."""
    from bundler.mirror import server_config

    click.echo(server_config(root, listen=listen, allow=allow), nl=False)
    return EXIT_OK


# -- entry point ----------------------------------------------------------------------------
@cli.command(name="python")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Wheel folder to write (e.g. /media/usb/python).")
@_target_options
@_quiet_option
def python_(out: Path, target_python: str | None, target_platform: str | None, paddle: str,
            paddle_version: str | None, extra_index_urls: tuple[str, ...],
            quiet: bool) -> int:
    """Write a wheel folder for the offline machine: paddle-bundle, Paddle, PaddleNLP and
    every dependency, with a hash-pinned requirements.txt.

    \b
    paddle-bundle python -o /media/usb/python --target-python 3.10
    offline, in a venv: python3 -m pip install --no-index --find-links python \\
                          -r python/requirements.txt
    """
    from bundler.wheels import build_folder

    target = _target(target_python, target_platform, paddle, paddle_version, extra_index_urls)
    folder = build_folder(out, target)
    if not quiet:
        _echo(f"{target.describe()}: {len(folder.wheels)} wheels, {_human(folder.size)}")
        _echo_wheel_folder(folder.path)
    return EXIT_OK


@cli.command()
@_home_option
def doctor(home: Path | None) -> int:
    """Can this machine load bundled models? One line per finding; exit 1 if anything
    blocks loading.

    Python, Paddle and PaddleNLP (imported in a child process), the offline-mode hook,
    'unshare -n', the fleet mirror when PADDLE_BUNDLE_MIRROR is set (its file list is
    read), the home and its models, and what to do about each problem.
    """
    from bundler.doctor import diagnose, exit_code

    findings = diagnose(home)  # None: the default home, which doctor reports on
    for finding in findings:
        fix = f" -> {finding.fix}" if finding.fix else ""
        _echo(f"[{finding.status}] {finding.topic}: {finding.message}{fix}")
    return exit_code(findings)


class _WarningHandler(logging.Handler):
    """The library logs; the CLI shows its warnings as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        _echo(f"{PROG}: warning: {record.getMessage()}", err=True)


def _setup_logging() -> None:
    logger = logging.getLogger("bundler")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler(logging.WARNING))
        logger.propagate = False


def _main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; tests call this directly."""
    _setup_logging()
    try:
        rc = cli.main(args=list(argv) if argv is not None else None, prog_name=PROG,
                      standalone_mode=False)
        return rc if isinstance(rc, int) else EXIT_OK
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        _err("aborted")
        return 130
    except KeyboardInterrupt:
        _err("interrupted; nothing was left half-written")
        return 130
    except BundleError as exc:
        _err(str(exc))
        _print_problems(getattr(exc, "problems", ()))
        return exc.exit_code
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _err(f"{exc.strerror or exc}{where}")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("PADDLE_BUNDLE_DEBUG"):
            raise
        _err(f"unexpected {type(exc).__name__}: {exc} (set PADDLE_BUNDLE_DEBUG=1 for a "
             "traceback, and please report it)")
        return EXIT_ERROR


def main() -> None:
    sys.exit(_main())
