"""A streaming walker over pickle opcodes that refuses any global outside an allowlist.

Nothing is unpickled: the walker reads opcodes the way :mod:`pickletools` describes them (its
opcode table drives the argument sizes and the stack effects), keeps a model of the stack and
the memo that knows only which items are plain strings, and reports the first ``GLOBAL``,
``STACK_GLOBAL``, ``INST`` or extension-registry reference that is not allowed, with its byte
offset. Every callable that ``REDUCE``, ``BUILD``, ``NEWOBJ``, ``NEWOBJ_EX`` or ``OBJ`` can
invoke arrives through one of those opcodes, so refusing them at the point they are named
refuses every route to running code (and importing the module named is itself a route).

It is push-based (:meth:`PickleWalker.feed` takes chunks as they stream past) and keeps no
more than the opcode being decoded: a tensor's bytes argument of any size is skipped, not held.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import pickle
import pickletools
from collections.abc import Callable, Generator
from dataclasses import dataclass

#: The longest string the walker remembers (module and attribute names are far shorter).
MAX_NAME = 1024
#: Beyond this many stack items or memo entries a pickle is refused rather than modelled.
MAX_ITEMS = 5_000_000
#: A protocol-0 text argument (a number, a quoted string) longer than this is refused.
MAX_LINE = 1 << 20

_MARK = object()  # a MARK on the stack
_OTHER = object()  # known not to be a str (a number, bytes, a container, None)
_ANY = object()  # may be a str the walk cannot know: what a call or a memo/extension yields
_LONG = object()  # a str too long (or not decodable) to remember


@dataclass(frozen=True)
class Finding:
    """Why a walk stopped: ``what`` (a global ``module.name`` or a problem), where.

    ``fatal`` findings are refusals. The others say the bytes stop being a pickle there: the
    unpickler fails at that same opcode, having run nothing the walk did not allow before
    it, so a damaged or misnamed file is not refused for that alone (a ``.pdparams`` of
    random bytes cannot run code). Limits of the walker itself are always fatal.
    """

    offset: int  # byte offset of the opcode in the file
    what: str
    global_name: str | None = None  # the global refused, when a global was the reason
    fatal: bool = True

    def describe(self) -> str:
        return f"{self.what} at offset {self.offset}"


class Refused(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.describe())
        self.finding = finding


@dataclass(frozen=True)
class _Op:
    name: str
    arg: str | None  # pickletools argument descriptor name
    n: int | None  # its size, or one of pickletools' negative markers
    before: tuple[str, ...]
    after: tuple[str, ...]


_OPS: dict[int, _Op] = {
    ord(op.code): _Op(op.name, op.arg.name if op.arg else None, op.arg.n if op.arg else None,
                      tuple(s.name for s in op.stack_before),
                      tuple(s.name for s in op.stack_after))
    for op in pickletools.opcodes
}
_STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
            "SHORT_BINUNICODE", "BINUNICODE8"}
_LEN_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
              pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
              pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
              pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}

Allowed = Callable[[str, str], bool]


class Buffered:
    """The byte-feeding half of every walker: chunks are appended to a buffer that the
    subclass's ``_run`` generator reads from ``_pos``, resuming at each ``feed``; consumed
    bytes are dropped from the front, ``_consumed`` counting them for offsets."""

    def __init__(self, base_offset: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._consumed = base_offset  # bytes dropped from the front of _buf so far
        self._eof = False
        self._gen: Generator[None, None, None] | None = self._run()
        next(self._gen)

    def _run(self) -> Generator[None, None, None]:
        raise NotImplementedError
        yield

    def _take(self, data: bytes | bytearray | memoryview
              ) -> bytes | bytearray | memoryview | None:
        """What of a new chunk goes into the buffer (None: nothing, do not resume)."""
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._gen is None:
            return
        if self._pos:
            del self._buf[:self._pos]
            self._consumed += self._pos
            self._pos = 0
        taken = self._take(data)
        if taken is None:
            return
        self._buf += taken
        self._step()

    def close(self) -> None:
        self._eof = True
        if self._gen is not None:
            self._step()

    def _step(self) -> None:
        assert self._gen is not None
        try:
            self._gen.send(None)
        except StopIteration:
            self._gen = None
        except Refused:
            self._gen = None
            raise

    @property
    def _offset(self) -> int:
        return self._consumed + self._pos


class PickleWalker(Buffered):
    """Feed a pickle's bytes in chunks; :class:`Refused` is raised at the first problem.

    ``allowed(module, name)`` decides each global. ``persistent_ids`` allows ``PERSID`` and
    ``BINPERSID`` (torch's ``data.pkl`` names its storages that way; Paddle never does).
    After ``STOP`` the bytes that follow are walked as a further pickle while they parse as
    one (a loader may call ``load`` again); ``close`` refuses a first pickle left unfinished.
    """

    def __init__(self, allowed: Allowed, *, persistent_ids: bool = False,
                 base_offset: int = 0) -> None:
        self._allowed = allowed
        self._persistent_ids = persistent_ids
        self._skipping = 0  # bytes of an argument still to pass over, not yet fed
        self.pickles = 0  # complete pickles seen
        super().__init__(base_offset)

    # -- input ---------------------------------------------------------------------------
    def _take(self, data: bytes | bytearray | memoryview
              ) -> bytes | bytearray | memoryview | None:
        if self._skipping and not self._buf:
            # inside a long bytes argument (a tensor): count it off without copying it
            take = min(self._skipping, len(data))
            self._skipping -= take
            self._consumed += take
            if self._skipping:
                return None
            return memoryview(data)[take:]
        return data

    def _wait(self) -> Generator[None, None, bool]:
        """Yield until more bytes arrive; False at the end of the input."""
        if self._eof:
            return False
        yield
        return self._pos < len(self._buf) or not self._eof

    def _read(self, n: int, start: int) -> Generator[None, None, bytes]:
        while len(self._buf) - self._pos < n:
            if not (yield from self._wait()):
                raise _truncated(start)
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return data

    def _skip(self, n: int, start: int) -> Generator[None, None, None]:
        take = min(n, len(self._buf) - self._pos)
        self._pos += take
        self._skipping = n - take  # the rest is counted off by feed as it arrives
        while self._skipping:
            if not (yield from self._wait()):
                raise _truncated(start)

    def _line(self, start: int) -> Generator[None, None, bytes]:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos:end])
                self._pos = end + 1
                return line
            if len(self._buf) - self._pos > MAX_LINE:
                raise Refused(Finding(start, "a text argument longer than any a model needs"))
            if not (yield from self._wait()):
                raise _truncated(start)

    # -- the walk ------------------------------------------------------------------------
    def _run(self) -> Generator[None, None, None]:
        yield  # primed by __init__
        yield from self._one_pickle()
        self.pickles += 1
        while True:
            # more bytes after STOP (legacy torch files hold several pickles, then raw data):
            # walked as further pickles; a refused global there is refused, but bytes that
            # stop parsing as a pickle end the walk, since no loader gets past them either
            while self._pos >= len(self._buf):
                if not (yield from self._wait()):
                    return
            try:
                yield from self._one_pickle()
            except Refused as exc:
                if exc.finding.fatal:
                    raise
                self._pos = len(self._buf)
                return
            self.pickles += 1

    def _one_pickle(self) -> Generator[None, None, None]:
        stack: list[object] = []
        memo: dict[int, object] = {}
        proto = 0

        def pop(start: int) -> object:
            if not stack:
                raise Refused(Finding(start, "the pickle pops an empty stack", fatal=False))
            return stack.pop()

        while True:
            start = self._offset
            code = (yield from self._read(1, start))[0]
            op = _OPS.get(code)
            if op is None:
                raise Refused(Finding(start, f"byte 0x{code:02x} is not a pickle opcode",
                                      fatal=False))
            arg = yield from self._argument(op, start)
            name = op.name
            if name == "STOP":
                return
            if name == "PROTO":
                proto = int(arg) if isinstance(arg, int) else proto
                if proto > pickle.HIGHEST_PROTOCOL:  # _pickle: "unsupported pickle protocol"
                    raise Refused(Finding(start, f"pickle protocol {proto}, which no Python "
                                                 "reads", fatal=False))
                continue
            if name in ("GLOBAL", "INST"):
                module, attr = arg if isinstance(arg, tuple) else ("", "")
                self._check(module, attr, proto, start, name)
            elif name == "STACK_GLOBAL":
                attr_item, module_item = pop(start), pop(start)
                if not isinstance(module_item, str) or not isinstance(attr_item, str):
                    # a str computed by a call (e.g. _codecs.encode(..., "rot13")) or too long
                    # to follow is refused; anything known not to be a str makes the
                    # unpickler itself fail ("STACK_GLOBAL requires str")
                    unknown = any(i in (_ANY, _LONG) for i in (module_item, attr_item))
                    raise Refused(Finding(start, "STACK_GLOBAL with a module or name the walk "
                                                 "cannot read" if unknown else
                                                 "STACK_GLOBAL with a name that is not a str",
                                          "<computed name>" if unknown else None,
                                          fatal=unknown))
                self._check(module_item, attr_item, proto, start, name)
                stack.append(_ANY)
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                # a global from copyreg's extension registry: empty in a stock Python, so
                # the unpickler fails unless the loading program registered codes. Refused in
                # any pickle with a protocol header; in bytes without one (protocol 0/1 or
                # no pickle at all: a .pdparams of random bytes) it ends the walk
                raise Refused(Finding(start, f"{name}: a global taken from the copyreg "
                                             "extension registry", f"<{name} {arg}>",
                                      fatal=proto >= 2))
            elif name in ("PERSID", "BINPERSID") and not self._persistent_ids:
                # Paddle's and numpy's loaders define no persistent_load: the unpickler fails
                raise Refused(Finding(start, f"{name}: a persistent id, which Paddle never "
                                             "writes and cannot load", fatal=False))
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise Refused(Finding(start, f"{name} with nothing to remember", fatal=False))
                key = len(memo) if name == "MEMOIZE" else int(arg)  # type: ignore[call-overload]
                memo[key] = stack[-1]
                if len(memo) > MAX_ITEMS:
                    raise Refused(Finding(start, "more memo entries than any model needs"))
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                key = int(arg)  # type: ignore[call-overload]
                if key not in memo:
                    raise Refused(Finding(start, f"{name} of memo entry {key}, never set",
                                          fatal=False))
                stack.append(memo[key])
                continue
            if name == "POP":
                # _pickle's load_pop: a MARK on top is popped like an item (it closes it)
                pop(start)
                continue
            if name == "DUP":
                item = pop(start)
                stack += [item, item]
                continue
            # the generic stack effect, from pickletools' table
            before = op.before
            if "mark" in before:
                while True:
                    if pop(start) is _MARK:
                        break
                before = before[:before.index("mark")]
            for _ in before:
                if pop(start) is _MARK:
                    raise Refused(Finding(start, f"{name} takes a MARK as its operand",
                                                  fatal=False))
            if name in _STR_OPS:
                stack.append(arg if isinstance(arg, str) else _LONG)
            else:
                stack.extend(_MARK if s == "mark" else _ANY if s == "any" else _OTHER
                             for s in op.after)
            if len(stack) > MAX_ITEMS:
                raise Refused(Finding(start, "a deeper stack than any model needs"))

    def _check(self, module: str, attr: str, proto: int, start: int, opname: str) -> None:
        effective = (module, attr)
        if proto < 3:  # what the unpickler imports with fix_imports (the default)
            if (module, attr) in _compat_pickle.NAME_MAPPING:
                effective = _compat_pickle.NAME_MAPPING[(module, attr)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                effective = (_compat_pickle.IMPORT_MAPPING[module], attr)
        if self._allowed(*effective):
            return
        shown = f"{effective[0]}.{effective[1]}"
        raise Refused(Finding(start, f"{opname} {shown} is not an allowed global", shown))

    def _argument(self, op: _Op, start: int) -> Generator[None, None, object]:
        """The decoded argument: an int, a short str, a (module, name) pair, or None."""
        if op.n is None:
            return None
        if op.arg == "stringnl_noescape_pair":
            raw_module = yield from self._line(start)
            raw_attr = yield from self._line(start)
            try:
                return (raw_module.decode("utf-8"), raw_attr.decode("utf-8"))
            except UnicodeDecodeError:  # the unpickler fails to decode it too
                raise Refused(Finding(start, f"{op.name} with a name that is not UTF-8",
                                      fatal=False)) from None
        if op.n == pickletools.UP_TO_NEWLINE:
            line = yield from self._line(start)
            return _text_arg(op, line, start)
        if op.n >= 0:
            raw = yield from self._read(op.n, start)
            if op.arg in ("uint1", "uint2", "uint4", "uint8"):
                return int.from_bytes(raw, "little")
            if op.arg == "int4":
                return int.from_bytes(raw, "little", signed=True)
            return None
        width, signed = _LEN_BYTES[op.n]
        size = int.from_bytes((yield from self._read(width, start)), "little", signed=signed)
        if size < 0:
            raise Refused(Finding(start, f"{op.name} with a negative length", fatal=False))
        if op.name in _STR_OPS and size <= MAX_NAME:
            raw = yield from self._read(size, start)
            if op.name in ("BINSTRING", "SHORT_BINSTRING"):
                return raw.decode("ascii", "replace")  # what encoding="ASCII" yields
            try:
                return raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return None
        yield from self._skip(size, start)
        return None


def _truncated(start: int) -> Refused:
    return Refused(Finding(start, "the pickle ends in the middle of an opcode", fatal=False))


def _text_arg(op: _Op, line: bytes, start: int) -> object:
    """Protocol 0 arguments: memo keys as ints, strings decoded as the unpickler does."""
    if op.name in ("GET", "PUT"):
        try:
            return int(line)
        except ValueError:
            raise Refused(Finding(start, f"{op.name} with a key that is not a number",
                                  fatal=False)) from None
    if op.name == "UNICODE" and len(line) <= MAX_NAME:
        try:
            return line.decode("raw-unicode-escape")
        except UnicodeDecodeError:  # the unpickler fails on it too
            raise Refused(Finding(start, "UNICODE with an argument that does not decode",
                                  fatal=False)) from None
    if (op.name == "STRING" and 2 <= len(line) <= MAX_NAME + 2 and line[0] == line[-1]
            and line[:1] in (b"'", b'"')):
        try:
            decoded: bytes = codecs.escape_decode(line[1:-1])[0]
            return decoded.decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return None
    return None
