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
    python tools/tiny_models.py families-tree ROOT [ID...]   # Llama, Qwen2, BERT, T5, m3e,
                                                             # PP-UIE (issue 8), as BOS
    python tools/tiny_models.py check codegen|ernie ID_OR_PATH   # load + run
    python tools/tiny_models.py check llama|qwen2|bert|t5 ID_OR_PATH
    python tools/tiny_models.py check m3e|pp-uie MODEL_NAME   # through Taskflow

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
from collections.abc import Callable, Iterable, Mapping
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


# --------------------------------------------------------------------------- #
# More families: what `fetch ID` and `fetch --task` must carry (issue 8).
# --------------------------------------------------------------------------- #

#: A sentencepiece Llama, laid out as PaddleNLP's community Llama repos are: the slow
#: tokenizer's ``sentencepiece.bpe.model`` *and* the fast tokenizer's ``tokenizer.model``,
#: but no ``tokenizer.json`` (so ``use_fast=True`` builds the fast tokenizer from the
#: sentencepiece model, which needs ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``).
LLAMA_SP_ID = "paddle-bundle-test/tiny-llama-sp"
#: A Qwen2 chat model: byte-level BPE with ``tokenizer.json`` and a chat template.
QWEN2_CHAT_ID = "paddle-bundle-test/tiny-qwen2-chat"
#: A BERT with ``tokenizer.json`` (the fast tokenizer's own file), loaded with float16.
BERT_ID = "paddle-bundle-test/tiny-bert"
#: A T5 in several safetensors shards, with a sentencepiece ``spiece.model``.
T5_SHARDED_ID = "paddle-bundle-test/tiny-t5-sharded"
#: Taskflow("feature_extraction") only takes model names from its registry; m3e is a BERT.
M3E_ID = "moka-ai/m3e-base"
#: Taskflow("information_extraction") with PP-UIE: a Qwen2 causal LM with a chat template.
PP_UIE_ID = "paddlenlp/PP-UIE-0.5B"

T5_MAX_SHARD_SIZE = "160KB"

#: Lines the tiny sentencepiece models are trained on: English and Chinese, so both encode
#: to real pieces; byte fallback covers everything else.
SP_CORPUS: tuple[str, ...] = (
    "hello world paddle bundle the quick brown fox jumps over the lazy dog",
    "你好世界 飞桨 中文 模型 测试 北京 上海 时间 人物 地点",
    "translate English to German: the house is wonderful",
    "abcdefghijklmnopqrstuvwxyz 0123456789 , . ! ?",
)

#: Qwen2's chat markup, as its tokenizer_config.json carries it (a jinja string).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2_SPECIALS = ("<|im_start|>", "<|im_end|>")

#: WordPiece vocabulary of the BERT stand-ins (BERT's special tokens, then text).
BERT_VOCAB: tuple[str, ...] = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    *"，。！？你好世界飞桨中文模型测试北京上海时间人物",
    *"abcdefghijklmnopqrstuvwxyz0123456789",
    "hello", "world", "paddle", "bundle", "##s", "##ing", "##ed",
)


def sentencepiece_model(*, pad_id: int, unk_id: int, bos_id: int, eos_id: int,
                        vocab_size: int = 360) -> bytes:
    """A real, deterministic sentencepiece BPE model (the protobuf bytes), trained on
    :data:`SP_CORPUS` with sentencepiece's own trainer. Identity normalisation keeps it a few
    KB (the NFKC table alone is 240 KB); byte fallback makes any text encodable."""
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS * 20), model_writer=out, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, byte_fallback=True,
        normalization_rule_name="identity", pad_id=pad_id, unk_id=unk_id, bos_id=bos_id,
        eos_id=eos_id, num_threads=1, minloglevel=2)
    return out.getvalue()


def _save_model(model: object, out_dir: Path, **kwargs: object) -> None:
    import paddle

    model.eval()  # type: ignore[attr-defined]
    with paddle.no_grad():
        model.save_pretrained(str(out_dir), **kwargs)  # type: ignore[attr-defined]


