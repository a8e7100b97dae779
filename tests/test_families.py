# -*- test-case-name: tests.test_families -*-
"""
The buffered protocol families move with the bytes they have received but
not parsed yet, under the default adapter rule, and come back as instances
of the successor's classes without C{connectionMade}; and the adapters of
C{docs/adapters.md}'s worked example do what the page says.  (The page
quotes these tests: adapter authors' tests look like them.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.protocols import basic
from twisted.trial.unittest import SynchronousTestCase

from migrator.adapters import defaultRegistry
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.testing import roundTrip
from tests.integration.apps import numbered


class _Recording:
    """
    Mixed into each family: counts C{connectionMade} and records every
    parsed message.
    """

    made = 0

    def connectionMade(self) -> None:
        type(self).made += 1
        self.received: list[bytes] = []

    def _got(self, message: bytes) -> None:
        self.received.append(message)


class Lines(_Recording, basic.LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        self._got(line)
        self.sendLine(b"ack " + line)


class OnlyLines(_Recording, basic.LineOnlyReceiver):
    def lineReceived(self, line: bytes) -> None:
        self._got(line)


class Int8s(_Recording, basic.Int8StringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self._got(string)


class Int16s(_Recording, basic.Int16StringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self._got(string)


class Int32s(_Recording, basic.Int32StringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self._got(string)


class Netstrings(_Recording, basic.NetstringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self._got(string)


def _frames(cls: type) -> tuple[bytes, bytes]:
    """
    Two messages, C{b"first"} and C{b"second message"}, framed for C{cls}.
    """
    if issubclass(cls, (basic.LineReceiver, basic.LineOnlyReceiver)):
        return b"first\r\n", b"second message\r\n"
    if issubclass(cls, basic.NetstringReceiver):
        return b"5:first,", b"14:second message,"
    prefix = {Int8s: 1, Int16s: 2, Int32s: 4}[cls]

    def frame(body: bytes) -> bytes:
        return len(body).to_bytes(prefix, "big") + body

    return frame(b"first"), frame(b"second message")


class FamiliesTests(SynchronousTestCase):
    """
    Each family, stopped in the middle of a message, resumes it after the
    move.
    """

    def check(self, cls: type) -> None:
        registry = defaultRegistry()
        registry.registerInstance(cls)
        protocol = cls()
        protocol.makeConnection(StringTransport())
        first, second = _frames(cls)
        cut = len(second) // 2
        protocol.dataReceived(first + second[:cut])
        self.assertEqual(protocol.received, [b"first"])
        made = cls.made

        restored = roundTrip(protocol, registry)
        self.assertIsInstance(restored, cls)
        self.assertIsNot(restored, protocol)
        self.assertEqual(cls.made, made, "connectionMade ran again")
        self.assertIsNot(restored.transport, protocol.transport)
        self.assertIsInstance(restored.transport, StringTransport)

        restored.dataReceived(second[cut:])
        self.assertEqual(restored.received, [b"first", b"second message"])
        # The incumbent's copy is untouched.
        self.assertEqual(protocol.received, [b"first"])

    def test_lineReceiver(self) -> None:
        """
        L{basic.LineReceiver}: the half line in C{_buffer} moves, and the
        restored protocol writes to its new transport.
        """
        self.check(Lines)

    def test_lineReceiverRawMode(self) -> None:
        """
        A L{basic.LineReceiver} in raw mode stays in raw mode.
        """
        registry = AdapterRegistry()
        registry.registerInstance(Lines)
        protocol = Lines()
        protocol.makeConnection(StringTransport())
        protocol.setRawMode()
        restored = roundTrip(protocol, registry)
        self.assertFalse(restored.line_mode)

    def test_lineOnlyReceiver(self) -> None:
        """
        L{basic.LineOnlyReceiver}.
        """
        self.check(OnlyLines)

    def test_int8(self) -> None:
        """
        L{basic.Int8StringReceiver}.
        """
        self.check(Int8s)

    def test_int16(self) -> None:
        """
        L{basic.Int16StringReceiver}.
        """
        self.check(Int16s)

    def test_int32(self) -> None:
        """
        L{basic.Int32StringReceiver}.
        """
        self.check(Int32s)

    def test_netstring(self) -> None:
        """
        L{basic.NetstringReceiver}, stopped in the middle of a payload (its
        parser state lives in the instance dictionary).
        """
        self.check(Netstrings)

    def test_newClassInSuccessor(self) -> None:
        """
        The successor restores the state as an instance of I{its} class
        registered under the same type name: new code, same state.
        """

        class NewLines(Lines):
            def lineReceived(self, line: bytes) -> None:
                self._got(line.upper())

        old = AdapterRegistry()
        old.register(InstanceAdapter(Lines, typeName="app.Lines"))
        new = AdapterRegistry()
        new.register(InstanceAdapter(NewLines, typeName="app.Lines"))
        protocol = Lines()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"one\r\ntw")
        restored: Any = roundTrip(protocol, old, restoreWith=new)
        self.assertIsInstance(restored, NewLines)
        restored.dataReceived(b"o\r\n")
        self.assertEqual(restored.received, [b"one", b"TWO"])

    def test_anchoredFactory(self) -> None:
        """
        A protocol's factory maps onto the successor's own factory, given
        as an anchor; two protocols sharing it, and a list in it, still
        share them.
        """

        class Factory:
            pass

        registry = AdapterRegistry()
        registry.registerInstance(Lines)
        registry.registerFactory(Factory)
        old, new = Factory(), Factory()
        old.members = []
        new.members = []
        a, b = Lines(), Lines()
        for p in (a, b):
            p.factory = old
            p.makeConnection(StringTransport())
            old.members.append(p)
        ra, rb = roundTrip([a, b], registry, anchors={"factory": (old, new)})
        self.assertIs(ra.factory, new)
        self.assertIs(rb.factory, new)
        self.assertEqual(new.members, [ra, rb])
        self.assertIsNot(ra.transport, rb.transport)


class _Socket:
    """
    Stands in for a transport's socket: C{NumberedLine.connectionMade}
    sets an option on it.
    """

    def setsockopt(self, *args: object) -> None:
        pass


class WorkedExampleTests(SynchronousTestCase):
    """
    The adapters of C{docs/adapters.md}'s worked example, the numbered line
    service (C{tests/integration/apps/numbered.py}), in one process.
    """

    def test_halfLineAndSharedState(self) -> None:
        """
        A C{NumberedLine} moves with its half-received line, joins the
        successor's factory with the factory's shared state, and
        C{connectionMade} does not run again.
        """
        registry = AdapterRegistry()
        numbered.registerAdapters(registry)
        old, new = numbered.NumberedFactory(), numbered.NumberedFactory()
        protocol: Any = old.buildProtocol(None)
        transport: Any = StringTransport()
        transport.socket = _Socket()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"1 hello\r\n2 wor")

        restored = roundTrip(protocol, registry, anchors={"factory": (old, new)})

        self.assertIs(restored.factory, new)
        self.assertEqual(new.clients, [restored])
        self.assertEqual((new.made, new.shared), (1, {"lines": 1}))
        restored.dataReceived(b"ld\r\n")
        self.assertEqual(restored.transport.value(), b"2 dlrow " + numbered.PAD + b"\r\n")
