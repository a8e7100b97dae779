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

from migrator._reactorinternals import noteReads


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


def writeWatch(cls: type, dirty: set[int], held: HeldCloses | None = None) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{dirty} any
    write to a frozen instance or its close (the batch is captured again;
    a connection that is closing then stays, and closes here).  Once
    C{held} is sealed, a close is held there (L{HeldCloses}).

    What keeps a frozen instance from writing or reading here is its
    reactor, a L{FrozenReactor}: the bytes written stay queued, and a
    request to read again (C{resumeProducing}: a peer's flow control, say)
    is done once it is thawed.
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

    lost = cls.connectionLost  # type: ignore[attr-defined]

    def connectionLost(self: Any, *args: Any) -> Any:
        # (What a close through a method bound before the watch leads to:
        # an abort's scheduled call, a close after a half-close.)
        if held is not None and held.sealed:
            held.hold(self, "connectionLost", args)
            return None
        return lost(self, *args)

    def doRead(self: Any) -> None:
        # (Only a registration with the real reactor itself, past the
        # stand-in, leads here: what it read here would never reach the
        # successor.  Read nothing; read again once thawed.)
        dirty.add(id(self))
        self.reactor.removeReader(self)

    def doWrite(self: Any) -> None:
        # (Likewise: nothing is sent from here.)
        dirty.add(id(self))
        self.reactor.removeWriter(self)

    namespace: dict[str, Any] = {name: watching(name) for name in _WATCHED}
    namespace.update(connectionLost=connectionLost, doRead=doRead, doWrite=doWrite)
    namespace["__module__"] = __name__
    return type(f"WriteWatched{cls.__name__}", (cls,), namespace)


class FrozenReactor:
    """
    The reactor a transport under the watch of writes sees (its
    C{reactor}): asked to read or write it, it notes so (in C{dirty}, and
    a read in C{resumed}: done once thawed) and does not; everything else
    is the real reactor's.  Every request to read or write reaches it,
    even through a method bound before the watch (C{reactor.callLater(1,
    transport.startReading)} from before the stream): what the transport
    read here would never reach the successor.
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
    _frozenReactors: dict[int, FrozenReactor]
    _watchers: dict[tuple[str, type], type]
    _classOf: dict[int, type]
    _watched: dict[int, Any]
    _active: set[int]
    _dirty: set[int]
    _resumed: set[int]
    _arrivals: Any
    _parts: Callable[[], list[Any]]
    #: If the reactor notes every read (L{noteReads}), undoes that; else
    #: C{None} (each connection is watched by its class).
    _readsNoted: Callable[[], None] | None

    def _watch(self, t: Any, kind: str) -> None:
        """
        Watch C{t}'s first read (C{kind} C{"read"}), or its writes while
        frozen (C{"write"}).
        """
        if kind == "read":
            self._watchRead(t)
        else:
            self._watchWrites([t])

    def _watchRead(self, t: Any) -> None:
        """
        Watch C{t}'s first read (the stream's first look does so for tens
        of thousands in one turn).
        """
        if self._readsNoted is not None:
            # (Every read is noted already.)
            return
        i = id(t)
        # (Watched already: its own class, never a watcher's.)
        cls = self._classOf.get(i) or type(t)
        watcher = self._watchers.get(("read", cls))
        if watcher is None:
            watcher = self._watchers["read", cls] = readWatch(cls, self._active)
        self._classOf[i] = cls
        t.__class__ = watcher
        self._watched[i] = t

    def _watchReads(self, transports: list[Any]) -> None:
        """
        Watch the first read of C{transports}, none of them watched yet:
        the stream's first look, tens of thousands in one turn.  If the
        reactor can note every read it dispatches (L{noteReads}: epoll,
        poll), that is done once for all, until L{_unwatchReads}; else
        each is watched by its class (L{_watchRead}).
        """
        if self._readsNoted is None:
            active = self._active
            self._readsNoted = noteReads(self.reactor, lambda s: active.add(id(s)))
        if self._readsNoted is not None:
            return
        for t in transports:
            self._watchRead(t)

    def _watchWrites(self, transports: list[Any]) -> None:
        """
        Put C{transports} (frozen) under the watch of writes: from their
        first read's watch, if set, in one class assignment each (tens of
        thousands per takeover), their reactor the stand-in.
        """
        watched, classOf, watchers = self._watched, self._classOf, self._watchers
        # (Looked up once per class and per reactor, not per transport.)
        ours = set(watchers.values())
        writers: dict[type, type] = {}
        lastReal: Any = None
        lastGuard: Any = None
        for t in transports:
            i = id(t)
            watched.pop(i, None)
            # Its own class if it wears one of ours (the first read's
            # watch, until it read), else the class it has now.
            cls = current = type(t)
            if current in ours:
                cls = classOf.get(i) or current
            watcher = writers.get(cls)
            if watcher is None:
                watcher = watchers.get(("write", cls))
                if watcher is None:
                    watcher = watchers["write", cls] = writeWatch(cls, self._dirty, self._held)
                    ours.add(watcher)
                writers[cls] = watcher
            classOf[i] = cls
            t.__class__ = watcher
            real = getattr(t, "reactor", None)
            if real is lastReal and real is not None:
                t.reactor = lastGuard
            else:
                self._guard(t)
                lastReal, lastGuard = real, getattr(t, "reactor", None)

    def _guard(self, t: Any) -> None:
        # (One stand-in per reactor: a transport's is the stream's.)
        real = getattr(t, "reactor", None)
        if real is None or isinstance(real, FrozenReactor):
            return
        guard = self._frozenReactors.get(id(real))
        if guard is None:
            guard = self._frozenReactors[id(real)] = FrozenReactor(real, self._dirty, self._resumed)
        t.reactor = guard

    def _unwatch(self, t: Any) -> None:
        cls = self._classOf.pop(id(t), None)
        if cls is not None and type(t) in self._watchers.values():
            t.__class__ = cls
        frozen = getattr(t, "reactor", None)
        if isinstance(frozen, FrozenReactor):
            t.reactor = frozen.real

    def _unwatchReads(self) -> None:
        # (The stream's looks are over: the last turn, an abort, a commit.)
        if self._readsNoted is not None:
            self._readsNoted()
            self._readsNoted = None
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
        L{FrozenReactor}).
        """
        if id(t) in self._resumed:
            self._resumed.discard(id(t))
            if t.connected and not t.disconnecting:
                t.startReading()

    def _doHeldCloses(self) -> None:
        # (What was asked of them after the last batch, now that this
        # process keeps them.)
        held, self._held = self._held, HeldCloses()
        if not held.requests:
            return
        for part in self._parts():
            for t in part.transports:
                request = held.requests.get(id(t))
                if request is None:
                    continue
                name, args = request
                if name == "connectionLost":
                    # (As Twisted does before calling it itself.)
                    t.stopReading()
                    t.stopWriting()
                getattr(t, name)(*args)
