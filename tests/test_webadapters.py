# -*- test-case-name: tests.test_webadapters -*-
"""
Tests for L{migrator.adapters._web}: which HTTP channels may move, what a
moved channel and Site become in the successor, and the incumbent's bounded
wait for busy channels (L{migrator.state._capture.Settling}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http, resource, server
from zope.interface import Interface
from zope.interface.verify import verifyObject

from migrator.adapters import defaultRegistry
from migrator.adapters._web import (
    GenericHTTPChannelProtocolAdapter,
    HTTPChannelAdapter,
    SiteAdapter,
)
from migrator.interfaces import IAdapter
from migrator.state._capture import _CaptureHooks
from migrator.state._graph import (
    GraphError,
    GraphReader,
    GraphWriter,
    Unadaptable,
    dumpsPlain,
    loadsPlain,
)
from migrator.state._restore import _RestoreHooks
from migrator.state._settling import Settling

REQUEST = b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n"
ROOT_REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


class _Held(resource.Resource):
    """
    Answers nothing until the test finishes the request.
    """

    isLeaf = True

    def __init__(self) -> None:
        resource.Resource.__init__(self)
        self.requests: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.requests.append(request)
        return server.NOT_DONE_YET


class _Text(resource.Resource):
    """
    Answers every C{GET} with C{text}.
    """

    isLeaf = True

    def __init__(self, text: bytes) -> None:
        resource.Resource.__init__(self)
        self.text = text

    def render_GET(self, request: Any) -> bytes:
        return self.text


class _ReadingTransport(StringTransport):
    """
    A L{StringTransport} that reads (as far as a reactor's C{getReaders}
    knows) until told otherwise, like a connected TCP transport.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        StringTransport.__init__(self, peerAddress=IPv4Address("TCP", "127.0.0.1", 4321))
        self.reactor = reactor
        self.connected = True
        self.startReading()

    def startReading(self) -> None:
        self.reactor.addReader(self)

    def stopReading(self) -> None:
        self.reactor.removeReader(self)

    def loseConnection(self) -> None:
        StringTransport.loseConnection(self)
        self.stopReading()


class _Ports:
    """
    The part of L{migrator.takeover._ports.ListenerRegistry} that L{Settling} uses.
    """

    def __init__(self, transports: list[Any]) -> None:
        self.transports = transports
        self.keys: dict[Any, str] = {}

    def openConnections(self) -> list[Any]:
        return [t for t in self.transports if t.connected]

    def keyOf(self, port: Any) -> str | None:
        return self.keys.get(port)


def _site(root: Any, clock: MemoryReactorClock, timeout: float | None = 60) -> server.Site:
    site = server.Site(root, reactor=clock, timeout=timeout)
    site.startFactory()
    return site


def _connect(site: server.Site, transport: StringTransport) -> Any:
    proxy = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
    proxy.makeConnection(transport)
    transport.protocol = proxy
    return proxy


class _Move:
    """
    Moves objects from an "incumbent" to a "successor" through the real
    object graph and the real scheduled-call and bound-method handling of
    L{migrator.state._capture} and L{migrator.state._restore}; the transport and the Site are anchors (in a
    real takeover the transport is rebuilt on the passed descriptor, and
    the Site is the port's factory).
    """

    def __init__(self, oldClock: MemoryReactorClock, newClock: MemoryReactorClock) -> None:
        self.registry = defaultRegistry()
        self.oldClock = oldClock
        self.newClock = newClock
        self.restoreHooks = _RestoreHooks(newClock, self.registry, None, [])

    def __call__(self, values: list[Any], old: dict[Any, str], new: dict[str, Any]) -> list[Any]:
        anchors = {id(self.oldClock): "reactor"}
        anchors.update((id(obj), name) for obj, name in old.items())
        writer = GraphWriter(
            self.registry.adapterFor,
            anchors,
            _CaptureHooks(self.oldClock, self.registry, None, frozenset()),
        )
        nodes = [writer.write(value) for value in values]
        payload = dumpsPlain(nodes)
        reader = GraphReader(
            self.registry.adapterNamed, dict(new, reactor=self.newClock), self.restoreHooks
        )
        restored = [reader.read(node) for node in loadsPlain(payload)]
        reader.finish()
        return restored

    def commit(self) -> None:
        """
        What the successor does after the commit: release held calls.
        """
        self.restoreHooks.gate.open()


