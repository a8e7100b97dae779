# -*- test-case-name: tests.test_incumbent,tests.test_successor,tests.test_service -*-
"""
Test doubles for the takeover protocol, re-exported by L{migrator.testing}.

  - L{FakeRegistry}: an L{IPortRegistry} whose "ports" are plain file
    descriptors (e.g. one end of a C{socketpair}), which records what was
    paused, resumed, adopted and released.  Its connections are
    L{FakeConnection}s or real transports (L{FakeRegistry.trackConnection}),
    so that L{migrator.state._capture.captureConnections} and
    L{migrator.state._capture.restoreConnections} work on it.
  - L{FakeSession}: the incumbent's view of a successor's PB connection.
  - L{FakeRemoteRoot} and L{FakeBroker}: the successor's view of the
    incumbent, each remote call answered by the test through a L{Deferred}.
  - L{FakePeerPolicy}: an L{IPeerPolicy} that allows (or refuses) everyone.
  - L{FakeControlSocket}: a control socket that is never bound.
  - L{FakeConnection}: an established connection, as a draining process
    counts and closes them.
  - L{connectControl}: a server and a client broker of a control socket
    connected in memory (L{iosim}), with descriptor passing.

Descriptor ownership is spelled out on each double; every double that owns
descriptors has a C{close} method for C{addCleanup}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.test import iosim
from zope.interface import implementer

from migrator.interfaces import IPeerPolicy, IPortRegistry
from migrator.takeover._ports import TCP, UDP, UNIX, UnsupportedPort


def _closeQuietly(close: Callable[[int], None], fd: int) -> None:
    try:
        close(fd)
    except OSError:
        pass


@attrs.define(eq=False)
class FakePort:
    """
    A listening port of a L{FakeRegistry}.

    @ivar key: the declared address, as L{migrator.TrackedPort.key}.
    @ivar kind: C{"tcp"}, C{"unix"} or C{"udp"}.
    @ivar fd: the descriptor handed over for this port, owned by the
        registry (closed when the port is released), or C{None} (then
        L{FakeRegistry.handoffRecords} gives C{-1}, which cannot really be
        sent: give ports descriptors when a channel is to carry them).
    @ivar accepting: whether the port accepts connections now.
    @ivar released: whether the registry let go of it.
    @ivar factory: the port's factory: what a capture of connections
        anchors its state to (C{"factory:" + key}), and what a restore maps
        that anchor onto.
    @ivar peer: for a UDP port, the peer its socket is connected to, if
        any: such a port cannot be handed over.
    """

    key: str
    kind: str = TCP
    fd: int | None = None
    adopted: bool = False
    accepting: bool = True
    released: bool = False
    where: str = "127.0.0.1:0"
    family: int = int(socket.AF_INET)
    factory: Any = attrs.field(factory=lambda: ServerFactory())
    peer: tuple[str, int] | None = None

    @property
    def listening(self) -> bool:
        return not self.released

    @property
    def port(self) -> FakePort:
        """
        The reactor's listening port, as L{migrator.TrackedPort.port}: a
        fake port stands for its own.
        """
        return self

    def address(self) -> str:
        return self.where

    def describe(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "key": self.key,
            "kind": self.kind,
            "address": self.where if self.listening else None,
            "adopted": self.adopted,
        }
        if self.listening:
            record["family"] = self.family
        return record


@attrs.define(eq=False)
class FakeConnection:
    """
    An established connection accepted through a port.

    @ivar closeOnLose: whether C{loseConnection} closes it at once (else it
        stays open, as a connection with a peer that never reads would).
    @ivar protocol: its protocol.  With the default C{None} no adapter
        covers it: a capture leaves it with the incumbent, to drain.
    """

    connected: bool = True
    closeOnLose: bool = True
    loseConnectionCalls: int = 0
    protocol: Any = None

    def loseConnection(self) -> None:
        self.loseConnectionCalls += 1
        if self.closeOnLose:
            self.connected = False


class _FakeArrivals:
    """
    L{FakeRegistry.noteArrivals}'s note: the connections in its list that
    it has not returned yet.
    """

    def __init__(self, registry: FakeRegistry) -> None:
        self._registry = registry
        self._known = {id(c) for c in registry.connections}

    def take(self) -> list[Any]:
        added = [c for c in self._registry.connections if id(c) not in self._known]
        self._known.update(map(id, added))
        return added

    def close(self) -> None:
        self._known = set()


@implementer(IPortRegistry)
@attrs.define(eq=False)
class FakeRegistry:
    """
    An in-memory L{IPortRegistry}.

    Descriptors: those given to L{addPort} and L{offer} belong to the
    registry.  Adopting an offered port (L{declare}) duplicates its
    descriptor and closes the offered one, as the reactor does; releasing a
    port closes its descriptor (C{close}, never C{shutdown}).  Every
    descriptor the registry closes is recorded in L{closed}.

    Connections are not owned: a real transport given to
    L{trackConnection} is released (or closed) by whoever made it.

    @ivar holding: while C{True} (a successor before the switch), declared
        ports do not accept.
    @ivar calls: the names of the L{IPortRegistry} methods that handle
        ports called, in order (the connection queries are not recorded).
    @ivar connections: the connections, open or not: L{FakeConnection}s,
        or real transports (e.g. a C{tcp.Server} on one end of a
        C{socketpair}, or one restored by C{restoreConnections}).
    """

    holding: bool = False
    ports: list[FakePort] = attrs.field(factory=list)
    connections: list[Any] = attrs.field(factory=list)
    offered: dict[str, tuple[int, dict[str, Any]]] = attrs.field(factory=dict)
    calls: list[str] = attrs.field(factory=list)
    closed: list[int] = attrs.field(factory=list)
    installed: bool = False
    _close: Callable[[int], None] = os.close

    # -- setting up -----------------------------------------------------------

    def addPort(
        self,
        key: str,
        kind: str = TCP,
        fd: int | None = None,
        accepting: bool = True,
        where: str = "127.0.0.1:0",
        factory: Any = None,
    ) -> FakePort:
        """
        Record a port the service opened; the registry owns C{fd}.

        @param factory: the port's factory (default: a new
            L{ServerFactory}).
        """
        family = int(socket.AF_UNIX if kind == UNIX else socket.AF_INET)
        port = FakePort(key, kind, fd, accepting=accepting, where=where, family=family)
        if factory is not None:
            port.factory = factory
        self.ports.append(port)
        return port

    def declare(self, key: str, kind: str = TCP) -> FakePort:
        """
        The wrapped service listens at C{key}: adopt the offered port of that
        key if there is one (without accepting while L{holding}), else open a
        fresh one.
        """
        offered = self.offered.pop(key, None)
        if offered is None:
            return self.addPort(key, kind, accepting=not self.holding)
        fd, record = offered
        try:
            mine = os.dup(fd)
        finally:
            self._closeFd(fd)
        port = self.addPort(
            key,
            record.get("kind", kind),
            mine,
            accepting=not self.holding,
            where=record.get("address") or "",
        )
        port.adopted = True
        return port

    def install(self) -> None:
        self.installed = True

    def uninstall(self) -> None:
        self.installed = False

    def close(self) -> None:
        """
        Close every descriptor still owned (for C{addCleanup}).
        """
        for port in self.ports:
            if port.fd is not None:
                self._closeFd(port.fd)
                port.fd = None
        for fd, _ in self.offered.values():
            self._closeFd(fd)
        self.offered.clear()

    def _closeFd(self, fd: int) -> None:
        self.closed.append(fd)
        _closeQuietly(self._close, fd)

    # -- IPortRegistry ----------------------------------------------------------

    def listening(self) -> list[FakePort]:
        self.calls.append("listening")
        return [p for p in self.ports if p.listening]

    def handoffRecords(self) -> tuple[list[dict[str, Any]], list[int]]:
        self.calls.append("handoffRecords")
        open_ = [p for p in self.ports if p.listening]
        bad = [p.key for p in open_ if p.kind == UDP and p.peer is not None]
        if bad:
            raise UnsupportedPort(
                "cannot hand over " + ", ".join(bad)
                + ": a UDP port connected to one peer cannot be handed over"
            )
        records = [p.describe() for p in open_]
        fds = [p.fd if p.fd is not None else -1 for p in open_]
        return records, fds

    def offer(self, records: list[dict[str, Any]], fds: list[int]) -> None:
        self.calls.append("offer")
        if len(records) != len(fds):
            for fd in fds:
                self._closeFd(fd)
            raise ValueError(f"{len(records)} port records but {len(fds)} descriptors")
        for record, fd in zip(records, fds, strict=True):
            self.offered[record["key"]] = (fd, record)

    def closeUnclaimed(self) -> list[str]:
        self.calls.append("closeUnclaimed")
        keys = sorted(self.offered)
        for key in keys:
            fd, _ = self.offered.pop(key)
            self._closeFd(fd)
        return keys

    def adoptedCount(self) -> int:
        self.calls.append("adoptedCount")
        return sum(1 for p in self.ports if p.adopted and p.listening)

    def pauseAccepting(self) -> int:
        self.calls.append("pauseAccepting")
        n = 0
        for port in self.ports:
            if port.listening:
                port.accepting = False
                n += 1
        return n

    def resumeAccepting(self) -> int:
        self.calls.append("resumeAccepting")
        self.holding = False
        n = 0
        for port in self.ports:
            if port.listening:
                port.accepting = True
                n += 1
        return n

    def releaseAll(self) -> list[str]:
        self.calls.append("releaseAll")
        keys = []
        for port in self.ports:
            if port.listening:
                port.released = True
                port.accepting = False
                if port.fd is not None:
                    self._closeFd(port.fd)
                    port.fd = None
                keys.append(port.key)
        return keys

    def takeLocks(self) -> list[str]:
        self.calls.append("takeLocks")
        return []

    def connectionCount(self) -> int:
        return sum(1 for _ in self.openConnections())

    def openConnections(self) -> list[Any]:
        return [c for c in self.connections if getattr(c, "connected", False)]

    def openConnectionsBesides(self, leaving: Any, counted: int = -1) -> list[Any]:
        return [c for c in self.openConnections() if id(c) not in leaving]

    def noteArrivals(self) -> Any:
        # (Tests add to connections directly: the note compares.)
        return _FakeArrivals(self)

    def keyOf(self, port: Any) -> str | None:
        for p in self.ports:
            if p is port:
                return p.key
        return None

    def portForKey(self, key: str) -> FakePort | None:
        for p in self.ports:
            if p.key == key and p.listening:
                return p
        return None

    def trackConnection(self, transport: Any) -> None:
        self.connections.append(transport)

    # -- what MigrateService uses besides the interface -------------------------

    def untrackedListenUNIX(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("FakeRegistry does not bind control sockets")


@attrs.define(eq=False)
class FakeSession:
    """
    The incumbent's side of one successor's PB connection
    (L{migrator.takeover._incumbent.ControlSession}, without PB).

    C{sendFileDescriptor} does what the kernel does for the peer: the
    session keeps a duplicate of each descriptor sent, in L{sentFds}, and
    owns it (close them with L{close}, or take them over with
    L{takeSent}).

    @ivar hungUp: how many times the incumbent hung up on this session.
    """

    sentFds: list[int] = attrs.field(factory=list)
    hungUp: int = 0

    def sendFileDescriptor(self, fd: int) -> None:
        self.sentFds.append(os.dup(fd))

    def hangUp(self) -> None:
        self.hungUp += 1

    def takeSent(self) -> list[int]:
        """
        @return: the descriptors sent so far, now owned by the caller.
        """
        fds, self.sentFds = self.sentFds, []
        return fds

    def close(self) -> None:
        for fd in self.takeSent():
            _closeQuietly(os.close, fd)


@attrs.define(eq=False)
class _FakeBrokerTransport:
    broker: FakeBroker
    loseConnectionCalls: int = 0

    def loseConnection(self) -> None:
        self.loseConnectionCalls += 1


@attrs.define(eq=False)
class FakeBroker:
    """
    The successor's PB broker (L{migrator.takeover._control.CheckedClientBroker}) as
    L{migrator.takeover._successor.Successor} uses it.

    @ivar receivedFds: descriptors that arrived from the incumbent, owned by
        the broker until taken, closed by L{connectionLost}.
    @ivar root: what C{remoteForName("root")} gives.
    """

    receivedFds: list[int] = attrs.field(factory=list)
    disconnected: bool = False
    root: FakeRemoteRoot | None = None
    disconnects: list[Callable[[], None]] = attrs.field(factory=list)
    transport: _FakeBrokerTransport = attrs.field(
        default=attrs.Factory(lambda self: _FakeBrokerTransport(self), takes_self=True)
    )

    def remoteForName(self, name: str) -> FakeRemoteRoot | None:
        return self.root

    def notifyOnDisconnect(self, notifier: Callable[[], None]) -> None:
        self.disconnects.append(notifier)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The connection is gone: pending calls fail with
        L{pb.PBConnectionLost} and received descriptors are closed, as PB
        and the control broker do.
        """
        if self.disconnected:
            return
        self.disconnected = True
        for fd in self.receivedFds:
            _closeQuietly(os.close, fd)
        self.receivedFds = []
        if self.root is not None:
            for call in self.root.calls:
                if not call.deferred.called:
                    call.deferred.errback(Failure(pb.PBConnectionLost(reason)))
        # As PB does: pending answers fail first, then the notifiers run.
        for notifier in self.disconnects[:]:
            notifier()


