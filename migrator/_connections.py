# -*- test-case-name: tests.test_connections -*-
"""
Established connections and the objects behind them, moved as one graph.

Incumbent side, all in one reactor turn (so nothing changes in between):
L{captureConnections} walks the protocols of the open connections whose
classes have adapters, writes them (and everything they reference) into one
graph, and I{freezes} what it captured: the transports stop reading and
writing, the scheduled calls it met are suspended.  The bytes the transport
had not sent yet travel with it.  L{Captured.thaw} undoes the freeze (the
takeover was abandoned); L{Captured.release} lets go after the commit
(close, never C{shutdown}; the application's C{connectionLost} never runs).

Successor side: L{restoreConnections} reads the graph back into new objects
of the successor's classes, attached to transports built on the passed file
descriptors, without C{connectionMade} and without reading or writing.
Scheduled calls are created but held.  L{Restored.activate} (after the
commit) writes the incumbent's unsent bytes first, then reads, and releases
the held calls; L{Restored.rollback} lets everything go.

File descriptors: those in L{Captured.fds} stay owned by the incumbent's
transports (they are sent, not given away).  Those given to
L{restoreConnections} are owned by it: each is taken over by a transport
and closed at once.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import types
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import base, task, tcp
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._graph import (
    GraphError,
    GraphReader,
    GraphWriter,
    Unadaptable,
    dumpsPlain,
    loadsPlain,
    typeName,
)
from ._ports import ListenerRegistry, releaseConnection

_log = Logger()

#: How far into the future a suspended call is pushed while frozen.
_FAR = 10.0**9


def _isUnix(transport: Any) -> bool:
    try:
        return transport.socket.family == socket.AF_UNIX
    except (AttributeError, OSError):
        return False


def _pending(transport: Any) -> bytes:
    """
    The bytes a transport was asked to write and has not written yet.
    """
    head = transport.dataBuffer[transport.offset :]
    return bytes(head) + b"".join(transport._tempDataBuffer)


def _methodName(method: types.MethodType) -> str | None:
    """
    The attribute name that gives C{method} back from its object (the
    mangled one for a private C{__name}), or C{None} if there is none.
    """
    name = method.__func__.__name__
    if name.startswith("__") and not name.endswith("__"):
        owner = method.__func__.__qualname__.rpartition(".")[0].rpartition(".")[2]
        name = f"_{owner.lstrip('_')}{name}"
    try:
        same = getattr(method.__self__, name, None) == method
    except Exception:
        return None
    return name if same else None


@attrs.define(eq=False)
class Captured:
    """
    What the incumbent captured: the encoded graph, the descriptors to send,
    and what it froze.
    """

    payload: bytes
    fds: list[int]
    transports: list[Any]
    moved: dict[str, int]
    staying: dict[str, int]
    _wasReading: list[bool] = attrs.field(factory=list)
    _calls: list[tuple[Any, float]] = attrs.field(factory=list)
    _loops: list[tuple[Any, float]] = attrs.field(factory=list)
    _reactor: Any = None
    frozen: bool = False
    pendingBytes: int = 0
    frozenAt: float = 0.0

    @property
    def count(self) -> int:
        return len(self.transports)

    def freeze(self) -> None:
        readers = set(map(id, self._reactor.getReaders()))
        self._wasReading = [id(t) in readers for t in self.transports]
        for t in self.transports:
            t.stopReading()
            t.stopWriting()
        for call, _ in self._calls:
            if call.active():
                call.reset(_FAR)
        for loop, _ in self._loops:
            if loop.call is not None and loop.call.active():
                loop.call.reset(_FAR)
        self.frozen = True

    def thaw(self) -> None:
        """
        The takeover was abandoned: carry on as if nothing happened.
        """
        if not self.frozen:
            return
        self.frozen = False
        now = self._reactor.seconds()
        for t, reading in zip(self.transports, self._wasReading, strict=True):
            if not t.connected:
                continue
            if reading:
                t.startReading()
            if t.dataBuffer[t.offset :] or t._tempDataBuffer or t._writeDisconnected:
                t.startWriting()
        for call, when in self._calls:
            if call.active():
                call.reset(max(0.0, when - now))
        for loop, when in self._loops:
            if loop.call is not None and loop.call.active():
                loop.call.reset(max(0.0, when - now))

    def release(self) -> None:
        """
        The successor owns it all now: close our handles (no shutdown), and
        make sure no captured call runs here too.
        """
        self.frozen = False
        for t in self.transports:
            releaseConnection(t)
        for call, _ in self._calls:
            if call.active():
                call.cancel()
        for loop, _ in self._loops:
            loop.running = False
            if loop.call is not None and loop.call.active():
                loop.call.cancel()
            loop.call = None


@attrs.define(eq=False)
class _CaptureHooks:
    """
    The writer's C{special} hook: transports, scheduled calls, loops, bound
    methods and allowed functions.
    """

    reactor: Any
    adapters: Any
    ports: ListenerRegistry
    claimed: frozenset[str]
    readers: set[int] = attrs.field(factory=set)
    checkedProtocol: Any = None
    transports: list[Any] = attrs.field(factory=list)
    calls: list[tuple[Any, float]] = attrs.field(factory=list)
    loops: list[tuple[Any, float]] = attrs.field(factory=list)

    def __call__(self, value: Any, writer: GraphWriter, path: str) -> Any:
        if isinstance(value, tcp.Connection):
            return self._transport(value, writer, path)
        if isinstance(value, base.DelayedCall):
            ident, _ = writer.rememberSpecial(value)
            if not value.active():
                return ("x", "call", [ident, None, None, None, None])
            when = value.getTime()
            self.calls.append((value, when))
            return (
                "x",
                "call",
                [
                    ident,
                    when,
                    writer._write(value.func, f"{path}.func"),
                    writer._write(tuple(value.args), f"{path}.args"),
                    writer._write(dict(value.kw), f"{path}.kw"),
                ],
            )
        if isinstance(value, task.LoopingCall):
            if value.clock is not self.reactor:
                raise Unadaptable(value, path, "a LoopingCall on another clock")
            ident, _ = writer.rememberSpecial(value)
            nextTime = value.call.getTime() if value.call is not None and value.call.active() else None
            if value.running and nextTime is not None:
                self.loops.append((value, nextTime))
            return (
                "x",
                "loop",
                [
                    ident,
                    writer._write(value.f, f"{path}.f"),
                    writer._write(tuple(value.a), f"{path}.a"),
                    writer._write(dict(value.kw), f"{path}.kw"),
                    bool(value.running and nextTime is not None),
                    value.interval,
                    getattr(value, "starttime", None),
                    nextTime,
                ],
            )
        if isinstance(value, types.MethodType):
            name = _methodName(value)
            if name is None:
                raise Unadaptable(value, path, "a bound method its object does not have under its name")
            return ("x", "method", [writer._write(value.__self__, f"{path}.__self__"), name])
        name = self.adapters.functionName(value)
        if name is not None:
            return ("x", "function", name)
        return None

    def _transport(self, t: Any, writer: GraphWriter, path: str) -> Any:
        if not t.connected or t.disconnecting or getattr(t, "_writeDisconnected", False):
            raise Unadaptable(t, path, "a connection that is closing")
        # A connection reached through the graph (a factory's client list,
        # a peer) may not move if its own protocol declines, any more than
        # when it is captured as a root.
        why = None
        if t.protocol is not self.checkedProtocol:
            adapter = self.adapters.adapterFor(type(t.protocol))
            why = adapter.movable(t.protocol) if adapter is not None else None
        if why:
            raise Unadaptable(t, path, f"a connection that declines to move ({why})")
        server = getattr(t, "server", None)
        key = self.ports.keyOf(server) if server is not None else None
        if server is not None and key not in self.claimed:
            raise Unadaptable(t, path, "a connection of a port the successor does not declare")
        ident, _ = writer.rememberSpecial(t)
        index = len(self.transports)
        self.transports.append(t)
        unix = _isUnix(t)
        try:
            peer = t.socket.getpeername()
        except OSError:
            peer = None
        meta = {
            "fd": index,
            "family": int(t.socket.family),
            "unix": unix,
            "port": key,
            "peer": list(peer) if isinstance(peer, tuple) else peer,
            "pending": _pending(t),
            "reading": id(t) in self.readers,
            "producerPaused": bool(getattr(t, "producerPaused", False)),
            "streaming": bool(getattr(t, "streamingProducer", False)),
        }
        producer = getattr(t, "producer", None)
        return (
            "x",
            "transport",
            [
                ident,
                writer._write(t.protocol, f"{path}.protocol"),
                meta,
                writer._write(producer, f"{path}.producer") if producer is not None else None,
            ],
        )


def captureConnections(
    reactor: Any,
    ports: ListenerRegistry,
    adapters: Any,
    claimed: frozenset[str],
    restorable: frozenset[str],
) -> Captured:
    """
    Capture and freeze every connection that can move; see the module
    docstring.

    @param claimed: the port keys the successor declared.
    @param restorable: the type names the successor has adapters for.
    """

    known: dict[type, Any] = {}

    def adapterFor(cls: type) -> Any:
        try:
            return known[cls]
        except KeyError:
            adapter = adapters.adapterFor(cls)
            if adapter is not None and adapter.typeName not in restorable:
                adapter = None
            known[cls] = adapter
            return adapter

    anchors: dict[int, str] = {id(reactor): "reactor"}
    factories = []
    for tracked in ports.listening():
        if tracked.key in claimed and tracked.kind != "udp":
            anchors[id(tracked.port.factory)] = "factory:" + tracked.key
            factories.append(tracked.port.factory)
    # Connections are not served from here on (this all runs in one reactor
    # turn): the freeze, as a client sees it, starts now.
    frozenAt = time.time()
    readers = set(map(id, reactor.getReaders()))
    hooks = _CaptureHooks(reactor, adapters, ports, claimed, readers)
    writer = GraphWriter(adapterFor, anchors, hooks)
    staying: dict[str, int] = {}
    moved: dict[str, int] = {}
    roots: list[Any] = []

    def stay(reason: str) -> None:
        staying[reason] = staying.get(reason, 0) + 1

    alreadyCaptured: set[int] = set()
    for t in list(ports.openConnections()):
        if id(t) in alreadyCaptured:
            # Already part of an earlier connection's graph.
            continue
        protocol = t.protocol
        cls = type(protocol)
        adapter = adapterFor(cls)
        if adapter is None:
            why = "no adapter" if adapters.adapterFor(cls) is None else "no adapter in the successor"
            stay(f"{typeName(cls)}: {why}")
            continue
        why = adapter.movable(protocol)
        if why:
            stay(f"{typeName(cls)}: {why}")
            continue
        # Asked already: the hook need not ask again when it meets this
        # protocol's transport (this all runs in the freeze).
        hooks.checkedProtocol = protocol
        mark = (len(hooks.transports), len(hooks.calls), len(hooks.loops))
        writer.checkpoint()
        try:
            roots.append(writer.write(protocol, cls.__name__))
        except Unadaptable as e:
            writer.rollback()
            del hooks.transports[mark[0] :]
            del hooks.calls[mark[1] :]
            del hooks.loops[mark[2] :]
            stay(f"{typeName(cls)}: {e}")
            continue
        writer.release()
        alreadyCaptured.update(id(x) for x in hooks.transports[mark[0] :])

    # The factories' own state travels too (merged into the successor's
    # factories).  If that fails, nothing moves: a half-moved factory would
    # split the application's shared state in two.
    factoryNodes = []
    try:
        writer.checkpoint()
        for factory in factories:
            factoryNodes.append(writer.write(factory, type(factory).__name__))
        writer.release()
    except Unadaptable as e:
        for t in hooks.transports:
            cls = type(t.protocol)
            stay(f"{cls.__module__}.{cls.__qualname__}: its factory's state cannot move ({e})")
        return Captured(dumpsPlain(None), [], [], {}, staying, reactor=reactor)
    for t in hooks.transports:
        cls = type(t.protocol)
        name = f"{cls.__module__}.{cls.__qualname__}"
        moved[name] = moved.get(name, 0) + 1

    payload = dumpsPlain({"roots": roots, "factories": factoryNodes, "count": len(hooks.transports)})
    captured = Captured(
        payload,
        [t.fileno() for t in hooks.transports],
        list(hooks.transports),
        moved,
        staying,
        calls=hooks.calls,
        loops=hooks.loops,
        reactor=reactor,
        pendingBytes=sum(len(_pending(t)) for t in hooks.transports),
        frozenAt=frozenAt,
    )
    captured.freeze()
    return captured


@attrs.define(eq=False)
class Settling:
    """
    Before a capture, waits (at most C{timeout} seconds) for the connections
    that are I{busy} to go idle: those whose adapter has a C{busy(protocol)}
    method that says so (work in progress that ends by itself, such as an
    HTTP request being answered).  A busy connection declines to move; one
    that finishes in time moves instead of draining here.

    While it waits, every connection that I{could} be busy (its adapter has
    C{busy}) and is idle stops reading, so that it starts no new work; the
    client's bytes wait in the kernel.  L{resume} makes them read again:
    call it in the same reactor turn as L{captureConnections}, which then
    sees them reading (and the successor starts them reading).

    @ivar claimed: if given, the port keys the successor declared: a
        connection accepted on another port cannot move, busy or not, and
        is not waited for.
    @ivar busy: how many connections were busy when the wait ended (0
        unless the bound expired).
    @ivar waited: how long the wait took, in seconds.
    """

    _reactor: Any
    _ports: ListenerRegistry
    _adapters: Any
    timeout: float
    claimed: frozenset[str] | None = None
    interval: float = 0.005
    busy: int = 0
    waited: float = 0.0
    _started: float = 0.0
    _paused: list[Any] = attrs.field(factory=list)
    _call: Any = None
    _done: Deferred[int] | None = None

    def start(self) -> Deferred[int] | None:
        """
        @return: C{None} if no connection is busy (nothing to wait for, and
            nothing was paused), else a L{Deferred} that fires with how many
            are still busy when they are all idle or the time is up.
        """
        self._started = self._reactor.seconds()
        if not self._check(pause=False):
            return None
        done: Deferred[int] = Deferred()
        self._done = done
        # With no time to wait (a timeout of 0) the first check ends the
        # wait at once; the caller still gets the fired Deferred, so that
        # it calls resume() for the connections that check paused.
        self._tick()
        return done

    def _check(self, pause: bool) -> int:
        readers = set(map(id, self._reactor.getReaders())) if pause else set()
        busyOf: dict[type, Any] = {}
        busy = 0
        for t in self._ports.openConnections():
            protocol = t.protocol
            cls = type(protocol)
            if cls not in busyOf:
                busyOf[cls] = getattr(self._adapters.adapterFor(cls), "busy", None)
            isBusy = busyOf[cls]
            if isBusy is None:
                continue
            if isBusy(protocol):
                if self._canMove(t):
                    busy += 1
            elif pause and id(t) in readers:
                t.stopReading()
                self._paused.append(t)
        self.busy = busy
        return busy

    def _canMove(self, t: Any) -> bool:
        server = getattr(t, "server", None)
        return self.claimed is None or server is None or self._ports.keyOf(server) in self.claimed

    def _tick(self) -> None:
        self._call = None
        busy = self._check(pause=True)
        now = self._reactor.seconds()
        if busy and now < self._started + self.timeout:
            self._call = self._reactor.callLater(self.interval, self._tick)
            return
        self.waited = now - self._started
        done, self._done = self._done, None
        if done is not None:
            done.callback(busy)

    def resume(self) -> None:
        """
        Stop waiting (fire the L{Deferred} now if it has not fired) and make
        the connections paused here read again.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        paused, self._paused = self._paused, []
        for t in paused:
            if t.connected and not t.disconnecting:
                t.startReading()
        done, self._done = self._done, None
        if done is not None:
            self.waited = self._reactor.seconds() - self._started
            done.callback(self.busy)


