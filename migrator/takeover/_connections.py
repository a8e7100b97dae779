# -*- test-case-name: tests.test_ports -*-
"""
A port registry's record of its open connections: held weakly, with when
each was added, and notes of those added while someone (a stream of
batches) wants to know.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


class Arrivals:
    """
    The connections added to a registry since this note's last L{take}
    (see L{migrator.takeover._ports.ListenerRegistry.noteArrivals}); the registry holds the note
    weakly, so a note nobody keeps stops growing.
    """

    __slots__ = ("_added", "_notes", "__weakref__")

    def __init__(self, notes: weakref.WeakSet[Arrivals]) -> None:
        self._added: list[Any] = []
        self._notes = notes
        notes.add(self)

    def add(self, transport: Any) -> None:
        self._added.append(transport)

    def take(self) -> list[Any]:
        """
        @return: the connections added since the last call (forgotten here).
        """
        added, self._added = self._added, []
        return added

    def close(self) -> None:
        """
        Stop noting (and forget what was noted).
        """
        self._notes.discard(self)
        self._added = []


class Connections(weakref.WeakSet[Any]):
    """
    The open connections of a registry (held weakly), with the time each
    was added: accepted, or restored here.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        weakref.WeakSet.__init__(self)
        self._clock = clock
        self.since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.notes: weakref.WeakSet[Arrivals] = weakref.WeakSet()

    def add(self, item: Any) -> None:
        weakref.WeakSet.add(self, item)
        if self.notes:
            for note in self.notes:
                note.add(item)
        try:
            self.since.setdefault(item, self._clock())
        except TypeError:
            pass
