"""Code versions: which code a run executed, so a partition that succeeded with older code reads
STALE and re-running it reruns only the steps whose code changed.

A step's version is its `code_version` when given (Dagster's spelling). Otherwise it is a hash of
what it would run: the step function's source (its bytecode and constants when the source cannot
be read), its default values, and, found by the names it uses, the source of the functions and
classes defined in the same module or notebook and the value of constants there (numbers,
strings, bytes, booleans, None, and tuples or frozensets of them), followed to any depth. Not
hashed: code imported from other modules (libraries, your packages), other objects (a DataFrame
global, a dict), data the step reads, and attributes reached through a module (`np.mean`).
A job's code is one short id of all its steps' versions.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import types
from collections.abc import Callable, Iterator
from typing import Any

_CONSTANTS = (int, float, complex, str, bytes, bool, type(None))


def _constant(value: Any) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_constant(v) for v in value)
    return isinstance(value, _CONSTANTS)


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names a code object and the code objects nested in it use."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code is not None else repr(obj)


def _feed(fn: Callable[..., Any], digest: Any, seen: set[int]) -> None:
    """Hash a function (or class) and what of its own module it uses, once each."""
    if id(fn) in seen:
        return
    seen.add(id(fn))
    target = inspect.unwrap(fn) if callable(fn) else fn
    digest.update(_source(target).encode())
    defaults = getattr(target, "__defaults__", None) or ()
    digest.update(repr([d for d in defaults if _constant(d)]).encode())
    code = getattr(target, "__code__", None)
    if code is None:
        return
    module, namespace = getattr(target, "__module__", None), getattr(target, "__globals__", {})
    for name in sorted(set(_names(code))):
        value = namespace.get(name)
        if _constant(value) and name in namespace:
            digest.update(f"{name}={value!r}".encode())
        elif isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", None) == module:
            _feed(value, digest, seen)


def version_of(fn: Callable[..., Any], given: str | None = None) -> str:
    """A step's code version: `given`, or a short hash of its code (see the module's docstring)."""
    if given is not None:
        return given
    digest = hashlib.sha256()
    _feed(fn, digest, set())
    return digest.hexdigest()[:16]


def code_id(versions: dict[str, str]) -> str:
    """One short id of a job's step versions (equal ids: every step's version equal)."""
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]
