# -*- test-case-name: tests.test_tlstransport -*-
"""
Tests for L{migrator.adapters.tls._transport} and
L{migrator.adapters.tls._adapters}: a TLS session captured from Twisted's
TLS transport (over OpenSSL) goes on, through the real object graph, in a
L{TLSRecordTransport} around the same application protocol (an HTTP
keep-alive channel of the successor's Site), with the same OpenSSL client;
and what that transport does when the client updates its key, closes,
fails or tampers.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IConsumer,
    INegotiated,
    IProtocol,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from zope.interface.verify import verifyClass, verifyObject

from migrator._tlsinternals import producerMembraneClass
from migrator.adapters import defaultRegistry
from migrator.adapters.tls import TLSRecordTransport
from migrator.adapters.tls._adapters import ProducerMembraneAdapter, TLSSessionAdapter
from migrator.adapters.tls._keys import SUITES, DirectionState
from migrator.adapters.tls._record import BAD_RECORD_MAC, RecordLayer, TLSAlert
from migrator.adapters.tls._transport import ProducerMembrane
from migrator.interfaces import IAdapter
from migrator.state._capture import _CaptureHooks
from migrator.state._graph import GraphReader, GraphWriter, dumpsPlain, loadsPlain
from migrator.state._restore import _RestoreHooks
from tests._tlshelpers import Collect, Session, TCPTransport, serverOptions

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


class _Text(resource.Resource):
    isLeaf = True

    def __init__(self, text: bytes) -> None:
        resource.Resource.__init__(self)
        self.text = text
        self.secure: list[bool] = []

    def render_GET(self, request: Any) -> bytes:
        self.secure.append(request.isSecure())
        return self.text


class _Web:
    """
    A Site behind a TLS factory, as C{twistd web --listen ssl:...} has.
    """

    def __init__(self, text: bytes) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.resource = _Text(text)
        self.site = server.Site(self.resource, reactor=self.clock, timeout=60)
        self.site.startFactory()
        self.tlsFactory = TLSMemoryBIOFactory(serverOptions(), False, self.site, clock=self.clock)


def _move(
    registry: Any, tls: Any, oldClock: Any, newClock: Any, old: dict[Any, str], new: dict[str, Any]
) -> tuple[Any, _RestoreHooks]:
    """
    Write C{tls} (and what it reaches) as a takeover does, read it back in
    the "successor": the TCP transport, the factories and the clock are
    anchors.
    """
    anchors = {id(oldClock): "reactor", **{id(obj): name for obj, name in old.items()}}
    writer = GraphWriter(registry.adapterFor, anchors, _CaptureHooks(oldClock, registry, None, frozenset()))
    payload = dumpsPlain(writer.write(tls))
    hooks = _RestoreHooks(newClock, registry, None, [])
    reader = GraphReader(registry.adapterNamed, dict(new, reactor=newClock), hooks)
    restored = reader.read(loadsPlain(payload))
    reader.finish()
    return restored, hooks


class _WebMove:
    """
    An HTTPS keep-alive connection served by an "incumbent" Site over
    OpenSSL, moved to a "successor" Site.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.registry = defaultRegistry()
        self.old = _Web(b"old code")
        self.new = _Web(b"new code")
        self.session = Session(factory=self.old.site, clock=self.old.clock)
        # The session's own TLS factory stands for the port's.
        self.old.tlsFactory = self.session.tlsFactory
        self.session.handshake()
        self.newTCP = TCPTransport()
        self.tls: Any = self.session.server

    def ask(self, path: bytes = b"/") -> bytes:
        """
        A request through whatever serves the connection now; the answer's
        body.
        """
        self.session.client.send(REQUEST.replace(b" / ", b" " + path + b" "))
        wire = self.session.clientOut()
        self.tls.dataReceived(wire)
        self.session.clock.advance(0)
        tcp = self.session.tcp if isinstance(self.tls, TLSMemoryBIOProtocol) else self.newTCP
        self.session.client.bio_write(tcp.take())
        return self.session.readClient().split(b"\r\n\r\n", 1)[1]

    def move(self) -> Any:
        oldTCP = self.session.tcp if isinstance(self.tls, TLSMemoryBIOProtocol) else self.newTCP
        oldFactory, oldSite = self.old.tlsFactory, self.old.site
        if isinstance(self.tls, TLSRecordTransport):
            oldFactory, oldSite = self.new.tlsFactory, self.new.site
        self.newTCP = TCPTransport()
        restored, hooks = _move(
            self.registry,
            self.tls,
            self.session.clock,
            self.new.clock,
            {oldTCP: "transport", oldFactory: "factory:web", oldSite: "factory:web/1"},
            {"transport": self.newTCP, "factory:web": self.new.tlsFactory, "factory:web/1": self.new.site},
        )
        # What the successor does at the commit.
        self.newTCP.protocol = restored
        if restored.producer is not None:
            self.newTCP.registerProducer(restored.producer, True)
        hooks.gate.open()
        self.tls = restored
        self.session.clock = self.new.clock
        return restored


