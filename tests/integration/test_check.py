# -*- test-case-name: tests.integration.test_check -*-
"""
Safe by default when the new code is wrong: a successor's C{--check} that
fails rolls the takeover back under load without a failed request; one
that passes lets it commit; a takeover that would close a port the new
command line does not declare is refused unless the operator says
C{--close-undeclared-ports}.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys

from twisted.trial.unittest import TestCase

from migrator.testing import FAILED, HANDED_OFF, ServiceProcess, startMigrate

from ._support import (
    ABANDONED,
    ACCESS,
    BODY,
    EXIT_TIMEOUT,
    SITE_STARTING,
    START_TIMEOUT,
    Load,
    Workspace,
    assertAllOk,
    reportLoad,
    sitePort,
    startService,
    status,
    waitServing,
)

#: The check: fetch /status.html from the first address the successor
#: listens on, and compare it with the test's page.
CHECK = (
    shlex.quote(sys.executable)
    + " -c "
    + shlex.quote(
        "import os, sys, urllib.request\n"
        "address = os.environ['MIGRATOR_PORTS'].split()[0]\n"
        "body = urllib.request.urlopen(f'http://{address}/status.html', timeout=5).read()\n"
        f"sys.exit(0 if body == {BODY!r} else f'wrong page: {{body!r}}')\n"
    )
)


def web(path: str, listens: int = 1) -> list[str]:
    """
    The stock web server serving C{path} on C{listens} ephemeral loopback
    ports.
    """
    argv = ["web"]
    for _ in range(listens):
        argv += ["--listen", "tcp:0:interface=127.0.0.1"]
    return argv + ["--path", path]


class HealthCheckTests(TestCase):
    """
    C{--check} runs after the switch, against the successor, before the
    commit.
    """

    def setUp(self) -> None:
        self.workspace = Workspace(self)
        with open(os.path.join(self.workspace.www, "status.html"), "wb") as f:
            f.write(BODY)
        # The new code's document root: its index is there, its status
        # page is not (a typo in the new deployment).
        self.wrong = os.path.join(self.workspace.path, "www-new")
        os.mkdir(self.wrong)
        with open(os.path.join(self.wrong, "index.html"), "wb") as f:
            f.write(BODY)
        self.incumbent = startService(self, self.workspace, name="incumbent")
        waitServing(self.incumbent, 0)
        self.port = sitePort(self.incumbent)

    def successor(self, path: str, *options: str) -> ServiceProcess:
        process = startMigrate(
            self.workspace.control,
            web(path),
            takeover=True,
            migrateOptions=["--check", CHECK, *options],
            name="successor",
        )
        self.addCleanup(process.stop)
        return process

    def test_failingCheckRollsBackUnderLoad(self) -> None:
        """
        The check finds the successor serving the wrong page: the takeover
        rolls back at step C{check}, with the check's output in the
        message; under load, no request failed (those the successor
        accepted during the check were served by it to the end); the
        incumbent serves on as generation 0.
        """
        load = Load(self, self.workspace, self.port, rate=300.0)
        successor = self.successor(self.wrong)
        failed = successor.waitFor(FAILED, START_TIMEOUT)
        self.assertEqual(failed.group("step"), "check", failed.string)
        self.assertIn("the health check exited 1 after", failed.group("reason"))
        self.assertEqual(successor.waitForExit(EXIT_TIMEOUT), 1)
        output = successor.output()
        self.assertIn("HTTP Error 404: Not Found", output)
        self.assertIn("running the health check (at most 10 s)", output)
        # The check's request reached the successor.
        self.assertTrue(
            any(
                m and m.group("path") == "/status.html" and m.group("code") == "404"
                for m in map(ACCESS.search, successor.lines)
            ),
            output[-3000:],
        )
        abandoned = self.incumbent.waitFor(ABANDONED, EXIT_TIMEOUT)
        self.assertEqual(int(abandoned.group("pid")), successor.pid)
        self.assertIn("the health check exited 1", abandoned.group("reason"))
        now = status(self.workspace.control)
        self.assertEqual((now["pid"], now["generation"]), (self.incumbent.pid, 0))
        summary = load.finish()
        reportLoad(self, "failed check", summary)
        assertAllOk(self, summary, "a takeover rolled back by its check")

    def test_passingCheckCommits(self) -> None:
        """
        A check that passes lets the takeover commit; the log says so.
        """
        successor = self.successor(self.workspace.www, "--check-timeout", "20")
        waitServing(successor, 1)
        self.incumbent.waitFor(HANDED_OFF, EXIT_TIMEOUT)
        self.assertIn("the health check passed (exited 0 after", successor.output())
        self.assertIn("running the health check (at most 20 s)", successor.output())
        self.assertEqual(self.incumbent.waitForExit(EXIT_TIMEOUT), 0)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


class UndeclaredPortTests(TestCase):
    """
    A successor whose service declares fewer ports than the incumbent holds.
    """

    def setUp(self) -> None:
        self.workspace = Workspace(self)
        self.incumbent = startMigrate(
            self.workspace.control, web(self.workspace.www, 2), name="incumbent"
        )
        self.addCleanup(self.incumbent.stop)
        waitServing(self.incumbent, 0)
        self.ports = [
            int(self.incumbent.waitFor(SITE_STARTING, START_TIMEOUT, start=i)["port"])
            for i in (0, self.firstSite() + 1)
        ]

    def firstSite(self) -> int:
        return next(i for i, line in enumerate(self.incumbent.lines) if SITE_STARTING.search(line))

    def successor(self, *options: str) -> ServiceProcess:
        process = startMigrate(
            self.workspace.control,
            web(self.workspace.www, 1),
            takeover=True,
            migrateOptions=list(options),
            name="successor",
        )
        self.addCleanup(process.stop)
        return process

    def test_refusedWithoutFlag(self) -> None:
        """
        Without C{--close-undeclared-ports} the takeover is refused at
        C{prepared}, naming the port and the flag; both ports still serve.
        """
        successor = self.successor()
        failed = successor.waitFor(FAILED, START_TIMEOUT)
        self.assertEqual(failed.group("step"), "prepared")
        self.assertIn("tcp:0:127.0.0.1#1", failed.group("reason"))
        self.assertIn("--close-undeclared-ports", failed.group("reason"))
        self.assertEqual(successor.waitForExit(EXIT_TIMEOUT), 1)
        now = status(self.workspace.control)
        self.assertEqual((now["pid"], now["generation"]), (self.incumbent.pid, 0))
        self.assertEqual(len(now["ports"]), 2)
        self.assertEqual(now["last_takeover"]["outcome"], "abandoned")
        self.assertFalse(any(refused(p) for p in self.ports))

    def test_proceedsWithFlag(self) -> None:
        """
        With the flag the takeover commits and the undeclared port is
        closed.
        """
        successor = self.successor("--close-undeclared-ports")
        waitServing(successor, 1)
        self.assertIn("--close-undeclared-ports", successor.output())
        self.assertEqual(self.incumbent.waitForExit(EXIT_TIMEOUT), 0)
        self.assertEqual(len(status(self.workspace.control)["ports"]), 1)
        self.assertFalse(refused(self.ports[0]))
        self.assertTrue(refused(self.ports[1]))


