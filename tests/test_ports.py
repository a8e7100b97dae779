"""
Tests for L{migrator.takeover._ports}: tracking, adopting, pausing and releasing the
wrapped service's listening ports.

Most tests use fake ports on a fake reactor.  Those about what happens to a
socket use real listening sockets (TCP and UDP on 127.0.0.1 port 0, UNIX in a
temporary directory) wrapped in Twisted's own port classes, driven by a
L{MemoryReactorClock}: nothing ever connects over TCP, and the UDP tests
send a few datagrams on loopback, each awaited with a bounded C{select}.
"""

from __future__ import annotations

import gc
import itertools
import os
import select
import shutil
import socket
import stat
import tempfile
import weakref
from typing import Any

from twisted.internet import error, tcp, udp, unix
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import _CountingTransport, releaseConnection, releasePort
from migrator._twistedinternals import adoptTCP as _adoptTCP
from migrator._twistedinternals import adoptUNIX as _adoptUNIX
from migrator.state._detachedport import DetachedPort
from migrator.takeover._ports import (
    TCP,
    UDP,
    UNIX,
    ListenerRegistry,
    TrackedPort,
    UnsupportedPort,
    _adoptUDP,
)
from tests._fakes import FakeConnection


class _FakeSocket:
    """
    Records what is done to a listening socket.
    """

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family
        self.calls: list[str] = []

    def close(self) -> None:
        self.calls.append("close")

    def shutdown(self, how: int) -> None:
        self.calls.append("shutdown")


_fakeDescriptors = itertools.count(1000)


class _FakeTransport:
    """
    Stands in for C{tcp.Server}: remembers how it was built.
    """

    connected = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class _FakePort:
    """
    A listening port that records C{startReading}/C{stopReading}.
    """

    transport: Any = _FakeTransport

    def __init__(self, address: Any, factory: Any, family: int = socket.AF_INET) -> None:
        self.address = address
        self.factory = factory
        self.connected = True
        self.reading = True
        self.readingCalls: list[bool] = []
        self.socket = _FakeSocket(family)
        self.fd = next(_fakeDescriptors)

    def fileno(self) -> int:
        return self.fd

    def getHost(self) -> Any:
        return self.address

    def startReading(self) -> None:
        self.reading = True
        self.readingCalls.append(True)

    def stopReading(self) -> None:
        self.reading = False
        self.readingCalls.append(False)


class _FakeUDPPort(_FakePort):
    """
    A UDP port: no connections to count, and a socket that may be
    connected to one peer.
    """

    transport = None

    def __init__(self, address: Any, protocol: Any, family: int = socket.AF_INET) -> None:
        _FakePort.__init__(self, address, None, family)
        self.protocol = protocol
        self.peer: tuple[str, int] | None = None

    def getHandle(self) -> Any:
        return self

    def getpeername(self) -> tuple[str, int]:
        if self.peer is None:
            raise OSError(107, "Transport endpoint is not connected")
        return self.peer


