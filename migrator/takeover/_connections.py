# -*- test-case-name: tests.test_ports -*-
"""
A port registry's record of its open connections: held weakly, with when
each was added, and notes of those added while someone (a stream of
batches) wants to know.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from operator import attrgetter
from typing import Any

_deref = weakref.ref.__call__
_connected = attrgetter("connected")


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

    #: (C{WeakSet}'s own: the references to what it holds.)
    data: set[weakref.ref[Any]]

    def __init__(self, clock: Callable[[], float]) -> None:
        weakref.WeakSet.__init__(self)
        self._clock = clock
        self.since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.notes: weakref.WeakSet[Arrivals] = weakref.WeakSet()

    def alive(self) -> list[Any]:
        """
        @return: those held that are still alive and C{connected}, in C
            loops over this set's references (the iteration of a
            C{WeakSet} and a test of each in Python take milliseconds at
            tens of thousands, every time a takeover lists them).
        """
        # (A copy first: nothing runs that could remove one meanwhile.)
        held = list(filter(None, map(_deref, self.data.copy())))
        try:
            return list(filter(_connected, held))
        except AttributeError:
            # (Something without C{connected}: counted as not.)
            return [t for t in held if getattr(t, "connected", False)]

    def add(self, item: Any) -> None:
        weakref.WeakSet.add(self, item)
        if self.notes:
            for note in self.notes:
                note.add(item)
        try:
            self.since.setdefault(item, self._clock())
        except TypeError:
            pass
