"""The globals a weights file may name: what ``paddle.save``, numpy and PaddleNLP write.

Found by reading what they write (``pickletools`` over every tiny model of the test suite, and
over ``paddle.save`` of state dicts, optimizer states, bare tensors and nested containers in
protocols 2, 3 and 4, with Paddle 3.3.1 and numpy 1.26; see tests/test_scan_allowlist.py),
not guessed. None of them imports a module other than its own, evaluates code, or unpickles
bytes (so a pickle nested inside an allowed one can never be reached).
"""

from __future__ import annotations

from collections.abc import Iterable

#: ``(module, name)`` pairs, each with where it comes from.
PADDLE: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): "every ndarray (paddle.save, numpy < 2)",
    ("numpy._core.multiarray", "_reconstruct"): "every ndarray (numpy >= 2)",
    ("numpy", "ndarray"): "the class passed to _reconstruct",
    ("numpy", "dtype"): "every ndarray's dtype",
    ("numpy.core.multiarray", "scalar"): "a numpy scalar in a saved dict (numpy < 2)",
    ("numpy._core.multiarray", "scalar"): "a numpy scalar in a saved dict (numpy >= 2)",
    ("numpy.core.numeric", "_frombuffer"): "an ndarray in pickle protocol 5 (numpy < 2)",
    ("numpy._core.numeric", "_frombuffer"): "an ndarray in pickle protocol 5 (numpy >= 2)",
    ("builtins", "tuple"): "paddle.save of a bare Tensor: (name, ndarray)",
    ("_codecs", "encode"): "bytes in protocol 2 (an ndarray's data)",
    ("collections", "OrderedDict"): "state dicts of PaddleNLP and torch",
    ("builtins", "set"): "a set, protocol 2 and 3",
    ("builtins", "frozenset"): "a frozenset, protocol 2 and 3",
    ("builtins", "bytearray"): "a bytearray, protocol 2 to 4",
    ("builtins", "complex"): "a complex number",
}

#: Only inside a torch zip archive's ``data.pkl``: what ``torch.save`` writes for tensors
#: (the same names torch's own ``weights_only`` loader allows for them).
TORCH: dict[tuple[str, str], str] = {
    ("torch._utils", "_rebuild_tensor_v2"): "every tensor",
    ("torch._utils", "_rebuild_parameter"): "an nn.Parameter",
    **{("torch", f"{kind}Storage"): "a typed storage (legacy name)"
       for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                    "Byte", "Bool")},
    ("torch", "float32"): "dtype",
    ("torch", "float16"): "dtype",
    ("torch", "bfloat16"): "dtype",
}

#: Modules no entry may ever come from: they run, import or unpickle.
NEVER = ("os", "posix", "nt", "subprocess", "builtins.eval", "builtins.exec",
         "builtins.getattr", "builtins.__import__", "runpy", "importlib", "pickle", "_pickle",
         "dill", "marshal", "shutil", "sys", "code", "codeop", "ctypes", "numpy.load",
         "torch.load", "torch.storage._load_from_bytes", "paddle.load")


def parse_global(text: str) -> tuple[str, str]:
    """``MODULE.NAME`` (as ``--allow-global`` takes it) -> ``(module, name)``; the last dot
    splits them. ``ValueError`` for anything else."""
    module, dot, name = text.strip().rpartition(".")
    if not dot or not module or not name or any(not part.isidentifier()
                                                 for part in [*module.split("."), name]):
        raise ValueError(f"{text!r} is not MODULE.NAME")
    return module, name


class Allowlist:
    """The allowed globals, plus a site's own additions (``--allow-global``)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra = tuple(sorted(set(extra)))
        self._base = frozenset(PADDLE) | {parse_global(g) for g in self.extra}
        self._torch = self._base | frozenset(TORCH)

    def allows(self, module: str, name: str) -> bool:
        return (module, name) in self._base

    def allows_in_torch(self, module: str, name: str) -> bool:
        return (module, name) in self._torch
