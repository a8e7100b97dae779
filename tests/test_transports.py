# -*- test-case-name: tests.test_transports -*-
"""
Tests for L{migrator.state._transports}: restored transports built as
copies of the first one are what Twisted's constructor would have built.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import attachProtocol, serverTransport
from migrator.state._transports import ServerTransports


class _Protocol:
    """
    Stands for a restored protocol.
    """


class ServerTransportsTests(SynchronousTestCase):
    """
    L{ServerTransports.build} gives what
    L{migrator._twistedinternals.serverTransport} gives.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def socket(self) -> socket.socket:
        mine, peer = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(peer.close)
        mine.setblocking(False)
        return mine

    def assertSame(self, built: Any, constructed: Any) -> None:
        """
        C{built} has the attributes C{constructed} has, with equal values,
        and none of its lists is shared with another transport.
        """
        self.assertIs(type(built), type(constructed))
        self.assertEqual(sorted(vars(built)), sorted(vars(constructed)))
        self.assertIsInstance(built.protocol, _Protocol)
        for name, value in vars(constructed).items():
            if name in ("socket", "fileno", "protocol"):
                continue
            self.assertEqual(getattr(built, name), value, name)

    def check(self, peers: list[Any], unix: bool) -> None:
        builder = ServerTransports(self.reactor)
        built = []
        for i, peer in enumerate(peers):
            skt = self.socket()
            t = builder.build(skt, peer, None, i, unix)
            attachProtocol(t, _Protocol())
            constructed = serverTransport(self.socket(), peer, None, i, self.reactor, unix)
            attachProtocol(constructed, _Protocol())
            self.assertSame(t, constructed)
            self.assertIs(t.socket, skt)
            self.assertEqual(t.fileno(), skt.fileno())
            self.assertNotIn(t, self.reactor.getReaders())
            built.append(t)
        buffers = [id(t._tempDataBuffer) for t in built]
        self.assertEqual(len(set(buffers)), len(built))
        built[1].write(b"x")
        self.assertEqual(built[0]._tempDataBuffer, [])
        self.assertEqual(built[1]._tempDataBuffer, [b"x"])

    def test_tcp(self) -> None:
        """
        TCP transports (IPv4 and IPv6 peers, the address type included)
        after the first are copies with their own socket, peer, session
        number and buffers.
        """
        self.check([("127.0.0.1", 1000 + i) for i in range(3)], unix=False)
        self.check([("::1", 1000 + i, 0, 0) for i in range(3)], unix=False)

    def test_mixedAddresses(self) -> None:
        """
        An IPv6 peer after IPv4 ones gets what the constructor gives it
        (its own kind), not a copy of an IPv4 transport.
        """
        self.check([("127.0.0.1", 1), ("::1", 2, 0, 0), ("127.0.0.1", 3), ("::1", 4, 0, 0)], unix=False)

    def test_unix(self) -> None:
        """
        UNIX transports after the first are copies too.
        """
        self.check(["", "", ""], unix=True)

    def test_unknownValueConstructs(self) -> None:
        """
        A first transport whose dictionary holds a value that is neither
        the connection's own, an empty list, an atom, a class, the reactor
        nor the port is not copied: every transport is constructed.
        """
        builder = ServerTransports(self.reactor)
        t = serverTransport(self.socket(), ("127.0.0.1", 1), None, 1, self.reactor, False)
        self.assertIsNotNone(builder._learn(t, None))
        t.surprise = object()
        self.assertIsNone(builder._learn(t, None))
        t.surprise = [1]
        self.assertIsNone(builder._learn(t, None))
        builder._kinds[(False, 2, id(None))] = None
        second = builder.build(self.socket(), ("127.0.0.1", 2), None, 2, False)
        attachProtocol(second, _Protocol())
        constructed = serverTransport(self.socket(), ("127.0.0.1", 2), None, 2, self.reactor, False)
        attachProtocol(constructed, _Protocol())
        self.assertSame(second, constructed)