class _FakeReactor:
    """
    A reactor whose listen methods make fake ports and remember their
    arguments.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _FakePort:
        self.calls.append(("tcp", port, factory, backlog, interface))
        if ":" in interface:
            return _FakePort(IPv6Address("TCP", interface, port or 4321), factory, socket.AF_INET6)
        return _FakePort(IPv4Address("TCP", interface or "0.0.0.0", port or 1234), factory)

    def listenUNIX(
        self,
        address: str,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> _FakePort:
        self.calls.append(("unix", address, factory, backlog, mode, wantPID))
        return _FakePort(UNIXAddress(os.fsencode(address)), factory, socket.AF_UNIX)

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> _FakeUDPPort:
        self.calls.append(("udp", port, protocol, interface, maxPacketSize))
        return _FakeUDPPort(IPv4Address("UDP", interface or "0.0.0.0", port), protocol)


class _NoUDPReactor:
    """
    A reactor without C{listenUDP}.
    """

    def listenTCP(self, *args: Any) -> Any:
        return _FakePort(IPv4Address("TCP", "0.0.0.0", 1), None)


class _ListeningReactor(MemoryReactorClock):
    """
    A memory reactor whose C{listenTCP} and C{listenUNIX} make real
    listening sockets, as a real reactor does, without a real event loop.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.ports: list[Any] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        p = tcp.Port(port, factory, backlog, interface, self)
        p.startListening()
        self.ports.append(p)
        return p

    def listenUNIX(
        self,
        address: str,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        p = unix.Port(address, factory, backlog, mode, self, wantPID)
        p.startListening()
        self.ports.append(p)
        return p

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        p = udp.Port(port, protocol, interface, maxPacketSize, self)
        p.startListening()
        self.ports.append(p)
        return p

    def adoptDatagramPort(
        self, fileDescriptor: int, addressFamily: int, protocol: Any, maxPacketSize: int = 8192
    ) -> Any:
        # The real reactors' implementation, on this reactor.
        p = PosixReactorBase.adoptDatagramPort(
            self, fileDescriptor, addressFamily, protocol, maxPacketSize  # type: ignore[arg-type]
        )
        self.ports.append(p)
        return p

    def closeAll(self) -> None:
        for p in self.ports:
            releasePort(p)


def _factory() -> ServerFactory:
    return ServerFactory.forProtocol(Protocol)


def _accepting(s: socket.socket) -> int:
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _Closer:
    """
    Stands in for C{os.close}: records, and really closes descriptors that
    are real.
    """

    def __init__(self, real: bool = False) -> None:
        self.closed: list[int] = []
        self._real = real

    def __call__(self, fd: int) -> None:
        self.closed.append(fd)
        if self._real:
            os.close(fd)


class _RealSocketsMixin:
    """
    Temporary directories and real listening ports, cleaned up.
    """

    def tempdir(self) -> str:
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
        return path

    def listeningReactor(self) -> _ListeningReactor:
        reactor = _ListeningReactor()
        self.addCleanup(reactor.closeAll)  # type: ignore[attr-defined]
        return reactor

    def dup(self, s: socket.socket) -> socket.socket:
        d = s.dup()
        self.addCleanup(d.close)  # type: ignore[attr-defined]
        return d


class ListenerRegistryInstallTests(SynchronousTestCase):
    """
    L{ListenerRegistry.install} and L{ListenerRegistry.uninstall} hook and
    unhook the reactor instance's listen methods.
    """

    def test_install(self) -> None:
        """
        After C{install}, the reactor's listen methods are the registry's,
        and the ports they create are tracked.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        self.assertEqual(reactor.listenTCP, registry._listenTCP)
        self.assertEqual(reactor.listenUNIX, registry._listenUNIX)
        self.assertEqual(reactor.listenUDP, registry._listenUDP)
        port = reactor.listenTCP(8080, _factory())
        self.assertEqual([t.port for t in registry.listening()], [port])
        self.assertEqual(len(reactor.calls), 1)

    def test_installTwice(self) -> None:
        """
        Installing twice does not hook the hook: one C{uninstall} gives the
        reactor its own methods back.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        registry.install()
        reactor.listenTCP(1, _factory())
        self.assertEqual(len(registry.listening()), 1)
        registry.uninstall()
        self.assertNotIn("listenTCP", vars(reactor))
        self.assertEqual(reactor.listenTCP, _FakeReactor.listenTCP.__get__(reactor))

    def test_uninstall(self) -> None:
        """
        After C{uninstall}, the reactor's own methods are used and nothing is
        tracked any more.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        registry.uninstall()
        for name in ("listenTCP", "listenUNIX", "listenUDP"):
            self.assertNotIn(name, vars(reactor))
        reactor.listenTCP(1, _factory())
        self.assertEqual(registry.listening(), [])
        registry.uninstall()

    def test_uninstallInstanceMethods(self) -> None:
        """
        Listen methods that were attributes of the reactor instance itself
        (another hook, or a fake) are put back by C{uninstall}, not deleted.
        """
        reactor = _FakeReactor()
        theirs: list[Any] = []

        def listenTCP(*args: Any, **kwargs: Any) -> Any:
            theirs.append(args)
            return _FakePort(IPv4Address("TCP", "0.0.0.0", 1), None)

        reactor.listenTCP = listenTCP  # type: ignore[method-assign]
        registry = ListenerRegistry(reactor)
        registry.install()
        registry.uninstall()
        self.assertIs(reactor.listenTCP, listenTCP)
        reactor.listenTCP(1, _factory())
        self.assertEqual(len(theirs), 1)

    def test_missingMethod(self) -> None:
        """
        A reactor without C{listenUDP} is hooked for what it has, and stays
        without C{listenUDP}.
        """
        reactor = _NoUDPReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        self.assertFalse(hasattr(reactor, "listenUDP"))
        self.assertFalse(hasattr(reactor, "listenUNIX"))
        self.assertEqual(reactor.listenTCP, registry._listenTCP)
        registry.uninstall()
        self.assertNotIn("listenTCP", vars(reactor))

    def test_untrackedListenUNIX(self) -> None:
        """
        C{untrackedListenUNIX} calls the reactor's own C{listenUNIX} whether
        or not the hook is installed, and the port is not tracked.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.untrackedListenUNIX("/run/a", _factory(), mode=0o600)
        registry.install()
        registry.untrackedListenUNIX("/run/b", _factory(), mode=0o600)
        self.assertEqual([c[1] for c in reactor.calls], ["/run/a", "/run/b"])
        self.assertEqual([c[4] for c in reactor.calls], [0o600, 0o600])
        self.assertEqual(registry.listening(), [])


class _Conn:
    connected = True


class OpenConnectionsTests(SynchronousTestCase):
    """
    L{ListenerRegistry.openConnections}: those held that are alive and
    connected.
    """

    def test_aliveAndConnected(self) -> None:
        """
        Not one closed, nor one collected; one with no C{connected} at all
        counts as not connected (the others are still listed).
        """
        registry = ListenerRegistry(_FakeReactor())
        kept, closed, gone = _Conn(), _Conn(), _Conn()
        closed.connected = False
        for t in (kept, closed, gone):
            registry.trackConnection(t)
        del gone, t
        gc.collect()
        self.assertEqual(list(registry.openConnections()), [kept])

        class Bare:
            pass

        bare = Bare()
        registry.trackConnection(bare)
        self.assertEqual(list(registry.openConnections()), [kept])


class OpenConnectionsBesidesTests(SynchronousTestCase):
    """
    L{ListenerRegistry.openConnectionsBesides}: the open connections but
    those leaving, without looking at any when the registry counts no
    others.
    """

    def setUp(self) -> None:
        self.registry = ListenerRegistry(_FakeReactor())
        self.leaving = [_Conn(), _Conn()]
        for t in self.leaving:
            self.registry.trackConnection(t)
        self.ids = frozenset(map(id, self.leaving))

    def test_none(self) -> None:
        """
        With nothing but the leaving ones counted, none.
        """
        self.assertEqual(self.registry.openConnectionsBesides(self.ids, 2), [])

    def test_others(self) -> None:
        """
        The other open connections, not those closed.
        """
        other, closed = _Conn(), _Conn()
        closed.connected = False
        self.registry.trackConnection(other)
        self.registry.trackConnection(closed)
        self.assertEqual(self.registry.openConnectionsBesides(self.ids, 2), [other])
        self.assertEqual(
            sorted(map(id, self.registry.openConnectionsBesides(frozenset()))),
            sorted(map(id, [*self.leaving, other])),
        )

    def test_leavingNotCounted(self) -> None:
        """
        Leaving connections the registry does not count (the outgoing half
        of a proxy: no port) do not hide one that stays: the caller says
        how many of the leaving ones are counted, or that it does not know.
        """
        untracked, staying = _Conn(), _Conn()
        self.registry.trackConnection(staying)
        leaving = self.ids | {id(untracked)}
        self.assertEqual(self.registry.openConnectionsBesides(leaving, 2), [staying])
        self.assertEqual(self.registry.openConnectionsBesides(leaving), [staying])


class ListenerRegistryKeyTests(SynchronousTestCase):
    """
    Ports are recorded under the address the service declared.
    """

    def setUp(self) -> None:
        self.reactor = _FakeReactor()
        self.registry = ListenerRegistry(self.reactor)
        self.registry.install()

    def keys(self) -> list[str]:
        return [t.key for t in self.registry.listening()]

    def test_sameAddressTwice(self) -> None:
        """
        Declaring C{tcp:0} twice gives two keys, numbered by occurrence, so
        that each maps to the incumbent's port of the same rank.
        """
        self.reactor.listenTCP(0, _factory())
        self.reactor.listenTCP(0, _factory())
        self.assertEqual(self.keys(), ["tcp:0:#0", "tcp:0:#1"])

    def test_interface(self) -> None:
        """
        The declared interface is part of the key: the same port number on
        different interfaces is a different address.
        """
        self.reactor.listenTCP(8080, _factory(), interface="127.0.0.1")
        self.reactor.listenTCP(8080, _factory(), interface="::1")
        self.reactor.listenTCP(8080, _factory())
        self.assertEqual(self.keys(), ["tcp:8080:127.0.0.1#0", "tcp:8080:::1#0", "tcp:8080:#0"])

    def test_unixPathAbsolute(self) -> None:
        """
        A relative UNIX path is keyed by its absolute path, so that the
        successor finds it from another working directory; bytes paths are
        keyed as text.
        """
        self.reactor.listenUNIX("web.sock", _factory())
        self.reactor.listenUNIX(b"/run/site/web.sock", _factory())
        self.assertEqual(
            self.keys(),
            [f"unix:{os.path.abspath('web.sock')}#0", "unix:/run/site/web.sock#0"],
        )
        # The reactor still gets what the service asked for.
        self.assertEqual(self.reactor.calls[0][1], "web.sock")

    def test_abstractUNIX(self) -> None:
        """
        An abstract-namespace UNIX address is not made into a path.
        """
        self.reactor.listenUNIX("\0abstract", _factory())
        self.assertEqual(self.keys(), ["unix:\0abstract#0"])

    def test_kinds(self) -> None:
        """
        Tracked ports say what kind they are, in creation order.
        """
        self.reactor.listenUNIX("/run/x", _factory(), mode=0o640)
        self.reactor.listenTCP(1, _factory())
        tracked = self.registry.listening()
        self.assertEqual([t.kind for t in tracked], [UNIX, TCP])
        self.assertEqual(tracked[0].mode, 0o640)
        self.assertFalse(any(t.adopted for t in tracked))

    def test_arguments(self) -> None:
        """
        The hook passes every argument through to the reactor.
        """
        f = _factory()
        self.reactor.listenTCP(80, f, 7, "10.0.0.1")
        self.reactor.listenUNIX("/run/y", f, backlog=3, mode=0o600, wantPID=1)
        self.assertEqual(
            self.reactor.calls,
            [("tcp", 80, f, 7, "10.0.0.1"), ("unix", "/run/y", f, 3, 0o600, 1)],
        )


class ListenerRegistryDetachedTests(SynchronousTestCase):
    """
    A dry run's registry (C{detached}) binds and adopts nothing: every port
    the service declares is a L{DetachedPort}, recorded under its key.
    """

    def setUp(self) -> None:
        self.reactor = _FakeReactor()
        self.registry = ListenerRegistry(self.reactor, holding=True, detached=True)
        self.registry.install()
        self.addCleanup(self.registry.uninstall)

    def test_nothingBound(self) -> None:
        """
        TCP, UNIX and UDP declarations reach no reactor method; the ports
        are detached, listening (their factories started), under the
        declared keys, and an offered port of the same key is left alone.
        """
        offered = os.open(os.devnull, os.O_RDONLY)
        self.registry.offer([{"key": "tcp:0:127.0.0.1#0", "kind": TCP, "family": 2}], [offered])
        self.addCleanup(self.registry.closeUnclaimed)
        f = _factory()
        self.reactor.listenTCP(0, f, interface="127.0.0.1")
        self.reactor.listenUNIX("/run/site/web.sock", _factory())
        protocol = DatagramProtocol()
        self.reactor.listenUDP(53, protocol)
        self.assertEqual(self.reactor.calls, [])
        tracked = self.registry.listening()
        self.assertEqual(
            [t.key for t in tracked],
            ["tcp:0:127.0.0.1#0", "unix:/run/site/web.sock#0", "udp:53:#0"],
        )
        self.assertTrue(all(isinstance(t.port, DetachedPort) for t in tracked))
        self.assertFalse(any(t.adopted for t in tracked))
        self.assertEqual(f.numPorts, 1)
        self.assertIs(protocol.transport, tracked[2].port)
        self.assertEqual(tracked[0].address(), "127.0.0.1:0")
        self.assertEqual(tracked[1].address(), "/run/site/web.sock")
        self.assertEqual(self.registry.adoptedCount(), 0)
        # Pausing and resuming touch nothing real.
        self.assertEqual(self.registry.resumeAccepting(), 3)
        self.assertEqual(self.registry.closeUnclaimed(), ["tcp:0:127.0.0.1#0"])


class ListenHookTests(SynchronousTestCase):
    """
    L{ListenerRegistry.onListen}: hooks see every stream port tracked.
    """

    def test_streamPortsOnly(self) -> None:
        """
        Each hook is called with every TCP and UNIX port, not UDP ones.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        seen: list[Any] = []
        registry.onListen(seen.append)
        tcpPort = reactor.listenTCP(0, _factory())
        unixPort = reactor.listenUNIX("/tmp/hook.sock", _factory())
        reactor.listenUDP(0, DatagramProtocol())
        self.assertEqual(seen, [tcpPort, unixPort])

    def test_failingHook(self) -> None:
        """
        A hook that raises is logged; the port is tracked all the same.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()

        def fail(port: Any) -> None:
            raise RuntimeError("hook")

        registry.onListen(fail)
        with capturedLogs() as events:
            port = reactor.listenTCP(0, _factory())
        self.assertEqual([t.port for t in registry.listening()], [port])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any(e.get("log_level") == LogLevel.critical for e in events))


