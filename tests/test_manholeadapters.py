# -*- test-case-name: tests.test_manholeadapters -*-
"""
Tests for L{migrator.adapters._manhole}: a real C{twistd manhole} telnet
stack (built by C{twisted.conch.manhole_tap.makeService}, unmodified) is
driven over a L{StringTransport} as a telnet client would drive it, its
protocol graph goes through L{migrator.testing.roundTrip} (or the real
capture and restore, over a real socket), and the restored stack goes on.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from typing import Any

from twisted.conch import manhole, manhole_tap, telnet
from twisted.conch.insults import insults
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection, releasePort
from migrator.adapters import defaultRegistry
from migrator.adapters._manhole import SSH_STAYS
from migrator.adapters.namespace._namespace import NotMoved
from migrator.state._capture import captureConnections
from migrator.state._graph import Unadaptable
from migrator.state._plan import DrainingAdapter
from migrator.state._restore import restoreConnections
from migrator.takeover._ports import ListenerRegistry
from migrator.testing import roundTrip

from .test_connections import _KEY, _Reactor, _waitReadable

IAC, SB, SE = b"\xff", b"\xfa", b"\xf0"
ENTER = b"\r\0"  # what a telnet client sends for Enter in character mode
UP, LEFT = b"\x1b[A", b"\x1b[D"
_ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z=>])")


def _text(data: bytes) -> str:
    """
    What a terminal shows of C{data}, roughly: escape sequences removed.
    """
    return _ESCAPES.sub(b"", data).decode("utf-8", "replace")


def _factory(case: SynchronousTestCase, users: bytes = b"admin:secret\n") -> Any:
    """
    The telnet factory of a C{twistd manhole} service (not listening).
    """
    # Not case.mktemp(): under pytest it would write into the checkout.
    fd, path = tempfile.mkstemp(prefix="migrator-passwd-")
    case.addCleanup(os.remove, path)
    with os.fdopen(fd, "wb") as f:
        f.write(users)
    service = manhole_tap.makeService(
        {"telnetPort": "tcp:0", "sshPort": None, "namespace": None, "passwd": path}
    )
    [telnetService] = list(service)
    return telnetService.factory


class _Session:
    """
    One telnet connection to a manhole factory, over a L{StringTransport}.
    The client's answers to the server's option negotiation are sent by
    the test, as a client would (L{answer}).
    """

    def __init__(self, factory: Any) -> None:
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def output(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def answer(self, sga: bool = True) -> None:
        """
        What a telnet client answers to the avatar's negotiation (DO
        LINEMODE, DO NAWS, DO SGA, WILL ECHO), and its window size.
        """
        self.send(IAC + telnet.WILL + telnet.LINEMODE)
        self.send(IAC + telnet.WILL + telnet.NAWS)
        self.send(IAC + SB + telnet.NAWS + b"\x00\x64\x00\x1e" + IAC + SE)
        if sga:
            self.send(IAC + telnet.WILL + telnet.SGA)
        self.send(IAC + telnet.DO + telnet.ECHO)

    def login(self, password: bytes = b"secret", sga: bool = True) -> None:
        self.send(b"admin\r\n")
        self.send(IAC + telnet.DO + telnet.ECHO)
        self.send(password + b"\r\n")
        self.send(IAC + telnet.DONT + telnet.ECHO)
        self.answer(sga)

    def lines(self, *lines: str) -> None:
        for line in lines:
            self.send(line.encode("utf-8") + ENTER)

    @property
    def manhole(self) -> Any:
        return self.protocol.protocol.protocol.terminalProtocol


def _restored(protocol: Any) -> _Session:
    """
    A restored L{TelnetTransport} as a L{_Session} (its transport is the
    fresh L{StringTransport} L{roundTrip} gave it).
    """
    session = _Session.__new__(_Session)
    session.protocol = protocol
    session.transport = protocol.transport
    return session


TALK = [
    "import sys, os",
    'x = [1, 2, {"a": 3}]',
    'def greet(name): return "hello " + name',
    "",
    "class Point:",
    "    def __init__(self, x, y): self.x, self.y = x, y",
    "",
    "p = Point(1, 2)",
    "counter = 0",
    "counter += 1; counter",
]


class ManholeSessionTests(SynchronousTestCase):
    """
    A logged-in manhole session through capture and restore.
    """

    def setUp(self) -> None:
        self.old = _factory(self)
        self.new = _factory(self)
        self.registry = defaultRegistry()

    def move(self, value: Any) -> Any:
        """
        Round-trip C{value}, the incumbent's factory standing for the
        successor's.
        """
        return roundTrip(value, self.registry, anchors={"factory:telnet": (self.old, self.new)})

    def talk(self, half: str = "greet(") -> _Session:
        session = _Session(self.old)
        session.login()
        session.lines(*TALK)
        session.send(half.encode("utf-8"))
        session.output()
        return session

    def test_halfLineCompletes(self) -> None:
        """
        The line half typed before the move completes and runs after it,
        in the restored namespace: a session function, a session class and
        its instance, a module and a plain value are all there.
        """
        session = self.talk()
        moved = _restored(self.move(session.protocol))
        self.assertIsNot(moved.protocol, session.protocol)
        self.assertEqual(b"".join(moved.manhole.lineBuffer), b"greet(")
        moved.send(b'"you")' + ENTER)
        self.assertIn("'hello you'", _text(moved.output()))
        moved.lines("x, p.x, isinstance(p, Point), os.sep")
        self.assertIn("([1, 2, {'a': 3}], 1, True, '/')", _text(moved.output()))

    def test_noConnectionMadeNoRedraw(self) -> None:
        """
        The restored stack does not run C{connectionMade} anywhere: nothing
        is written (no login prompt, no terminal reset, no prompt) until
        the user types, and then only the echo of what was typed, as it
        would have been before the move.
        """
        session = self.talk()
        moved = _restored(self.move(session.protocol))
        self.assertEqual(moved.output(), b"")
        moved.send(b"1")
        # The colouring cannot tokenize "greet(1": the manhole echoes the
        # character alone, as it would have before the move.
        self.assertEqual(moved.output(), b"1")
        moved.send(b")")
        self.assertIn("greet(1)", _text(moved.output()))

    def test_historyRecall(self) -> None:
        """
        Up-arrow recalls the lines typed before the move, in order, and a
        recalled line runs in the restored namespace.
        """
        session = self.talk(half="")
        moved = _restored(self.move(session.protocol))
        moved.send(UP)
        self.assertEqual(b"".join(moved.manhole.lineBuffer), b"counter += 1; counter")
        moved.send(ENTER)
        self.assertRegex(_text(moved.output()), r"\n2\r*\n>>> $")
        moved.send(UP + UP)
        self.assertEqual(b"".join(moved.manhole.lineBuffer), b"counter += 1; counter")

    def test_pendingBlock(self) -> None:
        """
        A C{def} half entered (the interpreter's pending block) is finished
        after the move and defines its function there; the continuation
        prompt stays.
        """
        session = self.talk(half="")
        session.lines("def add(a, b):", "    c = a + b")
        session.output()
        moved = _restored(self.move(session.protocol))
        self.assertEqual(moved.manhole.interpreter.buffer, [b"def add(a, b):", b"    c = a + b"])
        self.assertTrue(moved.manhole.pn)
        moved.lines("    return c", "", "add(2, 3)")
        self.assertIn("\n5", _text(moved.output()))

    def test_terminalAndCursor(self) -> None:
        """
        The terminal size (from NAWS), the cursor position in the line and
        the insert mode move: a character typed after the move lands where
        the cursor was.
        """
        session = self.talk(half="")
        session.send(b"'abcd'" + LEFT + LEFT)
        moved = _restored(self.move(session.protocol))
        terminal = moved.manhole.terminal
        self.assertIsInstance(terminal, insults.ServerProtocol)
        self.assertEqual((moved.manhole.width, moved.manhole.height), (100, 30))
        self.assertEqual(moved.manhole.mode, "insert")
        self.assertEqual(moved.manhole.lineBufferIndex, 4)
        moved.send(b"X" + ENTER)
        self.assertIn("'abcXd'", _text(moved.output()))

    def test_negotiationState(self) -> None:
        """
        The telnet options move with their state; one still being
        negotiated (the client has not answered DO SGA yet) finishes after
        the move, without error.
        """
        session = _Session(self.old)
        session.login(sga=False)
        options = session.protocol.options
        self.assertTrue(options[telnet.SGA].him.negotiating)
        moved = _restored(self.move(session.protocol))
        restored = moved.protocol.options
        self.assertEqual(restored[telnet.ECHO].us.state, "yes")
        self.assertEqual(restored[telnet.NAWS].him.state, "yes")
        self.assertTrue(restored[telnet.SGA].him.negotiating)
        moved.send(IAC + telnet.WILL + telnet.SGA)
        self.assertEqual(restored[telnet.SGA].him.state, "yes")
        self.assertFalse(restored[telnet.SGA].him.negotiating)
        # Its negotiation map still reaches the restored avatar.
        moved.send(IAC + SB + telnet.NAWS + b"\x00\x50\x00\x18" + IAC + SE)
        self.assertEqual((moved.manhole.width, moved.manhole.height), (80, 24))

    def test_unmovableNameNotice(self) -> None:
        """
        A name whose value cannot move is bound to a placeholder, and the
        session is told, above its prompt and half-typed line (drawn again).
        """
        session = self.talk(half="")
        session.lines("g = (i for i in range(3))")
        session.send(b"x[")
        session.output()
        moved = _restored(self.move(session.protocol))
        shown = _text(moved.output())
        self.assertIn("[migrator] not moved: 'g'", shown)
        self.assertTrue(shown.endswith(">>> x["), shown)
        self.assertIsInstance(moved.manhole.namespace["g"], NotMoved)
        moved.send(b"0]" + ENTER)
        self.assertIn("\n1", _text(moved.output()))

    def test_severalSessions(self) -> None:
        """
        Sessions moved together keep their own namespaces.
        """
        one, two = _Session(self.old), _Session(self.old)
        for session, value in [(one, "'one'"), (two, "'two'")]:
            session.login()
            session.lines(f"mine = {value}")
        movedOne, movedTwo = map(_restored, self.move([one.protocol, two.protocol]))
        self.assertEqual(movedOne.manhole.namespace["mine"], "one")
        self.assertEqual(movedTwo.manhole.namespace["mine"], "two")
        self.assertIsNot(movedOne.manhole.namespace, movedTwo.manhole.namespace)

    def test_successorsConfiguration(self) -> None:
        """
        The restored transport and avatar take the successor's portal and
        realm arguments (used only by C{connectionMade}, which has run);
        the session's namespace starts from the successor's service
        namespace.
        """
        session = self.talk()
        moved = _restored(self.move(session.protocol))
        newPortal = self.new.protocol.portal
        self.assertIs(moved.protocol.protocolArgs[0], newPortal)
        bootstrap = moved.protocol.protocol
        self.assertIsInstance(bootstrap, telnet.TelnetBootstrapProtocol)
        self.assertIs(bootstrap.protocolArgs[-1], newPortal.realm.protocolArgs[-1])
        self.assertIs(moved.protocol.factory, self.new)

    def test_loginInProgress(self) -> None:
        """
        A session at its C{Password:} prompt moves, and the password is
        checked by the successor's portal (here: with another password
        file).
        """
        self.new = _factory(self, b"admin:changed\n")
        session = _Session(self.old)
        session.send(b"admin\r\n")
        session.send(IAC + telnet.DO + telnet.ECHO)
        self.assertIn(b"Password: ", session.output())
        moved = _restored(self.move(session.protocol))
        moved.send(b"changed\r\n")
        moved.send(IAC + telnet.DONT + telnet.ECHO)
        self.assertIsInstance(moved.protocol.protocol, telnet.TelnetBootstrapProtocol)
        moved.answer()
        self.assertIn(">>> ", _text(moved.output()))

    def test_checkingPasswordIsBusy(self) -> None:
        """
        While the password is being checked, the connection declines to
        move, and says it is busy (it will be idle soon).
        """
        session = _Session(self.old)
        session.send(b"admin\r\n")
        session.send(IAC + telnet.DO + telnet.ECHO)
        session.send(b"secret\r\n")
        adapter = self.registry.adapterFor(telnet.TelnetTransport)
        self.assertIn("logging in", adapter.movable(session.protocol))
        self.assertTrue(adapter.busy(session.protocol))
        session.send(IAC + telnet.DONT + telnet.ECHO)
        session.answer()
        self.assertIsNone(adapter.movable(session.protocol))
        self.assertFalse(adapter.busy(session.protocol))

    def test_cursorReportIsBusy(self) -> None:
        """
        A terminal waiting for the client's cursor position report makes
        the session busy; the answer makes it movable again.
        """
        session = self.talk(half="")
        adapter = self.registry.adapterFor(telnet.TelnetTransport)
        report = session.manhole.terminal.reportCursorPosition()
        self.assertIn("cursor position report", adapter.movable(session.protocol))
        self.assertTrue(adapter.busy(session.protocol))
        session.send(b"\x1b[5;10R")
        self.assertEqual(self.successResultOf(report), (9, 4))
        self.assertIsNone(adapter.movable(session.protocol))

    def test_pendingDeferredNotice(self) -> None:
        """
        A Deferred the session displayed and that has not fired cannot
        move: the session is told its result will not be shown, and the
        name bound to it is a placeholder.
        """
        session = self.talk(half="")
        session.lines("from twisted.internet.defer import Deferred", "d = Deferred()", "d")
        self.assertIn("<Deferred #0>", _text(session.output()))
        moved = _restored(self.move(session.protocol))
        shown = _text(moved.output())
        self.assertIn("the result of Deferred #0", shown)
        # Shown once, under the first name bound to it (the display's "_").
        self.assertIn("not moved: '_' was a twisted.internet.defer.Deferred", shown)
        self.assertIsInstance(moved.manhole.namespace["d"], NotMoved)
        self.assertIs(moved.manhole.namespace["d"], moved.manhole.namespace["_"])
        self.assertEqual(moved.manhole.interpreter.numDeferreds, 1)

    def test_registered(self) -> None:
        """
        Every process's default registry has the manhole adapters.
        """
        for cls in [
            telnet.TelnetTransport,
            telnet.AuthenticatingTelnetProtocol,
            telnet.TelnetBootstrapProtocol,
            insults.ServerProtocol,
            manhole.Manhole,
            manhole.ColoredManhole,
        ]:
            self.assertIsNotNone(self.registry.adapterFor(cls), cls)
            self.assertIs(
                self.registry.adapterNamed(self.registry.adapterFor(cls).typeName).cls, cls
            )


class SSHTests(SynchronousTestCase):
    """
    SSH manhole sessions stay with the incumbent.
    """

    def test_sshDeclines(self) -> None:
        """
        An SSH server transport declines to move, saying why, and refuses
        to be captured at all.
        """
        from twisted.conch.ssh.transport import SSHServerTransport

        adapter = defaultRegistry().adapterFor(SSHServerTransport)
        self.assertIsInstance(adapter, DrainingAdapter)
        transport = SSHServerTransport()
        self.assertEqual(adapter.movable(transport), SSH_STAYS)
        self.assertRaises(Unadaptable, adapter.capture, transport)


class RealHandoffTests(SynchronousTestCase):
    """
    The real capture and restore (L{captureConnections},
    L{restoreConnections}) of a manhole session on a real loopback
    connection: the session's notice is written after the commit only.
    """

    def setUp(self) -> None:
        self.sides = []
        for _ in range(2):
            reactor = _Reactor()
            ports = ListenerRegistry(reactor)
            ports.install()
            self.addCleanup(ports.uninstall)
            factory = _factory(self)
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(releasePort, port)
            self.sides.append((reactor, ports, factory, port))
        self.registry = defaultRegistry()

    def test_noticeAfterCommit(self) -> None:
        """
        Nothing is written to the restored connection before
        L{Restored.activate}; then the notice, then the prompt and the half
        line, and the session goes on.
        """
        reactor, ports, factory, port = self.sides[0]
        client = socket.create_connection(port.socket.getsockname(), timeout=5)
        self.addCleanup(client.close)
        _waitReadable(port.fileno())
        port.doRead()
        [transport] = list(ports.openConnections())
        self.addCleanup(releaseConnection, transport)
        session = _Session.__new__(_Session)
        session.protocol = transport.protocol
        session.login()
        session.lines("g = (i for i in range(3))", "y = 6")
        session.send(b"y *")
        captured = captureConnections(
            reactor, ports, self.registry, frozenset({_KEY}), frozenset(self.registry.typeNames())
        )
        self.assertEqual(captured.count, 1, captured.staying)
        reactor2, ports2, factory2, _ = self.sides[1]
        restored = restoreConnections(
            reactor2, ports2, self.registry, captured.payload, [os.dup(fd) for fd in captured.fds]
        )
        [moved] = restored.transports
        self.addCleanup(releaseConnection, moved)
        self.assertFalse(moved.dataBuffer or moved._tempDataBuffer)
        pending = captured.pendingBytes
        restored.activate()
        written = b"".join(moved._tempDataBuffer)
        self.assertIn(b"[migrator] not moved: 'g'", written)
        # After every byte the incumbent had not sent.
        self.assertGreaterEqual(written.index(b"[migrator]"), pending)
        self.assertTrue(_text(written).endswith(">>> y *"))
        self.assertGreater(pending, 0)
        self.assertIs(moved.protocol.factory, factory2)
        captured.release()
        moved.protocol.dataReceived(b" 7" + ENTER)
        self.assertIn(b"42", b"".join(moved._tempDataBuffer))
