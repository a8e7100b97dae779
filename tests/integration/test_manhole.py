# -*- test-case-name: tests.integration.test_manhole -*-
"""
A live telnet manhole session (C{twistd manhole}, unmodified, under
C{twistd migrate}) moves to the successor: no reconnect, no second login,
the namespace, the half-typed line and the history intact, in the same
Python and onto another one.

The client here is L{migrator.demo._telnetdriver.SocketTelnet}, a few lines of
Python speaking just enough telnet; the Debian C{telnet} client through a
pty is another test's business.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import time

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.demo._telnetdriver import ENTER, TIMEOUT, UP, SocketTelnet
from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

from .test_crosspython import otherPython

#: Logged when the manhole's telnet port listens.
TELNET_PORT = re.compile(r"ServerFactory starting on (?P<port>\d+)")


class ManholeTakeoverTests(TestCase):
    """
    Telnet manhole sessions through a takeover.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-manhole-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.control = os.path.join(self.work, "ctl")
        self.passwd = os.path.join(self.work, "users")
        with open(self.passwd, "w") as f:
            f.write("admin:secret\nother:word\n")

    def start(
        self, python: str | None = None, takeover: bool = False, extra: list[str] | None = None
    ) -> ServiceProcess:
        process = startMigrate(
            self.control,
            [
                "manhole",
                "--telnetPort",
                "tcp:0:interface=127.0.0.1",
                "--passwd",
                self.passwd,
                *(extra or []),
            ],
            takeover=takeover,
            python=python,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
        )
        self.addCleanup(process.stop)
        return process

    def connect(self, port: int) -> SocketTelnet:
        """
        A telnet session with the manhole on C{port}, closed at cleanup.
        """
        session = SocketTelnet("127.0.0.1", port)
        self.addCleanup(session.close)
        return session

    def populate(self, session: SocketTelnet) -> int:
        """
        The talk's steps: import, define, instantiate; then a counter (for
        the history check after the move).

        @return: the pid the session reports.
        """
        session.typeTalk()
        session.line("counter = 0")
        session.line("counter += 1; counter")
        session.type("print('pid', os.getpid())")
        session.enter()
        pid = int(session.expect(r"pid (\d+)\r*\n")[1])
        session.expect(">>> ")
        return pid

    def takeOver(
        self, incumbent: ServiceProcess, python: str | None = None
    ) -> tuple[ServiceProcess, float]:
        """
        Start a successor, wait until it serves and the incumbent handed
        off and exited.

        @return: the successor, and how long the takeover took.
        """
        started = time.monotonic()
        successor = self.start(python, takeover=True)
        successor.waitFor(READY, 90)
        incumbent.waitFor(HANDED_OFF, 60)
        elapsed = time.monotonic() - started
        self.assertEqual(incumbent.waitForExit(60), 0, incumbent.output()[-3000:])
        return successor, elapsed

    def check(self, session: SocketTelnet, pid: int, version: str) -> None:
        """
        After the move: the half line completes and runs, the names
        survive, the pid (and version) changed, history recalls a line
        typed before the move; no login prompt was shown again.
        """
        session.type('"you")')
        session.enter()
        session.expect(r"'hello you'")
        session.expect(">>> ")
        session.type(
            "x, greet('me'), p.x, isinstance(p, Point), os.getpid(), sys.version.split()[0]"
        )
        session.enter()
        shown = session.expect(r"\(\[1, 2, \{'a': 3\}\], 'hello me', 1, True, (\d+), '([0-9.]+)'\)")
        self.assertNotEqual(int(shown[1]), pid)
        self.assertEqual(shown[2], version)
        session.expect(">>> ")
        # Up four times: this line, the greeting, the pid line, the counter line.
        session.type(UP * 4 + ENTER)
        session.expect(r"\n2\r*\n>>> ")
        self.assertNotIn("Username:", session.screen.split("print('pid'")[-1])

    def test_sessionMoves(self) -> None:
        """
        A logged-in session, its namespace populated and half a line typed,
        moves to a successor of the same Python: the line completes there,
        every name survives, the pid changed, history recalls pre-move
        lines, and nobody is asked to log in again.
        """
        incumbent = self.start()
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(TELNET_PORT, 10)["port"])
        session = self.connect(port)
        session.login("admin", "secret")
        pid = self.populate(session)
        self.assertEqual(pid, incumbent.pid)
        session.type("greet(")
        session.expect("greet")
        _, elapsed = self.takeOver(incumbent)
        incumbent.waitFor(r"froze and sent 1 connection\(s\)", 5)
        self.check(session, pid, sys.version.split()[0])
        log.msg(f"same-Python manhole takeover: {elapsed:.2f}s")

    def test_severalSessions(self) -> None:
        """
        Two sessions (two users) each keep their own namespace through the
        move.
        """
        incumbent = self.start()
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(TELNET_PORT, 10)["port"])
        one, two = self.connect(port), self.connect(port)
        one.login("admin", "secret")
        two.login("other", "word")
        one.line("mine = 'one'")
        two.line("mine = 'two'")
        two.line("def twice(v): return v * 2", "... ")
        two.line("", ">>> ")
        one.type("mi")
        one.expect("mi")
        self.takeOver(incumbent)
        incumbent.waitFor(r"froze and sent 2 connection\(s\)", 5)
        one.type("ne, 'twice' in globals(), os.getpid() if 'os' in globals() else 0")
        one.enter()
        one.expect(r"\('one', False, 0\)")
        two.type("mine, twice(21)")
        two.enter()
        two.expect(r"\('two', 42\)")

    def test_otherPython(self) -> None:
        """
        The same session moves onto another Python (3.11 <-> 3.13), and
        back, without a reconnect.
        """
        other, otherVersion = otherPython()
        incumbent = self.start()
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(TELNET_PORT, 10)["port"])
        session = self.connect(port)
        session.login("admin", "secret")
        pid = self.populate(session)
        session.type("greet(")
        session.expect("greet")
        successor, there = self.takeOver(incumbent, other)
        self.check(session, pid, otherVersion)
        session.type("greet(")
        session.expect("greet")
        _, home = self.takeOver(successor)
        session.type('"back")')
        session.enter()
        session.expect(r"'hello back'")
        session.type("sys.version.split()[0], isinstance(p, Point), counter")
        session.enter()
        session.expect(re.escape(repr((sys.version.split()[0], True, 2))))
        log.msg(f"manhole takeover onto {otherVersion}: {there:.2f}s, back: {home:.2f}s")

    def test_sshSessionStays(self) -> None:
        """
        An SSH manhole connection cannot move: the takeover says so, the
        telnet session moves anyway, and the SSH connection stays with the
        incumbent, which exits once it has closed.
        """
        keys = os.path.join(self.work, "keys")
        os.mkdir(keys)
        incumbent = self.start(
            extra=[
                "--sshPort",
                "tcp:0:interface=127.0.0.1",
                "--sshKeyDir",
                keys,
                "--sshKeySize",
                "2048",
            ]
        )
        incumbent.waitFor(READY, 120)
        ports = [int(m) for m in re.findall(r"ServerFactory starting on (\d+)", incumbent.output())]
        sshPort = int(incumbent.waitFor(r"ConchFactory starting on (\d+)", 10)[1])
        telnetPort = [p for p in ports if p != sshPort][0]
        ssh = socket.create_connection(("127.0.0.1", sshPort), timeout=TIMEOUT)
        self.addCleanup(ssh.close)
        ssh.sendall(b"SSH-2.0-migratortest\r\n")
        self.assertTrue(ssh.recv(100).startswith(b"SSH-2.0-"))
        session = self.connect(telnetPort)
        session.login("admin", "secret")
        session.line("kept = 7")
        successor = self.start(
            takeover=True,
            extra=[
                "--sshPort",
                "tcp:0:interface=127.0.0.1",
                "--sshKeyDir",
                keys,
                "--sshKeySize",
                "2048",
            ],
        )
        successor.waitFor(READY, 120)
        incumbent.waitFor(HANDED_OFF, 60)
        incumbent.waitFor("SSH session cannot carry its encryption state", 5)
        session.type("kept * 6")
        session.enter()
        session.expect(r"\n42\r*\n")
        self.assertIsNone(incumbent.process.poll())
        ssh.close()
        self.assertEqual(incumbent.waitForExit(60), 0)