class ListenerRegistryHoldingTests(_RealSocketsMixin, SynchronousTestCase):
    """
    A successor's registry holds new ports: they listen (the kernel queues
    connections) but do not accept until the switch.
    """

    def test_holdingStopsReading(self) -> None:
        """
        In holding mode, ports the service creates stop reading at once.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor, holding=True)
        registry.install()
        tcpPort = reactor.listenTCP(1, _factory())
        unixPort = reactor.listenUNIX("/run/z", _factory())
        self.assertFalse(tcpPort.reading)
        self.assertFalse(unixPort.reading)

    def test_incumbentReads(self) -> None:
        """
        Without holding, ports are left accepting.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        port = reactor.listenTCP(1, _factory())
        self.assertEqual(port.readingCalls, [])

    def test_holdingRealPorts(self) -> None:
        """
        Real held ports listen but are not registered with the reactor;
        C{resumeAccepting} registers them and ends holding, C{pauseAccepting}
        unregisters them again.
        """
        reactor = self.listeningReactor()
        registry = ListenerRegistry(reactor, holding=True)
        registry.install()
        tcpPort = reactor.listenTCP(0, _factory(), interface="127.0.0.1")
        unixPort = reactor.listenUNIX(os.path.join(self.tempdir(), "s"), _factory())
        for port in (tcpPort, unixPort):
            self.assertNotIn(port, reactor.readers)
            self.assertEqual(_accepting(port.socket), 1)

        self.assertEqual(registry.resumeAccepting(), 2)
        self.assertIn(tcpPort, reactor.readers)
        self.assertIn(unixPort, reactor.readers)
        later = reactor.listenTCP(0, _factory(), interface="127.0.0.1")
        self.assertIn(later, reactor.readers)

        self.assertEqual(registry.pauseAccepting(), 3)
        self.assertEqual(reactor.readers, set())
        for port in (tcpPort, unixPort, later):
            self.assertEqual(_accepting(port.socket), 1)