def _set_tokenizer_class(out_dir: Path, name: str, **extra: str) -> None:
    """Edit ``tokenizer_config.json`` as the hub repos have it: a fast tokenizer's
    ``save_pretrained`` names itself, but the repos name the slow class (so
    ``AutoTokenizer`` without ``use_fast`` loads the slow one from the slow files)."""
    path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("name_or_path", "special_tokens_map_file"):  # the temp folder built in
        config.pop(key, None)
    config.update(tokenizer_class=name, **extra)
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def build_llama_sp(out_dir: Path) -> Path:
    """A tiny LlamaForCausalLM with a sentencepiece tokenizer (see :data:`LLAMA_SP_ID`)."""
    import paddle
    from paddlenlp.transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-sp-") as tmp:
        sp_file = Path(tmp) / "sp.model"
        sp_file.write_bytes(sentencepiece_model(pad_id=-1, unk_id=0, bos_id=1, eos_id=2))
        tokenizer = LlamaTokenizer(vocab_file=str(sp_file))
        tokenizer.save_pretrained(str(out_dir))  # sentencepiece.bpe.model + configs
        # what LlamaTokenizerFast reads (and saves): the same model under its own name
        shutil.copyfile(sp_file, out_dir / "tokenizer.model")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    _seed_everything()
    with paddle.utils.unique_name.guard():  # see build_codegen
        model = LlamaForCausalLM(config)
    _save_model(model, out_dir)
    return out_dir


def build_qwen2_chat(out_dir: Path) -> Path:
    """A tiny Qwen2ForCausalLM with a byte-level BPE tokenizer, its ``tokenizer.json`` and a
    chat template in ``tokenizer_config.json`` (as Qwen2 repos carry it)."""
    import paddle
    from paddlenlp.transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2Tokenizer,
        Qwen2TokenizerFast,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-bpe-") as tmp:
        vocab_file, merges_file, _ = write_bpe_files(Path(tmp))
        slow = Qwen2Tokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file),
                              additional_special_tokens=list(QWEN2_SPECIALS))
        slow.save_pretrained(tmp + "/slow")
        fast = Qwen2TokenizerFast.from_pretrained(tmp + "/slow")
        fast.save_pretrained(str(out_dir))  # tokenizer.json, vocab.json, merges.txt
    _set_tokenizer_class(out_dir, "Qwen2Tokenizer", chat_template=QWEN2_CHAT_TEMPLATE)
    eot = fast.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=eot, eos_token_id=eot,
                         pad_token_id=eot, tie_word_embeddings=True)
    _seed_everything()
    with paddle.utils.unique_name.guard():
        model = Qwen2ForCausalLM(config)
    _save_model(model, out_dir)
    return out_dir


def build_bert(out_dir: Path) -> Path:
    """A tiny BertModel with WordPiece ``vocab.txt`` and the fast tokenizer's
    ``tokenizer.json`` (the stand-in for BERT-family community models and m3e)."""
    import paddle
    from paddlenlp.transformers import BertConfig, BertModel, BertTokenizer
    from paddlenlp.transformers.bert.tokenizer_fast import BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-wordpiece-") as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
        BertTokenizer(vocab_file=str(vocab_file)).save_pretrained(tmp + "/slow")
        BertTokenizerFast.from_pretrained(tmp + "/slow").save_pretrained(str(out_dir))
    _set_tokenizer_class(out_dir, "BertTokenizer")  # as BERT repos name it: slow by default
    config = BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128, type_vocab_size=2, pad_token_id=0)
    _seed_everything()
    with paddle.utils.unique_name.guard():
        model = BertModel(config)
    _save_model(model, out_dir)
    return out_dir