@attrs.define(eq=False)
class FakeCall:
    """
    One C{callRemote} made to a L{FakeRemoteRoot}.
    """

    method: str
    args: tuple[Any, ...]
    deferred: Deferred[Any]


@attrs.define(eq=False)
class FakeRemoteRoot:
    """
    The incumbent's PB root as the successor sees it.  Each C{callRemote}
    is recorded in L{calls} and answered by the test (L{answer},
    L{refuse}), unless C{autoAnswers} holds an answer for that method.

    @ivar autoAnswers: method name to the value answered at once.
    """

    broker: FakeBroker = attrs.field(factory=FakeBroker)
    calls: list[FakeCall] = attrs.field(factory=list)
    autoAnswers: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.broker.root = self

    def callRemote(self, method: str, *args: Any) -> Deferred[Any]:
        if self.broker.disconnected:
            # As PB does: a call on a lost connection raises at once.
            raise pb.DeadReferenceError("Calling Stale Broker")
        if method in self.autoAnswers:
            d: Deferred[Any] = succeed(self.autoAnswers[method])
        else:
            d = Deferred()
        self.calls.append(FakeCall(method, args, d))
        return d

    def methods(self) -> list[str]:
        """
        @return: the names of the methods called, in order.
        """
        return [c.method for c in self.calls]

    def pending(self, method: str) -> FakeCall:
        """
        @return: the latest call of C{method}, which must not be answered
            yet.
        """
        for call in reversed(self.calls):
            if call.method == method:
                if call.deferred.called:
                    raise AssertionError(f"{method} was already answered")
                return call
        raise AssertionError(f"{method} was not called (calls: {self.methods()})")

    def answer(self, method: str, result: Any = None) -> None:
        self.pending(method).deferred.callback(result)

    def refuse(self, method: str, message: str) -> None:
        """
        Fail the latest call of C{method} as a refusal raised remotely
        reaches the caller: a L{pb.RemoteError} carrying the message.
        """
        self.pending(method).deferred.errback(
            Failure(
                pb.RemoteError(
                    b"migrator.takeover._incumbent.TakeoverRefused",
                    message,
                    "Traceback unavailable\n",
                )
            )
        )