class ListenerRegistryAdoptionTests(_RealSocketsMixin, SynchronousTestCase):
    """
    A successor adopts the incumbent's sockets for the addresses both
    declare, and closes each offered descriptor exactly once.
    """

    def test_adoptTCP(self) -> None:
        """
        A declared TCP address that was offered is adopted from its
        descriptor instead of being bound; the descriptor is closed once,
        and the port is recorded as adopted.
        """
        reactor = _FakeReactor()
        adopted: list[tuple[Any, ...]] = []
        made = _FakePort(IPv4Address("TCP", "127.0.0.1", 5555), None)

        def adoptTCP(*args: Any) -> Any:
            adopted.append(args)
            return made

        closer = _Closer()
        registry = ListenerRegistry(reactor, holding=True, adoptTCP=adoptTCP, close=closer)
        registry.install()
        registry.offer(
            [{"key": "tcp:0:127.0.0.1#0", "family": socket.AF_INET, "address": "x"}],
            [42],
        )
        f = _factory()
        port = reactor.listenTCP(0, f, 9, "127.0.0.1")
        self.assertIs(port, made)
        self.assertEqual(adopted, [(reactor, 42, socket.AF_INET, f, 9)])
        self.assertEqual(closer.closed, [42])
        self.assertEqual(reactor.calls, [])
        [tracked] = registry.listening()
        self.assertTrue(tracked.adopted)
        self.assertEqual(tracked.key, "tcp:0:127.0.0.1#0")
        self.assertEqual(registry.adoptedCount(), 1)
        self.assertEqual(registry.closeUnclaimed(), [])
        self.assertEqual(closer.closed, [42])

    def test_adoptUNIX(self) -> None:
        """
        A declared UNIX path that was offered is adopted with the declared
        mode; the descriptor is closed once.
        """
        reactor = _FakeReactor()
        adopted: list[tuple[Any, ...]] = []
        made = _FakePort(UNIXAddress(b"/run/s"), None, socket.AF_UNIX)

        def adoptUNIX(*args: Any) -> Any:
            adopted.append(args)
            return made

        closer = _Closer()
        registry = ListenerRegistry(reactor, adoptUNIX=adoptUNIX, close=closer)
        registry.install()
        registry.offer([{"key": "unix:/run/s#0", "family": socket.AF_UNIX}], [7])
        f = _factory()
        self.assertIs(reactor.listenUNIX("/run/s", f, mode=0o640), made)
        self.assertEqual(adopted, [(reactor, 7, f, 50, 0o640)])
        self.assertEqual(closer.closed, [7])
        [tracked] = registry.listening()
        self.assertEqual((tracked.kind, tracked.adopted, tracked.mode), (UNIX, True, 0o640))

    def test_adoptionFails(self) -> None:
        """
        If adopting raises, the error reaches the service, the descriptor is
        still closed exactly once, and nothing is tracked.
        """
        reactor = _FakeReactor()

        def adoptTCP(*args: Any) -> Any:
            raise error.CannotListenError("", 0, OSError("nope"))

        closer = _Closer()
        registry = ListenerRegistry(reactor, adoptTCP=adoptTCP, close=closer)
        registry.install()
        registry.offer([{"key": "tcp:0:#0", "family": socket.AF_INET}], [11])
        self.assertRaises(error.CannotListenError, reactor.listenTCP, 0, _factory())
        self.assertEqual(closer.closed, [11])
        self.assertEqual(registry.listening(), [])
        self.assertEqual(registry.closeUnclaimed(), [])
        self.assertEqual(closer.closed, [11])

    def test_onlyMatchingRank(self) -> None:
        """
        Only the declaration of the same rank adopts: a second C{tcp:0} when
        the incumbent had one is bound fresh.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(
            reactor, adoptTCP=lambda *a: _FakePort(None, None), close=_Closer()
        )
        registry.install()
        registry.offer([{"key": "tcp:0:#0", "family": socket.AF_INET}], [3])
        reactor.listenTCP(0, _factory())
        reactor.listenTCP(0, _factory())
        self.assertEqual([t.adopted for t in registry.listening()], [True, False])
        self.assertEqual(len(reactor.calls), 1)

    def test_closeUnclaimed(self) -> None:
        """
        Offered descriptors the service never declares are closed by
        C{closeUnclaimed}, once each, and their keys returned sorted.
        """
        reactor = _FakeReactor()
        closer = _Closer()
        registry = ListenerRegistry(
            reactor, adoptTCP=lambda *a: _FakePort(None, None), close=closer
        )
        registry.install()
        registry.offer(
            [
                {"key": "unix:/run/old#0", "family": socket.AF_UNIX},
                {"key": "tcp:8080:#0", "family": socket.AF_INET},
                {"key": "tcp:8081:#0", "family": socket.AF_INET},
            ],
            [20, 21, 22],
        )
        reactor.listenTCP(8080, _factory())
        reactor.listenTCP(9090, _factory())
        self.assertEqual(closer.closed, [21])
        self.assertEqual(registry.closeUnclaimed(), ["tcp:8081:#0", "unix:/run/old#0"])
        self.assertEqual(sorted(closer.closed), [20, 21, 22])
        self.assertEqual(registry.closeUnclaimed(), [])
        self.assertEqual(sorted(closer.closed), [20, 21, 22])

    def test_offerMismatch(self) -> None:
        """
        Records and descriptors of different lengths are refused with
        L{ValueError}; every descriptor is closed and nothing is offered.
        """
        closer = _Closer()
        registry = ListenerRegistry(_FakeReactor(), close=closer)
        e = self.assertRaises(
            ValueError,
            registry.offer,
            [{"key": "tcp:0:#0", "family": socket.AF_INET}],
            [5, 6],
        )
        self.assertIn("1 port records but 2 descriptors", str(e))
        self.assertEqual(closer.closed, [5, 6])
        self.assertEqual(registry.closeUnclaimed(), [])
        self.assertEqual(closer.closed, [5, 6])

    def test_adoptTCPReal(self) -> None:
        """
        L{_adoptTCP} makes a port on its own duplicate of the descriptor,
        listening on the same socket but not accepting yet; the caller's
        descriptor stays open.
        """
        reactor = self.listeningReactor()
        original = reactor.listenTCP(0, _factory(), interface="127.0.0.1")
        fd = os.dup(original.fileno())
        self.addCleanup(os.close, fd)
        port = _adoptTCP(reactor, fd, socket.AF_INET, _factory(), 17)
        reactor.ports.append(port)
        self.assertNotIn(port, reactor.readers)
        self.assertTrue(port.connected)
        self.assertEqual(port.backlog, 17)
        self.assertNotEqual(port.fileno(), fd)
        self.assertTrue(_isOpen(fd))
        self.assertEqual(port.getHost(), original.getHost())
        self.assertEqual(os.fstat(port.fileno()).st_ino, os.fstat(fd).st_ino)

    def test_adoptUNIXReal(self) -> None:
        """
        L{_adoptUNIX} makes a non-accepting port on the same socket, keeping
        the declared mode of its path.
        """
        reactor = self.listeningReactor()
        path = os.path.join(self.tempdir(), "s")
        original = reactor.listenUNIX(path, _factory(), mode=0o666)
        fd = os.dup(original.fileno())
        self.addCleanup(os.close, fd)
        port = _adoptUNIX(reactor, fd, _factory(), 50, 0o640)
        reactor.ports.append(port)
        self.assertNotIn(port, reactor.readers)
        self.assertEqual(port.mode, 0o640)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)
        self.assertEqual(os.fstat(port.fileno()).st_ino, os.fstat(fd).st_ino)
        self.assertTrue(_isOpen(fd))

    def test_handoffEndToEnd(self) -> None:
        """
        An incumbent's real TCP and UNIX ports, handed over as descriptors,
        are adopted by a holding successor on the same sockets; once the
        incumbent releases its copies the successor's still listen, and they
        accept after C{resumeAccepting}.
        """
        directory = self.tempdir()
        path = os.path.join(directory, "web.sock")
        old = self.listeningReactor()
        incumbent = ListenerRegistry(old)
        incumbent.install()
        oldTCP = old.listenTCP(0, _factory(), interface="127.0.0.1")
        oldUNIX = old.listenUNIX(path, _factory(), mode=0o660)
        records, fds = incumbent.handoffRecords()
        self.assertEqual(fds, [oldTCP.fileno(), oldUNIX.fileno()])
        self.assertEqual(
            [r["address"] for r in records],
            [f"127.0.0.1:{oldTCP.getHost().port}", path],
        )

        # What SCM_RIGHTS does: the successor gets its own descriptors.
        passed = [os.dup(fd) for fd in fds]
        new = self.listeningReactor()
        closer = _Closer(real=True)
        successor = ListenerRegistry(new, holding=True, close=closer)
        successor.install()
        successor.offer(records, passed)
        newTCP = new.listenTCP(0, _factory(), interface="127.0.0.1")
        newUNIX = new.listenUNIX(path, _factory(), mode=0o660)
        new.ports += [newTCP, newUNIX]

        self.assertEqual(successor.adoptedCount(), 2)
        self.assertEqual(successor.closeUnclaimed(), [])
        self.assertEqual(closer.closed, passed)
        self.assertEqual(newTCP.getHost(), oldTCP.getHost())
        self.assertEqual(new.readers, set())

        self.assertEqual(sorted(incumbent.releaseAll()), ["tcp:0:127.0.0.1#0", f"unix:{path}#0"])
        self.assertTrue(os.path.exists(path))
        self.assertEqual(_accepting(newTCP.socket), 1)
        self.assertEqual(_accepting(newUNIX.socket), 1)
        self.assertEqual(successor.resumeAccepting(), 2)
        self.assertEqual(new.readers, {newTCP, newUNIX})


class _Datagrams(DatagramProtocol):
    """
    Records the datagrams it receives and answers each with C{re:} and the
    datagram.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.starts = 0
        self.stops = 0

    def startProtocol(self) -> None:
        self.starts += 1

    def stopProtocol(self) -> None:
        self.stops += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        assert self.transport is not None
        self.transport.write(b"re:" + datagram, addr)