class AdapterTests(SynchronousTestCase):
    """
    The TLS adapters are registered by default, for Twisted's TLS
    transports and migrator's.
    """

    def test_registered(self) -> None:
        """
        One session adapter for the three transport classes, one membrane
        adapter for both membranes.
        """
        registry = defaultRegistry()
        session = registry.adapterFor(TLSRecordTransport)
        self.assertIsInstance(session, TLSSessionAdapter)
        for cls in (TLSMemoryBIOProtocol, BufferingTLSTransport):
            self.assertIs(registry.adapterFor(cls), session)
        membrane = registry.adapterFor(ProducerMembrane)
        self.assertIsInstance(membrane, ProducerMembraneAdapter)
        self.assertIs(registry.adapterFor(producerMembraneClass()), membrane)
        for adapter in (session, membrane):
            verifyObject(IAdapter, adapter)

    def test_blank(self) -> None:
        """
        A transport created and not populated yet (a restored TCP transport
        asks its log prefix then) has a log prefix and a representation.
        """
        blank = defaultRegistry().adapterFor(TLSRecordTransport).create(None)
        self.assertEqual(blank.logPrefix(), "TLSRecordTransport")
        self.assertEqual(repr(blank), "<TLSRecordTransport (not restored yet)>")
        self.assertRaises(AttributeError, getattr, blank, "getTcpKeepAlive2")

    def test_interfaces(self) -> None:
        """
        The transport is a protocol to TCP and an SSL transport (with ALPN),
        push producer and consumer to the application.
        """
        for interface in (IProtocol, ISSLTransport, INegotiated, IPushProducer, IConsumer):
            self.assertTrue(verifyClass(interface, TLSRecordTransport))


