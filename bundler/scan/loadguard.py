"""Defense in depth at load time: ``paddle.load`` refuses pickles naming globals outside the
allowlist, for files that never went through a bundle (copied by hand, written by a job).

Paddle's loaders call ``pickle.load``/``pickle.loads`` through the ``pickle`` name of their
own modules (``paddle/framework/io.py``: ``load`` and ``_legacy_load``;
``paddle/framework/io_utils.py``: ``_pickle_loads_mac``; ``paddle/static/io.py``, and
``paddle/static/io_utils.py``'s ``_safe_load_pickle`` through ``pickle.Unpickler``;
``paddle/jit/translated_layer.py`` for ``paddle.jit.load``'s ``.pdiparams.info``;
``paddle/hapi/model.py`` for ``paddle.Model.load``). The guard
replaces that one name, in those modules only, with :class:`GuardedPickle`: the real
module for everything (``dumps``, ``dispatch_table``...) except ``load``, ``loads`` and
``Unpickler``, which use an ``Unpickler`` whose ``find_class`` allows only
:mod:`bundler.scan.allowlist` (the ``weights_only`` idea of ``torch.load``). Every way a
pickle reaches a callable (GLOBAL, STACK_GLOBAL, INST, the extension registry) goes through
``find_class``; ``persistent_load`` is not defined, so persistent ids fail as they do for Paddle.

On with offline mode (``PADDLE_BUNDLE_OFFLINE=1`` or ``import bundler.offline``), or alone
with ``PADDLE_BUNDLE_LOAD_GUARD=1``; ``PADDLE_BUNDLE_LOAD_GUARD=0`` turns it off (a warning
says so). ``PADDLE_BUNDLE_ALLOW_GLOBAL=mod.name,...`` accepts more, as ``--allow-global``.
"""

from __future__ import annotations

import _compat_pickle
import io
import logging
import os
import pickle
import types
from typing import Any, BinaryIO

from bundler import _offline
from bundler.errors import UnsafePickleLoadError, UnsupportedPaddleNLPError
from bundler.scan.allowlist import Allowlist

log = logging.getLogger(__name__)

ENV_GUARD = "PADDLE_BUNDLE_LOAD_GUARD"
ENV_ALLOW = "PADDLE_BUNDLE_ALLOW_GLOBAL"
#: The modules whose ``pickle`` name is replaced.
GUARDED_MODULES = _offline.GUARDED_MODULES


def allowlist_from_env() -> Allowlist:
    extra = [g.strip() for g in os.environ.get(ENV_ALLOW, "").split(",") if g.strip()]
    try:
        return Allowlist(extra)
    except ValueError as exc:
        raise UnsafePickleLoadError(f"{ENV_ALLOW}: {exc}",
                                    hint="write module.name[,module.name...]") from None


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allowed globals."""

    def __init__(self, file: BinaryIO, allow: Allowlist, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allow = allow
        self._source = str(getattr(file, "name", "") or "a pickle")

    def find_class(self, module: str, name: str) -> Any:
        effective = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if not self._allow.allows(*effective):
            raise UnsafePickleLoadError(
                f"refused to unpickle {self._source}: it names {module}.{name}, which "
                "paddle.save never writes, so loading it could run code",
                hint=f"if you trust this file, set {ENV_ALLOW}={effective[0]}.{effective[1]}; "
                     "'paddle-bundle scan FILE' shows everything it names")
        return super().find_class(*effective)


class GuardedPickle(types.ModuleType):
    """Stands in for ``pickle`` in Paddle's loading modules."""

    def __init__(self, allow: Allowlist) -> None:
        super().__init__("pickle", "pickle, with load/loads restricted by paddle-bundle")
        self._allow = allow

        class Unpickler(RestrictedUnpickler):  # paddle/static/io_utils.py uses it directly
            def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
                super().__init__(file, allow, **kwargs)

        self.Unpickler = Unpickler

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)

    def load(self, file: BinaryIO, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, self._allow, **kwargs).load()

    def loads(self, data: bytes | bytearray | memoryview, /, **kwargs: Any) -> Any:
        return RestrictedUnpickler(io.BytesIO(data), self._allow, **kwargs).load()


def guard_module(module: types.ModuleType) -> None:
    """Replace ``module.pickle``, after checking it is the real pickle module (or already
    guarded): a Paddle that loads some other way would leave the guard doing nothing, so
    that is refused loudly instead."""
    current = vars(module).get("pickle")
    if isinstance(current, GuardedPickle):
        return
    if current is not pickle:
        raise UnsupportedPaddleNLPError(
            f"{module.__name__} no longer loads through the pickle module, so paddle-bundle's "
            "load-time guard cannot protect paddle.load",
            hint=f"report it; {ENV_GUARD}=0 runs without the guard")
    vars(module)["pickle"] = GuardedPickle(allowlist_from_env())


def install() -> None:
    """Switch the guard on without offline mode (the separate switch)."""
    _offline.install_load_guard()