def _readable(s: Any, timeout: float = 5.0) -> bool:
    """
    Whether C{s} has something to read within C{timeout} seconds.
    """
    return bool(select.select([s], [], [], timeout)[0])


class ListenerRegistryUDPTests(SynchronousTestCase):
    """
    UDP ports are tracked and handed over like stream ports: recorded with
    their family and descriptor, adopted for the successor's protocol
    without reading, paused and resumed by reading, released by closing
    this process's copy.
    """

    def test_incumbentTracks(self) -> None:
        """
        An incumbent's UDP port is created as the service asked, tracked
        under its declared key, and can be handed over: no warning.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        protocol = DatagramProtocol()
        with capturedLogs() as events:
            port = reactor.listenUDP(53, protocol, "127.0.0.1", 512)
        self.assertEqual(reactor.calls, [("udp", 53, protocol, "127.0.0.1", 512)])
        [tracked] = registry.listening()
        self.assertIs(tracked.port, port)
        self.assertEqual((tracked.kind, tracked.key), (UDP, "udp:53:127.0.0.1#0"))
        self.assertEqual(registry.unsupported(), [])
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        self.assertIsNone(port.transport)
        self.assertEqual(port.readingCalls, [])

    def test_handoffRecords(self) -> None:
        """
        C{handoffRecords} gives a UDP port's record, with its address
        family, and its descriptor, in creation order with the stream
        ports.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        tcpPort = reactor.listenTCP(53, _factory(), interface="127.0.0.1")
        udpPort = reactor.listenUDP(53, DatagramProtocol(), "127.0.0.1")
        records, fds = registry.handoffRecords()
        self.assertEqual(fds, [tcpPort.fileno(), udpPort.fileno()])
        self.assertEqual(
            records[1],
            {
                "key": "udp:53:127.0.0.1#0",
                "kind": UDP,
                "address": "127.0.0.1:53",
                "adopted": False,
                "family": socket.AF_INET,
            },
        )

    def test_connectedRefused(self) -> None:
        """
        A UDP port whose protocol connected it to one peer cannot be handed
        over (the successor's port object would not know it is connected):
        C{handoffRecords} refuses with L{UnsupportedPort} naming it, and
        hands over again once it is closed.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        reactor.listenTCP(80, _factory())
        connected = reactor.listenUDP(5353, DatagramProtocol())
        connected.peer = ("127.0.0.1", 53)
        self.assertEqual([t.port for t in registry.unsupported()], [connected])
        e = self.assertRaises(UnsupportedPort, registry.handoffRecords)
        self.assertIn("udp:5353:#0", str(e))
        self.assertIn("connected to one peer", str(e))
        connected.connected = False
        records, _ = registry.handoffRecords()
        self.assertEqual([r["key"] for r in records], ["tcp:80:#0"])

    def test_adopt(self) -> None:
        """
        A declared UDP address that was offered is adopted from its
        descriptor for the successor's own protocol and packet size,
        instead of being bound; the descriptor is closed once, and the port
        is recorded as adopted.
        """
        reactor = _FakeReactor()
        adopted: list[tuple[Any, ...]] = []
        made = _FakeUDPPort(IPv4Address("UDP", "127.0.0.1", 5353), None)

        def adoptUDP(*args: Any) -> Any:
            adopted.append(args)
            return made

        closer = _Closer()
        registry = ListenerRegistry(reactor, holding=True, adoptUDP=adoptUDP, close=closer)
        registry.install()
        registry.offer(
            [{"key": "udp:0:127.0.0.1#0", "family": socket.AF_INET, "address": "x"}], [42]
        )
        protocol = DatagramProtocol()
        self.assertIs(reactor.listenUDP(0, protocol, "127.0.0.1", 1024), made)
        self.assertEqual(adopted, [(reactor, 42, socket.AF_INET, protocol, 1024)])
        self.assertEqual(closer.closed, [42])
        self.assertEqual(reactor.calls, [])
        [tracked] = registry.listening()
        self.assertEqual((tracked.kind, tracked.key, tracked.adopted), (UDP, "udp:0:127.0.0.1#0", True))
        self.assertEqual(registry.adoptedCount(), 1)
        self.assertEqual(registry.closeUnclaimed(), [])
        self.assertEqual(closer.closed, [42])

    def test_adoptionFails(self) -> None:
        """
        If adopting a UDP port raises, the error reaches the service, the
        descriptor is still closed exactly once, and nothing is tracked.
        """

        def adoptUDP(*args: Any) -> Any:
            raise error.UnsupportedAddressFamily(socket.AF_UNIX)

        closer = _Closer()
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor, adoptUDP=adoptUDP, close=closer)
        registry.install()
        registry.offer([{"key": "udp:53:#0", "family": socket.AF_UNIX}], [9])
        self.assertRaises(
            error.UnsupportedAddressFamily, reactor.listenUDP, 53, DatagramProtocol()
        )
        self.assertEqual(closer.closed, [9])
        self.assertEqual(registry.listening(), [])

    def test_holdingNewPort(self) -> None:
        """
        A UDP port only the successor declares is bound, but does not read
        until the switch.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor, holding=True)
        registry.install()
        port = reactor.listenUDP(53, DatagramProtocol())
        self.assertEqual(port.readingCalls, [False])
        self.assertEqual(registry.resumeAccepting(), 1)
        self.assertEqual(port.readingCalls, [False, True])

    def test_pauseResumeRelease(self) -> None:
        """
        Pausing stops reading on UDP ports too, resuming starts again, and
        releasing closes this process's copy of the socket, never shutting
        it down; UDP ports are not wrapped for connection counting.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        udpPort = reactor.listenUDP(53, DatagramProtocol())
        reactor.listenTCP(80, _factory())
        self.assertEqual(registry.pauseAccepting(), 2)
        self.assertEqual(udpPort.readingCalls, [False])
        self.assertEqual(registry.resumeAccepting(), 2)
        self.assertEqual(udpPort.readingCalls, [False, True])
        self.assertIsNone(udpPort.transport)
        self.assertEqual(registry.releaseAll(), ["udp:53:#0", "tcp:80:#0"])
        self.assertEqual(udpPort.socket.calls, ["close"])
        self.assertFalse(udpPort.connected)


class UDPHandoffTests(_RealSocketsMixin, SynchronousTestCase):
    """
    Real UDP sockets handed from one registry to another: a datagram is
    read by exactly one side, whichever reads next.
    """

    def setUp(self) -> None:
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.client.close)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(5.0)

    def send(self, port: Any, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.client.sendto(datagram, ("127.0.0.1", port.getHost().port))

    def answers(self, count: int) -> list[bytes]:
        return [self.client.recvfrom(1024)[0] for _ in range(count)]

    def serve(self, reactor: _ListeningReactor, port: Any, protocol: _Datagrams, count: int) -> None:
        """
        Run C{port} as a reactor would, until C{protocol} has C{count}
        datagrams: only while the port is among the reactor's readers.
        """
        for _ in range(count):
            if len(protocol.received) >= count:
                break
            self.assertIn(port, reactor.readers)
            self.assertTrue(_readable(port.socket), f"only {protocol.received}")
            port.doRead()
        self.assertEqual(len(protocol.received), count)

    def handedOver(
        self,
    ) -> tuple[_ListeningReactor, ListenerRegistry, Any, _Datagrams, _ListeningReactor, ListenerRegistry, Any, _Datagrams]:
        """
        An incumbent serving a real UDP port, and a holding successor that
        adopted it for its own protocol.
        """
        old = self.listeningReactor()
        incumbent = ListenerRegistry(old)
        incumbent.install()
        oldProtocol = _Datagrams()
        oldPort = old.listenUDP(0, oldProtocol, "127.0.0.1")
        records, fds = incumbent.handoffRecords()
        self.assertEqual(fds, [oldPort.fileno()])
        self.assertEqual(records[0]["family"], socket.AF_INET)

        new = self.listeningReactor()
        passed = [os.dup(fd) for fd in fds]  # what SCM_RIGHTS does
        closer = _Closer(real=True)
        successor = ListenerRegistry(new, holding=True, close=closer)
        successor.install()
        successor.offer(records, passed)
        newProtocol = _Datagrams()
        newPort = new.listenUDP(0, newProtocol, "127.0.0.1")
        self.assertEqual(closer.closed, passed)
        self.assertEqual(successor.adoptedCount(), 1)
        return old, incumbent, oldPort, oldProtocol, new, successor, newPort, newProtocol

    def test_adoptUDPReal(self) -> None:
        """
        L{_adoptUDP} makes a port on its own duplicate of the descriptor,
        bound to the same address, connected to the given protocol but not
        reading; the caller's descriptor stays open.
        """
        reactor = self.listeningReactor()
        original = reactor.listenUDP(0, DatagramProtocol(), "127.0.0.1")
        fd = os.dup(original.fileno())
        self.addCleanup(os.close, fd)
        protocol = _Datagrams()
        port = _adoptUDP(reactor, fd, socket.AF_INET, protocol, 512)
        self.assertNotIn(port, reactor.readers)
        self.assertIs(protocol.transport, port)
        self.assertEqual(protocol.starts, 1)
        self.assertEqual(port.maxPacketSize, 512)
        self.assertNotEqual(port.fileno(), fd)
        self.assertTrue(_isOpen(fd))
        self.assertEqual(port.getHost(), original.getHost())
        self.assertEqual(os.fstat(port.fileno()).st_ino, os.fstat(fd).st_ino)

    def test_connectedRefusedReal(self) -> None:
        """
        A real UDP port its protocol connected to one peer is refused by
        C{handoffRecords}; an unconnected one is handed over.
        """
        reactor = self.listeningReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        reactor.listenUDP(0, DatagramProtocol(), "127.0.0.1")
        connected = reactor.listenUDP(0, DatagramProtocol(), "127.0.0.1")
        self.assertEqual(len(registry.handoffRecords()[1]), 2)
        connected.connect("127.0.0.1", self.client.getsockname()[1])
        e = self.assertRaises(UnsupportedPort, registry.handoffRecords)
        self.assertIn("udp:0:127.0.0.1#1", str(e))

    def test_switch(self) -> None:
        """
        Through a handoff, every datagram is read once, by the side reading
        at the time: the incumbent until it pauses, the successor once it
        resumes (datagrams sent in between wait in the socket), and the
        successor alone after the incumbent released its copy, which does
        not stop the incumbent's protocol, and which a later
        C{stopListening} (twistd stopping the old service) leaves alone.
        """
        old, incumbent, oldPort, oldProtocol, new, successor, newPort, newProtocol = (
            self.handedOver()
        )
        self.assertEqual(newPort.getHost(), oldPort.getHost())
        self.assertEqual(new.readers, set())
        self.assertEqual(newProtocol.starts, 1)

        self.send(oldPort, b"1")
        self.serve(old, oldPort, oldProtocol, 1)
        self.assertEqual(self.answers(1), [b"re:1"])

        self.assertEqual(incumbent.pauseAccepting(), 1)
        self.assertEqual(old.readers, set())
        self.send(oldPort, b"2", b"3")
        self.assertTrue(_readable(newPort.socket))
        self.assertEqual(successor.resumeAccepting(), 1)
        self.serve(new, newPort, newProtocol, 2)
        self.assertEqual(newProtocol.received, [b"2", b"3"])
        self.assertEqual(self.answers(2), [b"re:2", b"re:3"])

        address = newPort.getHost()
        self.assertEqual(incumbent.releaseAll(), ["udp:0:127.0.0.1#0"])
        self.assertIsNone(oldPort.stopListening())
        old.advance(0)
        self.assertEqual(oldProtocol.stops, 0)
        self.assertIs(oldProtocol.transport, oldPort)
        self.client.sendto(b"4", (address.host, address.port))
        self.serve(new, newPort, newProtocol, 3)
        self.assertEqual(self.answers(1), [b"re:4"])
        self.assertEqual(oldProtocol.received, [b"1"])

    def test_rollback(self) -> None:
        """
        If the takeover is abandoned after the switch, the successor
        releases its copy and the incumbent reads again, including what
        waited in between.
        """
        old, incumbent, oldPort, oldProtocol, new, successor, newPort, newProtocol = (
            self.handedOver()
        )
        incumbent.pauseAccepting()
        successor.resumeAccepting()
        self.send(oldPort, b"a")
        self.assertTrue(_readable(oldPort.socket))
        self.assertEqual(successor.releaseAll(), ["udp:0:127.0.0.1#0"])
        self.assertEqual(newProtocol.stops, 0)
        self.assertEqual(incumbent.resumeAccepting(), 1)
        self.send(oldPort, b"b")
        self.serve(old, oldPort, oldProtocol, 2)
        self.assertEqual(oldProtocol.received, [b"a", b"b"])
        self.assertEqual(self.answers(2), [b"re:a", b"re:b"])
        self.assertEqual(newProtocol.received, [])


class ListenerRegistryHandoffTests(SynchronousTestCase):
    """
    What an incumbent tells its successor about its ports, and how it
    pauses, resumes and lets go of them.
    """

    def setUp(self) -> None:
        self.reactor = _FakeReactor()
        self.registry = ListenerRegistry(self.reactor)
        self.registry.install()

    def test_records(self) -> None:
        """
        C{handoffRecords} gives one plain record and the port's descriptor
        per open stream port, in creation order.
        """
        a = self.reactor.listenTCP(8080, _factory(), interface="127.0.0.1")
        b = self.reactor.listenTCP(0, _factory(), interface="::1")
        c = self.reactor.listenUNIX("/run/w", _factory())
        records, fds = self.registry.handoffRecords()
        self.assertEqual(fds, [a.fileno(), b.fileno(), c.fileno()])
        self.assertEqual(
            records,
            [
                {
                    "key": "tcp:8080:127.0.0.1#0",
                    "kind": TCP,
                    "address": "127.0.0.1:8080",
                    "adopted": False,
                    "family": socket.AF_INET,
                },
                {
                    "key": "tcp:0:::1#0",
                    "kind": TCP,
                    "address": "[::1]:4321",
                    "adopted": False,
                    "family": socket.AF_INET6,
                },
                {
                    "key": "unix:/run/w#0",
                    "kind": UNIX,
                    "address": "/run/w",
                    "adopted": False,
                    "family": socket.AF_UNIX,
                },
            ],
        )

    def test_releasedNotHandedOver(self) -> None:
        """
        Released ports are no longer listening and are not handed over; their
        description has no address.
        """
        port = self.reactor.listenTCP(80, _factory())
        [tracked] = self.registry.listening()
        releasePort(port)
        self.assertEqual(self.registry.listening(), [])
        self.assertEqual(self.registry.handoffRecords(), ([], []))
        self.assertEqual(
            tracked.describe(),
            {"key": "tcp:80:#0", "kind": TCP, "address": None, "adopted": False},
        )

    def test_pauseResume(self) -> None:
        """
        C{pauseAccepting} stops reading on every open stream port and
        C{resumeAccepting} starts again; both return how many.
        """
        a = self.reactor.listenTCP(1, _factory())
        b = self.reactor.listenUNIX("/run/p", _factory())
        c = self.reactor.listenTCP(2, _factory())
        releasePort(c)
        self.assertEqual(self.registry.pauseAccepting(), 2)
        self.assertEqual((a.reading, b.reading), (False, False))
        self.assertEqual(self.registry.resumeAccepting(), 2)
        self.assertEqual((a.reading, b.reading), (True, True))
        self.assertEqual(c.readingCalls, [False])

    def test_releaseAll(self) -> None:
        """
        C{releaseAll} closes this process's copy of every stream port
        without C{shutdown()}, and returns their keys; a second call has
        nothing left to release.
        """
        a = self.reactor.listenTCP(1, _factory())
        b = self.reactor.listenUNIX("/run/r", _factory())
        self.assertEqual(self.registry.releaseAll(), ["tcp:1:#0", "unix:/run/r#0"])
        for port in (a, b):
            self.assertEqual(port.socket.calls, ["close"])
            self.assertFalse(port.connected)
        self.assertEqual(self.registry.listening(), [])
        self.assertEqual(self.registry.releaseAll(), [])

    def test_releaseSomeKinds(self) -> None:
        """
        C{releaseAll} can be limited to some kinds of port.
        """
        self.reactor.listenTCP(1, _factory())
        b = self.reactor.listenUNIX("/run/k", _factory())
        self.assertEqual(self.registry.releaseAll(kinds=(TCP,)), ["tcp:1:#0"])
        self.assertTrue(b.connected)

class TrackedPortTests(SynchronousTestCase):
    """
    L{TrackedPort} describes a port for humans and for the handoff.
    """

    def test_addresses(self) -> None:
        """
        Addresses are C{host:port}, C{[host]:port} for IPv6, or the path.
        """
        cases = [
            (TCP, IPv4Address("TCP", "127.0.0.1", 8080), "127.0.0.1:8080"),
            (TCP, IPv6Address("TCP", "::1", 80), "[::1]:80"),
            (UNIX, UNIXAddress(b"/run/\xc3\xa9.sock"), "/run/\u00e9.sock"),
            (UNIX, UNIXAddress("/run/text.sock"), "/run/text.sock"),
        ]
        for kind, address, expected in cases:
            tracked = TrackedPort("k", kind, _FakePort(address, None))
            self.assertEqual(tracked.address(), expected)

    def test_listening(self) -> None:
        """
        A tracked port is listening while its port is connected.
        """
        port = _FakePort(IPv4Address("TCP", "127.0.0.1", 1), None)
        tracked = TrackedPort("k", TCP, port)
        self.assertTrue(tracked.listening)
        port.connected = False
        self.assertFalse(tracked.listening)
        self.assertFalse(TrackedPort("k", TCP, object()).listening)

    def test_describeUDP(self) -> None:
        """
        A UDP port's description has its address family, for the
        successor's C{adoptDatagramPort}.
        """
        port = _FakeUDPPort(IPv4Address("UDP", "::", 53), None, socket.AF_INET6)
        record = TrackedPort("udp:53:::#0", UDP, port).describe()
        self.assertEqual(record["family"], socket.AF_INET6)
        self.assertEqual(record["address"], "[::]:53")


class ReleasePortTests(_RealSocketsMixin, SynchronousTestCase):
    """
    L{releasePort} lets go of this process's copy of a listening socket
    without disturbing any other process holding the same socket.
    """

    def test_neverShutdown(self) -> None:
        """
        A real TCP port that is released stops being read and closes its
        socket, while a duplicate of the socket (what the successor holds)
        still listens; a later C{stopListening} does nothing to it, and the
        factory is not stopped.
        """
        reactor = self.listeningReactor()
        factory = _factory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        theirs = self.dup(port.socket)
        releasePort(port)
        self.assertNotIn(port, reactor.readers)
        self.assertFalse(port.connected)
        self.assertEqual(port.fileno(), -1)
        self.assertEqual(port.socket.fileno(), -1)
        self.assertEqual(_accepting(theirs), 1)
        self.assertEqual(factory.numPorts, 1)

        port.stopListening()
        reactor.advance(0)
        self.assertEqual(_accepting(theirs), 1)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopListeningWouldCut(self) -> None:
        """
        The hazard L{releasePort} avoids: C{stopListening} on a port whose
        socket another process shares stops that process's copy listening
        too.
        """
        reactor = self.listeningReactor()
        port = reactor.listenTCP(0, _factory(), interface="127.0.0.1")
        theirs = self.dup(port.socket)
        port.stopListening()
        reactor.advance(0)
        self.assertEqual(_accepting(theirs), 0)

    def test_unixPathKept(self) -> None:
        """
        Releasing a real UNIX port leaves its path in place (the successor
        answers there now) and its socket listening in the duplicate.
        """
        reactor = self.listeningReactor()
        path = os.path.join(self.tempdir(), "s")
        port = reactor.listenUNIX(path, _factory())
        theirs = self.dup(port.socket)
        releasePort(port)
        port.stopListening()
        reactor.advance(0)
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        self.assertEqual(_accepting(theirs), 1)

    def test_fakePort(self) -> None:
        """
        The socket is closed, never shut down, and releasing twice does
        nothing more.
        """
        port = _FakePort(IPv4Address("TCP", "127.0.0.1", 1), None)
        releasePort(port)
        releasePort(port)
        self.assertEqual(port.socket.calls, ["close"])
        self.assertEqual(port.readingCalls, [False])
        self.assertEqual(port.fileno(), -1)
        self.assertFalse(port.disconnecting)

    def test_closeError(self) -> None:
        """
        An error closing the socket is ignored: the port is released anyway.
        """
        port = _FakePort(IPv4Address("TCP", "127.0.0.1", 1), None)

        def close() -> None:
            raise OSError("already closed")

        port.socket.close = close  # type: ignore[method-assign]
        releasePort(port)
        self.assertFalse(port.connected)

    def test_notListening(self) -> None:
        """
        A port that never listened is left alone.
        """
        port = _FakePort(IPv4Address("TCP", "127.0.0.1", 1), None)
        port.connected = False
        releasePort(port)
        releasePort(object())
        self.assertEqual(port.socket.calls, [])
        self.assertEqual(port.readingCalls, [])


class ConnectionCountingTests(_RealSocketsMixin, SynchronousTestCase):
    """
    The registry counts the connections its ports accept.
    """

    def test_countingTransport(self) -> None:
        """
        L{_CountingTransport} builds the transport it stands for with the
        same arguments, and remembers it.
        """
        import weakref

        seen: weakref.WeakSet[Any] = weakref.WeakSet()
        counting = _CountingTransport(_FakeTransport, seen)
        transport = counting(1, 2, key=3)
        self.assertIsInstance(transport, _FakeTransport)
        self.assertEqual((transport.args, transport.kwargs), ((1, 2), {"key": 3}))
        self.assertEqual(list(seen), [transport])

    def test_openConnections(self) -> None:
        """
        Connections built through a tracked port count while connected and
        are forgotten when they are garbage.
        """
        reactor = _FakeReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        a = reactor.listenTCP(1, _factory())
        b = reactor.listenUNIX("/run/c", _factory())
        self.assertIsInstance(a.transport, _CountingTransport)
        one, two, three = a.transport(), a.transport(), b.transport()
        self.assertEqual(registry.connectionCount(), 3)
        two.connected = False
        self.assertEqual(set(registry.openConnections()), {one, three})
        del one
        gc.collect()
        self.assertEqual(registry.connectionCount(), 1)

    def test_noTransport(self) -> None:
        """
        A port without a transport class is tracked without counting.
        """

        class Bare(_FakePort):
            transport = None

        reactor = _FakeReactor()
        reactor.listenTCP = lambda *a, **k: Bare(None, None)  # type: ignore[method-assign]
        registry = ListenerRegistry(reactor)
        registry.install()
        port = reactor.listenTCP(1, _factory())
        self.assertIsNone(port.transport)
        self.assertEqual(registry.connectionCount(), 0)

    def test_realUNIXConnection(self) -> None:
        """
        A connection accepted by a real UNIX port counts until it is lost.
        """
        reactor = self.listeningReactor()
        registry = ListenerRegistry(reactor)
        registry.install()
        path = os.path.join(self.tempdir(), "s")
        port = reactor.listenUNIX(path, _factory())
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(path)
        port.doRead()
        [server] = list(registry.openConnections())
        self.assertIsInstance(server, unix.Server)
        self.assertEqual(registry.connectionCount(), 1)
        server.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(registry.connectionCount(), 0)


class _Recording(Protocol):
    """
    Records what the transport tells it.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.append(reason)