class WebMoveTests(SynchronousTestCase):
    """
    An HTTPS keep-alive connection moves, and goes on with the same client.
    """

    def test_requestsAcrossMoves(self) -> None:
        """
        The client's requests are answered by the incumbent's Site, then
        (after a move) by the successor's, through migrator's record layer,
        then again after a second move (from migrator's transport); the
        requests know they are secure.
        """
        web = _WebMove(self)
        self.assertEqual(web.ask(), b"old code")
        moved = web.move()
        self.assertIsInstance(moved, TLSRecordTransport)
        self.assertEqual([web.ask() for _ in range(3)], [b"new code"] * 3)
        channel = moved.wrappedProtocol._channel
        self.assertIs(channel.transport, moved)
        self.assertIs(channel.site, web.new.site)
        again = web.move()
        self.assertIsNot(again, moved)
        self.assertEqual(web.ask(), b"new code")
        self.assertEqual(web.old.resource.secure + web.new.resource.secure, [True] * 5)

    def test_everySuite(self) -> None:
        """
        Each suite moves.
        """
        for name in SUITES:
            web = _WebMove(self)
            web.session = Session(factory=web.old.site, clock=web.old.clock, suite=name)
            web.old.tlsFactory = web.session.tlsFactory
            web.session.handshake()
            web.tls = web.session.server
            self.assertEqual(web.ask(), b"old code")
            self.assertEqual(web.move().cipherName, name)
            self.assertEqual(web.ask(), b"new code")

    def test_pendingOutputFlushed(self) -> None:
        """
        What Twisted's TLS transport was still aggregating (a small write
        this reactor turn) is protected and handed to the TCP transport at
        the capture, to be sent first; the successor's records follow it.
        """
        web = _WebMove(self)
        web.tls.write(b"not yet sent")
        self.assertEqual(web.session.tcp.value(), b"")
        web.registry.adapterFor(BufferingTLSTransport).capture(web.tls)
        web.session.client.bio_write(web.session.tcp.take())
        self.assertEqual(web.session.readClient(), b"not yet sent")

    def test_secretsWipedAfterRestore(self) -> None:
        """
        Once the successor's record layer has its copies, the secrets in
        the restored state are zeroed.
        """
        web = _WebMove(self)
        adapter = web.registry.adapterFor(BufferingTLSTransport)
        state = adapter.capture(web.tls)
        secrets = [state["session"]["readSecret"], state["session"]["writeSecret"]]
        self.assertTrue(all(any(s) for s in secrets))
        adapter.populate(adapter.create(None), state, None)
        self.assertEqual(secrets, [bytearray(len(s)) for s in secrets])

    def test_handleAndCertificate(self) -> None:
        """
        The session's surface: no client certificate, the cipher, TLS 1.3,
        the server name asked for, no ALPN.
        """
        web = _WebMove(self)
        moved = web.move()
        handle = moved.getHandle()
        self.assertIsNone(moved.getPeerCertificate())
        self.assertEqual(
            (handle.get_cipher_name(), handle.get_protocol_version_name(), handle.get_servername()),
            (web.session.client.get_cipher_name(), "TLSv1.3", b"localhost"),
        )
        self.assertIsNone(moved.negotiatedProtocol)
        self.assertEqual(moved.getPeer(), IPv4Address("TCP", "127.0.0.1", 4321))

    def test_busyChannelDeclines(self) -> None:
        """
        The channel inside is asked: one with part of a request stays.
        """
        web = _WebMove(self)
        web.session.client.send(b"GET / HT")
        web.tls.dataReceived(web.session.clientOut())
        adapter = web.registry.adapterFor(BufferingTLSTransport)
        self.assertEqual(adapter.movable(web.tls), "part of a request has arrived")
        self.assertTrue(adapter.busy(web.tls))
        self.assertTrue(adapter.drainsHarmlessly(web.tls))


def _moved(registry: Any = None) -> tuple[Session, Any, TCPTransport, Any]:
    """
    A session of a L{Collect} protocol, moved: the OpenSSL client, the
    restored transport, its TCP transport, the restored protocol.
    """
    registry = registry or defaultRegistry()
    registry.registerInstance(Collect, exclude=frozenset({"factory"}))
    session = Session()
    session.handshake()
    newTCP = TCPTransport()
    clock = MemoryReactorClock()
    restored, hooks = _move(
        registry,
        session.server,
        session.clock,
        clock,
        {session.tcp: "transport", session.tlsFactory: "factory:p"},
        {"transport": newTCP, "factory:p": session.tlsFactory},
    )
    newTCP.protocol = restored
    hooks.gate.open()
    return session, restored, newTCP, restored.wrappedProtocol


