# -*- test-case-name: tests.test_wssadapters -*-
"""
C{wss://}: an autobahn WebSocket server protocol inside Twisted's TLS (on
the port directly, and upgraded by a C{Site} through autobahn's
C{WebSocketResource}) moves, through the real object graph, to a
L{TLSRecordTransport} around the same protocol, and goes on with the same
OpenSSL client: a message fragmented across the move, echoes, the TLS
channel binding autobahn keeps, another move, the closing handshake.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server

from migrator.adapters import defaultRegistry
from migrator.adapters.tls import TLSRecordTransport
from tests._tlshelpers import Session, TCPTransport, serverOptions
from tests.test_tlstransport import _move
from tests.test_websocketadapters import Recorder, RecorderFactory, _request, frame, frames

try:
    import txaio
    from autobahn.twisted.resource import WebSocketResource
    from autobahn.wamp.types import TransportDetails
except ImportError:  # pragma: no cover
    txaio = None

from migrator.adapters._autobahninternals import marshalDetails, parseDetails


class _Port:
    """
    What a TCP transport's C{server} is (the port), for the WebSocket
    adapter to find the port's factory.
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory


class _Generation:
    """
    One process's side: its WebSocket factory, served on a TLS port
    directly or by a C{Site} at C{/ws}.
    """

    def __init__(self, clock: MemoryReactorClock, site: bool) -> None:
        self.ws = RecorderFactory("wss://127.0.0.1:9000", reactor=clock)
        self.ws.setProtocolOptions(autoPingInterval=10, autoPingTimeout=5)
        self.wrapped: Any = self.ws
        if site:
            root = resource.Resource()
            root.putChild(b"ws", WebSocketResource(self.ws))
            self.wrapped = server.Site(root, reactor=clock)
        self.tls = TLSMemoryBIOFactory(serverOptions(), False, self.wrapped, clock=clock)


class _SecureWebSocket:
    """
    A C{wss://} connection: an OpenSSL client, the "incumbent"'s TLS
    protocol and autobahn protocol, and what moves them.
    """

    def __init__(self, case: SynchronousTestCase, site: bool) -> None:
        self.case = case
        self.clock = MemoryReactorClock()
        old = txaio.config.loop
        txaio.config.loop = self.clock
        case.addCleanup(setattr, txaio.config, "loop", old)
        self.registry = defaultRegistry()
        from migrator.adapters import registerWebSocketServer

        registerWebSocketServer(self.registry, [Recorder], [RecorderFactory])
        self.old = _Generation(self.clock, site)
        self.session = Session(factory=self.old.wrapped, clock=self.clock)
        # The session's own TLS factory stands for the port's.
        self.old.tls = self.session.tlsFactory
        self.tcp = self.session.tcp
        self.tcp.server = _Port(self.old.tls)
        self.session.handshake()
        self.tls: Any = self.session.server
        self.roundTrip(_request(path=b"/ws" if site else b"/"))
        self.protocol = self.tls.wrappedProtocol
        case.assertIsInstance(self.protocol, Recorder)

    def roundTrip(self, data: bytes) -> bytes:
        """
        C{data} sent by the client through whatever serves the connection
        now; what the client reads back.
        """
        self.session.client.send(data)
        self.tls.dataReceived(self.session.clientOut())
        self.clock.advance(0)
        return self.read()

    def read(self) -> bytes:
        """
        What the client reads of what the server sent.
        """
        back = self.tcp.take()
        if back:
            self.session.client.bio_write(back)
        return self.session.readClient()

    def move(self) -> _Generation:
        """
        A takeover: the TLS protocol (and everything it reaches) to a new
        generation, whose port's factory is the TLS factory's anchor and
        the factory it wraps C{/1}'s (as the listener registry names them).
        """
        new = _Generation(self.clock, isinstance(self.old.wrapped, server.Site))
        newTCP = TCPTransport()
        newTCP.server = _Port(new.tls)
        restored, hooks = _move(
            self.registry,
            self.tls,
            self.clock,
            self.clock,
            {self.tcp: "transport", self.old.tls: "factory:wss", self.old.wrapped: "factory:wss/1"},
            {"transport": newTCP, "factory:wss": new.tls, "factory:wss/1": new.wrapped},
        )
        self.case.assertIsInstance(restored, TLSRecordTransport)
        # What the successor does at the commit.
        newTCP.protocol = restored
        if restored.producer is not None:
            newTCP.registerProducer(restored.producer, True)
        hooks.gate.open()
        self.tls, self.tcp, self.old = restored, newTCP, new
        self.protocol = restored.wrappedProtocol
        return new