class ReleaseConnectionTests(_RealSocketsMixin, SynchronousTestCase):
    """
    L{releaseConnection} lets go of an established connection that another
    process now serves, without the client or the application noticing.
    """

    def accepted(self) -> tuple[Any, socket.socket, _ListeningReactor]:
        """
        A real connection accepted by a real UNIX port: the server transport
        and the client's socket.
        """
        reactor = self.listeningReactor()
        path = os.path.join(self.tempdir(), "s")
        port = reactor.listenUNIX(path, ServerFactory.forProtocol(_Recording))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(path)
        port.doRead()
        [transport] = [r for r in reactor.readers if r is not port]
        self.addCleanup(lambda: getattr(transport, "socket", client).close())
        return transport, client, reactor

    def test_clientUnaffected(self) -> None:
        """
        After release, this process no longer reads, writes or holds the
        connection, the application is not told, and the other process's
        copy still talks to the client both ways.
        """
        transport, client, reactor = self.accepted()
        theirs = self.dup(transport.socket)
        transport.write(b"unsent")
        self.assertIn(transport, reactor.writers)
        releaseConnection(transport)

        self.assertFalse(transport.connected)
        self.assertEqual(transport.fileno(), -1)
        self.assertNotIn(transport, reactor.readers)
        self.assertNotIn(transport, reactor.writers)
        self.assertEqual(transport.protocol.lost, [])
        # Unsent bytes were dropped here (they travel with the connection).
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataBuffer, [])

        client.sendall(b"to the successor")
        self.assertEqual(theirs.recv(100), b"to the successor")
        theirs.sendall(b"from the successor")
        self.assertEqual(client.recv(100), b"from the successor")

    def test_twice(self) -> None:
        """
        Releasing a released (or never connected) transport does nothing.
        """
        transport, _, _ = self.accepted()
        releaseConnection(transport)
        releaseConnection(transport)
        releaseConnection(object())
        self.assertFalse(transport.connected)


