# -*- test-case-name: tests.integration.test_telnet -*-
"""
The talk's demonstration with the real Debian C{telnet} client on a
pseudo-terminal (L{migrator.demo._telnetdriver.PtyTelnet}): a person's telnet
session in C{twistd manhole}, under C{twistd migrate}, goes on through a
takeover with its namespace, its half-typed line and its history, in a
new process (of the same Python, and of another one).

Skipped, saying why, where there is no C{telnet} program (C{.ci/run}
installs Debian's) or, for the second test, no other Python.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time

from twisted.python import log
from twisted.trial.unittest import SkipTest, TestCase

from migrator.demo._telnetdriver import UP, PtyTelnet, TelnetDriver, telnetProgram
from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

from .test_crosspython import otherPython

#: Logged when the manhole's telnet port listens.
TELNET_PORT = re.compile(r"ServerFactory starting on (?P<port>\d+)")
#: What C{os.getpid(), sys.version} shows.
PID_VERSION = r"\((\d+), '([0-9.]+)[^']*'\)"


class TelnetTakeoverTests(TestCase):
    """
    A real telnet client's session through takeovers.
    """

    def setUp(self) -> None:
        program = telnetProgram()
        if program is None:
            raise SkipTest("no telnet program on PATH (Debian: apt-get install telnet)")
        self.program = program
        self.work = tempfile.mkdtemp(prefix="migrator-telnet-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.control = os.path.join(self.work, "ctl")
        self.passwd = os.path.join(self.work, "users")
        with open(self.passwd, "w") as f:
            f.write("admin:secret\n")

    def start(self, python: str | None = None, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            [
                "manhole",
                "--telnetPort",
                "tcp:0:interface=127.0.0.1",
                "--passwd",
                self.passwd,
            ],
            takeover=takeover,
            python=python,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
        )
        self.addCleanup(process.stop)
        return process

    def session(self, port: int) -> TelnetDriver:
        session = PtyTelnet(self.program, "127.0.0.1", port)
        self.addCleanup(session.close)
        session.expect("Connected to")
        session.login("admin", "secret")
        return session

    def populate(self, session: TelnetDriver) -> tuple[int, str]:
        """
        The talk's steps, typed into telnet.

        @return: the pid and version the session reports.
        """
        session.typeTalk()
        session.line("counter = 41")
        session.line("counter += 1; counter")
        shown = session.line("os.getpid(), sys.version")
        match = re.search(PID_VERSION, shown)
        assert match is not None, shown
        return int(match[1]), match[2]

    def takeOver(self, incumbent: ServiceProcess, python: str | None = None) -> float:
        """
        Start a successor; wait until it serves and the incumbent has
        handed off and exited.

        @return: how long it took.
        """
        started = time.monotonic()
        successor = self.start(python, takeover=True)
        successor.waitFor(READY, 90)
        incumbent.waitFor(HANDED_OFF, 60)
        incumbent.waitFor(r"froze and sent 1 connection\(s\)", 5)
        self.assertEqual(incumbent.waitForExit(60), 0, incumbent.output()[-3000:])
        return time.monotonic() - started

    def journey(self, python: str | None) -> tuple[int, str, int, str]:
        """
        Start, log in, populate, type half a line, take over (onto
        C{python}), finish the line and check everything.

        @return: the pid and version before, and after.
        """
        incumbent = self.start()
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(TELNET_PORT, 10)["port"])
        session = self.session(port)
        pid, version = self.populate(session)
        self.assertEqual(pid, incumbent.pid)
        session.type('greet("yo')
        session.expect("yo")
        elapsed = self.takeOver(incumbent, python)
        session.type('u")')
        session.enter()
        session.expect(r"'hello you'\r*\n>>> ")
        shown = session.line('x, greet("me"), p.x, isinstance(p, Point)')
        self.assertIn("([1, 2, {'a': 3}], 'hello me', 1, True)", shown)
        # Up-arrow, through the pty and telnet, four lines back (past the
        # two lines typed since the move and the pid line): the counter
        # line typed before the move.
        session.type(UP * 4)
        session.expect(re.escape("counter += 1; counter"))
        session.enter()
        session.expect(r"\n43\r*\n>>> ")
        after = re.search(PID_VERSION, session.line("os.getpid(), sys.version"))
        assert after is not None
        self.assertNotIn("Username:", session.screen.split('greet("yo')[-1])
        log.msg(f"telnet session moved in {elapsed:.2f}s: {version} -> {after[2]}")
        return pid, version, int(after[1]), after[2]

    def test_samePython(self) -> None:
        """
        Through the real telnet client: a logged-in session with a
        populated namespace and half a line typed moves to a successor of
        the same Python; the line completes there, every name survives,
        up-arrow recalls and re-runs a line typed before the move, the pid
        changed, and nobody is asked to log in again.
        """
        before, version, after, newVersion = self.journey(None)
        self.assertNotEqual(after, before)
        self.assertEqual(newVersion, version)

    def test_otherPython(self) -> None:
        """
        The same, onto another Python (from C{MIGRATOR_TEST_OTHER_PYTHON}
        or C{PATH}): C{sys.version} shows the other version afterwards.
        """
        other, otherVersion = otherPython()
        before, version, after, newVersion = self.journey(other)
        self.assertNotEqual(after, before)
        self.assertEqual(version, sys.version.split()[0])
        self.assertEqual(newVersion, otherVersion)
