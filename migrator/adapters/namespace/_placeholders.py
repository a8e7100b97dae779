# -*- test-case-name: tests.test_namespace -*-
"""
Placeholders for what could not move out of an interactive session's
namespace (L{migrator.adapters.namespace._namespace}): L{NotMoved}, which stands in the
successor for such a value, the errors using it raises, and the notice
texts shown to the session about them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class NotMovedError(Exception):
    """
    Something was done with a L{NotMoved} placeholder.
    """


class NotMovedAttributeError(NotMovedError, AttributeError):
    """
    An attribute of a L{NotMoved} placeholder was looked up (also an
    C{AttributeError}, so that C{hasattr} and C{getattr(o, n, default)}
    answer as for any object without that attribute).
    """


class NotMoved:
    """
    Stands, in the successor, for a value that could not move.  Its C{repr}
    says what the value was and why it stayed behind; any attribute lookup
    or call raises L{NotMovedError} saying the same.
    """

    __slots__ = ("_label", "_what", "_why")

    def __init__(self, label: str, what: str, why: str) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_why", why)

    def __repr__(self) -> str:
        return f"<not moved: {self._label!r} was {self._what}: {self._why}>"

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        raise NotMovedAttributeError(f"{self!r} (looking up {name!r})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise NotMovedAttributeError(f"{self!r} (setting {name!r})")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotMovedError(f"{self!r} (calling it)")


def _notice(placeholder: NotMoved) -> str:
    """
    The line printed to the session about a placeholder after the move.
    """
    return f"not moved: {placeholder._label!r} was {placeholder._what}: {placeholder._why}"


def _shortRepr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:
        text = f"<{type(value).__name__} whose repr failed: {e.__class__.__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _placeholdersIn(value: Any, limit: int = 10000) -> Iterator[NotMoved]:
    """
    The placeholders in C{value} and the containers in it.
    """
    todo = [value]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        obj = todo.pop()
        if isinstance(obj, NotMoved):
            yield obj
        elif isinstance(obj, (list, tuple, set, frozenset, dict)) and id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(obj.values() if isinstance(obj, dict) else obj)
