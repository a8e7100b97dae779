# -*- test-case-name: tests.test_ports -*-
"""
Track, adopt, pause and release the listening ports of a wrapped service.

The wrapped service knows nothing of migration: it calls C{listenTCP},
C{listenUNIX}, C{listenUDP} (directly, or through endpoints, C{strports} and
C{internet.UDPServer}) on the global reactor.  L{ListenerRegistry} hooks
those methods on the reactor instance, so that

  - in an incumbent, every port created is recorded under the address the
    service I{declared} (C{tcp:0} stays C{tcp:0}, whatever port the kernel
    chose), and the connections it accepts are counted;

  - in a successor, a port whose declared address the incumbent already holds
    is I{adopted} from the file descriptor the incumbent sent, instead of
    being bound again, and no port accepts (a stream port) or reads (a
    datagram port) until the switch;

  - in a dry run's staging process (C{detached}), every port is a
    L{DetachedPort}: nothing is bound or adopted.

A UDP port moves like a stream port: the successor adopts the same datagram
socket, bound to its own service's protocol.  Between the incumbent's last
read and the successor's first, datagrams wait in the socket's receive
buffer, and whoever reads next gets them: none is lost unless the buffer
fills up.

File descriptor ownership: descriptors handed to L{ListenerRegistry.offer}
belong to the registry from then on.  Each is either adopted (the reactor's
port gets its own duplicate, and the registry closes the original at once) or
closed by L{ListenerRegistry.closeUnclaimed}.  A port is let go with
L{releasePort}: close, never C{shutdown()}, because another process holds the
same socket (Twisted #5621; FACTS.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any, cast

import attrs
from twisted.internet.interfaces import IReactorFDSet, IReactorUNIX
from twisted.logger import Logger
from zope.interface import implementer

from migrator._reactorinternals import hookReactorMethod, unhookReactorMethod
from migrator._twistedinternals import adoptTCP as _adoptTCP
from migrator._twistedinternals import adoptUNIX as _adoptUNIX
from migrator._twistedinternals import (
    countAccepted,
    neverShutdown,
    releasePort,
    releaseUNIXLock,
    takeUNIXLock,
)
from migrator.interfaces import IPortRegistry
from migrator.state._detachedport import DetachedPort
from migrator.takeover._connections import Arrivals, Connections

_log = Logger()

TCP = "tcp"
UNIX = "unix"
UDP = "udp"


class UnsupportedPort(Exception):
    """
    The wrapped service listens on something that cannot be handed over.
    """


def _familyOf(port: Any) -> int:
    return int(port.socket.family)


def _adoptUDP(
    reactor: Any, fd: int, family: int, protocol: Any, maxPacketSize: int
) -> Any:
    """
    Adopt a bound datagram socket for C{protocol}, without reading yet.

    C{adoptDatagramPort} (L{IReactorSocket}) connects the protocol and starts
    reading; reading stops again before the reactor runs, so nothing is read
    until the switch.  The port holds its own duplicate of C{fd}; the caller
    still owns C{fd}.
    """
    port = reactor.adoptDatagramPort(fd, family, protocol, maxPacketSize)
    port.stopReading()
    return port


def _detached(port: DetachedPort) -> DetachedPort:
    """
    Start a port that listens nowhere (a dry run's), as the reactor starts
    the ports it makes.
    """
    port.startListening()
    return port


def _peerOf(port: Any) -> Any:
    """
    The address a UDP port's socket is connected to, or C{None} (the usual
    case: a server answers whoever wrote).
    """
    try:
        return port.getHandle().getpeername()
    except OSError:
        return None


@attrs.define(eq=False)
class TrackedPort:
    """
    A listening port of the wrapped service.

    @ivar key: the declared address, e.g. C{"tcp:0:127.0.0.1#0"}: kind,
        declared port or path, interface, and the how-many-th declaration of
        the same address this is.
    @ivar kind: L{TCP}, L{UNIX} or L{UDP}.
    @ivar port: the reactor's listening port.
    @ivar adopted: C{True} if it came from the incumbent.
    @ivar mode: for UNIX ports, the declared file mode.
    """

    key: str
    kind: str
    port: Any
    adopted: bool = False
    mode: int = 0o666
    wantPID: bool = False

    @property
    def listening(self) -> bool:
        return bool(getattr(self.port, "connected", False))

    def address(self) -> str:
        """
        The actual address, for humans: C{"127.0.0.1:8080"}, C{"[::1]:80"}
        or a path.
        """
        host = self.port.getHost()
        if self.kind == UNIX:
            name = host.name
            return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        if ":" in host.host:
            return f"[{host.host}]:{host.port}"
        return f"{host.host}:{host.port}"

    def describe(self) -> dict[str, Any]:
        """
        A plain record of this port for status output and the handoff.
        """
        record: dict[str, Any] = {
            "key": self.key,
            "kind": self.kind,
            "address": self.address() if self.listening else None,
            "adopted": self.adopted,
        }
        if self.listening:
            record["family"] = _familyOf(self.port)
        return record


def _seconds(reactor: Any) -> Callable[[], float]:
    seconds = getattr(reactor, "seconds", None)
    return seconds if callable(seconds) else (lambda: 0.0)


@implementer(IPortRegistry)
@attrs.define
class ListenerRegistry:
    """
    Hooks a reactor's C{listenTCP}, C{listenUNIX} and C{listenUDP} and keeps
    the record of every port the wrapped service opened.

    @ivar _reactor: the reactor whose methods are hooked (those of
        C{listenTCP}, C{listenUNIX} and C{listenUDP} it has), and with
        which adopted ports register.
    @ivar _holding: while C{True} (a successor before the switch), new and
        adopted ports do not accept (stream) or read (datagram).
    @ivar _adoptTCP: adopts a listening TCP descriptor
        (L{migrator._twistedinternals.adoptTCP}), a seam for tests.
    @ivar _adoptUNIX: the same for UNIX
        (L{migrator._twistedinternals.adoptUNIX}).
    @ivar _close: closes a descriptor the registry owns (C{os.close}), a
        seam for tests.
    @ivar detached: in a dry run's staging process: every port the service
        declares is a L{DetachedPort}, which binds and adopts nothing.
    """

    _reactor: IReactorFDSet
    _holding: bool = False
    detached: bool = False
    _adoptTCP: Callable[..., Any] = _adoptTCP
    _adoptUNIX: Callable[..., Any] = _adoptUNIX
    _adoptUDP: Callable[..., Any] = _adoptUDP
    _close: Callable[[int], None] = os.close
    _ports: list[TrackedPort] = attrs.field(factory=list)
    _occurrences: dict[str, int] = attrs.field(factory=dict)
    _offered: dict[str, tuple[int, dict[str, Any]]] = attrs.field(factory=dict)
    _originals: dict[str, Any] = attrs.field(factory=dict)
    _connections: Connections = attrs.field(
        default=attrs.Factory(lambda self: Connections(_seconds(self._reactor)), takes_self=True)
    )
    _listeners: list[Callable[[Any], object]] = attrs.field(factory=list)

    # -- installing the hook -------------------------------------------------

    def install(self) -> None:
        """
        Replace the reactor instance's listen methods with ours.
        """
        for name in ("listenTCP", "listenUNIX", "listenUDP"):
            if name in self._originals:
                continue
            original = hookReactorMethod(self._reactor, name, getattr(self, "_" + name))
            if original is not None:
                self._originals[name] = original

    def uninstall(self) -> None:
        """
        Put the reactor's own listen methods back.
        """
        for name in list(self._originals):
            unhookReactorMethod(self._reactor, name, self._originals.pop(name))

    def untrackedListenUNIX(self, *args: Any, **kwargs: Any) -> Any:
        """
        The reactor's own C{listenUNIX}, for migrator's own sockets.
        """
        listen = self._originals.get("listenUNIX") or cast(IReactorUNIX, self._reactor).listenUNIX
        return listen(*args, **kwargs)

    # -- what the service declares -------------------------------------------

    def _key(self, kind: str, declared: str) -> str:
        base = f"{kind}:{declared}"
        n = self._occurrences.get(base, 0)
        self._occurrences[base] = n + 1
        return f"{base}#{n}"

    def onListen(self, listener: Callable[[Any], object]) -> None:
        """
        Call C{listener(port)} with every stream port tracked from now on
        (created or adopted), before it accepts: a hook for adapters that
        must see a port's connections from their start (TLS follows its
        sessions' handshakes, L{migrator.adapters.tls.followPort}).  A
        listener that raises is logged and does not stop the port.
        """
        self._listeners.append(listener)

    def _track(self, tracked: TrackedPort) -> None:
        if tracked.kind != UDP and not self.detached:
            countAccepted(tracked.port, self._connections)
            # Whoever stops this port (the service, or twistd at exit, even
            # in the middle of a takeover) must never shutdown() a socket
            # another process may hold too: close() is enough to stop it
            # once ours is the last copy.
            neverShutdown(tracked.port)
            for listener in self._listeners:
                try:
                    listener(tracked.port)
                except Exception:
                    _log.failure("a listen hook failed for {key}", key=tracked.key)
        self._ports.append(tracked)

    def _adoptOffered(
        self,
        key: str,
        adopt: Callable[[int, dict[str, Any]], Any],
        tracked: Callable[[Any], TrackedPort],
    ) -> Any:
        """
        If the incumbent offered the port declared as C{key}, adopt it and
        track it.

        @param adopt: makes the port from the offered descriptor and its
            record; the port holds its own duplicate (the offered
            descriptor is closed here, whatever happens).
        @param tracked: the record of the adopted port.
        @return: the adopted port, or C{None} if none was offered (or this
            registry is detached).
        """
        offered = None if self.detached else self._offered.pop(key, None)
        if offered is None:
            return None
        fd, record = offered
        try:
            listening = adopt(fd, record)
        finally:
            self._close(fd)
        port = tracked(listening)
        # A UNIX port's key is its address already.
        where = "" if port.kind == UNIX else f" ({record.get('address')})"
        _log.info("adopted {key}{where} from the incumbent", key=key, where=where)
        self._track(port)
        return listening

    def _listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        key = self._key(TCP, f"{port}:{interface}")
        adopted = self._adoptOffered(
            key,
            lambda fd, record: self._adoptTCP(self._reactor, fd, record["family"], factory, backlog),
            lambda listening: TrackedPort(key, TCP, listening, adopted=True),
        )
        if adopted is not None:
            return adopted
        if self.detached:
            listening = _detached(DetachedPort.forTCP(port, interface, factory))
        else:
            listening = self._originals["listenTCP"](port, factory, backlog, interface)
        if self._holding:
            listening.stopReading()
        self._track(TrackedPort(key, TCP, listening))
        return listening

    def _listenUNIX(
        self,
        address: str | bytes,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        path = os.fsdecode(address)
        if not path.startswith("\0"):
            path = os.path.abspath(path)
        key = self._key(UNIX, path)
        adopted = self._adoptOffered(
            key,
            lambda fd, record: self._adoptUNIX(self._reactor, fd, factory, backlog, mode),
            lambda listening: TrackedPort(
                key, UNIX, listening, adopted=True, mode=mode, wantPID=bool(wantPID)
            ),
        )
        if adopted is not None:
            return adopted
        if self.detached:
            listening = _detached(DetachedPort.forUNIX(path, factory))
        else:
            listening = self._originals["listenUNIX"](address, factory, backlog, mode, wantPID)
        if self._holding:
            listening.stopReading()
        self._track(TrackedPort(key, UNIX, listening, mode=mode, wantPID=bool(wantPID)))
        return listening

    def _listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        key = self._key(UDP, f"{port}:{interface}")
        adopted = self._adoptOffered(
            key,
            lambda fd, record: self._adoptUDP(
                self._reactor, fd, record["family"], protocol, maxPacketSize
            ),
            lambda listening: TrackedPort(key, UDP, listening, adopted=True),
        )
        if adopted is not None:
            return adopted
        if self.detached:
            listening = _detached(DetachedPort.forTCP(port, interface, protocol, kind=UDP))
        else:
            listening = self._originals["listenUDP"](port, protocol, interface, maxPacketSize)
        if self._holding:
            listening.stopReading()
        self._track(TrackedPort(key, UDP, listening))
        return listening

    # -- the handoff ----------------------------------------------------------

    def listening(self) -> list[TrackedPort]:
        """
        The ports that are still open, in the order they were created.
        """
        return [p for p in self._ports if p.listening]

    def unsupported(self) -> list[TrackedPort]:
        """
        Open ports that cannot be handed over: UDP ports whose protocol
        C{connect()}ed them to one peer (the successor's port object would
        not know it is connected).
        """
        return [
            p for p in self.listening() if p.kind == UDP and _peerOf(p.port) is not None
        ]

    def handoffRecords(self) -> tuple[list[dict[str, Any]], list[int]]:
        """
        The records and file descriptors of every port to hand over.
        The descriptors stay owned by the ports: send them, do not close them.

        @raise UnsupportedPort: if an open port cannot be handed over.
        """
        bad = self.unsupported()
        if bad:
            raise UnsupportedPort(
                "cannot hand over "
                + ", ".join(p.key for p in bad)
                + ": a UDP port connected to one peer cannot be handed over"
            )
        records, fds = [], []
        for tracked in self.listening():
            records.append(tracked.describe())
            fds.append(tracked.port.fileno())
        return records, fds

    def offer(self, records: list[dict[str, Any]], fds: list[int]) -> None:
        """
        Make the incumbent's ports available for adoption by declared key.
        The registry owns C{fds} from now on.
        """
        if len(records) != len(fds):
            for fd in fds:
                self._close(fd)
            raise ValueError(f"{len(records)} port records but {len(fds)} descriptors")
        for record, fd in zip(records, fds, strict=True):
            self._offered[record["key"]] = (fd, record)

    def closeUnclaimed(self) -> list[str]:
        """
        Close the offered descriptors that the service did not declare.

        @return: their keys.
        """
        keys = sorted(self._offered)
        for key in keys:
            fd, _ = self._offered.pop(key)
            self._close(fd)
        return keys

    def adoptedCount(self) -> int:
        return sum(1 for p in self._ports if p.adopted and p.listening)

    def pauseAccepting(self) -> int:
        """
        Stop accepting on every open stream port (their backlogs keep
        queueing connections) and reading on every open datagram port (its
        receive buffer keeps queueing datagrams).

        @return: how many ports were paused.
        """
        n = 0
        for tracked in self.listening():
            tracked.port.stopReading()
            n += 1
        return n

    def resumeAccepting(self) -> int:
        """
        Accept (read) again on every open port.

        @return: how many ports accept.
        """
        self._holding = False
        n = 0
        for tracked in self.listening():
            tracked.port.startReading()
            n += 1
        return n

    def releaseAll(self, kinds: tuple[str, ...] = (TCP, UNIX, UDP)) -> list[str]:
        """
        Let go of every open port of the given kinds with L{releasePort}.
        For a UDP port that is all there is to it: a datagram socket has no
        C{shutdown()} hazard, but closing only this process's copy also
        leaves the protocol alone (its C{stopProtocol} does not run here,
        as a stream port's factory is not stopped).

        @return: the keys released.
        """
        keys = []
        for tracked in self.listening():
            if tracked.kind in kinds:
                releasePort(tracked.port)
                if tracked.kind == UNIX:
                    # Hand Twisted's lock file over with the socket: the
                    # successor takes it (see takeLocks) once we let go.
                    releaseUNIXLock(tracked.port)
                keys.append(tracked.key)
        return keys

    def takeLocks(self) -> list[str]:
        """
        After the commit, take Twisted's lock files (C{PATH.lock}) of the
        adopted UNIX ports declared with C{wantPID}, which the incumbent
        released, so that no other process may claim their paths.

        @return: the keys whose lock could not be taken (logged).
        """
        missed = []
        for tracked in self.listening():
            if not (tracked.adopted and tracked.kind == UNIX and tracked.wantPID):
                continue
            if not takeUNIXLock(tracked.port):
                missed.append(tracked.key)
                _log.warn("could not take the lock file of {key}", key=tracked.key)
        return missed

    def keyOf(self, port: Any) -> str | None:
        """
        The declared key of a tracked port object, if it is one.
        """
        for tracked in self._ports:
            if tracked.port is port:
                return tracked.key
        return None

    def portForKey(self, key: str) -> Any:
        """
        The open port declared as C{key}, or C{None}.
        """
        for tracked in self.listening():
            if tracked.key == key:
                return tracked.port
        return None

    def trackConnection(self, transport: Any) -> None:
        """
        Count C{transport} among this process's connections (one restored
        from the incumbent, for instance).
        """
        self._connections.add(transport)

    def openConnections(self) -> Iterator[Any]:
        """
        The connections accepted through tracked ports that are still open.
        """
        return iter(self._connections.alive())

    def openConnectionsBesides(self, leaving: AbstractSet[int], counted: int = -1) -> list[Any]:
        # (If nothing but those is counted here, the open ones besides them
        # are none, and no connection is looked at: listing tens of
        # thousands takes milliseconds, three times over at a commit.)
        # (counted is -1 when not known: never.)
        if len(self._connections) <= counted:
            return []
        return [t for t in self.openConnections() if id(t) not in leaving]

    def noteArrivals(self) -> Arrivals:
        """
        Start noting the connections added from now on, until the note is
        closed or dropped (it is held weakly here).

        @return: the note (L{Arrivals.take}).
        """
        return Arrivals(self._connections.notes)

    def connectedAt(self, transport: Any) -> float | None:
        """
        When C{transport} was accepted (or given to L{trackConnection}) in
        this process, by the reactor's clock; C{None} if it was not.
        """
        try:
            return self._connections.since.get(transport)
        except TypeError:
            return None

    def connectionCount(self) -> int:
        return sum(1 for _ in self.openConnections())