class ListenerRegistryLookupTests(SynchronousTestCase):
    """
    Finding tracked ports by object and by key, and counting connections
    restored from elsewhere.
    """

    def setUp(self) -> None:
        self.reactor = _FakeReactor()
        self.registry = ListenerRegistry(self.reactor)
        self.registry.install()

    def test_keyOf(self) -> None:
        """
        C{keyOf} gives the declared key of a tracked port, C{None} for
        anything else.
        """
        a = self.reactor.listenTCP(0, _factory())
        b = self.reactor.listenTCP(0, _factory())
        self.assertEqual(self.registry.keyOf(a), "tcp:0:#0")
        self.assertEqual(self.registry.keyOf(b), "tcp:0:#1")
        self.assertIsNone(self.registry.keyOf(object()))

    def test_portForKey(self) -> None:
        """
        C{portForKey} gives the open port declared as a key, C{None} once it
        is released or for an unknown key.
        """
        a = self.reactor.listenUNIX("/run/k", _factory())
        self.assertIs(self.registry.portForKey("unix:/run/k#0"), a)
        self.assertIsNone(self.registry.portForKey("unix:/run/other#0"))
        releasePort(a)
        self.assertIsNone(self.registry.portForKey("unix:/run/k#0"))

    def test_trackConnection(self) -> None:
        """
        A connection tracked by hand counts like an accepted one.
        """
        transport = _FakeTransport()
        self.registry.trackConnection(transport)
        self.assertEqual(list(self.registry.openConnections()), [transport])
        transport.connected = False
        self.assertEqual(self.registry.connectionCount(), 0)


class ArrivalsTests(SynchronousTestCase):
    """
    L{ListenerRegistry.noteArrivals}: a note of the connections added from
    then on, for as long as its taker keeps it.
    """

    def test_notesWhatIsAddedSince(self) -> None:
        """
        A note returns the connections added since it was made, then
        those added since its last C{take}; connections added before it
        are not in it.
        """
        registry = ListenerRegistry(_FakeReactor())
        before, first, second = FakeConnection(), FakeConnection(), FakeConnection()
        registry.trackConnection(before)
        note = registry.noteArrivals()
        registry.trackConnection(first)
        self.assertEqual(note.take(), [first])
        self.assertEqual(note.take(), [])
        registry.trackConnection(second)
        self.assertEqual(note.take(), [second])

    def test_droppedNoteStops(self) -> None:
        """
        The registry holds its notes weakly: one nobody keeps is no longer
        added to (it does not hold on to every later connection).
        """
        registry = ListenerRegistry(_FakeReactor())
        note = registry.noteArrivals()
        ref = weakref.ref(note)
        del note
        gc.collect()
        self.assertIsNone(ref())
        registry.trackConnection(FakeConnection())
        self.assertEqual(len(registry._connections.notes), 0)
