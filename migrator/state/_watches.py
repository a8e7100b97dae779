# -*- test-case-name: tests.test_stream -*-
"""
Watches on a stream's transports (L{migrator.state._stream}): which read
after the stream began, and which were written to (or closed) while
frozen.  A transport is watched by setting its C{__class__} to a cached
subclass of its own (one assignment: a stream watches tens of thousands
at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def readWatch(cls: Any, active: set[int]) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{active} the
    first time one of its instances reads, then gives it its class back.
    An instance is watched by setting its C{__class__} (one assignment: the
    stream watches tens of thousands at once).  Relies on the reactor
    calling C{doRead} through the instance, as every Twisted reactor does.
    """

    read = cls.doRead

    def doRead(self: Any) -> Any:
        active.add(id(self))
        self.__class__ = cls
        return read(self)

    return type(f"ReadWatched{cls.__name__}", (cls,), {"doRead": doRead, "__module__": __name__})


#: What L{writeWatch} watches on a frozen transport.
_WATCHED = ("write", "writeSequence", "loseConnection", "abortConnection")


def writeWatch(cls: type, dirty: set[int]) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{dirty} any
    write to a frozen instance (or its close), and keeps it from writing
    here: the bytes stay queued, and the batch is captured again (a
    connection that is closing then stays, and closes here).
    """

    def watching(name: str) -> Callable[..., Any]:
        method = getattr(cls, name)

        def watched(self: Any, *args: Any) -> Any:
            dirty.add(id(self))
            result = method(self, *args)
            if self.connected:
                self.stopWriting()
            return result

        return watched

    namespace: dict[str, Any] = {name: watching(name) for name in _WATCHED}
    namespace["__module__"] = __name__
    return type(f"WriteWatched{cls.__name__}", (cls,), namespace)


class WatchesTransports:
    """
    The part of L{migrator.state._stream.Stream} that sets and removes the
    watches on its transports, and ends its note of the connections added
    (L{migrator.interfaces.IPortRegistry.noteArrivals}).
    """

    # What it uses of the stream (declared here for type checkers).
    _watchers: dict[tuple[str, type], type]
    _classOf: dict[int, type]
    _watched: dict[int, Any]
    _active: set[int]
    _dirty: set[int]
    _arrivals: Any

    def _watch(self, t: Any, kind: str) -> None:
        cls = type(t)
        try:
            watcher = self._watchers[kind, cls]
        except KeyError:
            make = readWatch if kind == "read" else writeWatch
            watcher = make(cls, self._active if kind == "read" else self._dirty)
            self._watchers[kind, cls] = watcher
        self._classOf[id(t)] = cls
        t.__class__ = watcher
        if kind == "read":
            self._watched[id(t)] = t

    def _unwatch(self, t: Any) -> None:
        cls = self._classOf.pop(id(t), None)
        if cls is not None and type(t) in self._watchers.values():
            t.__class__ = cls

    def _unwatchReads(self) -> None:
        # (The stream's looks are over: the last turn, an abort, a commit.)
        if self._arrivals is not None:
            self._arrivals.close()
            self._arrivals = None
        watched, self._watched = self._watched, {}
        for t in watched.values():
            cls = self._classOf.get(id(t))
            if cls is not None and type(t) is self._watchers.get(("read", cls)):
                self._unwatch(t)
