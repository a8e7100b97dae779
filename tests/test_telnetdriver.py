# -*- test-case-name: tests.test_telnetdriver -*-
"""
Tests for L{migrator.demo._telnetdriver}'s pieces that need no process: escape
stripping, the transcript's screen emulator, and the fallback client's
telnet option handling (over a socket pair).
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from migrator.demo._telnetdriver import (
    DO,
    ECHO,
    IAC,
    NAWS,
    SB,
    SE,
    WILL,
    SocketTelnet,
    _Screen,
    stripEscapes,
)


class StripEscapesTests(SynchronousTestCase):
    """
    L{stripEscapes}.
    """

    def test_colorsAndMoves(self) -> None:
        """
        Colour, cursor-move, erase and reset sequences, NULs and bells go;
        text stays.
        """
        self.assertEqual(
            stripEscapes("\x1bc>>> \x1b[4h\x1b[1;33mos\x1b[0m\x1b[2K\x1b[7D.\0\a"), ">>> os."
        )


class ScreenTests(SynchronousTestCase):
    """
    L{_Screen}, the tiny terminal that turns the manhole's redraws into
    transcript lines.
    """

    def test_redrawnLine(self) -> None:
        """
        A line erased and drawn again with colours shows once, as typed.
        """
        screen = _Screen()
        screen.feed(">>> \x1b[1;33mo\x1b[0m\x1b[2K\x1b[5D>>> \x1b[1;33mos\x1b[0m\r\n(1, 2)\r\n>>> ")
        self.assertEqual(screen.text(), [">>> os", "(1, 2)", ">>>"])

    def test_resetGoesOnBelow(self) -> None:
        """
        A full reset (C{ESC c}) after the login prompts leaves them in the
        transcript and starts a new line.
        """
        screen = _Screen()
        screen.feed("Username: admin\r\nPassword: \x1bc>>> ")
        self.assertEqual(screen.text(), ["Username: admin", "Password:", ">>>"])

    def test_eraseToEnd(self) -> None:
        """
        Moving left and erasing to the end of the line truncates it.
        """
        screen = _Screen()
        screen.feed("abcdef\x1b[3D\x1b[K")
        self.assertEqual(screen.text(), ["abc"])


class SocketTelnetTests(SynchronousTestCase):
    """
    L{SocketTelnet}, the fallback client, against a socket pair.
    """

    def setUp(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.client = SocketTelnet("127.0.0.1", listener.getsockname()[1], timeout=5)
        self.addCleanup(self.client.close)
        self.server, _ = listener.accept()
        self.addCleanup(self.server.close)
        self.server.settimeout(5)

    def test_negotiation(self) -> None:
        """
        Asked to do NAWS, it agrees and sends its window size; offered
        server echo, it accepts and stops echoing locally; the text around
        the commands is shown.
        """
        self.server.sendall(b"Hi" + bytes([IAC, DO, NAWS, IAC, WILL, ECHO]) + b" there\r\n>>> ")
        self.client.expect(">>> ", timeout=5)
        self.assertEqual(self.client.screen, "Hi there\r\n>>> ")
        wanted = bytes([IAC, WILL, NAWS, IAC, SB, NAWS, 0, 100, 0, 30, IAC, SE, IAC, 253, ECHO])
        got = b""
        while len(got) < len(wanted):
            got += self.server.recv(100)
        self.assertEqual(got, wanted)
        self.client._lineMode = False
        self.client.type("1\r")
        self.assertEqual(self.server.recv(100), b"1\r\0")
        self.assertEqual(self.client.screen, "Hi there\r\n>>> ")