def build_t5_sharded(out_dir: Path, *, max_shard_size: str = T5_MAX_SHARD_SIZE) -> Path:
    """A tiny T5ForConditionalGeneration in several safetensors shards + ``spiece.model``."""
    import paddle
    from paddlenlp.transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-sp-") as tmp:
        sp_file = Path(tmp) / "spiece.model"
        sp_file.write_bytes(sentencepiece_model(pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
        tokenizer = T5Tokenizer(sentencepiece_model_file=str(sp_file))
        tokenizer.save_pretrained(str(out_dir))
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    _seed_everything()
    with paddle.utils.unique_name.guard():
        model = T5ForConditionalGeneration(config)
    _save_model(model, out_dir, max_shard_size=max_shard_size, safe_serialization=True)
    shards = sorted(out_dir.glob("model-*.safetensors"))
    if not (out_dir / "model.safetensors.index.json").is_file() or len(shards) < 2:
        found = sorted(p.name for p in out_dir.iterdir())
        raise RuntimeError(f"expected a sharded checkpoint in {out_dir}, got {found}")
    return out_dir


#: The families of issue 8, by model id: builder of the folder BOS serves.
FAMILIES: dict[str, Callable[[Path], Path]] = {
    LLAMA_SP_ID: build_llama_sp,
    QWEN2_CHAT_ID: build_qwen2_chat,
    BERT_ID: build_bert,
    T5_SHARDED_ID: build_t5_sharded,
    M3E_ID: build_bert,
    PP_UIE_ID: build_qwen2_chat,
}


def build_families_tree(root: Path, ids: Iterable[str] | None = None) -> dict[str, Path]:
    """Build the families (all, or ``ids``) and lay them out as a BOS mirror below ``root``."""
    wanted = list(FAMILIES) if ids is None else list(ids)
    with tempfile.TemporaryDirectory(prefix="tiny-families-") as tmp:
        folders = {model_id: FAMILIES[model_id](Path(tmp) / model_id.replace("/", "--"))
                   for model_id in wanted}
        return build_mirror(Path(root), folders)


def run_llama_fast(ref: str, max_new_tokens: int = 4) -> dict[str, object]:
    """``AutoTokenizer(use_fast=True)`` + generate: the load that failed offline before."""
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref, use_fast=True)
    model = AutoModelForCausalLM.from_pretrained(ref)
    model.eval()
    encoded = tokenizer("hello world 你好", return_tensors="pd")  # with attention_mask
    with paddle.no_grad():
        ids, _ = model.generate(**encoded, max_new_tokens=max_new_tokens,
                                decode_strategy="greedy_search")
    return {"tokenizer": type(tokenizer).__name__, "ids": ids[0].numpy().tolist()}


def run_qwen2_chat(ref: str, max_new_tokens: int = 4) -> dict[str, object]:
    """``apply_chat_template`` + generate, as a chat application does."""
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref, use_fast=True)
    model = AutoModelForCausalLM.from_pretrained(ref)
    model.eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}],
                                           tokenize=False)
    encoded = tokenizer(prompt, return_tensors="pd", add_special_tokens=False)
    with paddle.no_grad():
        ids, _ = model.generate(input_ids=encoded["input_ids"],
                                attention_mask=encoded["attention_mask"],
                                max_new_tokens=max_new_tokens, decode_strategy="greedy_search")
    return {"tokenizer": type(tokenizer).__name__, "prompt": prompt,
            "ids": ids[0].numpy().tolist()}


def run_bert_fp16(ref: str) -> dict[str, object]:
    """BERT by name in float16 (the weights as loaded), fast tokenizer, one forward pass."""
    import paddle
    from paddlenlp.transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref, use_fast=True)
    model = AutoModel.from_pretrained(ref, dtype="float16")
    model.eval()
    dtype = str(model.embeddings.word_embeddings.weight.dtype)
    model.to(dtype="float32")  # Paddle's CPU kernels have no float16 add
    encoded = tokenizer("你好世界 hello paddle", return_tensors="pd")
    with paddle.no_grad():
        sequence_output = model(input_ids=encoded["input_ids"])[0]
    return {"tokenizer": type(tokenizer).__name__, "dtype": dtype,
            "shape": list(sequence_output.shape)}


def run_t5(ref: str, max_new_tokens: int = 4) -> dict[str, object]:
    """A sharded T5 by name: tokenizer + generate."""
    import paddle
    from paddlenlp.transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = T5ForConditionalGeneration.from_pretrained(ref)
    model.eval()
    encoded = tokenizer("translate English to German: hello world", return_tensors="pd")
    with paddle.no_grad():
        ids, _ = model.generate(input_ids=encoded["input_ids"], max_new_tokens=max_new_tokens,
                                decode_strategy="greedy_search")
    return {"tokenizer": type(tokenizer).__name__, "ids": ids[0].numpy().tolist()}


#: Short inputs the Taskflow checks run on.
UIE_SCHEMA = ["时间", "人物"]
TASK_TEXT = "2024年张三在北京测试飞桨"


