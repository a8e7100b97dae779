# -*- test-case-name: tests.test_messages -*-
"""
Reading the fields of a message from the other side, checking their types
(L{migrator.takeover._messages}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")
_MISSING: Any = object()


class MalformedMessage(ValueError):
    """
    A message from the other side does not have the fields the protocol
    says, or they have the wrong types.
    """


class _Fields:
    """
    Reads the fields of one wire dictionary, checking their types.
    """

    def __init__(self, wire: object, name: str) -> None:
        if not isinstance(wire, Mapping):
            raise MalformedMessage(f"{name}: expected a dictionary, got {type(wire).__name__}")
        self._wire = wire
        self._name = name

    def _get(self, field: str, default: Any) -> Any:
        value = self._wire.get(field, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise MalformedMessage(f"{self._name}: {field} is missing")
            return default
        return value

    def _bad(self, field: str, expected: str, value: Any) -> MalformedMessage:
        return MalformedMessage(
            f"{self._name}: {field} must be {expected}, not {type(value).__name__}"
        )

    def integer(self, field: str, default: Any = _MISSING) -> int:
        value = self._get(field, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(field, "an integer", value)
        return value

    def number(self, field: str, default: Any = _MISSING) -> float:
        value = self._get(field, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(field, "a number", value)
        return float(value)

    def text(self, field: str, default: Any = _MISSING) -> str:
        value = self._get(field, default)
        if not isinstance(value, str):
            raise self._bad(field, "a string", value)
        return value

    def texts(self, field: str) -> tuple[str, ...]:
        value = self._get(field, ())
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self._bad(field, "a list of strings", value)
        return tuple(value)

    def counts(self, field: str) -> dict[str, int]:
        """
        A dictionary of names to integers (how many of each).
        """
        value = self._get(field, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise self._bad(field, "a dictionary of names to counts", value)
        return dict(value)

    def flag(self, field: str, default: Any = _MISSING) -> bool:
        value = self._get(field, default)
        if not isinstance(value, bool):
            raise self._bad(field, "true or false", value)
        return value

    def mapping(self, field: str) -> dict[str, Any] | None:
        """
        A dictionary of plain data (checked by its reader), or C{None}.
        """
        value = self._get(field, None)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self._bad(field, "a dictionary", value)
        return dict(value)

    def dicts(self, field: str) -> tuple[dict[str, Any], ...]:
        """
        A list of dictionaries of plain data (checked by their reader;
        entries that are not dictionaries are left out).
        """
        value = self._get(field, ())
        if not isinstance(value, (list, tuple)):
            raise self._bad(field, "a list of dictionaries", value)
        return tuple(dict(v) for v in value if isinstance(v, Mapping))

    def records(self, field: str) -> tuple[dict[str, Any], ...]:
        """
        A list of dictionaries, each with a string C{key}.
        """
        value = self._get(field, _MISSING)
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, Mapping) and isinstance(v.get("key"), str) for v in value
        ):
            raise self._bad(field, "a list of records with a key", value)
        return tuple(dict(v) for v in value)
