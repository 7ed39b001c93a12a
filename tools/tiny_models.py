"""Build tiny but *real* PaddleNLP model folders for tests and demos.

paddle-bundle has to prove that models fetched from PaddleNLP's BOS server can
be packed, carried over an air gap and loaded offline.  The real models are
hundreds of megabytes and this machine has no route to BOS, so the tests use
stand-ins that go through exactly the same code paths:

* the models are built with PaddleNLP's own classes and written with their own
  ``save_pretrained`` so the file names, ``config.json`` keys and tokenizer
  files are exactly what PaddleNLP writes (and therefore reads back);
* weights are deterministic (fixed seeds), so a bundle built twice has the same
  checksums;
* everything is small (tens of KB) and builds in well under a second once
  ``paddlenlp`` is imported.

``build_mirror`` arranges the folders the way BOS serves them
(``<endpoint>/models/community/<org>/<name>/<file>``), so that
``python -m http.server`` pointed at it (see ``tools/mirror.py``) can stand in
for ``https://bj.bcebos.com/paddlenlp`` via ``PPNLP_ENDPOINT``.

CLI::

    python tools/tiny_models.py codegen OUT_DIR
    python tools/tiny_models.py ernie-sharded OUT_DIR
    python tools/tiny_models.py mirror-tree ROOT   # both models, laid out as BOS
    python tools/tiny_models.py check codegen|ernie ID_OR_PATH   # load + run

Importing this module is cheap: paddle/paddlenlp are imported lazily inside the
builders, because ``import paddlenlp`` takes seconds and reads ``PPNLP_HOME``
at import time (callers must set that first).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Model id used for the CodeGen stand-in.  It is the id Taskflow's
#: ``code_generation`` task hard-codes as its default model, so a mirror serving
#: the tiny model under this id exercises the real Taskflow download path.
CODEGEN_ID = "Salesforce/codegen-350M-mono"

#: Community id for the sharded ERNIE stand-in.  Any ``org/name`` id that is not
#: one of ERNIE's built-in names is resolved through the community BOS path.
ERNIE_SHARDED_ID = "paddle-bundle-test/tiny-ernie-sharded"

#: Shard size that splits the tiny ERNIE into several safetensors files.
ERNIE_MAX_SHARD_SIZE = "40KB"

#: Sub-path of the mirror root that plays the role of
#: ``https://bj.bcebos.com/paddlenlp`` (the default ``PPNLP_ENDPOINT``).
ENDPOINT_SUBDIR = "paddlenlp"

SEED = 20240601

ENDOFTEXT = "<|endoftext|>"

#: A few BPE merges so the tokenizer really merges something (a merge list of
#: zero entries would leave the BPE code path untested).  Every merge joins two
#: symbols that are already in the vocabulary, in order, so the merged token is
#: always reachable.  "Ġ" is the byte-level symbol for a space, "Ċ" for "\n".
CODEGEN_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "Ġ"),
    ("ĠĠ", "ĠĠ"),
    ("d", "e"),
    ("de", "f"),
    ("Ġ", "r"),
    ("Ġr", "e"),
    ("Ġre", "t"),
    ("u", "r"),
    ("Ġret", "ur"),
    ("Ġretur", "n"),
    ("p", "r"),
    ("i", "n"),
    ("pr", "in"),
    ("prin", "t"),
    ("Ġ", "a"),
    ("Ġ", "b"),
    ("Ġ", "+"),
    ("(", ")"),
    (")", ":"),
    (":", "Ċ"),
)

#: WordPiece vocabulary for the ERNIE stand-in: ERNIE's special tokens first (the
#: ids ErnieTokenizer expects: [PAD]=0 ... ), then a handful of characters and
#: words so Chinese and English text both tokenize to something other than [UNK].
ERNIE_VOCAB: tuple[str, ...] = (
    "[PAD]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[UNK]",
    *"，。！？",
    *"你好世界飞桨中文模型测试",
    *"abcdefghijklmnopqrstuvwxyz0123456789",
    "hello",
    "world",
    "paddle",
    "bundle",
    "##s",
    "##ing",
    "##ed",
)


# --------------------------------------------------------------------------- #
# Pure helpers (no paddle import): usable from fast unit tests.
# --------------------------------------------------------------------------- #


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map.

    Duplicated from PaddleNLP/GPT-2 (it is 10 stable lines) so the vocabulary
    can be built and checked without importing paddle.
    """
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def byte_level_bpe(
    merges: Iterable[tuple[str, str]] = CODEGEN_MERGES,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return ``(vocab, merges)`` for a minimal valid byte-level BPE.

    The vocabulary holds all 256 byte symbols (so *any* text can be encoded),
    one token per merge result, and ``<|endoftext|>`` last, as in GPT-2/CodeGen.
    Raises ``ValueError`` if a merge uses a symbol that is not yet defined,
    because such a merge could never fire and would hide a typo.
    """
    vocab: dict[str, int] = {}
    for symbol in bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    merge_list = list(merges)
    for left, right in merge_list:
        for part in (left, right):
            if part not in vocab:
                raise ValueError(f"merge {left!r} {right!r}: {part!r} is not in the vocabulary yet")
        merged = left + right
        if merged in vocab:
            raise ValueError(f"merge {left!r} {right!r}: {merged!r} is already in the vocabulary")
        vocab[merged] = len(vocab)
    vocab[ENDOFTEXT] = len(vocab)
    return vocab, merge_list


def write_bpe_files(directory: Path) -> tuple[Path, Path, dict[str, int]]:
    """Write ``vocab.json`` and ``merges.txt`` in the layout GPTTokenizer parses.

    GPTTokenizer drops the first line of merges.txt (the ``#version`` header)
    and the last one (empty after the trailing newline), so both are required.
    """
    vocab, merges = byte_level_bpe()
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_file, merges_file, vocab


def community_dir(root: Path, model_id: str) -> Path:
    """Where BOS would serve ``model_id`` below a mirror ``root``.

    PaddleNLP builds ``{PPNLP_ENDPOINT}/models/community/{repo_id}/{filename}``
    (``paddlenlp/utils/download/bos_download.py``) and the legacy
    ``{COMMUNITY_MODEL_PREFIX}/{repo_id}/{filename}``, whose default is the same
    URL.  The extra ``paddlenlp/`` level mirrors the default endpoint
    ``https://bj.bcebos.com/paddlenlp`` so both variables map onto one tree.
    """
    parts = model_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"model id must look like 'org/name', got {model_id!r}")
    return root / ENDPOINT_SUBDIR / "models" / "community" / parts[0] / parts[1]


def build_mirror(root: Path, models: Mapping[str, Path]) -> dict[str, Path]:
    """Copy each model folder to its BOS-like place below ``root``.

    ``models`` maps a model id (``org/name``) to a folder written by
    ``save_pretrained``.  Returns the id -> mirror folder mapping.  Serve it with
    ``tools/mirror.py``; the endpoint to export is
    ``http://HOST:PORT/paddlenlp`` (``PPNLP_ENDPOINT``) and
    ``http://HOST:PORT/paddlenlp/models/community`` (``COMMUNITY_MODEL_PREFIX``).
    Existing mirror folders are replaced, so files from an older build do not
    linger and get served.
    """
    root = Path(root)
    placed: dict[str, Path] = {}
    for model_id, src in models.items():
        src = Path(src)
        if not src.is_dir():
            raise FileNotFoundError(f"{model_id}: {src} is not a directory")
        dest = community_dir(root, model_id)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)
        placed[model_id] = dest
    return placed


# --------------------------------------------------------------------------- #
# Builders (import paddle lazily).
# --------------------------------------------------------------------------- #


def _seed_everything(seed: int = SEED) -> None:
    """Fix every RNG that parameter initialisation may draw from."""
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def build_codegen(out_dir: Path, *, safe_serialization: bool = False) -> Path:
    """Write a tiny CodeGen causal LM + byte-level BPE tokenizer to ``out_dir``.

    The layout matches a PaddleNLP download of ``Salesforce/codegen-350M-mono``:
    config.json, model_state.pdparams (or model.safetensors), generation_config.json,
    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json.
    ``pdparams`` is the default because that is what ``save_pretrained`` writes
    unless told otherwise and what the BOS community repos mostly hold.
    """
    import paddle
    from paddlenlp.transformers import CodeGenConfig, CodeGenForCausalLM, CodeGenTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-bpe-") as tmp:
        vocab_file, merges_file, vocab = write_bpe_files(Path(tmp))
        tokenizer = CodeGenTokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file))
        tokenizer.save_pretrained(str(out_dir))

    eot = vocab[ENDOFTEXT]
    config = CodeGenConfig(
        vocab_size=len(vocab),
        n_layer=2,
        n_embd=32,
        n_head=4,
        n_inner=64,
        rotary_dim=4,
        # Taskflow generates up to max_length=128 new tokens after the prompt.
        n_ctx=256,
        n_positions=256,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    _seed_everything()
    # pdparams pickles the auto-generated parameter names ("linear_12.w_0"),
    # which count up per process; a fresh name scope keeps the file byte-identical
    # however many models were built before in this process.
    with paddle.utils.unique_name.guard():
        model = CodeGenForCausalLM(config)
    model.eval()
    with paddle.no_grad():
        model.save_pretrained(str(out_dir), safe_serialization=safe_serialization)
    return out_dir


def build_ernie_sharded(out_dir: Path, *, max_shard_size: str = ERNIE_MAX_SHARD_SIZE) -> Path:
    """Write a tiny ErnieModel split into several safetensors shards + tokenizer.

    Sharded checkpoints are the case where a bundler can silently ship a broken
    model (index present, one shard missing), so the test model must have an
    index and more than one shard: ``model.safetensors.index.json`` plus
    ``model-0000k-of-0000n.safetensors``.
    """
    import paddle
    from paddlenlp.transformers import ErnieConfig, ErnieModel, ErnieTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-wordpiece-") as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(ERNIE_VOCAB) + "\n", encoding="utf-8")
        tokenizer = ErnieTokenizer(vocab_file=str(vocab_file))
        tokenizer.save_pretrained(str(out_dir))

    config = ErnieConfig(
        vocab_size=len(ERNIE_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=4,
        task_type_vocab_size=3,
        pad_token_id=0,
    )
    _seed_everything()
    with paddle.utils.unique_name.guard():  # see build_codegen
        model = ErnieModel(config)
    model.eval()
    with paddle.no_grad():
        model.save_pretrained(str(out_dir), max_shard_size=max_shard_size, safe_serialization=True)
    shards = sorted(out_dir.glob("model-*.safetensors"))
    if not (out_dir / "model.safetensors.index.json").is_file() or len(shards) < 2:
        found = sorted(p.name for p in out_dir.iterdir())
        raise RuntimeError(f"expected a sharded checkpoint in {out_dir}, got {found}")
    return out_dir


def build_mirror_tree(root: Path) -> dict[str, Path]:
    """Build both tiny models and lay them out as a BOS mirror below ``root``."""
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="tiny-models-") as tmp:
        codegen = build_codegen(Path(tmp) / "codegen")
        ernie = build_ernie_sharded(Path(tmp) / "ernie")
        return build_mirror(root, {CODEGEN_ID: codegen, ERNIE_SHARDED_ID: ernie})


def run_codegen(ref: str, max_new_tokens: int = 4) -> list[int]:
    """Load a CodeGen model + tokenizer by id or path and greedily generate.

    Goes through the Auto* classes on purpose: they read ``tokenizer_config.json``
    and ``config.json`` to pick the classes, which is what users' code does and
    what a bundle must therefore preserve.  Returns the generated ids (greedy,
    so they are deterministic for the tiny model).
    """
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForCausalLM.from_pretrained(ref)
    model.eval()
    input_ids = tokenizer("def add(a, b):\n    return", return_tensors="pd")["input_ids"]
    with paddle.no_grad():
        ids, _ = model.generate(
            input_ids=input_ids, max_new_tokens=max_new_tokens, decode_strategy="greedy_search"
        )
    out: list[int] = ids[0].numpy().tolist()
    return out


def run_ernie(ref: str) -> list[int]:
    """Load an ERNIE model + tokenizer by id or path and run one forward pass.

    Returns the shape of the sequence output, ``[1, seq_len, hidden]``.
    """
    import paddle
    from paddlenlp.transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModel.from_pretrained(ref)
    model.eval()
    encoded = tokenizer("你好世界 hello paddle", return_tensors="pd")
    with paddle.no_grad():
        sequence_output = model(**encoded)[0]
    return list(sequence_output.shape)


# --------------------------------------------------------------------------- #
# A built-in name at its fixed URLs (added for fetch --mirror; h-capture).
# --------------------------------------------------------------------------- #

#: A PaddleNLP built-in name: its files come from fixed URLs on PaddleNLP's bucket
#: (``https://bj.bcebos.com/paddlenlp/models/transformers/ernie_3.0/...``), not from
#: ``$PPNLP_ENDPOINT/models/community``; its config is in PaddleNLP's code.
BUILTIN_ERNIE_ID = "ernie-3.0-nano-zh"


def build_builtin_ernie(root: Path) -> dict[str, Path]:
    """Serve ``ernie-3.0-nano-zh`` below a mirror ``root`` at its fixed URLs' paths.

    The vocabulary is the tiny ERNIE one; the weights file holds only the model's small
    LayerNorm tensors (real names and shapes, values fixed), so loading works (PaddleNLP
    initialises the rest and warns) without 70 MB of embeddings. Returns URL -> file.
    """
    import paddle
    from paddlenlp.transformers import ErnieModel, ErnieTokenizer

    _seed_everything()

    vocab_url = ErnieTokenizer.pretrained_resource_files_map["vocab_file"][BUILTIN_ERNIE_ID]
    weights_url = ErnieModel.pretrained_resource_files_map["model_state"][BUILTIN_ERNIE_ID]
    placed: dict[str, Path] = {}
    bucket = "https://bj.bcebos.com/paddlenlp/"
    for url in (vocab_url, weights_url):
        if not url.startswith(bucket):
            raise ValueError(f"{url} is not on PaddleNLP's bucket")
        placed[url] = root / ENDPOINT_SUBDIR / url[len(bucket):]
        placed[url].parent.mkdir(parents=True, exist_ok=True)
    placed[vocab_url].write_text("\n".join(ERNIE_VOCAB) + "\n", encoding="utf-8")
    with paddle.LazyGuard():
        names = {k: list(v.shape) for k, v in ErnieModel.from_config(
            ErnieModel.config_class.from_pretrained(BUILTIN_ERNIE_ID)).state_dict().items()}
    small = {k: paddle.full(shape, 0.5) for k, shape in names.items()
             if "norm" in k and len(shape) == 1}
    paddle.save(small, str(placed[weights_url]))
    return placed


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def _list(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>10}  {p}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "codegen", help=f"tiny CodeGen LM + BPE tokenizer (stand-in for {CODEGEN_ID})"
    )
    p.add_argument("out_dir", type=Path)
    p.add_argument(
        "--safetensors", action="store_true", help="write model.safetensors instead of pdparams"
    )
    p = sub.add_parser("ernie-sharded", help="tiny ERNIE in several safetensors shards + tokenizer")
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser(
        "mirror-tree", help="both models laid out as <root>/paddlenlp/models/community/..."
    )
    p.add_argument("root", type=Path)
    p = sub.add_parser("check", help="load a model by id or path and run it; exit 1 on failure")
    p.add_argument("kind", choices=["codegen", "ernie"])
    p.add_argument("ref", help="model id (resolved via PPNLP_ENDPOINT/PPNLP_HOME) or folder path")
    args = parser.parse_args(argv)

    if args.cmd == "check":
        result = run_codegen(args.ref) if args.kind == "codegen" else run_ernie(args.ref)
        print(f"OK {args.kind} {args.ref}: {result}")
        return 0

    if args.cmd == "codegen":
        _list(build_codegen(args.out_dir, safe_serialization=args.safetensors))
    elif args.cmd == "ernie-sharded":
        _list(build_ernie_sharded(args.out_dir))
    else:
        placed = build_mirror_tree(args.root)
        _list(args.root)
        for model_id, path in placed.items():
            print(f"{model_id} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