def run_feature_extraction(model_id: str = M3E_ID) -> dict[str, object]:
    from paddlenlp import Taskflow

    flow = Taskflow("feature_extraction", model=model_id)
    out = flow([TASK_TEXT])
    return {"shape": list(out["features"].shape)}


def run_information_extraction(model_id: str = PP_UIE_ID) -> dict[str, object]:
    from paddlenlp import Taskflow

    flow = Taskflow("information_extraction", schema=UIE_SCHEMA, model=model_id,
                    precision="float32")
    out = flow(TASK_TEXT)
    return {"type": type(out).__name__, "len": len(out)}


#: ``check`` commands for the families: kind -> loader that runs it by id or path.
FAMILY_CHECKS: dict[str, Callable[[str], dict[str, object]]] = {
    "llama": run_llama_fast,
    "qwen2": run_qwen2_chat,
    "bert": run_bert_fp16,
    "t5": run_t5,
    "m3e": run_feature_extraction,
    "pp-uie": run_information_extraction,
}


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


#: Taskflow("text_similarity")'s default model: static files from fixed URLs (md5-pinned in
#: PaddleNLP's TextSimilarityTask.resource_files_urls) plus a built-in tokenizer name.
SIMBERT_ID = "simbert-base-chinese"
SIMBERT_TASK = "text_similarity/simbert-base-chinese"


def build_text_similarity(home: Path) -> dict[str, str]:
    """Put a tiny BERT where Taskflow("text_similarity") reads it below a PaddleNLP ``home``:
    ``taskflow/text_similarity/simbert-base-chinese/{model_state.pdparams,model_config.json}``
    (the files of its fixed URLs) and ``models/simbert-base-chinese/vocab.txt`` (the built-in
    tokenizer's resource). Returns the md5 of each task file, which a client must put in
    place of the md5s PaddleNLP pins for the real weights (:func:`run_text_similarity`)."""
    import hashlib

    home = Path(home)
    with tempfile.TemporaryDirectory(prefix="tiny-simbert-") as tmp:
        bert = build_bert(Path(tmp) / "bert")
        task = home / "taskflow" / SIMBERT_TASK
        task.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bert / "model_state.pdparams", task / "model_state.pdparams")
        shutil.copyfile(bert / "config.json", task / "model_config.json")
        vocab = home / "models" / SIMBERT_ID
        vocab.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bert / "vocab.txt", vocab / "vocab.txt")
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(task.iterdir())
            if p.is_file()}


def run_text_similarity(md5: Mapping[str, str]) -> dict[str, object]:
    """Taskflow("text_similarity") on two sentences, with the tiny weights' md5s in place of
    the real ones (the only change to PaddleNLP: its download and md5 checks run as shipped)."""
    from paddlenlp import Taskflow
    from paddlenlp.taskflow.text_similarity import TextSimilarityTask

    pinned = TextSimilarityTask.resource_files_urls[SIMBERT_ID]
    pinned["model_state"][1] = md5["model_state.pdparams"]
    pinned["model_config"][1] = md5["model_config.json"]
    flow = Taskflow("text_similarity")
    out = flow([["你好世界", "你好北京"]])
    return {"similarity": float(out[0]["similarity"])}


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
    p = sub.add_parser(
        "families-tree", help="the issue-8 families (Llama, Qwen2, BERT, T5, m3e, PP-UIE) as BOS"
    )
    p.add_argument("root", type=Path)
    p.add_argument("ids", nargs="*", help=f"only these ids (default: {', '.join(FAMILIES)})")
    p = sub.add_parser("check", help="load a model by id or path and run it; exit 1 on failure")
    p.add_argument("kind", choices=["codegen", "ernie", *FAMILY_CHECKS])
    p.add_argument("ref", help="model id (resolved via PPNLP_ENDPOINT/PPNLP_HOME) or folder path")
    args = parser.parse_args(argv)

    if args.cmd == "check":
        if args.kind in FAMILY_CHECKS:
            print(f"OK {args.kind} {args.ref}: {json.dumps(FAMILY_CHECKS[args.kind](args.ref))}")
            return 0
        result = run_codegen(args.ref) if args.kind == "codegen" else run_ernie(args.ref)
        print(f"OK {args.kind} {args.ref}: {result}")
        return 0
    if args.cmd == "families-tree":
        for model_id, path in build_families_tree(args.root, args.ids or None).items():
            print(f"{model_id} -> {path}")
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