@implementer(IPeerPolicy)
@attrs.define(eq=False)
class FakePeerPolicy:
    """
    An L{IPeerPolicy} that gives the same verdict for every peer (in-memory
    transports have no credentials to read).

    @ivar checked: the transports asked about.
    """

    allowed: bool = True
    who: str = "pid 1 uid 0 gid 0 (fake)"
    checked: list[Any] = attrs.field(factory=list)
    why: str = "this control socket serves the fake user only"

    def check(self, transport: Any) -> tuple[bool, str]:
        self.checked.append(transport)
        return self.allowed, self.who

    def refusal(self) -> str:
        return self.why


@attrs.define(eq=False)
class FakeControlSocket:
    """
    A L{migrator.takeover._control.ControlSocket} that binds nothing.
    """

    path: str = "/nonexistent/control"
    published: bool = False
    closed: bool = False
    failPublish: BaseException | None = None

    def publish(self) -> None:
        if self.failPublish is not None:
            raise self.failPublish
        self.published = True

    def owned(self) -> bool:
        return self.published and not self.closed

    def close(self) -> None:
        self.closed = True


class FDPassingTransport(iosim.FakeTransport):
    """
    An in-memory transport that can also send file descriptors: the peer
    protocol's C{fileDescriptorReceived} gets a duplicate at once (so it
    has the descriptor before any bytes written after it, as with a real
    UNIX socket).  The peer owns the duplicate.
    """

    peerProtocol: Any = None

    def sendFileDescriptor(self, fd: int) -> None:
        if self.peerProtocol is None:
            raise RuntimeError("not connected")
        self.peerProtocol.fileDescriptorReceived(os.dup(fd))


