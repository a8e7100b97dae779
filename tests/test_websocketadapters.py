# -*- test-case-name: tests.test_websocketadapters -*-
"""
Tests for L{migrator.adapters._websocket}: real autobahn WebSocket server
protocols, driven over L{StringTransport}s with frames as a client sends
them, go through L{migrator.testing.roundTrip} (or, where timers are
involved, the real capture and restore hooks of the state machinery), and
the restored protocol goes on where the old one stopped.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from zope.interface.verify import verifyObject

from migrator.adapters import defaultRegistry
from migrator.interfaces import IAdapter
from migrator.state._capture import _CaptureHooks
from migrator.state._graph import GraphReader, GraphWriter, Unadaptable, dumpsPlain, loadsPlain
from migrator.state._restore import _RestoreHooks
from migrator.testing import roundTrip

try:
    import txaio
    from autobahn.twisted import resource as abresource
    from autobahn.twisted import websocket
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
except ImportError:  # pragma: no cover
    websocket = None

from migrator.adapters._websocket import registerWebSocketServer

MASK = b"\x37\xfa\x21\x3d"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _request(extra: bytes = b"", path: bytes = b"/") -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """
    A frame as a client sends it (masked).
    """
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + MASK + bytes(c ^ MASK[i % 4] for i, c in enumerate(payload))


def frames(data: bytes) -> list[tuple[bool, int, int, bytes]]:
    """
    The (unmasked) frames a server sent: C{(fin, rsv, opcode, payload)}.
    """
    out = []
    while data:
        fin, rsv, opcode = bool(data[0] & 0x80), (data[0] >> 4) & 7, data[0] & 0x0F
        n, i = data[1] & 0x7F, 2
        if n == 126:
            n, i = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, i = struct.unpack("!Q", data[2:10])[0], 10
        out.append((fin, rsv, opcode, data[i : i + n]))
        data = data[i + n :]
    return out


class _Transport(StringTransport):
    """
    A L{StringTransport} that, like a TCP transport, lets a protocol
    unregister a producer it never registered (autobahn does when it drops
    a connection).
    """

    def unregisterProducer(self) -> None:
        self.producer = None


class Recorder(websocket.WebSocketServerProtocol if websocket else object):  # type: ignore[misc]
    """
    Keeps what it receives; echoes C{b"echo:"} messages.
    """

    def onConnect(self, request: Any) -> Any:
        offered = [p for p in request.protocols if p in self.factory.protocols]
        return offered[0] if offered else None

    def onOpen(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.pongs: list[bytes] = []
        self.closed: list[Any] = []
        self.factory.clients.append(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if payload.startswith(b"echo:"):
            self.sendMessage(payload[5:], isBinary)

    def onAutoPong(self, *args: Any) -> None:
        self.pongs.append(args[-1])

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closed.append((wasClean, code))


class RecorderFactory(websocket.WebSocketServerFactory if websocket else object):  # type: ignore[misc]
    """
    Keeps its clients in a list (the application's state).
    """

    protocol = Recorder

    def __init__(self, *a: Any, **kw: Any) -> None:
        websocket.WebSocketServerFactory.__init__(self, *a, **kw)
        self.clients: list[Any] = []


class _Case(SynchronousTestCase):
    """
    A clock for autobahn's timers, a registry with the test's classes,
    factories for an incumbent and a successor.
    """

    if websocket is None:
        skip = "autobahn is not installed (the websocket extra)"

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        old = txaio.config.loop
        txaio.config.loop = self.clock
        self.addCleanup(setattr, txaio.config, "loop", old)
        self.registry = defaultRegistry()
        registerWebSocketServer(self.registry, [Recorder], [RecorderFactory])
        self.old = self.factory()
        self.new = self.factory()

    def factory(self, **options: Any) -> Any:
        f = RecorderFactory("ws://127.0.0.1:9000", reactor=self.clock)
        if options:
            f.setProtocolOptions(**options)
        return f

    def connect(self, factory: Any = None, extra: bytes = b"") -> tuple[Any, StringTransport]:
        factory = factory or self.old
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(_request(extra))
        self.assertIn(b"101 Switching Protocols", transport.value())
        transport.clear()
        return proto, transport

    def move(self, proto: Any) -> Any:
        """
        C{proto} through L{roundTrip}, its factory an anchor.
        """
        return roundTrip(proto, self.registry, anchors={"factory:ws": (self.old, self.new)})

    def moveWithTimers(
        self, proto: Any, new: Any = None
    ) -> tuple[Any, StringTransport, _RestoreHooks]:
        """
        C{proto} through the real capture and restore hooks (scheduled
        calls, bound methods), on the one test clock; its transport and
        factory are anchors.  The incumbent's scheduled calls the capture
        met are cancelled, as after a commit.
        """
        transport = _Transport()
        capture = _CaptureHooks(self.clock, self.registry, None, frozenset())
        writer = GraphWriter(
            self.registry.adapterFor,
            {id(self.clock): "reactor", id(proto.transport): "t", id(proto.factory): "f"},
            capture,
        )
        payload = dumpsPlain(writer.write(proto))
        # What the incumbent does with the calls it met, after the commit.
        for call, _ in capture.calls:
            call.cancel()
        hooks = _RestoreHooks(self.clock, self.registry, None, [])
        reader = GraphReader(
            self.registry.adapterNamed,
            {"reactor": self.clock, "t": transport, "f": new or self.new},
            hooks,
        )
        restored = reader.read(loadsPlain(payload))
        reader.finish()
        restored.transport = transport
        return restored, transport, hooks


class WithoutAutobahnTests(SynchronousTestCase):
    """
    Autobahn is optional.
    """

    def test_notImportable(self) -> None:
        """
        Where autobahn cannot be imported, the default registry is built
        without its adapters, and without an error.
        """
        import sys

        from migrator.adapters._twisted import registerAdapters
        from migrator.state._registry import AdapterRegistry

        names = [n for n in sys.modules if n == "autobahn" or n.startswith("autobahn.")]
        saved = {n: sys.modules[n] for n in names}
        self.addCleanup(sys.modules.update, saved)
        for n in names:
            del sys.modules[n]
        sys.modules["autobahn"] = None  # type: ignore[assignment]
        self.addCleanup(sys.modules.pop, "autobahn", None)
        registry = AdapterRegistry()
        registerAdapters(registry)
        self.assertEqual([n for n in registry.typeNames() if "autobahn" in n], [])
        self.assertIn("twisted.web.http.HTTPChannel", registry.typeNames())


class RegistrationTests(_Case):
    """
    Autobahn's classes have adapters in the default registry.
    """

    def test_registered(self) -> None:
        """
        The default registry adapts autobahn's server protocol and factory
        and the permessage-deflate extension; each adapter is an
        L{IAdapter}.
        """
        from autobahn.websocket.compress_deflate import PerMessageDeflate

        registry = defaultRegistry()
        for cls in (
            websocket.WebSocketServerProtocol,
            websocket.WebSocketServerFactory,
            PerMessageDeflate,
        ):
            adapter = registry.adapterFor(cls)
            self.assertIsNotNone(adapter, cls)
            self.assertTrue(verifyObject(IAdapter, adapter))

    def test_noAutobahnAtModuleLevel(self) -> None:
        """
        The adapters module, and the one with autobahn's internals, import
        autobahn only inside functions.
        """
        import ast

        import migrator.adapters._autobahninternals as internals
        import migrator.adapters._websocket as module

        for path in (module.__file__, internals.__file__):
            with open(path, "rb") as f:
                tree = ast.parse(f.read())
            for node in tree.body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [getattr(node, "module", None) or ""] + [a.name for a in node.names]
                    roots = {n.split(".")[0] for n in names}
                    self.assertNotIn("autobahn", roots, names)


class FramingTests(_Case):
    """
    Inbound and outbound framing state moves.
    """

    def test_fragmentedMessageAcrossTheMove(self) -> None:
        """
        A text message whose first fragments arrived before the move (one of
        them only partly) is delivered whole, once, by the successor.
        """
        proto, _ = self.connect()
        proto.dataReceived(frame(1, b"hello ", fin=False))
        second = frame(0, b"wide ", fin=False)
        proto.dataReceived(second[:8])
        moved = self.move(proto)
        moved.dataReceived(second[8:] + frame(0, b"world", fin=True))
        self.assertEqual(proto.messages, [])
        self.assertEqual(moved.messages, [(b"hello wide world", False)])
        moved.dataReceived(frame(2, b"\x00\x01"))
        self.assertEqual(moved.messages[1:], [(b"\x00\x01", True)])

    def test_partialHeaderAcrossTheMove(self) -> None:
        """
        One byte of a frame's header, received before the move, is the start
        of the frame the successor parses.
        """
        proto, _ = self.connect()
        whole = frame(1, b"x" * 300)
        proto.dataReceived(whole[:1])
        moved = self.move(proto)
        self.assertEqual(moved.data, whole[:1])
        moved.dataReceived(whole[1:])
        self.assertEqual(moved.messages, [(b"x" * 300, False)])

    def test_utf8SplitAcrossTheMove(self) -> None:
        """
        A text message split inside a code point, across fragments and the
        move, is validated as one: valid UTF-8 is delivered, and the
        successor's validator is where the incumbent's was (a bad byte
        after the move fails the connection).
        """
        text = "h\u00e9llo \u20ac".encode()
        proto, _ = self.connect()
        proto.dataReceived(frame(1, text[:2], fin=False))
        moved = self.move(proto)
        moved.dataReceived(frame(0, text[2:], fin=True))
        self.assertEqual(moved.messages, [(text, False)])
        proto, transport = self.connect()
        # Fail with a close frame (not by dropping the connection).
        proto.failByDrop = False
        proto.dataReceived(frame(1, text[:2], fin=False))
        moved = self.move(proto)
        # autobahn drops the connection after its close frame (see _Transport).
        moved.transport.unregisterProducer = lambda: None
        moved.dataReceived(frame(0, b"\x41", fin=True))
        self.assertEqual(moved.messages, [])
        [(_, _, opcode, payload)] = frames(moved.transport.value())
        self.assertEqual((opcode, payload[:2]), (8, struct.pack("!H", 1007)))

    def test_outboundMessageInProgress(self) -> None:
        """
        A message the incumbent was sending with the streaming API (a frame
        half written) is finished by the successor: the client sees one
        correct message.
        """
        proto, transport = self.connect()
        proto.beginMessage(isBinary=True)
        proto.beginMessageFrame(6)
        proto.sendMessageFrameData(b"abc")
        moved = self.move(proto)
        moved.sendMessageFrameData(b"def")
        moved.beginMessageFrame(2)
        moved.sendMessageFrameData(b"gh")
        moved.endMessage()
        sent = frames(transport.value() + moved.transport.value())
        self.assertEqual(sent, [(False, 0, 2, b"abcdef"), (False, 0, 0, b"gh"), (True, 0, 0, b"")])

    def test_handshakeOutcome(self) -> None:
        """
        The negotiated subprotocol, the request and the peer move; the
        successor's factory counts the connection, and its application
        state (the client list) is merged in.
        """
        self.old.protocols = ["chat", "superchat"]
        proto, _ = self.connect(extra=b"Sec-WebSocket-Protocol: superchat\r\n")
        self.assertEqual(proto.websocket_protocol_in_use, "superchat")
        moved = self.move(proto)
        self.assertEqual(moved.websocket_protocol_in_use, "superchat")
        self.assertEqual(moved.http_request_path, "/")
        self.assertEqual(moved.peer, proto.peer)
        self.assertIs(moved.factory, self.new)
        self.assertEqual(self.new.countConnections, 1)
        self.assertEqual(self.new.clients, [moved])
        self.assertEqual(moved.transport_details.peer, proto.transport_details.peer)
        moved.dataReceived(frame(1, b"echo:hi"))
        self.assertEqual(frames(moved.transport.value()), [(True, 0, 1, b"hi")])

    def test_configFromTheSuccessor(self) -> None:
        """
        Configuration the connection took from its factory is the
        successor's factory's after the move; one the application set on
        the connection itself moves.
        """
        self.new.setProtocolOptions(maxMessagePayloadSize=4, autoPingInterval=7)
        proto, _ = self.connect()
        proto.failByDrop = False
        moved = self.move(proto)
        self.assertEqual((moved.maxMessagePayloadSize, moved.autoPingInterval), (4, 7))
        self.assertIs(moved.failByDrop, False)
        self.assertIs(moved.perMessageCompressionAccept, self.new.perMessageCompressionAccept)


class DeclineTests(_Case):
    """
    What cannot move declines, with a reason; what passes by itself is busy.
    """

    def adapter(self) -> Any:
        return self.registry.adapterFor(Recorder)

    def test_openingHandshake(self) -> None:
        """
        A connection still in its opening handshake is busy.
        """
        proto = self.old.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        proto.makeConnection(StringTransport())
        proto.dataReceived(_request()[:20])
        self.assertEqual(self.adapter().movable(proto), "the opening handshake is in progress")
        self.assertTrue(self.adapter().busy(proto))

    def test_closingHandshake(self) -> None:
        """
        A connection in its closing handshake is busy, and cannot be
        captured.
        """
        proto, _ = self.connect()
        proto.sendClose(1000)
        self.assertEqual(self.adapter().movable(proto), "the closing handshake is in progress")
        self.assertTrue(self.adapter().busy(proto))
        self.assertRaises(Unadaptable, self.move, proto)

    def test_idleMoves(self) -> None:
        """
        An open, idle connection may move and is not busy.
        """
        proto, _ = self.connect()
        self.assertIsNone(self.adapter().movable(proto))
        self.assertFalse(self.adapter().busy(proto))


class DeflateTests(_Case):
    """
    permessage-deflate moves only when no compression context carries over.
    """

    def deflate(self, contextTakeover: bool) -> tuple[Any, StringTransport]:
        def accept(offers: list[Any]) -> Any:
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(
                        offer,
                        request_no_context_takeover=not contextTakeover,
                        no_context_takeover=not contextTakeover,
                    )
            return None

        for f in (self.old, self.new):
            f.setProtocolOptions(perMessageCompressionAccept=accept)
        extra = b"Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        return self.connect(extra=extra)

    def compressed(self, text: bytes) -> bytes:
        import zlib

        c = zlib.compressobj(wbits=-15)
        return frame(1, (c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=4)

    def test_noContextTakeoverMoves(self) -> None:
        """
        With no context takeover both ways, a connection that has sent and
        received compressed messages moves, and goes on compressing.
        """
        proto, _ = self.deflate(contextTakeover=False)
        proto.dataReceived(self.compressed(b"echo:one"))
        self.assertEqual(proto.messages, [(b"echo:one", False)])
        moved = self.move(proto)
        self.assertIsNot(moved._perMessageCompress, proto._perMessageCompress)
        self.assertEqual(moved.websocket_extensions_in_use, [moved._perMessageCompress])
        moved.dataReceived(self.compressed(b"echo:two"))
        self.assertEqual(moved.messages, [(b"echo:one", False), (b"echo:two", False)])
        [(fin, rsv, opcode, payload)] = frames(moved.transport.value())
        import zlib

        self.assertEqual((fin, rsv, opcode), (True, 4, 1))
        self.assertEqual(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"), b"two")

    def test_contextTakeoverDeclines(self) -> None:
        """
        A server compression context that carries over declines once a
        message has been compressed; before that, the connection moves.
        """
        proto, _ = self.deflate(contextTakeover=True)
        adapter = self.registry.adapterFor(Recorder)
        self.assertIsNone(adapter.movable(proto))
        proto.sendMessage(b"compressed")
        self.assertEqual(adapter.movable(proto), "permessage-deflate context cannot move")
        self.assertFalse(adapter.busy(proto))


class AutoPingTests(_Case):
    """
    Automatic pings: a pending ping's pong is matched after the move, and
    the timers fire in the successor only, at their deadlines.
    """

    def setUp(self) -> None:
        _Case.setUp(self)
        self.old = self.factory(autoPingInterval=10, autoPingTimeout=5)
        self.new = self.factory(autoPingInterval=10, autoPingTimeout=5)

    def test_pongMatchedAfterTheMove(self) -> None:
        """
        A ping sent before the move gets its pong matched by the successor,
        which cancels the timeout and schedules the next ping; the
        incumbent's timers are suspended by the capture's freeze (they are
        reactor calls the capture met).
        """
        proto, transport = self.connect()
        self.clock.advance(11)
        [(_, _, opcode, payload)] = frames(transport.value())
        self.assertEqual((opcode, payload), (9, proto.autoPingPending))
        moved, _, hooks = self.moveWithTimers(proto)
        hooks.gate.open()
        self.assertEqual(moved.autoPingPending, payload)
        self.assertTrue(moved.autoPingTimeoutCall.active())
        moved.dataReceived(frame(10, payload))
        self.assertEqual(moved.pongs, [payload])
        self.assertIsNone(moved.autoPingTimeoutCall)
        self.clock.advance(30)
        self.assertEqual(moved.state, moved.STATE_OPEN)
        self.assertEqual(proto.pongs, [])

    def test_timeoutFiresInTheSuccessor(self) -> None:
        """
        With no pong, the pong timeout fires at its deadline, in the
        successor, and drops the connection.
        """
        proto, _ = self.connect()
        self.clock.advance(11)
        moved, transport, hooks = self.moveWithTimers(proto)
        hooks.gate.open()
        self.clock.advance(3)
        self.assertEqual(moved.state, moved.STATE_OPEN)
        self.clock.advance(4)
        self.assertEqual(moved.state, moved.STATE_CLOSED)
        self.assertTrue(transport.disconnecting)

    def test_nextPingAtItsTime(self) -> None:
        """
        The next automatic ping, due after the move, is sent by the successor
        (once, after the commit), and never by the incumbent.
        """
        proto, transport = self.connect()
        deadline = self.clock.seconds() + 10
        moved, newTransport, hooks = self.moveWithTimers(proto)
        call = moved.autoPingPendingCall
        self.assertAlmostEqual(call.getTime(), deadline, delta=1.0)
        self.clock.advance(11)
        self.assertEqual(newTransport.value(), b"")
        hooks.gate.open()
        self.assertEqual([f[2] for f in frames(newTransport.value())], [9])
        self.assertEqual(transport.value(), b"")

    def test_movesAgainBeforeItsTimersFire(self) -> None:
        """
        Timers restored by one takeover (calls through the successor's
        gate) move again at the next one, before they fire: the ping is
        sent once, by the last process, at its original time.
        """
        proto, transport = self.connect()
        deadline = proto.factory.reactor.seconds() + 10
        moved, second, hooks = self.moveWithTimers(proto)
        hooks.gate.open()
        third = self.factory(autoPingInterval=10, autoPingTimeout=5)
        again, last, hooks = self.moveWithTimers(moved, third)
        hooks.gate.open()
        self.assertAlmostEqual(again.autoPingPendingCall.getTime(), deadline, delta=1.0)
        self.clock.advance(11)
        self.assertEqual([f[2] for f in frames(last.value())], [9])
        self.assertEqual((transport.value(), second.value()), (b"", b""))


class WebResourceTests(_Case):
    """
    A WebSocket served by C{twisted.web} through autobahn's
    C{WebSocketResource}: its factory is not the port's (the C{Site} is),
    and is found in the successor's resource tree at the same path.
    """

    def site(self, factory: Any) -> server.Site:
        root = resource.Resource()
        api = resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"ws", abresource.WebSocketResource(factory))
        return server.Site(root, reactor=self.clock)

    def test_factoryFoundThroughTheSite(self) -> None:
        """
        A connection upgraded by a C{WebSocketResource} moves: its factory in
        the successor is the one the successor's C{Site} serves at the same
        path, with the incumbent's application state merged in.
        """
        oldSite, newSite = self.site(self.old), self.site(self.new)
        transport = _Transport()
        # What a TCP transport of the Site's port has.
        transport.server = type("Port", (), {"factory": oldSite})()
        channel = oldSite.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport.protocol = channel
        channel.makeConnection(transport)
        channel.dataReceived(_request(path=b"/api/ws"))
        proto = transport.protocol
        self.assertIsInstance(proto, Recorder)
        self.assertIn(b"101 Switching Protocols", transport.value())
        proto.dataReceived(frame(1, b"half", fin=False))
        moved = roundTrip(proto, self.registry, anchors={"factory:web": (oldSite, newSite)})
        self.assertIs(moved.factory, self.new)
        self.assertEqual(self.new.clients, [moved])
        self.assertEqual(self.new.countConnections, 1)
        moved.dataReceived(frame(0, b" and half"))
        self.assertEqual(moved.messages, [(b"half and half", False)])

    def test_siteBehindAWrappingFactory(self) -> None:
        """
        A C{Site} behind a wrapping factory (as TLS wraps it on an C{ssl:}
        port) is looked into too: the successor's is found the same way.
        """
        from twisted.protocols.policies import WrappingFactory

        oldSite, newSite = self.site(self.old), self.site(self.new)
        oldPort, newPort = WrappingFactory(oldSite), WrappingFactory(newSite)
        transport = _Transport()
        transport.server = type("Port", (), {"factory": oldPort})()
        channel = oldSite.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport.protocol = channel
        channel.makeConnection(transport)
        channel.dataReceived(_request(path=b"/api/ws"))
        moved = roundTrip(
            transport.protocol, self.registry, anchors={"factory:wss": (oldPort, newPort)}
        )
        self.assertIs(moved.factory, self.new)
        self.assertEqual(self.new.clients, [moved])

    def test_successorServesNoneThere(self) -> None:
        """
        If the successor's C{Site} serves no WebSocket at that path, the
        restore fails (and the takeover is rolled back).
        """
        from migrator.state._graph import GraphError

        oldSite = self.site(self.old)
        newSite = server.Site(resource.Resource(), reactor=self.clock)
        transport = _Transport()
        transport.server = type("Port", (), {"factory": oldSite})()
        channel = oldSite.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport.protocol = channel
        channel.makeConnection(transport)
        channel.dataReceived(_request(path=b"/api/ws"))
        self.assertRaises(
            GraphError,
            roundTrip,
            transport.protocol,
            self.registry,
            anchors={"factory:web": (oldSite, newSite)},
        )
