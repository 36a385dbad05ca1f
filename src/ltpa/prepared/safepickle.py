"""A pickle reader that runs no code: a small stack machine for the opcodes a track dataset uses.

``pickle.Unpickler.find_class`` filters only which names a pickle may look up; whatever it
lets through is then *called* by REDUCE/NEWOBJ and *fed state* by BUILD, with arguments the
file chooses. Here nothing from the file is ever called: the machine knows a fixed set of
opcodes, resolves only exact ``(module, name)`` pairs (never dotted names) to tokens of its
own, and each token is a function of this module that checks its arguments before it builds
anything (an array's size against its bytes, a dtype against a fixed list, a dataset's state
against its declared shape). Everything else, and every malformed file, is an ``LtpaError``.

Large byte strings (an array's data) are not copied: they are returned as read-only views of
the memory-mapped file, so a 1 GB dataset opens in milliseconds and only the pages that are
read are paged in.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError, LtpaError, RefusedPickleError, opening

# a payload this big is handed out as a view of the mapped file instead of a copy
BIG = 1 << 16
# bounds on what a file may make us build besides array data
# objects pushed, MARKs and memo entries, together (a dataset has a few hundred): each is a
# Python object or a slot this machine keeps, so this bounds its memory (~100 bytes each)
MAX_OBJECTS = 2_000_000
MAX_MARKS = 1_000  # MARKs open at once (a dataset nests a few levels)
# nodes of one dtype state walked when it is compared with the allowed dtypes' states (the
# largest, a TrackVis header, has ~120): DUP and memo GETs share nodes, so a 149-byte file
# can describe a tuple tree of 2^60 nodes that an unbounded walk would try to visit
MAX_DTYPE_NODES = 10_000
MAX_DTYPE_DEPTH = 16
MAX_SMALL_BYTES = 64 << 20  # total bytes of strings and small byte strings
MAX_LONG_BYTES = 64  # LONG1/LONG4 integers
MAX_NDIM = 8


class _Token:
    """A name the file may refer to: one of the factories below, never a Python object."""

    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"<{self.kind}>"


class _Draft:
    """An object under construction (REDUCE/NEWOBJ result waiting for its BUILD)."""

    __slots__ = ("kind", "args", "value")

    def __init__(self, kind, args=()):
        self.kind = kind
        self.args = args
        self.value = None


class Refused(Exception):
    """Raised inside the machine; turned into an LtpaError naming the file and offset."""


def _allowed_dtypes():
    """Every dtype a track dataset pickle may contain, with its reduce() arguments and state."""
    from nibabel.streamlines.trk import header_2_dtype

    out = []
    seen = set()

    def add(dt):
        for order in ("<", ">", "|", "="):
            try:
                d = dt.newbyteorder(order) if order != "|" else dt
            except (TypeError, ValueError):
                continue
            key = d.descr if d.fields else d.str
            if (str(key), d.isnative) in seen:
                continue
            seen.add((str(key), d.isnative))
            out.append(d)
        if dt.fields:
            for sub, *_ in dt.fields.values():
                add(sub)
        if dt.subdtype is not None:
            add(dt.subdtype[0])

    for code in ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"):
        add(np.dtype(code))
    add(header_2_dtype)
    return out


_DTYPES = None


def _dtype_table():
    global _DTYPES
    if _DTYPES is None:
        table = []
        for d in _allowed_dtypes():
            _, args, state = d.__reduce__()
            table.append((args, state, d))
        _DTYPES = table
    return _DTYPES


def _plain(value, budget=None, depth=0):
    """A dtype state with our drafts replaced by the dtypes they resolved to (for comparison).

    Walks at most ``MAX_DTYPE_NODES`` nodes (counting a shared node each time it is reached)
    and ``MAX_DTYPE_DEPTH`` levels, so the copy, and the comparisons made on it, stay small.
    """
    if budget is None:
        budget = [MAX_DTYPE_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise Refused(f"a dtype state of more than {MAX_DTYPE_NODES} items")
    if depth > MAX_DTYPE_DEPTH:
        raise Refused(f"a dtype state nested more than {MAX_DTYPE_DEPTH} levels deep")
    if isinstance(value, _Draft):
        if value.kind != "dtype" or value.value is None:
            raise Refused("a dtype state refers to something that is not a finished dtype")
        return value.value
    if isinstance(value, tuple):
        return tuple(_plain(v, budget, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        raise Refused("a dtype state holds a list")
    return value


def _resolve_dtype(draft: _Draft, state):
    args = draft.args
    state = _plain(state)
    for a, s, d in _dtype_table():
        if a == args and _same(s, state):
            return d
    raise Refused(f"dtype {args[0]!r} with this layout is not one a track dataset uses")


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.dtype):
        return a == b and a.descr == b.descr and a.byteorder == b.byteorder
    return a == b


def _dtype(value) -> np.dtype:
    if isinstance(value, _Draft) and value.kind == "dtype":
        if value.value is None:
            raise Refused("a dtype is used before its state was set")
        return value.value
    raise Refused(f"expected a dtype, found {type(value).__name__}")


def _shape(value) -> tuple:
    if not isinstance(value, tuple) or len(value) > MAX_NDIM:
        raise Refused(f"an array shape must be a tuple of at most {MAX_NDIM} sizes")
    for v in value:
        if type(v) is not int or v < 0:
            raise Refused(f"an array shape holds {v!r}; expected sizes >= 0")
    return value


def _nbytes(shape, dtype) -> int:
    n = dtype.itemsize
    for v in shape:
        n *= v
    return n


def _buffer(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise Refused(f"array data must be bytes, found {type(value).__name__}")


def _array_from(buf, dtype, shape, order) -> np.ndarray:
    need = _nbytes(shape, dtype)
    if len(buf) != need:
        raise Refused(f"an array of shape {shape} and dtype {dtype} needs {need} bytes, "
                      f"the file holds {len(buf)}")
    if dtype.fields is None and dtype.kind not in "biuf":
        raise Refused(f"dtype {dtype} is not allowed")
    arr = np.frombuffer(buf, dtype=dtype) if need else np.zeros(0, dtype=dtype)
    arr = arr.reshape(shape, order=order)
    arr.flags.writeable = False
    return arr


class SafeUnpickler:
    """Read one pickle from ``data`` (bytes or a mapped file) without running any of its code.

    ``classes`` maps exact (module, name) pairs to token kinds; ``build`` maps a kind to a
    function (kind, args/state) -> object for REDUCE (``("reduce", kind)``), NEWOBJ+BUILD
    (``("build", kind)``).
    """

    def __init__(self, data, path, globals_: dict, factories: dict):
        self._data = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        self._pos = 0
        self._end = len(self._data)
        self._path = path
        self._globals = globals_
        self._factories = factories
        self.stack: list = []
        self.metastack: list = []
        self.memo: dict = {}
        self._objects = 0
        self._small = 0

    # ------------------------------------------------------------------ reading
    def _take(self, n: int):
        if n < 0 or self._pos + n > self._end:
            raise Refused(f"the file ends inside an item ({n} bytes asked at offset {self._pos}, "
                          f"{self._end - self._pos} left): it is truncated or not a pickle")
        view = self._data[self._pos:self._pos + n]
        self._pos += n
        return view

    def _small_bytes(self, n: int) -> bytes:
        self._small += n
        if self._small > MAX_SMALL_BYTES:
            raise Refused(f"more than {MAX_SMALL_BYTES >> 20} MB of strings")
        return bytes(self._take(n))

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._take(n), "little")

    def _count(self):
        """One more object, MARK or memo entry, against ``MAX_OBJECTS``."""
        self._objects += 1
        if self._objects > MAX_OBJECTS:
            raise Refused(f"more than {MAX_OBJECTS} objects, marks and memo entries")

    def _push(self, obj):
        self._count()
        self.stack.append(obj)

    def _pop(self):
        if not self.stack:
            raise Refused("stack underflow")
        return self.stack.pop()

    def _top(self):
        if not self.stack:
            raise Refused("stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list:
        if not self.metastack:
            raise Refused("no MARK for a mark-delimited opcode")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # ------------------------------------------------------------------ the machine
    def load(self):
        """Run the machine to the pickle's STOP and return the one object it built.

        Returns
        -------
        object
            The top object, made by the factories; large byte strings in it are read-only
            views of ``data``.

        Raises
        ------
        RefusedPickleError
            If the pickle is truncated or malformed, uses an opcode or name a track dataset
            does not, or exceeds a bound (objects, MARKs, strings, nesting).
        LtpaError
            One that a factory raises, unchanged.
        """
        try:
            while True:
                if self._pos >= self._end:
                    raise Refused("the file ends before the pickle's STOP: it is truncated")
                code = self._data[self._pos]
                self._pos += 1
                handler = _OPS.get(code)
                if handler is None:
                    raise Refused(f"opcode {bytes([code])!r} at offset {self._pos - 1} is not "
                                  f"one a track dataset uses")
                if handler is _stop:
                    if len(self.stack) != 1 or self.metastack:
                        raise Refused("the pickle does not end with exactly one object")
                    return self.stack.pop()
                handler(self)
        except Refused as exc:
            raise RefusedPickleError(f"file {str(self._path)!r}: refusing to load: {exc}") from None
        except LtpaError:
            raise
        except RecursionError:
            raise RefusedPickleError(
                f"file {str(self._path)!r}: refusing to load: nested too deeply") \
                from None
        except (ValueError, TypeError, OverflowError, MemoryError, KeyError, IndexError,
                AttributeError, struct.error) as exc:
            raise RefusedPickleError(
                f"file {str(self._path)!r}: refusing to load: malformed content at "
                f"offset {self._pos} ({type(exc).__name__}: {str(exc)[:200]})") \
                from None

    def _call(self, kind, what, *args):
        fn = self._factories.get((what, kind))
        if fn is None:
            raise Refused(f"{kind} cannot be used with {what.upper()}")
        return fn(*args)


def _stop(u):  # handled in load()
    pass


def _proto(u):
    v = u._uint(1)
    if not 2 <= v <= 5:
        raise Refused(f"pickle protocol {v}; expected 2 to 5")


def _frame(u):
    n = u._uint(8)
    if n > u._end - u._pos:
        raise Refused("a frame runs past the end of the file")


def _mark(u):
    u._count()
    if len(u.metastack) >= MAX_MARKS:
        raise Refused(f"more than {MAX_MARKS} MARKs open at once")
    u.metastack.append(u.stack)
    u.stack = []


def _pop(u):
    if u.stack:
        u.stack.pop()
    else:
        u._pop_mark()


def _pop_mark(u):
    u._pop_mark()


def _dup(u):
    u._push(u._top())


def _const(value):
    def op(u):
        u._push(value)
    return op


def _binint(u):
    u._push(struct.unpack("<i", u._take(4))[0])


def _binint1(u):
    u._push(u._uint(1))


def _binint2(u):
    u._push(u._uint(2))


def _long(size_bytes):
    def op(u):
        n = u._uint(size_bytes)
        if n > MAX_LONG_BYTES:
            raise Refused(f"an integer of {n} bytes")
        u._push(int.from_bytes(u._take(n), "little", signed=True))
    return op


def _binfloat(u):
    u._push(struct.unpack(">d", u._take(8))[0])


def _unicode(size_bytes):
    def op(u):
        n = u._uint(size_bytes)
        raw = u._small_bytes(n)
        try:
            u._push(raw.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise Refused("a string is not valid UTF-8") from None
    return op


def _bytes(size_bytes, big_ok=False):
    def op(u):
        n = u._uint(size_bytes)
        if big_ok and n >= BIG:
            view = u._take(n)
            u._push(view.toreadonly())
        else:
            u._push(u._small_bytes(n))
    return op


def _tuple_n(n):
    def op(u):
        if len(u.stack) < n:
            raise Refused("stack underflow")
        items = tuple(u.stack[len(u.stack) - n:])
        del u.stack[len(u.stack) - n:]
        u._push(items)
    return op


def _tuple(u):
    u._push(tuple(u._pop_mark()))


def _empty_list(u):
    u._push([])


def _empty_dict(u):
    u._push({})


def _list_on_top(u, op):
    target = u._top()
    if type(target) is not list:
        raise Refused(f"{op} to a {type(target).__name__}")
    return target


def _append(u):
    value = u._pop()
    _list_on_top(u, "APPEND").append(value)


def _appends(u):
    items = u._pop_mark()
    _list_on_top(u, "APPENDS").extend(items)


_KEY_TYPES = (str, int, float, bool, bytes, type(None))


def _setitems_into(target, pairs):
    if type(target) is not dict:
        raise Refused(f"SETITEM on a {type(target).__name__}")
    for k, v in pairs:
        if not isinstance(k, _KEY_TYPES):
            raise Refused(f"a dict key of type {type(k).__name__}")
        target[k] = v


def _setitem(u):
    value = u._pop()
    key = u._pop()
    _setitems_into(u._top(), [(key, value)])


def _setitems(u):
    items = u._pop_mark()
    if len(items) % 2:
        raise Refused("SETITEMS with an odd number of items")
    _setitems_into(u._top(), zip(items[::2], items[1::2]))


def _memoize(u):
    u._count()
    u.memo[len(u.memo)] = u._top()


def _put(size_bytes):
    def op(u):
        u._count()
        u.memo[u._uint(size_bytes)] = u._top()
    return op


def _get(size_bytes):
    def op(u):
        key = u._uint(size_bytes)
        if key not in u.memo:
            raise Refused(f"memo key {key} was never stored")
        u._push(u.memo[key])
    return op


def _lookup(u, module, name):
    if not isinstance(module, str) or not isinstance(name, str):
        raise Refused("a global name that is not a string")
    kind = u._globals.get((module, name))
    if kind is None:
        shown = f"{module}.{name}"
        raise Refused(f"{shown[:120]!r} is not one of the names a track dataset uses")
    return _Token(kind)


def _global(u):
    def line():
        end = u._pos
        while end < u._end and u._data[end] != 0x0A:
            end += 1
        if end >= u._end or end - u._pos > 256:
            raise Refused("a GLOBAL name is not terminated")
        text = bytes(u._data[u._pos:end]).decode("utf-8", "replace")
        u._pos = end + 1
        return text

    module = line()
    name = line()
    u._push(_lookup(u, module, name))


def _stack_global(u):
    name = u._pop()
    module = u._pop()
    u._push(_lookup(u, module, name))


def _reduce(u):
    args = u._pop()
    func = u._pop()
    if not isinstance(func, _Token):
        raise Refused(f"REDUCE on a {type(func).__name__}")
    if type(args) is not tuple:
        raise Refused("REDUCE arguments are not a tuple")
    u._push(u._call(func.kind, "reduce", *args))


def _newobj(u):
    args = u._pop()
    cls = u._pop()
    if not isinstance(cls, _Token):
        raise Refused(f"NEWOBJ on a {type(cls).__name__}")
    if args != ():
        raise Refused(f"NEWOBJ of {cls.kind} with arguments")
    if ("build", cls.kind) not in u._factories:
        raise Refused(f"{cls.kind} cannot be created with NEWOBJ")
    u._push(_Draft(cls.kind))


def _build(u):
    state = u._pop()
    obj = u._top()
    if not isinstance(obj, _Draft) or obj.value is not None:
        raise Refused(f"BUILD on a {type(obj).__name__}")
    obj.value = u._call(obj.kind, "build", obj, state)


_OPS = {
    0x80: _proto, 0x95: _frame, ord("."): _stop, ord("("): _mark, ord("0"): _pop,
    ord("1"): _pop_mark, ord("2"): _dup,
    ord("N"): _const(None), 0x88: _const(True), 0x89: _const(False),
    ord("J"): _binint, ord("K"): _binint1, ord("M"): _binint2, 0x8A: _long(1), 0x8B: _long(4),
    ord("G"): _binfloat,
    0x8C: _unicode(1), ord("X"): _unicode(4), 0x8D: _unicode(8),
    ord("C"): _bytes(1), ord("B"): _bytes(4, big_ok=True), 0x8E: _bytes(8, big_ok=True),
    0x96: _bytes(8, big_ok=True),
    ord(")"): _const(()), 0x85: _tuple_n(1), 0x86: _tuple_n(2), 0x87: _tuple_n(3),
    ord("t"): _tuple,
    ord("]"): _empty_list, ord("a"): _append, ord("e"): _appends,
    ord("}"): _empty_dict, ord("s"): _setitem, ord("u"): _setitems,
    0x94: _memoize, ord("q"): _put(1), ord("r"): _put(4), ord("h"): _get(1), ord("j"): _get(4),
    ord("c"): _global, 0x93: _stack_global,
    ord("R"): _reduce, 0x81: _newobj, ord("b"): _build,
}
# EMPTY_TUPLE pushes the same object every time: fine, tuples are immutable


# ---------------------------------------------------------------------- numpy factories

def _np_dtype(*args):
    if len(args) != 3 or not isinstance(args[0], str) or len(args[0]) > 16 \
            or not all(isinstance(a, bool) for a in args[1:]):
        raise Refused("numpy.dtype with unexpected arguments")
    return _Draft("dtype", args)


def _np_dtype_build(draft, state):
    return _resolve_dtype(draft, state)


def _np_reconstruct(*args):
    if len(args) != 3 or not isinstance(args[0], _Token) or args[0].kind != "ndarray" \
            or args[1] != (0,) or args[2] != b"b":
        raise Refused("numpy _reconstruct with unexpected arguments")
    return _Draft("array")


def _np_array_build(draft, state):
    if type(state) is not tuple or len(state) != 5 or state[0] != 1:
        raise Refused("an array state that is not numpy's (1, shape, dtype, fortran, data)")
    _, shape, dtype, fortran, raw = state
    if not isinstance(fortran, bool):
        raise Refused("an array state with a non-boolean order flag")
    return _array_from(_buffer(raw), _dtype(dtype), _shape(shape), "F" if fortran else "C")


def _np_frombuffer(*args):
    if len(args) != 4:
        raise Refused("numpy _frombuffer with unexpected arguments")
    buf, dtype, shape, order = args
    if order not in ("C", "F"):
        raise Refused(f"array order {order!r}")
    return _array_from(_buffer(buf), _dtype(dtype), _shape(shape), order)


def _np_scalar(*args):
    if len(args) != 2:
        raise Refused("numpy scalar with unexpected arguments")
    dtype = _dtype(args[0])
    raw = _buffer(args[1])
    if len(raw) != dtype.itemsize:
        raise Refused(f"a {dtype} scalar of {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype)[0]


NUMPY_GLOBALS = {
    ("numpy", "dtype"): "dtype",
    ("numpy", "ndarray"): "ndarray",
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
}

NUMPY_FACTORIES = {
    ("reduce", "dtype"): _np_dtype,
    ("build", "dtype"): _np_dtype_build,
    ("reduce", "_reconstruct"): _np_reconstruct,
    ("build", "array"): _np_array_build,
    ("reduce", "_frombuffer"): _np_frombuffer,
    ("reduce", "scalar"): _np_scalar,
}


def finished(value):
    """``value`` with finished drafts replaced by what they built (errors for unfinished ones).

    Parameters
    ----------
    value : object
        Anything the machine built; only a draft itself is replaced (not drafts inside
        containers).

    Returns
    -------
    object
        The object the draft built, or ``value`` itself when it is not a draft.

    Raises
    ------
    RefusedPickleError
        If ``value`` is a draft that was never given its state (BUILD).
    """
    if isinstance(value, _Draft):
        if value.value is None:
            raise RefusedPickleError(f"an object of kind {value.kind} was never given its state")
        return value.value
    return value


def load_mapped(path, globals_: dict, factories: dict):
    """Map ``path`` read-only and run the safe machine on it; returns the top object.

    Parameters
    ----------
    path : str or os.PathLike
        The pickle file.
    globals_ : dict
        Exact ``(module, name)`` pairs the file may name -> token kinds, besides numpy's
        (``NUMPY_GLOBALS``).
    factories : dict
        ``(opcode kind, token kind)`` -> function building the object, with kind "reduce"
        or "build", besides numpy's (``NUMPY_FACTORIES``).

    Returns
    -------
    object
        The pickle's top object (possibly an unfinished draft: see ``finished``); large
        byte strings in it are read-only views of the mapped file.

    Raises
    ------
    InputError
        If the file does not exist, is a folder, or cannot be opened or mapped.
    RefusedPickleError
        If the file is empty, or the machine refuses it (see ``SafeUnpickler.load``).
    LtpaError
        One that a factory raises, unchanged.
    """
    path = Path(path)
    with opening(path, "a pickle"):
        fh = open(path, "rb")
    with fh:
        import os

        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise RefusedPickleError(f"file {str(path)!r} is empty: not a pickle")
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InputError(f"file {str(path)!r} could not be mapped: {exc}") from None
    machine = SafeUnpickler(data, path, {**NUMPY_GLOBALS, **globals_},
                            {**NUMPY_FACTORIES, **factories})
    return machine.load()