class SessionEventTests(SynchronousTestCase):
    """
    What the moved session does with what the client sends, and how it
    closes.
    """

    def test_keyUpdateAfterMove(self) -> None:
        """
        The client updates its key and asks for ours after the move: the
        transport reads on under the new key and answers with its own
        KeyUpdate, which the client follows.
        """
        session, restored, tcp, inner = _moved()
        suite = SUITES[session.client.get_cipher_name()]
        # The client goes on with migrator's record layer (pyOpenSSL has no
        # KeyUpdate call); the server sent it two tickets so far.
        client = RecordLayer(
            suite,
            DirectionState.fromSecret(suite, session.clientSecrets["SERVER_TRAFFIC_SECRET_0"], 2),
            DirectionState.fromSecret(suite, session.clientSecrets["CLIENT_TRAFFIC_SECRET_0"]),
        )
        restored.dataReceived(client.keyUpdate(requested=True) + client.send(b"ping"))
        self.assertEqual(inner.received, [b"ping"])
        answer = client.receive(tcp.take())
        self.assertEqual((answer.keyUpdates, answer.data), (1, [b"pong"]))
        self.assertEqual(restored.record.readState.generation, 1)
        self.assertEqual(restored.record.writeState.generation, 1)

    def test_tamperedRecord(self) -> None:
        """
        A tampered record is not delivered: C{bad_record_mac} goes to the
        client (its OpenSSL reports it), the connection closes, and the
        protocol learns why.
        """
        session, restored, tcp, inner = _moved()
        wire = bytearray(session.clientSends(b"tampered"))
        wire[-2] ^= 0x40
        restored.dataReceived(bytes(wire))
        self.assertEqual(inner.received, [])
        self.assertTrue(tcp.disconnecting)
        session.client.bio_write(tcp.take())
        error = self.assertRaises(SSL.Error, session.client.recv, 100)
        self.assertIn("bad record mac", str(error))
        restored.connectionLost(None)
        self.assertIsInstance(inner.lost.value, TLSAlert)
        self.assertEqual(inner.lost.value.description, BAD_RECORD_MAC)

    def test_clientCloses(self) -> None:
        """
        The client's C{close_notify} is answered with ours, and the TCP
        connection closes.
        """
        session, restored, tcp, inner = _moved()
        session.client.send(b"bye")
        session.client.shutdown()
        restored.dataReceived(session.clientOut())
        self.assertEqual(inner.received, [b"bye"])
        self.assertTrue(tcp.disconnecting)
        session.client.bio_write(tcp.take())
        self.assertRaises(SSL.ZeroReturnError, session.client.recv, 100)

    def test_serverCloses(self) -> None:
        """
        The application's C{loseConnection} sends C{close_notify}, and the
        TCP connection closes once the client answers with its own; writes
        after it are dropped.
        """
        session, restored, tcp, inner = _moved()
        restored.write(b"last")
        restored.loseConnection()
        restored.write(b"dropped")
        self.assertFalse(tcp.disconnecting)
        session.client.bio_write(tcp.take())
        self.assertEqual(session.readClient(), b"last")
        self.assertEqual(session.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN, SSL.RECEIVED_SHUTDOWN)
        session.client.shutdown()
        restored.dataReceived(session.clientOut())
        self.assertTrue(tcp.disconnecting)

    def test_producerHoldsTheClose(self) -> None:
        """
        With a producer registered, C{close_notify} waits until it is
        unregistered; pauses reach it through the membrane once.
        """
        session, restored, tcp, inner = _moved()

        class Producer:
            events: list[str] = []

            def pauseProducing(self) -> None:
                self.events.append("pause")

            def resumeProducing(self) -> None:
                self.events.append("resume")

            def stopProducing(self) -> None:
                self.events.append("stop")

        producer = Producer()
        restored.registerProducer(producer, True)
        membrane = tcp.producer
        membrane.pauseProducing()
        membrane.pauseProducing()
        membrane.resumeProducing()
        self.assertEqual(producer.events, ["pause", "resume"])
        restored.loseConnection()
        self.assertEqual(tcp.value(), b"")
        restored.unregisterProducer()
        self.assertIsNone(tcp.producer)
        session.client.bio_write(tcp.take())
        session.readClient()
        self.assertTrue(session.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN)

    def test_notMovableWhileClosing(self) -> None:
        """
        A moved session that is closing does not move again.
        """
        session, restored, tcp, inner = _moved()
        registry = defaultRegistry()
        registry.registerInstance(Collect, exclude=frozenset({"factory"}))
        adapter = registry.adapterFor(TLSRecordTransport)
        self.assertIsNone(adapter.movable(restored))
        restored.loseConnection()
        self.assertEqual(adapter.movable(restored), "the session is closing")

    def test_owedKeyUpdateRestored(self) -> None:
        """
        A session captured owing the client a KeyUpdate sends it before
        its first data after the move.
        """
        session, restored, tcp, inner = _moved()
        state = restored.session()
        state["owedKeyUpdate"] = True
        restored._record = RecordLayer.fromState(state)
        restored.write(b"data")
        self.assertEqual(restored.record.writeState.generation, 1)
        # The client's OpenSSL takes the KeyUpdate, then the data under the
        # new key.
        session.client.bio_write(tcp.take())
        self.assertEqual(session.readClient(), b"data")
