# -*- test-case-name: tests.integration.test_web_keepalive -*-
"""
C{twistd web} under migrate: idle HTTP/1.1 keep-alive connections move to
the successor at every takeover, and clients that reuse their connections
see neither an error nor a non-2xx answer.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import tempfile

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

from .apps.webpid import openGate

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
WRK_SCRIPT = os.path.join(APPS, "wrkcount.lua")
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes.*?(?P<staying>\d+) stay here"
)
LISTENING = re.compile(r"Site starting on (?P<port>\d+)")
WRKRESULT = re.compile(
    r"WRKRESULT requests=(?P<requests>\d+) responses=(?P<responses>\d+) "
    r"non2xx=(?P<non2xx>\d+) connect=(?P<connect>\d+) read=(?P<read>\d+) "
    r"write=(?P<write>\d+) status=(?P<status>\d+) timeout=(?P<timeout>\d+) "
    r"bytes=(?P<bytes>\d+)"
)
WAITED = re.compile(r"waited (?P<ms>[\d.]+) ms for busy connections; (?P<busy>\d+) still busy")
WAITING = re.compile(r"waiting up to (?P<bound>[\d.]+) s for (?P<busy>\d+) busy connection\(s\)")
#: Generous per-step bound for a noisy 2-core machine.
STEP = 60.0

_log = Logger()


class _WebService:
    """
    Starts C{twistd web} under migrate (and its successors) for one test.
    """

    def __init__(self, test: TestCase, web: list[str], migrate: tuple[str, ...] = ()) -> None:
        self.test = test
        self.migrate = ["--drain-timeout", "30", *migrate]
        self.work = tempfile.mkdtemp(prefix="migrator-web-")
        test.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")
        self.web = web

    def start(self, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["web", "--listen", "tcp:0:interface=127.0.0.1", *self.web],
            takeover=takeover,
            migrateOptions=self.migrate,
            cwd=self.work,
        )
        self.test.addCleanup(process.stop)
        return process


class KeepAliveConnectionTests(TestCase):
    """
    One keep-alive connection, used between takeovers.
    """

    def test_sameSocketAcrossTakeovers(self) -> None:
        """
        A client keeps one HTTP/1.1 connection open across five takeovers
        and sends a request on it after each: every answer comes from the
        process serving at that moment (a different pid each time), on the
        same socket, and each incumbent logged that it froze and sent that
        one connection, with nothing left behind, then exited.
        """
        web = _WebService(self, ["--class", "tests.integration.apps.webpid.PidResource"])
        incumbent = web.start()
        pid = int(incumbent.waitFor(READY, STEP)["pid"])
        port = int(incumbent.waitFor(LISTENING, STEP)["port"])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=STEP)
        # Never reconnect behind the test's back.
        connection.auto_open = 0
        connection.connect()
        self.addCleanup(connection.close)
        sock = connection.sock
        local = sock.getsockname()

        def ask() -> int:
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            self.assertEqual(response.status, 200)
            self.assertIs(connection.sock, sock)
            return int(body)

        seen = [ask()]
        self.assertEqual(seen, [pid])
        for n in range(1, 6):
            successor = web.start(takeover=True)
            ready = successor.waitFor(READY, STEP)
            self.assertEqual(int(ready["generation"]), n)
            froze = incumbent.waitFor(FROZE, STEP)
            self.assertEqual((int(froze["count"]), int(froze["staying"])), (1, 0), froze.group(0))
            incumbent.waitFor(HANDED_OFF, STEP)
            self.assertEqual(incumbent.waitForExit(STEP), 0)
            incumbent = successor
            seen.append(ask())
            self.assertEqual(seen[-1], int(ready["pid"]))
        self.assertEqual(len(set(seen)), 6)
        self.assertEqual(sock.getsockname(), local)


class BusyChannelTests(TestCase):
    """
    A channel with a request in progress is waited for, a bounded time: it
    moves if its answer is done in time, else it stays and drains.
    """

    def start(self, takeoverTimeout: int) -> None:
        """
        Start the incumbent; its wait for busy channels is bounded by a
        third of C{takeoverTimeout} (at most 5 s).
        """
        self.web = _WebService(
            self,
            ["--class", "tests.integration.apps.webpid.PidResource"],
            migrate=("--takeover-timeout", str(takeoverTimeout)),
        )
        self.incumbent = self.web.start()
        self.pid = int(self.incumbent.waitFor(READY, STEP)["pid"])
        self.port = int(self.incumbent.waitFor(LISTENING, STEP)["port"])

    def connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=STEP)
        connection.auto_open = 0
        connection.connect()
        self.addCleanup(connection.close)
        return connection

    def answer(self, connection: http.client.HTTPConnection) -> int:
        response = connection.getresponse()
        body = response.read()
        self.assertEqual(response.status, 200)
        return int(body)

    def ask(self, connection: http.client.HTTPConnection, path: str = "/") -> int:
        connection.request("GET", path)
        return self.answer(connection)

    def hold(self, connection: http.client.HTTPConnection, gate: str) -> None:
        """
        Send a request on C{connection} that the incumbent holds until the
        test opens C{gate}, and wait until it does hold it.
        """
        connection.request("GET", f"/?gate={gate}")
        self.incumbent.waitFor(rf"WEBPID holding {gate}\b", STEP)

    def test_answeredInTimeMoves(self) -> None:
        """
        A request in progress when the takeover starts is waited for (idle
        channels meanwhile read nothing); once it is answered, within the
        bound, both connections move: the answer came from the incumbent,
        the next ones from the successor.

        The request is held by a gate the test opens once the incumbent
        says it waits for one busy connection: no delay has to outlast the
        successor's start.  (The bound here is 5 s; the test opens the
        gate as soon as it reads that line.)
        """
        self.start(takeoverTimeout=30)
        busy, idle = self.connect(), self.connect()
        self.assertEqual(self.ask(idle), self.pid)
        self.hold(busy, "answered")
        successor = self.web.start(takeover=True)
        waiting = self.incumbent.waitFor(WAITING, STEP)
        self.assertEqual(int(waiting["busy"]), 1, waiting.group(0))
        openGate(self.web.work, "answered")
        successorPid = int(successor.waitFor(READY, STEP)["pid"])
        waited = self.incumbent.waitFor(WAITED, STEP)
        self.assertEqual(int(waited["busy"]), 0)
        froze = self.incumbent.waitFor(FROZE, STEP)
        self.assertEqual((int(froze["count"]), int(froze["staying"])), (2, 0), froze.group(0))
        self.assertEqual(self.answer(busy), self.pid)
        self.assertEqual(self.incumbent.waitForExit(STEP), 0)
        self.assertEqual([self.ask(busy), self.ask(idle)], [successorPid] * 2)

    def test_pastTheBoundStaysAndDrains(self) -> None:
        """
        A request still in progress when the bound is reached stays with
        the incumbent (which says why), is answered there, and the
        incumbent exits once that connection closes; the idle connection
        moved meanwhile.

        The request is held by a gate the test opens only after the
        handoff, so it is still in progress however long the bound (2 s,
        by the incumbent's own clock) and the takeover take.
        """
        self.start(takeoverTimeout=6)
        busy, idle = self.connect(), self.connect()
        self.assertEqual(self.ask(idle), self.pid)
        self.hold(busy, "past")
        successor = self.web.start(takeover=True)
        successorPid = int(successor.waitFor(READY, STEP)["pid"])
        waited = self.incumbent.waitFor(WAITED, STEP)
        self.assertEqual(int(waited["busy"]), 1)
        # The incumbent's own measure of a wait that only the bound ended
        # (the gate was closed throughout): a slow machine can only make
        # it longer.
        self.assertGreaterEqual(float(waited["ms"]), 2000)
        froze = self.incumbent.waitFor(FROZE, STEP)
        self.assertEqual((int(froze["count"]), int(froze["staying"])), (1, 1), froze.group(0))
        self.assertIn("_GenericHTTPChannelProtocol: a request is in progress", froze.string)
        self.assertEqual(self.ask(idle), successorPid)
        self.incumbent.waitFor(HANDED_OFF, STEP)
        self.assertIsNone(self.incumbent.process.poll())
        openGate(self.web.work, "past")
        self.assertEqual(self.answer(busy), self.pid)
        # Still the incumbent's, which serves it until the client leaves.
        self.assertEqual(self.ask(busy), self.pid)
        self.assertIsNone(self.incumbent.process.poll())
        busy.close()
        self.incumbent.waitFor(r"all connections drained; exiting", STEP)
        self.assertEqual(self.incumbent.waitForExit(STEP), 0)


class WrkTests(TestCase):
    """
    C{wrk}, which reuses its HTTP/1.1 connections, hammers C{twistd web}
    through repeated takeovers.
    """

    def setUp(self) -> None:
        self.wrk = shutil.which("wrk")
        if self.wrk is None:
            # ab -k is no substitute: it speaks HTTP/1.0, whose keep-alive
            # twisted.web does not implement, so it never reuses a
            # connection ("Keep-Alive requests: 0").
            raise self.skipTest("wrk is not installed (apt-get install wrk)")

    def test_wrkAcrossTenTakeovers(self) -> None:
        """
        C{wrk -c 10} runs through ten takeovers of C{twistd web --path}:
        every takeover froze and sent all ten connections and left none
        behind, every incumbent exited, and C{wrk} saw no socket error
        (connect, read, write, timeout) and no answer other than 2xx.
        """
        web = _WebService(self, ["--path", ""])
        root = os.path.join(web.work, "www")
        os.mkdir(root)
        with open(os.path.join(root, "index.html"), "wb") as f:
            f.write(b"<p>migrator keep-alive test</p>\n" * 8)
        web.web = ["--path", root]
        incumbent = web.start()
        incumbent.waitFor(READY, STEP)
        port = int(incumbent.waitFor(LISTENING, STEP)["port"])
        client = ServiceProcess(
            [
                self.wrk,
                "-t",
                "2",
                "-c",
                "10",
                "-d",
                "300s",
                # A takeover is a pause for the client, never an error; the
                # bound only has to cover a slow machine.
                "--timeout",
                "20s",
                "-s",
                WRK_SCRIPT,
                f"http://127.0.0.1:{port}/index.html",
            ],
            env=childEnvironment(),
            name="wrk",
        )
        self.addCleanup(client.stop)
        client.waitFor(r"WRK THREAD READY 1", STEP)
        client.waitFor(r"WRK THREAD READY 2", STEP)
        takeovers = 10
        moved = []
        waits = []
        for n in range(1, takeovers + 1):
            successor = web.start(takeover=True)
            self.assertEqual(int(successor.waitFor(READY, STEP)["generation"]), n)
            froze = incumbent.waitFor(FROZE, STEP)
            moved.append((int(froze["count"]), int(froze["staying"])))
            incumbent.waitFor(HANDED_OFF, STEP)
            self.assertEqual(incumbent.waitForExit(STEP), 0)
            waits.extend(float(m["ms"]) for m in WAITED.finditer(incumbent.output()))
            incumbent = successor
        client.signal(signal.SIGINT)
        self.assertEqual(client.waitForExit(STEP), 0)
        result = {k: int(v) for k, v in client.waitFor(WRKRESULT, 5).groupdict().items()}
        self.assertEqual(moved, [(10, 0)] * takeovers)
        self.assertEqual(
            {k: result[k] for k in ("connect", "read", "write", "timeout", "status", "non2xx")},
            dict.fromkeys(("connect", "read", "write", "timeout", "status", "non2xx"), 0),
            client.output()[-3000:],
        )
        self.assertGreater(result["responses"], 1000)
        _log.info(
            "wrk through {takeovers} takeovers: {result}; moved/staying per "
            "takeover {moved}; waited for busy channels (ms): {waits}",
            takeovers=takeovers,
            result=result,
            moved=moved,
            waits=waits,
        )