class _Gate:
    """
    Holds the successor's scheduled calls until the commit: a call that
    comes due before then waits for L{open}; L{close} cancels them all.
    """

    def __init__(self) -> None:
        self.open_ = False
        self.waiting: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self.calls: list[Any] = []

    def wrap(self, f: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*a: Any, **kw: Any) -> Any:
            if self.open_:
                return f(*a, **kw)
            self.waiting.append((f, a, kw))
            return None

        return gated

    def open(self) -> None:
        self.open_ = True
        waiting, self.waiting = self.waiting, []
        for f, a, kw in waiting:
            try:
                f(*a, **kw)
            except Exception:
                _log.failure("a scheduled call restored from the incumbent failed")

    def close(self) -> None:
        self.waiting = []
        for call in self.calls:
            if call.active():
                call.cancel()


@attrs.define(eq=False)
class RestoreContext:
    """
    What adapters' C{create} and C{populate} get as their C{context} in the
    successor.
    """

    _gate: _Gate

    def whenActive(self, f: Callable[[], Any]) -> None:
        """
        Call C{f} once, after the commit, when the restored connections
        have written the incumbent's unsent bytes and read again (never if
        the takeover is rolled back).  For output an adapter wants to add
        to a connection (a session's notice): written earlier, it would
        come before the incumbent's unsent bytes, and before the commit.
        """
        self._gate.waiting.append((f, (), {}))


