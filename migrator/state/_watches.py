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
#: Of those, the closes (see L{HeldCloses}).
_CLOSES = ("loseConnection", "abortConnection")


class HeldCloses:
    """
    The closes asked of frozen transports once the stream's last batch is
    sent (L{sealed}): not done then, on a socket the successor shares (a
    close here would shut it down or reset it under the successor, and run
    the protocol's C{connectionLost} here too), but held: done if the
    takeover is abandoned, dropped at the commit (the successor continues
    from the state sent, as with what is written to them then).  Before
    the last batch, a close is done at once and its batch goes again in
    the last one, as any write.

    @ivar requests: by transport id, the close asked (a method's name and
        its arguments; an abort over a close).
    """

    def __init__(self) -> None:
        self.sealed = False
        self.requests: dict[int, tuple[str, tuple[Any, ...]]] = {}

    def hold(self, transport: Any, name: str, args: tuple[Any, ...]) -> None:
        # (A connection lost, or aborted, over a close asked before.)
        if name != "loseConnection" or id(transport) not in self.requests:
            self.requests[id(transport)] = (name, args)


def writeWatch(
    cls: type, dirty: set[int], resumed: set[int], held: HeldCloses | None = None
) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{dirty} any
    write to a frozen instance (or its close), and keeps it from writing
    here: the bytes stay queued, and the batch is captured again (a
    connection that is closing then stays, and closes here).

    Likewise a frozen instance asked to read again (C{resumeProducing}: a
    peer's flow control, say) does not read here, where what it read would
    never reach the successor: it is noted in C{resumed} (and in C{dirty}),
    its batch is captured again, and it reads once thawed; asked to stop
    reading again meanwhile, it is no longer noted.  Once C{held} is
    sealed, a close is held there (L{HeldCloses}).
    """

    def watching(name: str) -> Callable[..., Any]:
        method = getattr(cls, name)
        closing = name in _CLOSES

        def watched(self: Any, *args: Any) -> Any:
            # (What it starts writing stays queued: see startWriting.)
            dirty.add(id(self))
            if closing and held is not None and held.sealed:
                held.hold(self, name, args)
                return None
            return method(self, *args)

        return watched

    def startReading(self: Any) -> None:
        dirty.add(id(self))
        resumed.add(id(self))

    def startWriting(self: Any) -> None:
        # Whatever asks it to write here (a write, a close or half-close,
        # a producer unregistered): it does not, until it is thawed.
        dirty.add(id(self))

    stop = cls.stopReading  # type: ignore[attr-defined]

    def stopReading(self: Any) -> None:
        resumed.discard(id(self))
        stop(self)

    lost = cls.connectionLost  # type: ignore[attr-defined]

    def connectionLost(self: Any, *args: Any) -> Any:
        # (What a close through a method bound before the watch leads to:
        # an abort's scheduled call, a close after a half-close.)
        if held is not None and held.sealed:
            held.hold(self, "connectionLost", args)
            return None
        return lost(self, *args)

    namespace: dict[str, Any] = {name: watching(name) for name in _WATCHED}
    namespace["startReading"] = startReading
    namespace["startWriting"] = startWriting
    namespace["stopReading"] = stopReading
    namespace["connectionLost"] = connectionLost
    namespace["__module__"] = __name__
    return type(f"WriteWatched{cls.__name__}", (cls,), namespace)


class FrozenReactor:
    """
    The reactor a transport under the watch of writes sees (its
    C{reactor}): asked to read or write it, it notes so as the watch's
    class would (L{writeWatch}), and does not; everything else is the real
    reactor's.  The watch's class sees every request a transport makes of
    itself; this sees those made through a method bound before the watch
    (C{reactor.callLater(1, transport.startReading)} from before the
    stream), which would otherwise read here, where what it read would
    never reach the successor.
    """

    def __init__(self, real: Any, dirty: set[int], resumed: set[int]) -> None:
        self.real = real
        self._dirty = dirty
        self._resumed = resumed

    def addReader(self, reader: Any) -> None:
        self._dirty.add(id(reader))
        self._resumed.add(id(reader))

    def addWriter(self, writer: Any) -> None:
        self._dirty.add(id(writer))

    def removeReader(self, reader: Any) -> None:
        # (Asked to read, then to stop: it does not read once thawed.)
        self._resumed.discard(id(reader))
        self.real.removeReader(reader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class WatchesTransports:
    """
    The part of L{migrator.state._stream.Stream} that sets and removes the
    watches on its transports, and ends its note of the connections added
    (L{migrator.interfaces.IPortRegistry.noteArrivals}).
    """

    # What it uses of the stream (declared here for type checkers).
    reactor: Any
    _held: HeldCloses
    _frozenReactor: FrozenReactor | None
    _watchers: dict[tuple[str, type], type]
    _classOf: dict[int, type]
    _watched: dict[int, Any]
    _active: set[int]
    _dirty: set[int]
    _resumed: set[int]
    _arrivals: Any

    def _watch(self, t: Any, kind: str) -> None:
        i = id(t)
        # (Watched already: its own class, never a watcher's.)
        cls = self._classOf.get(i) or type(t)
        try:
            watcher = self._watchers[kind, cls]
        except KeyError:
            if kind == "read":
                watcher = readWatch(cls, self._active)
            else:
                watcher = writeWatch(cls, self._dirty, self._resumed, self._held)
            self._watchers[kind, cls] = watcher
        self._classOf[i] = cls
        t.__class__ = watcher
        if kind == "read":
            self._watched[i] = t
        else:
            self._guard(t)

    def _guard(self, t: Any) -> None:
        # (Its reactor is the stream's, or it is left as it is.)
        guard = self._frozenReactor
        if guard is None:
            guard = self._frozenReactor = FrozenReactor(self.reactor, self._dirty, self._resumed)
        if getattr(t, "reactor", None) is guard.real:
            t.reactor = guard

    def _watchRead(self, t: Any) -> None:
        """
        L{_watch} for a first read, of a transport not watched yet (the
        stream's first look: tens of thousands in one turn).
        """
        cls = type(t)
        watcher = self._watchers.get(("read", cls))
        if watcher is None:
            self._watch(t, "read")
            return
        i = id(t)
        self._classOf[i] = cls
        t.__class__ = watcher
        self._watched[i] = t

    def _watchWrites(self, transports: list[Any]) -> None:
        """
        The transports of a batch just sent: from their first read's watch
        (if set) to the watch of writes, in one assignment each (tens of
        thousands per takeover).
        """
        watched, classOf, watchers, guard = self._watched, self._classOf, self._watchers, self._guard
        for t in transports:
            i = id(t)
            watched.pop(i, None)
            # Its own class if it wears one of ours (the first read's
            # watch, until it read), else the class it has now.
            cls = classOf.get(i)
            if cls is None or type(t) not in watchers.values():
                cls = type(t)
            watcher = watchers.get(("write", cls))
            if watcher is None:
                watcher = watchers["write", cls] = writeWatch(
                    cls, self._dirty, self._resumed, self._held
                )
            classOf[i] = cls
            t.__class__ = watcher
            guard(t)

    def _unwatch(self, t: Any) -> None:
        cls = self._classOf.pop(id(t), None)
        if cls is not None and type(t) in self._watchers.values():
            t.__class__ = cls
        frozen = getattr(t, "reactor", None)
        if isinstance(frozen, FrozenReactor):
            t.reactor = frozen.real

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

    def _readIfResumed(self, t: Any) -> None:
        """
        Make a thawed transport read if it was asked to while frozen (see
        L{writeWatch}).
        """
        if id(t) in self._resumed:
            self._resumed.discard(id(t))
            if t.connected and not t.disconnecting:
                t.startReading()