def connectControl(
    serverFactory: Any, clientFactory: Any, clock: Any
) -> tuple[Any, Any, iosim.IOPump]:
    """
    Connect a broker of C{serverFactory} (e.g.
    L{migrator.takeover._control.ControlServerFactory}) and one of C{clientFactory}
    in memory, the server able to send descriptors to the client.

    @param clock: the clock the pump advances (by 0) on every pump.
    @return: the client broker, the server broker and the L{iosim.IOPump}
        (call its C{flush} to deliver what was written).
    """
    server = serverFactory.buildProtocol(None)
    client = clientFactory.buildProtocol(None)
    serverTransport = FDPassingTransport(server, isServer=True)
    serverTransport.peerProtocol = client
    clientTransport = iosim.FakeTransport(client, isServer=False)
    pump = iosim.connect(server, serverTransport, client, clientTransport, clock=clock)
    return client, server, pump


@attrs.define(eq=False)
class FakeWatch:
    """
    A L{migrator.takeover._liveness.ProcessWatch} of a process whose life
    the test decides.

    @ivar alive: says whether a pid lives.
    """

    pid: int
    alive: Callable[[int], bool]
    closed: bool = False

    def dead(self) -> bool:
        return not self.alive(self.pid)

    def close(self) -> None:
        self.closed = True