@attrs.define(eq=False)
class Restored:
    """
    The successor's restored connections, not active yet.
    """

    transports: list[Any]
    metas: list[dict[str, Any]]
    producers: list[Any]
    gate: _Gate
    loops: list[Any]
    count: int

    def activate(self, clock: Callable[[], float] = time.time) -> list[float]:
        """
        The commit happened: write what the incumbent had not sent, start
        reading, release the held calls.

        @return: when each connection was activated (by C{clock}).
        """
        for t, meta, producer in zip(self.transports, self.metas, self.producers, strict=True):
            if producer is not None:
                t.registerProducer(producer, meta["streaming"])
                t.producerPaused = meta["producerPaused"]
        times = []
        for t, meta in zip(self.transports, self.metas, strict=True):
            if meta["pending"]:
                t.write(meta["pending"])
            if meta["reading"]:
                t.startReading()
            times.append(clock())
        self.gate.open()
        return times

    def rollback(self) -> None:
        self.gate.close()
        for loop in self.loops:
            loop.running = False
            loop.call = None
        for t in self.transports:
            releaseConnection(t)


class _QuietStart:
    """
    A transport whose constructor does not start reading: Twisted's
    C{Server.__init__} calls C{startReading()}, which for a restored
    connection would only be undone at once (two epoll calls each, for
    thousands of connections, while they are frozen).
    """

    _quiet = True

    def startReading(self) -> None:
        if self._quiet:
            return
        super().startReading()  # type: ignore[misc]


