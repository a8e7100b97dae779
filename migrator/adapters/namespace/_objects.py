# -*- test-case-name: tests.test_namespace -*-
"""
What an object in an interactive session's namespace is, for capturing
and restoring it (L{migrator.adapters.namespace._namespace}): importable by name, bound as a
method, of a class whose instances keep all their state in C{__dict__},
made by a session definition, or a builtin value the object graph has no
node for.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from migrator.state._registry import _slotted

_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_MISSING = object()
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, type)
# Builtin values the object graph has no node for: how to write them, and
# (by type name) how to make them again.
_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    complex: lambda v: (v.real, v.imag),
    range: lambda v: (v.start, v.stop, v.step),
    slice: lambda v: (v.start, v.stop, v.step),
    type(Ellipsis): lambda v: (),
    type(NotImplemented): lambda v: (),
}
_MAKE: dict[str, Callable[..., Any]] = {
    "complex": complex,
    "range": range,
    "slice": slice,
    "ellipsis": lambda: Ellipsis,
    "NotImplementedType": lambda: NotImplemented,
}
# Py_TPFLAGS_HEAPTYPE: a class made by a class statement (not a builtin type).
_HEAPTYPE = 1 << 9


class _PlainInstance:
    """
    The layout of an instance whose whole state is its C{__dict__}.
    """


def _resolve(module: str, qualname: str) -> Any:
    """
    Import C{module} and look C{qualname} up in it (a submodule, if it is
    not an attribute yet: C{from twisted.internet import reactor}).
    """
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            if not isinstance(target, types.ModuleType):
                raise
            target = importlib.import_module(f"{target.__name__}.{part}")
    return target


def _importableName(value: Any) -> tuple[str, str] | None:
    """
    The module and qualified name that find C{value} again, if it is a
    function or class (or builtin) that importing finds.
    """
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module not in sys.modules:
        return None
    target: Any = sys.modules[module]
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        return None
    return (module, qualname) if target is value else None


def _boundAs(owner: Any, name: Any, method: Any) -> bool:
    """
    Whether C{method} is what looking C{name} up on C{owner} gives.
    """
    if owner is None or isinstance(owner, types.ModuleType) or not isinstance(name, str):
        return False
    try:
        return bool(getattr(owner, name) == method)
    except Exception:
        return False


def _plainLayout(cls: type) -> bool:
    """
    Whether all the state of an instance of C{cls} is in its C{__dict__}.
    """
    return (
        cls.__basicsize__ == _PlainInstance.__basicsize__
        and cls.__itemsize__ == 0
        and not _slotted(cls)
    )


def _functionsIn(value: Any, limit: int = 64) -> Iterator[types.FunctionType]:
    """
    Functions reachable from a decorated definition's result: itself, what
    it wraps, its closure.
    """
    seen: set[int] = set()
    todo: deque[tuple[Any, int]] = deque([(value, 0)])
    while todo and len(seen) < limit:
        obj, depth = todo.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            yield obj
            for cell in obj.__closure__ or ():
                try:
                    todo.append((cell.cell_contents, depth + 1))
                except ValueError:
                    pass
        if depth < 4:
            for name in ("__wrapped__", "__func__", "fget", "fset", "fdel", "func"):
                try:
                    inner = getattr(obj, name, None)
                except Exception:
                    inner = None
                if inner is not None:
                    todo.append((inner, depth + 1))


def _bodyFunction(cls: type, value: Any) -> types.FunctionType | None:
    """
    The function C{value} (a class dictionary entry) is, if the class
    statement of C{cls} made it.
    """
    if not isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
        return None
    value = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
    if isinstance(value, types.FunctionType) and value.__qualname__.startswith(
        cls.__qualname__ + "."
    ):
        return value
    return None


def _fromClassStatement(cls: type, name: str, value: Any) -> bool:
    """
    Whether the class dictionary entry C{name} is class machinery or made
    by the class statement (methods, nested classes): not state.
    """
    if name.startswith("__") and name.endswith("__"):
        return True
    if _bodyFunction(cls, value) is not None:
        return True
    if isinstance(value, type) and value.__qualname__.startswith(cls.__qualname__ + "."):
        return True
    return False
