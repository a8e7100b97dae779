# -*- test-case-name: tests.test_connections -*-
"""
Established connections and the objects behind them, restored from one graph
(successor side).  L{migrator.state._capture} is the other half.

Successor side: L{restoreConnections} reads the graph back into new objects
of the successor's classes, attached to transports built on the passed file
descriptors, without C{connectionMade} and without reading or writing.
Scheduled calls are created but held.  L{Restored.activate} (after the
commit) writes the incumbent's unsent bytes first, then reads, and releases
the held calls; L{Restored.rollback} lets everything go.

File descriptors given to L{restoreConnections} are owned by it: each is
taken over by a transport (without a duplicate), or closed.  The system
calls on them go through its C{adoptSocket} and C{closeFd} parameters.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, cast

import attrs
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from migrator._reactorinternals import (
    abandonLoopingCall,
    blankLoopingCall,
    initLoopingCall,
    resumeLoopingCall,
)
from migrator._twistedinternals import attachProtocol, releaseConnection
from migrator.interfaces import IPortRegistry, IRestoreContext
from migrator.state._capture import portFactories
from migrator.state._graph import (
    GraphError,
    GraphReader,
    collectorPaused,
    loadsPlain,
)
from migrator.state._nativeread import readNative
from migrator.state._translator import TranslationLog, Translator
from migrator.state._transports import ServerTransports

_log = Logger()

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

        # What a later capture writes in its place (see ungated): a call
        # restored here and still pending moves again at the next takeover.
        gated.__migrator_gated__ = f  # type: ignore[attr-defined]
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


@implementer(IRestoreContext)
@attrs.define(eq=False)
class RestoreContext:
    """
    What adapters' C{create} and C{populate} get as their C{context} in the
    successor (see L{IRestoreContext}).
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

    @ivar clock: the reactor they were restored on.
    @ivar translations: what was read, and translated, by type name
        (L{migrator.state._translator.TranslationLog.asDict}).
    """

    transports: list[Any]
    metas: list[dict[str, Any]]
    producers: list[Any]
    gate: _Gate
    loops: list[Any]
    count: int
    clock: IReactorTime
    translations: dict[str, Any] = attrs.field(factory=dict)
    #: A stream's batch (L{migrator.state._stream}): its number, whether
    #: it is the last one (a message in one piece is), the batches the
    #: last one drops, and when the incumbent froze it (its wall clock).
    batch: int | None = None
    last: bool = True
    dropped: list[int] = attrs.field(factory=list)
    frozenAt: float | None = None

    def activate(self) -> list[float]:
        """
        The commit happened: write what the incumbent had not sent, start
        reading, release the held calls.

        @return: when each connection was activated, by L{clock} (the
            reactor's, which for a real reactor is the wall clock the
            incumbent's C{frozenAt} was read from).
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
            times.append(self.clock.seconds())
        self.gate.open()
        return times

    def rollback(self) -> None:
        self.gate.close()
        for loop in self.loops:
            abandonLoopingCall(loop)
        for t in self.transports:
            releaseConnection(t)


def _adoptSocket(fd: int, family: int) -> socket.socket:
    """
    A non-blocking stream socket object that takes C{fd} over (no
    duplicate: closing the object closes C{fd}).  If it fails, the caller
    still owns C{fd}.
    """
    skt = socket.socket(family, socket.SOCK_STREAM, fileno=fd)
    try:
        skt.setblocking(False)
    except BaseException:
        skt.detach()
        raise
    return skt


def _unread() -> None:
    raise GraphError("a scheduled call ran before its function was read")


@attrs.define(eq=False)
class _RestoreHooks:
    reactor: IReactorTime
    adapters: Any
    ports: IPortRegistry
    fds: list[int]
    adoptSocket: Callable[[int, int], socket.socket] = _adoptSocket
    closeFd: Callable[[int], None] = os.close
    transports: list[Any] = attrs.field(factory=list)
    metas: list[dict[str, Any]] = attrs.field(factory=list)
    producers: list[Any] = attrs.field(factory=list)
    gate: _Gate = attrs.field(factory=_Gate)
    loops: list[Any] = attrs.field(factory=list)
    servers: dict[str, Any] = attrs.field(factory=dict)
    _session: int = 0
    _builder: ServerTransports | None = None

    def __call__(self, kind: str, payload: Any, reader: GraphReader) -> Any:
        if kind == "transport":
            return self._transport(payload, reader)
        if kind == "call":
            ident, when, f, a, kw = payload
            if when is None:
                call = self.cancelledCall()
                reader.remember(ident, call)
                return call
            # The call exists (and is remembered) before its function and
            # arguments are read: they may refer back to it (an object that
            # keeps the call that will call it, met through the call).
            call = self.heldCall(when, _unread, (), {})
            reader.remember(ident, call)
            function, args, kwargs = reader.read(f), reader.read(a), reader.read(kw)
            # (Checked here, as callLater's call would: not once it runs.)
            if type(args) is not tuple or type(kwargs) is not dict or not all(
                type(k) is str for k in kwargs
            ):
                raise GraphError("a scheduled call's arguments are not a tuple and a dictionary of names")
            call.func, call.args, call.kw = self.gate.wrap(function), args, kwargs
            return call
        if kind == "loop":
            ident, f, a, kw, running, interval, starttime, nextTime = payload
            loop = blankLoopingCall()
            reader.remember(ident, loop)
            initLoopingCall(
                loop,
                self.reactor,
                reader.read(f),
                reader.read(a),
                reader.read(kw),
                interval,
                starttime,
            )
            if running:
                delay = max(0.0, nextTime - self.reactor.seconds())
                self.gate.calls.append(resumeLoopingCall(loop, delay, self.gate.wrap))
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
        # The transport exists (and is remembered) before its protocol is
        # read: a transport first reached as another one's producer (the
        # two halves of a proxy) has a protocol that refers back to it.
        # It does not read yet: reading starts at activate().
        t = self.buildTransport(meta)
        reader.remember(ident, t)
        attachProtocol(t, reader.read(protocolNode))
        slot = self.addTransport(t, meta)
        if producerNode is not None:
            self.producers[slot] = reader.read(producerNode)
        return t

    def cancelledCall(self) -> Any:
        """
        A scheduled call that was cancelled, or had run, in the incumbent.
        """
        call = self.reactor.callLater(0, lambda: None)
        call.cancel()
        return call

    def heldCall(self, when: float, function: Any, args: Any, kwargs: Any) -> Any:
        """
        A call of C{function} at C{when} (this reactor's clock), held by
        the commit's gate until the commit.
        """
        delay = max(0.0, when - self.reactor.seconds())
        call = self.reactor.callLater(delay, self.gate.wrap(function), *args, **kwargs)
        self.gate.calls.append(call)
        return call

    def buildTransport(self, meta: Any) -> Any:
        """
        The transport of a connection described by C{meta}, on its
        descriptor (taken over), not reading, without a protocol yet.

        @raise GraphError: if C{meta} names no descriptor that arrived.
        """
        index = meta["fd"]
        if not isinstance(index, int) or not 0 <= index < len(self.fds) or self.fds[index] < 0:
            raise GraphError(f"transport names descriptor #{index!r}, which did not arrive")
        fd, self.fds[index] = self.fds[index], -1
        key = meta["port"]
        if key and key not in self.servers:
            self.servers[key] = self.ports.portForKey(key)
        server = self.servers[key] if key else None
        try:
            skt = self.adoptSocket(fd, meta["family"])
        except BaseException:
            self.closeFd(fd)
            raise
        self._session += 1
        builder = self._builder
        if builder is None:
            builder = self._builder = ServerTransports(cast(IReactorFDSet, self.reactor))
        return builder.build(skt, meta["peer"], server, self._session, bool(meta["unix"]))

    def addTransport(self, t: Any, meta: Any) -> int:
        """
        Count C{t} among the restored connections (with no producer yet).

        @return: its slot in L{producers}.
        """
        self.transports.append(t)
        self.metas.append(meta)
        # Reserve this transport's slot first: reading its producer may
        # restore another transport (the other half of a proxy) and append
        # to these lists.
        slot = len(self.producers)
        self.producers.append(None)
        self.ports.trackConnection(t)
        return slot


def restoreConnections(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    payload: bytes | Decoded,
    fds: list[int],
    adoptSocket: Callable[[int, int], socket.socket] = _adoptSocket,
    closeFd: Callable[[int], None] = os.close,
    chunks: list[list[Any]] | None = None,
    native: bool = False,
) -> Restored:
    """
    Rebuild the incumbent's connections; see the module docstring.  Owns
    C{fds}: on success each was taken over by a transport (no duplicate), on
    failure all are closed and what was built is released.

    @param reactor: the clock of the restored calls, with which the
        restored transports also register (an L{IReactorFDSet} too).
    @param payload: the message, or the message L{decodeMessage} decoded.
    @param chunks: the chunks of a connection written in slices, from
        the part messages its batch names (L{migrator.state._large}).
    @param native: whether a batch in the native form is read (this
        process asked for it: L{migrator.state._nativeread}).
    @param adoptSocket: makes the socket object of a transport from a
        descriptor and its address family, taking the descriptor over.
    @param closeFd: closes a descriptor that no transport took over.
    @raise GraphError: if the state is malformed or names anything this
        process does not allow.
    """
    with collectorPaused():
        return _restore(reactor, ports, adapters, payload, fds, adoptSocket, closeFd, chunks, native)


def _restore(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    payload: bytes | Decoded,
    fds: list[int],
    adoptSocket: Callable[[int, int], socket.socket],
    closeFd: Callable[[int], None],
    chunks: list[list[Any]] | None,
    native: bool,
) -> Restored:
    anchors: dict[str, Any] = {"reactor": reactor}
    for tracked in ports.listening():
        # A UDP port has a protocol, no factory, and no connections.
        if tracked.kind != "udp":
            anchors.update(portFactories(tracked))
    fds = list(fds)
    hooks = _RestoreHooks(reactor, adapters, ports, fds, adoptSocket, closeFd)
    translator = Translator(None, getattr(adapters, "kept", None), TranslationLog(reactor.seconds))
    reader = GraphReader(
        adapters.adapterNamed, anchors, hooks, RestoreContext(hooks.gate), translator
    )
    reader.chunks = chunks or []
    try:
        data = payload.decoded if isinstance(payload, Decoded) else loadsPlain(payload)
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
        if "native" in data:
            # (A stream's batch in the native form: the roots are in it.)
            if not native:
                raise GraphError("a batch in the native form, which this process did not ask for")
            readNative(data["native"], reader, hooks)
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
        header = _header(data)
    except BaseException:
        hooks.gate.close()
        for t in hooks.transports:
            releaseConnection(t)
        for fd in fds:
            if fd >= 0:
                closeFd(fd)
        raise
    return Restored(
        hooks.transports,
        hooks.metas,
        hooks.producers,
        hooks.gate,
        hooks.loops,
        len(hooks.transports),
        reactor,
        translator.log.asDict(),
        **header,
    )


@attrs.frozen
class Decoded:
    """
    A connections message already decoded (L{decodeMessage}): what
    L{restoreConnections} takes in place of its bytes, so that a message
    is never decoded twice (nor a message that decodes to bytes taken for
    an encoded one).
    """

    decoded: Any


def decodeMessage(payload: bytes) -> Decoded:
    """
    Decode one of the incumbent's connection messages: a batch (for
    L{restoreConnections}), or a part (L{partOf}).

    @raise GraphError: if it is not plain data.
    """
    return Decoded(loadsPlain(payload))


def partOf(message: Decoded) -> tuple[int, list[list[Any]]] | None:
    """
    If C{message} is a part message, its number and its chunks (decoded);
    else C{None}.

    @raise GraphError: if it is a malformed one.
    """
    data = message.decoded
    if not (isinstance(data, dict) and "part" in data):
        return None
    number, blobs = data.get("part"), data.get("chunks")
    if type(number) is not int or not isinstance(blobs, list):
        raise GraphError("a malformed part message")
    chunks = []
    for blob in blobs:
        chunk = loadsPlain(blob) if type(blob) is bytes else None
        if type(chunk) is not list:
            raise GraphError("a part message with a malformed chunk")
        chunks.append(chunk)
    return number, chunks


def _header(data: dict[str, Any]) -> dict[str, Any]:
    """
    The stream's fields of a connections message (none in a message in
    one piece).

    @raise GraphError: if they are malformed.
    """
    batch, last = data.get("batch"), data.get("last", True)
    parts = data.get("parts")
    if parts is not None and type(parts) is not int:
        raise GraphError("a connections message with malformed parts")
    dropped, frozenAt = data.get("dropped", []), data.get("frozen_at")
    if not (
        (batch is None or type(batch) is int)
        and type(last) is bool
        and isinstance(dropped, list)
        and all(type(n) is int for n in dropped)
        and (frozenAt is None or type(frozenAt) in (int, float))
    ):
        raise GraphError("a connections message with a malformed batch header")
    return {"batch": batch, "last": last, "dropped": list(dropped), "frozenAt": frozenAt}