class _RestoredTCPServer(_QuietStart, tcp.Server):
    pass


@functools.lru_cache(maxsize=1)
def _restoredUNIXServer() -> type:
    from twisted.internet import unix

    return type("_RestoredUNIXServer", (_QuietStart, unix.Server), {})


@attrs.define(eq=False)
class _RestoreHooks:
    reactor: Any
    adapters: Any
    ports: ListenerRegistry
    fds: list[int]
    transports: list[Any] = attrs.field(factory=list)
    metas: list[dict[str, Any]] = attrs.field(factory=list)
    producers: list[Any] = attrs.field(factory=list)
    gate: _Gate = attrs.field(factory=_Gate)
    loops: list[Any] = attrs.field(factory=list)
    servers: dict[str, Any] = attrs.field(factory=dict)
    _session: int = 0

    def __call__(self, kind: str, payload: Any, reader: GraphReader) -> Any:
        if kind == "transport":
            return self._transport(payload, reader)
        if kind == "call":
            ident, when, f, a, kw = payload
            if when is None:
                call = self.reactor.callLater(0, lambda: None)
                call.cancel()
                reader.remember(ident, call)
                return call
            function, args, kwargs = reader.read(f), reader.read(a), reader.read(kw)
            delay = max(0.0, when - self.reactor.seconds())
            call = self.reactor.callLater(delay, self.gate.wrap(function), *args, **kwargs)
            self.gate.calls.append(call)
            reader.remember(ident, call)
            return call
        if kind == "loop":
            ident, f, a, kw, running, interval, starttime, nextTime = payload
            loop = task.LoopingCall.__new__(task.LoopingCall)
            reader.remember(ident, loop)
            loop.f, loop.a, loop.kw = reader.read(f), reader.read(a), reader.read(kw)
            loop.clock = self.reactor
            loop.call = None
            loop.interval = interval
            loop.running = False
            if starttime is not None:
                loop.starttime = starttime
            if running:
                loop.running = True
                loop._deferred = Deferred()
                loop._runAtStart = False
                delay = max(0.0, nextTime - self.reactor.seconds())
                loop.call = self.reactor.callLater(delay, self.gate.wrap(loop))
                self.gate.calls.append(loop.call)
                self.loops.append(loop)
            return loop
        if kind == "method":
            obj, name = payload
            return getattr(reader.read(obj), name)
        if kind == "function":
            function = self.adapters.functionNamed(payload)
            if function is None:
                raise GraphError(f"function {payload} is not allowed in this process")
            return function
        raise GraphError(f"unknown special value {kind!r}")

    def _transport(self, payload: Any, reader: GraphReader) -> Any:
        ident, protocolNode, meta, producerNode = payload
        index = meta["fd"]
        if not isinstance(index, int) or not 0 <= index < len(self.fds) or self.fds[index] < 0:
            raise GraphError(f"transport names descriptor #{index!r}, which did not arrive")
        fd, self.fds[index] = self.fds[index], -1
        key = meta["port"]
        if key and key not in self.servers:
            self.servers[key] = self.ports.portForKey(key)
        server = self.servers[key] if key else None
        family = meta["family"]
        try:
            # The socket object takes the descriptor over (no duplicate).
            skt = socket.socket(family, socket.SOCK_STREAM, fileno=fd)
        except BaseException:
            os.close(fd)
            raise
        skt.setblocking(False)
        self._session += 1
        peer = meta["peer"]
        # The transport exists (and is remembered) before its protocol is
        # read: a transport first reached as another one's producer (the
        # two halves of a proxy) has a protocol that refers back to it.
        noProtocolYet: Any = None
        t: Any
        if meta["unix"]:
            t = _restoredUNIXServer()(
                skt, noProtocolYet, peer, server, self._session, self.reactor
            )
        else:
            t = _RestoredTCPServer(
                skt,
                noProtocolYet,
                tuple(peer or ("?", 0)),
                server,  # type: ignore[arg-type]
                self._session,
                self.reactor,
            )
        # Constructed without reading (see _QuietStart); reading starts at
        # activate().
        t._quiet = False
        reader.remember(ident, t)
        protocol = reader.read(protocolNode)
        t.protocol = protocol
        t.logstr = f"{t._getLogPrefix(protocol)},{t.sessionno},{t.hostname}"
        if server is None:
            t.repstr = f"<{type(protocol).__name__} #{self._session} (restored)>"
        else:
            t.repstr = f"<{type(protocol).__name__} #{self._session} on {server._realPortNumber}>"
        self.transports.append(t)
        self.metas.append(meta)
        # Reserve this transport's slot first: reading its producer may
        # restore another transport (the other half of a proxy) and append
        # to these lists.
        slot = len(self.producers)
        self.producers.append(None)
        if producerNode is not None:
            self.producers[slot] = reader.read(producerNode)
        self.ports.trackConnection(t)
        return t


