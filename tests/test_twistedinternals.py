# -*- test-case-name: tests.test_twistedinternals -*-
"""
Tests for L{migrator._twistedinternals}: that it (with its sibling for TLS,
L{migrator._tlsinternals}) is the only module of C{migrator} touching
Twisted's (and pyOpenSSL's) private API, and the behaviour of what the
other test modules (C{test_ports}, C{test_connections}, C{test_webadapters},
C{test_manholeadapters}) do not already pin.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web import resource, server

import migrator
from migrator._reactorinternals import (
    abandonLoopingCall,
    hookReactorMethod,
    noteReads,
    stopReadingAll,
    unhookReactorMethod,
)
from migrator._twistedinternals import (
    adoptUNIX,
    attachProtocol,
    genericHTTPChannelProtocol,
    proxyState,
    releasePort,
    releaseUNIXLock,
    restoreProxy,
    serverTransport,
    takeUNIXLock,
)

PACKAGE = os.path.dirname(os.path.abspath(migrator.__file__))

#: The private names of Twisted objects that migrator uses, all in
#: L{migrator._twistedinternals}.  A new use goes there, and its name here.
PRIVATE_NAMES = frozenset(
    {
        # ports
        "_shouldShutdown",
        "_fromListeningDescriptor",
        "_bindPath",
        "_realPortNumber",
        # connections
        "_tempDataBuffer",
        "_tempDataLen",
        "_writeDisconnected",
        "_aborting",
        "_getLogPrefix",
        # LoopingCall
        "_deferred",
        "_runAtStart",
        # twisted.web
        "_TimeoutMixin__timeoutCall",
        "_abortingCall",
        "_handlingRequest",
        "_buffer",
        "_transferDecoder",
        "_HTTPChannel__first_line",
        "_HTTPChannel__header",
        "_dataBuffer",
        "_requestProducer",
        "_waitingForTransport",
        "_networkProducer",
        "_NoPushProducer",
        "_GenericHTTPChannelProtocol",
        "_negotiatedProtocol",
        "_channel",
        "_factory",
        "_site",
        "_callLater",
        "_timeOut",
        "_requestFactory",
        # twisted.conch
        "_cursorReports",
        "_savedCursorPos",
        "_pendingDeferreds",
        # the reactors' sets of readers and writers (in _reactorinternals)
        "_reads",
        "_writes",
        "_selectables",
        "_doReadOrWrite",
        "_POLL_IN",
        "_poller",
        # twisted.protocols.tls and pyOpenSSL (in _tlsinternals)
        "_creatorCallable",
        "_tlsConnection",
        "_handshakeDone",
        "_lostTLSConnection",
        "_aborted",
        "_appSendBuffer",
        "_producer",
        "_aggregator",
        "_ProducerMembrane",
        "_producerPaused",
        "_producer_helpers",
        "_PullToPush",
        "_used",
        "_keylog_callback",
    }
)

SEAM = os.path.join(PACKAGE, "_twistedinternals.py")
#: The seam's sibling for TLS (the seam would pass 600 lines with it).
TLS_SEAM = os.path.join(PACKAGE, "_tlsinternals.py")
#: The seam's sibling for the reactor itself (hooks, the readers).
REACTOR_SEAM = os.path.join(PACKAGE, "_reactorinternals.py")
SEAMS = (SEAM, TLS_SEAM, REACTOR_SEAM)

#: Packages whose private names only the seams may use.
_GUARDED = ("twisted", "OpenSSL")


def _sources() -> dict[str, str]:
    found = {}
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                found[os.path.relpath(path, os.path.dirname(PACKAGE))] = path
    return found


def _privateUses(path: str) -> list[str]:
    """
    Where the module at C{path} names a private Twisted name: an attribute
    in L{PRIVATE_NAMES} read or set on anything but C{self}/C{cls}, that
    name as a string (C{getattr}, C{vars(...)[...]}) or keyword, or any
    underscored attribute of a module or name imported from C{twisted} (or
    C{OpenSSL}).
    """
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    fromTwisted: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _GUARDED:
            fromTwisted.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            fromTwisted.update(
                a.asname or a.name.split(".")[0]
                for a in node.names
                if a.name.split(".")[0] in _GUARDED
            )
    uses = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in PRIVATE_NAMES and owner not in ("self", "cls"):
                uses.append(f"{line}: .{node.attr}")
            elif (
                owner in fromTwisted
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                uses.append(f"{line}: {owner}.{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in PRIVATE_NAMES:
            uses.append(f"{line}: {node.value!r}")
        elif isinstance(node, ast.keyword) and node.arg in PRIVATE_NAMES:
            uses.append(f"{line}: {node.arg}=")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _GUARDED:
            private = any(p.startswith("_") for p in (node.module or "").split("."))
            for alias in node.names:
                if private or alias.name.startswith("_"):
                    uses.append(f"{line}: from {node.module} import {alias.name}")
    return uses


class PrivateAPISeamTests(SynchronousTestCase):
    """
    Twisted's private API is used in L{migrator._twistedinternals} only.
    """

    def test_onlyInTheSeam(self) -> None:
        """
        No other module of C{migrator} reads or sets one of the private
        names the seam uses, names it as a string, or reaches an underscored
        name of a Twisted module.
        """
        found = {}
        for name, path in _sources().items():
            if path in SEAMS:
                continue
            uses = _privateUses(path)
            if uses:
                found[name] = uses
        self.assertEqual(found, {})

    def test_namesAreTheSeams(self) -> None:
        """
        Every name in the list is one the seam uses (the list is the record
        of what a Twisted upgrade must be checked for).
        """
        uses = " ".join(u for seam in SEAMS for u in _privateUses(seam))
        missing = sorted(n for n in PRIVATE_NAMES if n not in uses)
        self.assertEqual(missing, [])

    def test_checkFindsUses(self) -> None:
        """
        The check finds an attribute, a string, a keyword and an underscored
        name of a Twisted module, and leaves C{self._x} alone.
        """
        path = os.path.join(_tempdir(self), "example.py")
        with open(path, "w") as f:
            f.write(
                "from twisted.web import http\n"
                "from twisted.internet._sslverify import x\n"
                "t._tempDataBuffer\n"
                "getattr(c, '_abortingCall')\n"
                "p.__dict__.update(_channel=1)\n"
                "http._Anything\n"
                "self._buffer\n"
            )
        self.assertEqual(
            sorted(_privateUses(path)),
            [
                "2: from twisted.internet._sslverify import x",
                "3: ._tempDataBuffer",
                "4: '_abortingCall'",
                "5: _channel=",
                "6: http._Anything",
            ],
        )


def _tempdir(case: SynchronousTestCase) -> str:
    path = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, path, True)
    return path


class UNIXLockTests(SynchronousTestCase):
    """
    L{releaseUNIXLock} and L{takeUNIXLock} hand a UNIX port's C{wantPID}
    lock file (C{PATH.lock}) from one port to another.
    """

    def listen(self, path: str, wantPID: int) -> Any:
        from twisted.internet import unix

        port = unix.Port(path, Factory.forProtocol(Protocol), 5, 0o600, MemoryReactorClock(), wantPID)
        port.startListening()
        self.addCleanup(releasePort, port)
        return port

    def test_handOver(self) -> None:
        """
        The lock of a released port can be taken by another port on the
        same path, which then holds it.
        """
        path = os.path.join(_tempdir(self), "s")
        first = self.listen(path, wantPID=1)
        self.assertTrue(os.path.lexists(path + ".lock"))
        adopted = adoptUNIX(MemoryReactorClock(), first.fileno(), first.factory, 5, 0o600)
        self.addCleanup(releasePort, adopted)
        self.assertFalse(takeUNIXLock(adopted))
        releaseUNIXLock(first)
        self.assertIsNone(first.lockFile)
        self.assertFalse(os.path.lexists(path + ".lock"))
        self.assertTrue(takeUNIXLock(adopted))
        self.assertTrue(adopted.lockFile.locked)
        adopted.lockFile.unlock()

    def test_noLock(self) -> None:
        """
        Releasing the lock of a port without one does nothing.
        """
        port = self.listen(os.path.join(_tempdir(self), "s"), wantPID=0)
        releaseUNIXLock(port)
        self.assertIsNone(port.lockFile)


class HookTests(SynchronousTestCase):
    """
    L{hookReactorMethod} is seen by Twisted's endpoints, which look the
    method up on the reactor when they listen.
    """

    def test_endpointListensThroughHook(self) -> None:
        """
        A TCP server endpoint made before the hook listens through it.
        """
        reactor = MemoryReactorClock()
        endpoint = TCP4ServerEndpoint(reactor, 8080)
        calls: list[Any] = []
        original = hookReactorMethod(
            reactor, "listenTCP", lambda *a, **kw: calls.append(a) or original(*a, **kw)
        )
        endpoint.listen(Factory.forProtocol(Protocol))
        self.assertEqual([c[0] for c in calls], [8080])
        unhookReactorMethod(reactor, "listenTCP", original)
        self.assertNotIn("listenTCP", vars(reactor))


class _Selectable:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def fileno(self) -> int:
        return 5

    def doRead(self) -> None:
        self.calls.append("read")

    def doWrite(self) -> None:
        self.calls.append("write")


class NoteReadsTests(SynchronousTestCase):
    """
    L{noteReads}: one hook on an epoll or poll reactor notes every read it
    dispatches (a stream's watch of which connections talk).
    """

    def reactors(self) -> list[Any]:
        found = []
        for module, name in (("epollreactor", "EPollReactor"), ("pollreactor", "PollReactor")):
            try:
                cls = getattr(__import__(f"twisted.internet.{module}", fromlist=[name]), name)
            except ImportError:
                continue
            # (Not started: no descriptor is opened.)
            reactor = cls.__new__(cls)
            reactor._selectables = {}
            found.append(reactor)
        if not found:
            raise SkipTest("neither the epoll nor the poll reactor is available here")
        return found

    def test_notesReadsOnly(self) -> None:
        """
        A read event is noted, then dispatched as before; a write event is
        dispatched, not noted; once undone, nothing is noted and the
        reactor's own method is back.
        """
        import select

        for reactor in self.reactors():
            noted: list[Any] = []
            undo = noteReads(reactor, noted.append)
            assert undo is not None
            selectable = _Selectable()
            reactor._doReadOrWrite(selectable, 5, reactor._POLL_IN)
            reactor._doReadOrWrite(selectable, 5, getattr(select, "EPOLLOUT", select.POLLOUT))
            self.assertEqual((noted, selectable.calls), ([selectable], ["read", "write"]))
            # (Hooked already: not twice.)
            self.assertIsNone(noteReads(reactor, noted.append))
            undo()
            self.assertNotIn("_doReadOrWrite", vars(reactor))
            reactor._doReadOrWrite(selectable, 5, reactor._POLL_IN)
            self.assertEqual(noted, [selectable])
            undo()

    def test_pollLooksTheMethodUpEachTime(self) -> None:
        """
        What the hook relies on: the reactors' C{doPoll} dispatches through
        C{self._doReadOrWrite}, looked up on the instance.
        """
        import inspect

        for reactor in self.reactors():
            self.assertIn("self._doReadOrWrite", inspect.getsource(type(reactor).doPoll))

    def test_otherReactors(self) -> None:
        """
        A reactor that is not epoll or poll (a test's fake) is not hooked.
        """
        self.assertIsNone(noteReads(MemoryReactorClock(), lambda s: None))


class _Descriptor(FileDescriptor):
    def __init__(self, sock: socket.socket, reactor: Any) -> None:
        super().__init__(reactor)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        pass


class _OwnStop(_Descriptor):
    def stopReading(self) -> None:
        super().stopReading()


class StopReadingAllTests(SynchronousTestCase):
    """
    L{stopReadingAll}: an epoll reactor stops reading, in one call, the
    descriptors it reads and does not write; the others are left to the
    caller.
    """

    def test_epoll(self) -> None:
        """
        Those read only are no longer read, and can be read again (their
        registration is gone from the epoll too); one also written, and
        one whose class has its own C{stopReading}, are given back.
        """
        try:
            from twisted.internet.epollreactor import EPollReactor
        except ImportError:
            raise SkipTest("the epoll reactor is not available here") from None
        pairs = [socket.socketpair() for _ in range(4)]
        for a, b in pairs:
            self.addCleanup(a.close)
            self.addCleanup(b.close)
        reactor = EPollReactor()
        # (Undone before the sockets close.)
        self.addCleanup(reactor.waker.connectionLost, None)
        self.addCleanup(reactor._poller.close)
        self.addCleanup(reactor.removeAll)
        plain = [_Descriptor(pairs[i][0], reactor) for i in range(2)]
        writing = _Descriptor(pairs[2][0], reactor)
        own = _OwnStop(pairs[3][0], reactor)
        for d in [*plain, writing, own]:
            d.startReading()
        writing.startWriting()
        self.assertEqual(stopReadingAll(reactor, [*plain, writing, own]), [writing, own])
        readers = reactor.getReaders()
        self.assertEqual([d in readers for d in [*plain, writing, own]], [False, False, True, True])
        self.assertIn(writing, reactor.getWriters())
        for d in plain:
            d.startReading()
        self.assertTrue(all(d in reactor.getReaders() for d in plain))

    def test_otherReactors(self) -> None:
        """
        On any other reactor, every transport is given back.
        """
        reactor = MemoryReactorClock()
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        d = _Descriptor(a, reactor)
        d.startReading()
        self.assertEqual(stopReadingAll(reactor, [d]), [d])


class AttachProtocolTests(SynchronousTestCase):
    """
    L{serverTransport} and L{attachProtocol} make a transport that reads
    nothing until told, named after its protocol and port.
    """

    def test_namedAfterProtocolAndPort(self) -> None:
        """
        The transport's log prefix and C{repr} are those Twisted would have
        given a connection of that protocol accepted on that port.
        """
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        reactor = MemoryReactorClock()

        class Port:
            _realPortNumber = 8080

        class Hello(Protocol):
            pass

        t = serverTransport(a, ("127.0.0.1", 4321), Port(), 7, reactor, unix=False)
        self.addCleanup(a.close)
        self.assertNotIn(t, reactor.getReaders())
        attachProtocol(t, Hello())
        self.assertEqual(t.logstr, "Hello,7,127.0.0.1")
        self.assertEqual(repr(t), "<Hello #7 on 8080>")
        t.startReading()
        self.assertIn(t, reactor.getReaders())


class LoopingCallTests(SynchronousTestCase):
    """
    L{abandonLoopingCall} stops a loop here without telling its owner.
    """

    def test_abandon(self) -> None:
        """
        The loop stops, its next call is cancelled, and the L{Deferred}
        C{start()} returned does not fire.
        """
        clock = task.Clock()
        calls: list[int] = []
        loop = task.LoopingCall(calls.append, 1)
        loop.clock = clock
        d = loop.start(1.0, now=False)
        abandonLoopingCall(loop)
        clock.advance(5)
        self.assertEqual(calls, [])
        self.assertFalse(loop.running)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNoResult(d)


class ProxyTests(SynchronousTestCase):
    """
    L{proxyState} and L{restoreProxy} carry what a L{server.Site} gives the
    protocol of a new connection.
    """

    def test_asSiteBuildsIt(self) -> None:
        """
        A blank proxy restored from a Site's proxy, with the Site's
        configuration, has the same instance attributes (and the protocol
        TLS negotiated, none, which the Site's proxy has from its class).
        """
        reactor = MemoryReactorClock()
        site = server.Site(resource.Resource(), reactor=reactor)
        proxy = site.buildProtocol(None)
        self.assertIsInstance(proxy, genericHTTPChannelProtocol())
        blank = object.__new__(genericHTTPChannelProtocol())
        config = {
            "factory": site,
            "site": site,
            "callLater": reactor.callLater,
            "timeOut": site.timeOut,
            "requestFactory": site.requestFactory,
        }
        restoreProxy(blank, proxyState(proxy), config)
        self.assertEqual(vars(blank), {**vars(proxy), "_negotiatedProtocol": None})