class AdapterInterfaceTests(SynchronousTestCase):
    """
    The web adapters are adapters, registered by default.
    """

    def test_provideIAdapter(self) -> None:
        """
        Each web adapter provides L{IAdapter}.
        """
        for adapter in (GenericHTTPChannelProtocolAdapter(), HTTPChannelAdapter(), SiteAdapter()):
            self.assertTrue(verifyObject(IAdapter, adapter))

    def test_registeredByDefault(self) -> None:
        """
        The default registry has adapters for the channel, its proxy, the
        Site and its sessions.
        """
        registry = defaultRegistry()
        for cls in (
            http._GenericHTTPChannelProtocol,
            http.HTTPChannel,
            server.Site,
            server.Session,
        ):
            self.assertIsNotNone(registry.adapterFor(cls), cls)


class MovableTests(SynchronousTestCase):
    """
    Only an idle HTTP/1.1 channel moves; a busy one declines and says so.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.held = _Held()
        root = resource.Resource()
        root.putChild(b"x", self.held)
        self.site = _site(root, self.clock)
        self.transport = StringTransport()
        self.proxy = _connect(self.site, self.transport)
        self.adapter = GenericHTTPChannelProtocolAdapter()

    def assertBusy(self, reason: str) -> None:
        self.assertEqual(self.adapter.movable(self.proxy), reason)
        self.assertEqual(HTTPChannelAdapter().movable(self.proxy._channel), reason)
        self.assertTrue(self.adapter.busy(self.proxy))

    def assertStuck(self, reason: str) -> None:
        self.assertEqual(self.adapter.movable(self.proxy), reason)
        self.assertFalse(self.adapter.busy(self.proxy))

    def test_newConnectionIsIdle(self) -> None:
        """
        A connection that has not sent anything may move.
        """
        self.assertIsNone(self.adapter.movable(self.proxy))
        self.assertFalse(self.adapter.busy(self.proxy))

    def test_partialRequestLine(self) -> None:
        """
        Part of a request line makes the channel busy.
        """
        self.proxy.dataReceived(b"GET /x HT")
        self.assertBusy("part of a request has arrived")

    def test_partialHeaders(self) -> None:
        """
        A request whose headers have not all arrived is in progress.
        """
        self.proxy.dataReceived(b"GET /x HTTP/1.1\r\nHost: example\r\n")
        self.assertBusy("a request is in progress")

    def test_partialBody(self) -> None:
        """
        A request whose body has not all arrived is in progress.
        """
        self.proxy.dataReceived(b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\n\r\n12345")
        self.assertBusy("a request is in progress")

    def test_requestBeingAnswered(self) -> None:
        """
        A request being answered makes the channel busy, pipelined requests
        behind it too; once all are answered it is idle again.
        """
        self.proxy.dataReceived(REQUEST + REQUEST)
        self.assertBusy("a request is in progress")
        self.assertTrue(self.proxy._channel._dataBuffer)
        self.held.requests[0].finish()
        self.assertBusy("a request is in progress")
        self.held.requests[1].finish()
        self.assertIsNone(self.adapter.movable(self.proxy))
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())

    def test_upgraded(self) -> None:
        """
        A channel whose connection was handed to another protocol (what
        twisted.web's WebSocket support does) cannot move, and is not busy.
        """
        self.proxy._channel.dataReceived = lambda data: None
        self.assertStuck("upgraded to another protocol (WebSocket)")

    def test_http2(self) -> None:
        """
        A connection that negotiated HTTP/2 cannot move.
        """
        self.proxy._negotiatedProtocol = b"h2"
        self.assertStuck("speaks b'h2'")

    def test_timedOut(self) -> None:
        """
        A channel that timed out and is closing cannot move, and is not
        busy.
        """
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)
        self.assertStuck("timed out and closing")


class ChannelRoundTripTests(SynchronousTestCase):
    """
    An idle channel restored in the successor belongs to the successor's
    Site, keeps its idle deadline, and is registered as its transport's
    producer only by the connection machinery.
    """

    def setUp(self) -> None:
        self.oldClock = MemoryReactorClock()
        self.oldClock.advance(100)
        self.newClock = MemoryReactorClock()
        self.newClock.advance(130)
        self.oldSite = _site(_Text(b"old code"), self.oldClock, timeout=60)
        self.newSite = _site(_Text(b"new code"), self.newClock, timeout=60)
        self.oldTransport = StringTransport()
        self.proxy = _connect(self.oldSite, self.oldTransport)
        self.newTransport = StringTransport()
        self.move = _Move(self.oldClock, self.newClock)

    def restore(self) -> Any:
        [proxy] = self.move(
            [self.proxy],
            {self.oldSite: "factory:web", self.oldTransport: "transport"},
            {"factory:web": self.newSite, "transport": self.newTransport},
        )
        return proxy

    def activate(self, proxy: Any) -> None:
        """
        What the successor does after the commit: release the held calls
        and register the channel as its transport's producer.
        """
        self.move.commit()
        self.newTransport.registerProducer(proxy._channel, True)

    def test_successorSite(self) -> None:
        """
        The restored channel and its proxy are configured from the
        successor's Site (request factory, timeout, reactor), not from what
        the incumbent's had, and attached to the new transport.
        """
        self.newSite.timeOut = 45
        self.newSite.requestFactory = type("NewRequest", (server.Request,), {})
        proxy = self.restore()
        channel = proxy._channel
        self.assertIsInstance(proxy, http._GenericHTTPChannelProtocol)
        self.assertIsInstance(channel, http.HTTPChannel)
        self.assertIsNot(channel, self.proxy._channel)
        self.assertIs(channel.site, self.newSite)
        self.assertIs(channel.factory, self.newSite)
        self.assertIs(proxy.site, self.newSite)
        self.assertIs(channel.requestFactory, self.newSite.requestFactory)
        self.assertIs(proxy._requestFactory, self.newSite.requestFactory)
        self.assertEqual((channel.timeOut, proxy._timeOut), (45, 45))
        self.assertEqual(channel.callLater, self.newClock.callLater)
        self.assertEqual(proxy._callLater, self.newClock.callLater)
        self.assertIs(channel.transport, self.newTransport)
        self.assertIs(channel._networkProducer, self.newTransport)
        self.assertTrue(channel.connected)

    def test_movesAgain(self) -> None:
        """
        A channel moved once moves again at the next takeover, its idle
        timeout still pending (a restored call is written as the function
        it calls, not as the commit gate's wrapper), and is served by the
        third process's resource tree.
        """
        proxy = self.restore()
        self.activate(proxy)
        self.assertTrue(proxy._channel._TimeoutMixin__timeoutCall.active())
        thirdClock = MemoryReactorClock()
        thirdSite = _site(_Text(b"third code"), thirdClock, timeout=60)
        thirdTransport = StringTransport()
        move = _Move(self.newClock, thirdClock)
        [again] = move(
            [proxy],
            {self.newSite: "factory:web", self.newTransport: "transport"},
            {"factory:web": thirdSite, "transport": thirdTransport},
        )
        move.commit()
        thirdTransport.registerProducer(again._channel, True)
        again.dataReceived(ROOT_REQUEST)
        self.assertIn(b"third code", thirdTransport.value())

    def test_notRegisteredAsProducer(self) -> None:
        """
        Restoring does not register the channel as its transport's
        producer (the connection machinery does, once, after the commit):
        registering it then succeeds.
        """
        proxy = self.restore()
        self.assertIsNone(self.newTransport.producer)
        self.newTransport.registerProducer(proxy._channel, True)
        self.assertIs(self.newTransport.producer, proxy._channel)

    def test_servesSuccessorResource(self) -> None:
        """
        After the move the connection is served by the successor's
        resource tree, and stays open for the next request.
        """
        self.proxy.dataReceived(ROOT_REQUEST)
        self.assertIn(b"old code", self.oldTransport.value())
        proxy = self.restore()
        self.activate(proxy)
        proxy.dataReceived(ROOT_REQUEST)
        self.assertIn(b"HTTP/1.1 200 OK", self.newTransport.value())
        self.assertIn(b"new code", self.newTransport.value())
        self.assertFalse(self.newTransport.disconnecting)
        self.assertIsNone(GenericHTTPChannelProtocolAdapter().movable(proxy))

    def test_idleDeadlineKept(self) -> None:
        """
        The idle timeout fires in the successor at the deadline the
        incumbent had set (connection made at 100, timeout 60: at 160),
        not a full timeout after the move.
        """
        self.oldClock.advance(20)
        proxy = self.restore()
        self.activate(proxy)
        self.newClock.advance(29.9)
        self.assertFalse(self.newTransport.disconnecting)
        self.newClock.advance(0.2)
        self.assertTrue(self.newTransport.disconnecting)
        self.assertIsNone(proxy._channel._TimeoutMixin__timeoutCall)

    def test_dataResetsCarriedTimeout(self) -> None:
        """
        A request on the restored channel resets the carried idle timeout:
        it then fires a full timeout after the answer.
        """
        proxy = self.restore()
        self.activate(proxy)
        self.newClock.advance(10)
        proxy.dataReceived(ROOT_REQUEST)
        self.newClock.advance(59.9)
        self.assertFalse(self.newTransport.disconnecting)
        self.newClock.advance(0.2)
        self.assertTrue(self.newTransport.disconnecting)

    def test_timeoutOffInSuccessor(self) -> None:
        """
        If the successor's Site has no idle timeout, the carried one is
        cancelled.
        """
        self.newSite.timeOut = None
        proxy = self.restore()
        self.activate(proxy)
        self.newClock.advance(1000)
        self.assertFalse(self.newTransport.disconnecting)
        self.assertIsNone(proxy._channel._TimeoutMixin__timeoutCall)

    def test_pauseStateCarried(self) -> None:
        """
        A channel that was waiting for its transport to drain (it had
        paused reading) still is after the move.
        """
        self.proxy._channel.pauseProducing()
        proxy = self.restore()
        self.assertTrue(proxy._channel._waitingForTransport)

    def test_incumbentUntouched(self) -> None:
        """
        Capturing changes nothing in the incumbent's channel.
        """
        channel = self.proxy._channel
        before = dict(vars(channel))
        self.restore()
        self.assertEqual(vars(channel), before)


class IFavourite(Interface):
    """
    A session component, for the tests.
    """


class SiteRoundTripTests(SynchronousTestCase):
    """
    A Site's sessions move onto the successor's Site; its resource tree and
    configuration do not.
    """

    def setUp(self) -> None:
        self.oldClock = MemoryReactorClock()
        self.oldClock.advance(100)
        self.newClock = MemoryReactorClock()
        self.newClock.advance(500)
        self.oldRoot = _Text(b"old")
        self.newRoot = _Text(b"new")
        self.oldSite = _site(self.oldRoot, self.oldClock, timeout=60)
        self.oldSite.displayTracebacks = True
        self.newSite = _site(self.newRoot, self.newClock, timeout=30)
        self.move = _Move(self.oldClock, self.newClock)

    def restore(self) -> server.Site:
        [site] = self.move(
            [self.oldSite], {self.oldSite: "factory:web"}, {"factory:web": self.newSite}
        )
        return site

    def test_sessionsMove(self) -> None:
        """
        The sessions and the session counter move; each session now belongs
        to the successor's Site and reactor, with its plain components.
        """
        first = self.oldSite.makeSession()
        second = self.oldSite.makeSession()
        second.setComponent(IFavourite, {"colour": "green"})
        site = self.restore()
        self.assertIs(site, self.newSite)
        self.assertEqual(sorted(site.sessions), sorted([first.uid, second.uid]))
        self.assertEqual(site.counter, 2)
        moved = site.sessions[second.uid]
        self.assertIsNot(moved, second)
        self.assertIs(moved.site, self.newSite)
        self.assertIs(moved._reactor, self.newClock)
        self.assertEqual(moved.getComponent(IFavourite), {"colour": "green"})
        self.assertIs(site.getSession(first.uid).site, self.newSite)

    def test_configurationStays(self) -> None:
        """
        The successor's resource tree, timeout, reactor and every other
        setting are its own.
        """
        self.oldSite.makeSession()
        site = self.restore()
        self.assertIs(site.resource, self.newRoot)
        self.assertEqual(site.timeOut, 30)
        self.assertIs(site.reactor, self.newClock)
        self.assertFalse(site.displayTracebacks)

    def test_successorSessionsKept(self) -> None:
        """
        A session the successor already had is kept beside the moved ones,
        and its counter never goes back.
        """
        old = self.oldSite.makeSession()
        mine = [self.newSite.makeSession().uid for _ in range(3)]
        site = self.restore()
        self.assertEqual(sorted(site.sessions), sorted([old.uid, *mine]))
        self.assertEqual(site.counter, 3)

    def test_sessionExpiresAtOriginalDeadline(self) -> None:
        """
        A moved session expires in the successor when it would have in the
        incumbent (made at 100, timeout 900: at 1000).
        """
        session = self.oldSite.makeSession()
        site = self.restore()
        self.move.commit()
        self.newClock.advance(499)
        self.assertIn(session.uid, site.sessions)
        self.newClock.advance(2)
        self.assertNotIn(session.uid, site.sessions)

    def test_onlyAsAnchor(self) -> None:
        """
        A Site that is not the port's factory (not an anchor) cannot move:
        it would arrive without its resource tree.
        """
        writer = GraphWriter(defaultRegistry().adapterFor, {})
        e = self.assertRaises(Unadaptable, writer.write, {"site": self.oldSite})
        self.assertIn("moves only as a port's factory", e.why)

    def test_createRefused(self) -> None:
        """
        A Site is never created from state.
        """
        self.assertRaises(GraphError, SiteAdapter().create, None)

    def test_componentWithoutAdapter(self) -> None:
        """
        A session component with no adapter makes the Site's state (and so
        every connection of it) stay.
        """
        self.oldSite.makeSession().setComponent(IFavourite, object())
        self.assertRaises(Unadaptable, self.restore)


class SettlingTests(SynchronousTestCase):
    """
    L{Settling} waits a bounded time for busy HTTP channels to go idle and
    keeps idle ones from starting new requests meanwhile.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.held = _Held()
        root = resource.Resource()
        root.putChild(b"x", self.held)
        self.site = _site(root, self.clock)
        self.idle = _ReadingTransport(self.clock)
        self.busy = _ReadingTransport(self.clock)
        self.idleProxy = _connect(self.site, self.idle)
        _connect(self.site, self.busy).dataReceived(REQUEST)
        self.ports = _Ports([self.idle, self.busy])

    def settling(self, timeout: float = 5.0, claimed: frozenset[str] | None = None) -> Settling:
        return Settling(self.clock, self.ports, defaultRegistry(), timeout, claimed)

    def reading(self) -> list[bool]:
        readers = self.clock.getReaders()
        return [self.idle in readers, self.busy in readers]

    def test_nothingBusy(self) -> None:
        """
        With no busy connection there is nothing to wait for, and nothing
        is paused.
        """
        self.held.requests[0].finish()
        settling = self.settling()
        self.assertIsNone(settling.start())
        self.assertEqual(self.reading(), [True, True])

    def test_unclaimedPortNotWaitedFor(self) -> None:
        """
        A busy connection accepted on a port the successor does not declare
        cannot move anyway: it is not waited for.
        """
        port, other = object(), object()
        self.ports.keys = {port: "tcp:80#0", other: "tcp:81#0"}
        self.busy.server = other
        self.assertIsNone(self.settling(claimed=frozenset({"tcp:80#0"})).start())
        self.busy.server = port
        self.assertIsNotNone(self.settling(claimed=frozenset({"tcp:80#0"})).start())

    def test_waitsForBusy(self) -> None:
        """
        While a request is being answered, idle connections stop reading;
        once it is answered the wait ends with nothing busy, and L{resume}
        makes every paused connection read again.
        """
        settling = self.settling()
        d = settling.start()
        assert d is not None
        self.assertEqual(self.reading(), [False, True])
        self.clock.advance(1)
        self.assertNoResult(d)
        self.held.requests[0].finish()
        self.clock.advance(settling.interval)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.reading(), [False, False])
        settling.resume()
        self.assertEqual(self.reading(), [True, True])
        self.assertAlmostEqual(settling.waited, 1 + settling.interval)

    def test_bounded(self) -> None:
        """
        A request still being answered when the time is up is left busy.
        """
        settling = self.settling(timeout=2.0)
        d = settling.start()
        assert d is not None
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(d), 1)
        settling.resume()
        self.assertEqual(self.reading(), [True, True])
        self.assertNotIn(settling._tick, [call.func for call in self.clock.getDelayedCalls()])

    def test_resumeEndsWait(self) -> None:
        """
        L{resume} before the end (the takeover was abandoned) fires the
        wait, stops checking, and restores reading.
        """
        settling = self.settling()
        d: Deferred[int] | None = settling.start()
        assert d is not None
        settling.resume()
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.reading(), [True, True])
        self.clock.advance(10)
        self.assertEqual(self.reading(), [True, True])

    def test_closedWhilePaused(self) -> None:
        """
        A paused connection that closed meanwhile is not made to read.
        """
        settling = self.settling()
        settling.start()
        self.idle.loseConnection()
        self.idle.connected = False
        settling.resume()
        self.assertEqual(self.reading(), [False, True])