def restoreConnections(
    reactor: Any,
    ports: ListenerRegistry,
    adapters: Any,
    payload: bytes,
    fds: list[int],
) -> Restored:
    """
    Rebuild the incumbent's connections; see the module docstring.  Owns
    C{fds}: on success each was taken over by a transport (no duplicate), on
    failure all are closed and what was built is released.

    @raise GraphError: if the state is malformed or names anything this
        process does not allow.
    """
    anchors: dict[str, Any] = {"reactor": reactor}
    for tracked in ports.listening():
        anchors["factory:" + tracked.key] = tracked.port.factory
    fds = list(fds)
    hooks = _RestoreHooks(reactor, adapters, ports, fds)
    reader = GraphReader(adapters.adapterNamed, anchors, hooks, RestoreContext(hooks.gate))
    try:
        data = loadsPlain(payload)
        if data is None:
            data = {"roots": [], "factories": [], "count": 0}
        if not isinstance(data, dict):
            raise GraphError("connection state is not a record")
        if not (
            isinstance(data.get("roots"), list)
            and isinstance(data.get("factories"), list)
            and type(data.get("count")) is int
        ):
            raise GraphError("connection state lacks its roots, factories or count")
        for node in data["roots"]:
            reader.read(node)
        for node in data["factories"]:
            reader.read(node)
        # Count before populating anything: a mismatch must not have merged
        # the incumbent's state into this process's factories.
        if len(hooks.transports) != data["count"] or len(hooks.transports) != len(fds):
            raise GraphError(
                f"{len(hooks.transports)} connections restored, {data['count']} "
                f"announced, {len(fds)} descriptors received"
            )
        reader.finish()
    except BaseException:
        hooks.gate.close()
        for t in hooks.transports:
            releaseConnection(t)
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        raise
    return Restored(
        hooks.transports, hooks.metas, hooks.producers, hooks.gate, hooks.loops, len(hooks.transports)
    )