class SecureWebSocketMoveTests(SynchronousTestCase):
    """
    A C{wss://} connection moves with its TLS session and its framing
    state, twice, on the port's factory or through a C{Site}.
    """

    if txaio is None:
        skip = "autobahn is not installed (the websocket extra)"

    def check(self, site: bool) -> None:
        ws = _SecureWebSocket(self, site)
        first = ws.protocol
        binding = first.transport_details.channel_id["tls-unique"]
        self.assertEqual(len(binding), 32)
        self.assertNotEqual(binding, bytes(32))
        self.assertEqual(frames(ws.roundTrip(frame(1, b"echo:before"))), [(True, 0, 1, b"before")])
        self.assertEqual(ws.roundTrip(frame(1, b"hello ", fin=False)), b"")
        new = ws.move()
        moved = ws.protocol
        self.assertIsInstance(moved, Recorder)
        self.assertIs(moved.transport, ws.tls)
        self.assertIs(moved.factory, new.ws)
        self.assertEqual(new.ws.clients, [moved])
        self.assertEqual(frames(ws.roundTrip(frame(0, b"world"))), [])
        self.assertEqual(moved.messages, [(b"echo:before", False), (b"hello world", False)])
        details = moved.transport_details
        self.assertTrue(details.is_secure)
        self.assertEqual(details.channel_id, {"tls-unique": binding})
        self.assertEqual(details.peer, first.transport_details.peer)
        self.assertEqual(frames(ws.roundTrip(frame(1, b"echo:after"))), [(True, 0, 1, b"after")])
        # Its automatic ping, through migrator's record layer.
        ws.clock.advance(11)
        [(_, _, opcode, payload)] = frames(ws.read())
        self.assertEqual((opcode, payload), (9, moved.autoPingPending))
        # Again, from migrator's record layer to migrator's.
        ws.move()
        again = ws.protocol
        self.assertEqual(again.transport_details.channel_id, {"tls-unique": binding})
        self.assertEqual(frames(ws.roundTrip(frame(10, payload))), [])
        self.assertIsNone(again.autoPingTimeoutCall)
        self.assertEqual(frames(ws.roundTrip(frame(1, b"echo:again"))), [(True, 0, 1, b"again")])
        # The closing handshake, then the TLS session's close.
        closing = ws.roundTrip(frame(8, b"\x03\xe8"))
        self.assertEqual(frames(closing), [(True, 0, 8, b"\x03\xe8")])
        self.assertTrue(ws.session.client.get_shutdown() & SSL.RECEIVED_SHUTDOWN)
        ws.session.client.shutdown()
        ws.tls.dataReceived(ws.session.clientOut())
        self.assertTrue(ws.tcp.disconnecting)
        ws.tls.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(again.closed, [(True, 1000)])

    def test_onThePort(self) -> None:
        """
        A WebSocket on the port's factory (behind the TLS factory) moves
        twice: a message fragmented across the first move arrives whole,
        echoes come back through migrator's record layer, the channel
        binding (C{tls-unique}) autobahn keeps moves unchanged, a ping
        sent after the first move gets its pong matched after the second,
        and the closing handshake and C{close_notify} go through.
        """
        self.check(site=False)

    def test_throughASite(self) -> None:
        """
        The same for a WebSocket upgraded by a C{Site} (its HTTP channel
        still the TLS transport's registered producer).
        """
        self.check(site=True)


class TransportDetailsTests(SynchronousTestCase):
    """
    L{marshalDetails} and L{parseDetails} read back what they write,
    unlike autobahn's own C{marshal} and C{parse}.
    """

    if txaio is None:
        skip = "autobahn is not installed (the websocket extra)"

    def test_tlsDetails(self) -> None:
        """
        The channel binding (bytes) and the peer certificate of a TLS
        connection survive; autobahn's own C{parse} refuses the first.
        """
        details = TransportDetails(
            channel_type=TransportDetails.CHANNEL_TYPE_TLS,
            channel_framing=TransportDetails.CHANNEL_FRAMING_WEBSOCKET,
            peer="tcp4:127.0.0.1:4321",
            is_server=True,
            is_secure=True,
            channel_id={"tls-unique": bytes(range(32))},
            peer_cert={"subject": {"cn": "client"}},
        )
        self.assertRaises(ValueError, TransportDetails.parse, details.marshal())
        back = parseDetails(marshalDetails(details))
        self.assertEqual(back, details)
        self.assertEqual(back.channel_id, {"tls-unique": bytes(range(32))})
        self.assertEqual(back.peer_cert, {"subject": {"cn": "client"}})

    def test_plainDetails(self) -> None:
        """
        A plain TCP connection's details (no binding) survive too.
        """
        details = TransportDetails(
            channel_type=TransportDetails.CHANNEL_TYPE_TCP, peer="tcp4:127.0.0.1:1", channel_id={}
        )
        self.assertEqual(parseDetails(marshalDetails(details)), details)
