# -*- test-case-name: tests.integration.test_takeover -*-
"""
Successful takeovers of a real C{twistd web} under C{twistd migrate}, with
real processes and sockets: under load, one after another, with a second
successor knocking while one is in progress, and with connections that
outlive the handoff.
"""

from __future__ import annotations

import signal
import sys
import time

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.testing import FAILED, HANDED_OFF, ServiceProcess

from ._support import (
    ABANDONED,
    BODY,
    DRAIN_TIMEOUT,
    DRAINED,
    EXIT_TIMEOUT,
    FAULT,
    START_TIMEOUT,
    HTTPConnection,
    Load,
    Workspace,
    accessLines,
    assertAllOk,
    expectHandedOff,
    reportLoad,
    sitePort,
    slow,
    startService,
    status,
    takeOver,
    waitForAccess,
    waitServing,
)

#: How many takeovers in a row the chain test performs.
TAKEOVERS = 20
#: The rate of new connections the load client is asked for, per second.
#: What it achieves through the takeovers is a figure, not a check: see
#: benchmarks/chain.py.
RATE = 1200.0


@slow
class ChainedTakeoverTests(TestCase):
    """
    Twenty consecutive takeovers under a load of new connections.
    """

    def test_twentyTakeoversUnderLoad(self) -> None:
        """
        A load client opening new connections (each one complete HTTP
        request, 1,200 a second asked for) through 20 consecutive takeovers
        sees every request succeed: none refused, reset, timed out or
        otherwise failed, and every generation answered some of them.
        Every incumbent hands off to its successor and exits with code 0,
        and C{status} then reports generation 20 and the last successor's
        pid.

        Each takeover starts once the serving generation has answered a
        request of the load (an access line in its log): that is what makes
        "every generation answered some" an event the test waits for,
        however slowly the machine runs.  How many requests a second the
        load reached during the takeovers is measured by
        C{benchmarks/chain.py}, against the same service without takeovers.
        """
        workspace = Workspace(self)
        incumbent = startService(self, workspace, name="generation-0")
        waitServing(incumbent, 0)
        port = sitePort(incumbent)
        load = Load(self, workspace, port, rate=RATE)

        chain = [incumbent]
        for generation in range(1, TAKEOVERS + 1):
            waitForAccess(chain[-1], 1)
            chain.append(takeOver(self, workspace, chain[-1], generation))
        waitForAccess(chain[-1], 1)

        final = status(workspace.control)
        summary = load.finish()
        reportLoad(self, "whole run", summary)
        assertAllOk(self, summary, "whole run")
        self.assertEqual((final["generation"], final["pid"]), (TAKEOVERS, chain[-1].pid))
        answered = [len(accessLines(process)) for process in chain]
        log.msg(f"requests answered by each generation: {answered}")
        self.assertNotIn(0, answered, answered)


class PortMappingTests(TestCase):
    """
    How a successor finds the incumbent's ports, and what C{status} says.
    """

    def test_tcpZeroMapsToTheIncumbentsPort(self) -> None:
        """
        A successor declaring C{tcp:0} adopts the port the incumbent's
        C{tcp:0} actually got, rather than binding a new one: it starts its
        site on that port, answers requests there, and C{status} lists it
        as adopted.
        """
        workspace = Workspace(self)
        incumbent = startService(self, workspace)
        waitServing(incumbent, 0)
        port = sitePort(incumbent)

        successor = startService(self, workspace, takeover=True)
        ready = waitServing(successor, 1)
        self.assertEqual(sitePort(successor), port)
        self.assertIn(f"tcp:0:127.0.0.1#0=127.0.0.1:{port}", ready.string)
        expectHandedOff(self, incumbent, successor)

        mark = len(successor.lines)
        connection = HTTPConnection(self, port)
        connection.send(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        code, _, body = connection.readResponse()
        self.assertEqual((code, body), (200, BODY))
        waitForAccess(successor, 1, mark)

        ports = status(workspace.control)["ports"]
        self.assertEqual(
            [(p["key"], p["kind"], p["address"], p["adopted"]) for p in ports],
            [("tcp:0:127.0.0.1#0", "tcp", f"127.0.0.1:{port}", True)],
        )

    def test_statusFields(self) -> None:
        """
        C{python -m migrator status --json} reports the serving process's
        pid, Python version, start time, generation, listening ports, open
        connections and the takeover in progress (none), before and after a
        takeover.
        """
        workspace = Workspace(self)
        before = time.time()
        incumbent = startService(self, workspace)
        waitServing(incumbent, 0)
        port = sitePort(incumbent)

        first = status(workspace.control)
        self.assertEqual(first["pid"], incumbent.pid)
        self.assertEqual(first["python"], sys.version.split()[0])
        self.assertTrue(before - 5 <= first["started"] <= time.time(), first)
        self.assertEqual(first["generation"], 0)
        self.assertEqual(
            [(p["key"], p["address"], p["adopted"]) for p in first["ports"]],
            [("tcp:0:127.0.0.1#0", f"127.0.0.1:{port}", False)],
        )
        self.assertEqual(first["connections"], {"open": 0})
        self.assertIn("takeover", first)
        self.assertIsNone(first["takeover"])

        successor = takeOver(self, workspace, incumbent, 1)
        second = status(workspace.control)
        self.assertEqual((second["pid"], second["generation"]), (successor.pid, 1))
        self.assertGreaterEqual(second["started"], first["started"])
        self.assertEqual(
            [(p["address"], p["adopted"]) for p in second["ports"]],
            [(f"127.0.0.1:{port}", True)],
        )
        self.assertIsNone(second["takeover"])
        self.assertEqual(second["connections"], {"open": 0})


class ConcurrentTakeoverTests(TestCase):
    """
    Only one takeover at a time.
    """

    def test_secondTakeoverRefused(self) -> None:
        """
        While a takeover is in progress (its successor hangs after adopting
        the ports), a second C{--takeover} is refused with a message saying
        a takeover is already in progress, and exits non-zero.  The
        incumbent is unaffected: it serves every request of a load running
        throughout, still reports generation 0 with the first takeover in
        progress, abandons that takeover when its successor dies, and then
        hands off normally.
        """
        workspace = Workspace(self)
        incumbent = startService(self, workspace)
        waitServing(incumbent, 0)
        load = Load(self, workspace, sitePort(incumbent))

        first = startService(
            self, workspace, takeover=True, fault="hang:after-adopt", name="hanging"
        )
        fault = first.waitFor(FAULT, START_TIMEOUT)
        self.assertEqual(fault.group("action", "point"), ("hang", "after-adopt"))

        second = startService(self, workspace, takeover=True, name="second")
        failed = second.waitFor(FAILED, START_TIMEOUT)
        self.assertNotEqual(second.waitForExit(EXIT_TIMEOUT), 0)
        self.assertIn("a takeover is already in progress", failed.group("reason"))
        self.assertIn(f"successor pid {first.pid}", failed.group("reason"))

        during = status(workspace.control)
        self.assertEqual((during["pid"], during["generation"]), (incumbent.pid, 0))
        self.assertEqual(during["takeover"]["successor_pid"], first.pid)
        self.assertIsNone(incumbent.process.poll())

        first.signal(signal.SIGKILL)
        first.waitForExit(EXIT_TIMEOUT)
        incumbent.waitFor(ABANDONED, EXIT_TIMEOUT)
        after = status(workspace.control)
        self.assertEqual((after["pid"], after["generation"]), (incumbent.pid, 0))
        self.assertIsNone(after["takeover"])

        takeOver(self, workspace, incumbent, 1)
        summary = load.finish()
        reportLoad(self, "load", summary)
        assertAllOk(self, summary)


class DrainTests(TestCase):
    """
    After handing off, an incumbent keeps serving the connections it has.
    """

    def test_servesOpenConnectionUntilClosed(self) -> None:
        """
        A request half-sent to the incumbent before the takeover (after a
        whole one it answered) is completed after it, and answered by the
        incumbent (which has handed off but not exited); the keep-alive
        connection then serves another request; once the client closes it,
        the incumbent exits with code 0 because it drained, long before its
        drain timeout.
        """
        workspace = Workspace(self)
        incumbent = startService(self, workspace, migrateOptions=["--drain-timeout", "120"])
        waitServing(incumbent, 0)
        port = sitePort(incumbent)
        connection = self._halfRequest(incumbent, workspace, port)

        successor = startService(self, workspace, takeover=True)
        waitServing(successor, 1)
        handedOff = incumbent.waitFor(HANDED_OFF, EXIT_TIMEOUT)
        self.assertIn("draining 1 connection(s)", handedOff.string)
        mark = len(incumbent.lines)

        connection.send(b"\r\n")
        code, headers, body = connection.readResponse()
        self.assertEqual((code, body), (200, BODY))
        connection.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        code, headers, body = connection.readResponse()
        self.assertEqual((code, body), (200, BODY))
        end = waitForAccess(incumbent, 2, mark)
        self.assertEqual(len(accessLines(incumbent, mark)), 2, incumbent.output()[-2000:])
        self.assertEqual(accessLines(successor), [])
        self.assertIsNone(incumbent.process.poll(), "the incumbent left its client")

        connection.close()
        incumbent.waitFor(DRAINED, EXIT_TIMEOUT, start=end)
        self.assertEqual(incumbent.waitForExit(EXIT_TIMEOUT), 0)
        self.assertEqual(status(workspace.control)["pid"], successor.pid)

    def test_drainTimeout(self) -> None:
        """
        A connection that cannot move (here: a request the client never
        finishes, which outlasts the bounded wait for busy HTTP channels)
        keeps the incumbent alive after handing off only until
        C{--drain-timeout} (2 s): then the incumbent closes it and exits
        with code 0, and the client sees the connection end.  (Idle
        keep-alive connections move with the takeover: see
        tests/integration/test_web_keepalive.py.)

        "Only until": the drain timeout line comes within C{EXIT_TIMEOUT}
        (30 s) of the handoff, where the default drain timeout is 300 s.
        "Not before": the incumbent's exit comes at least 2 s after the
        successor was started, which is before the handoff; a slow machine
        can only lengthen that.
        """
        workspace = Workspace(self)
        incumbent = startService(
            self,
            workspace,
            migrateOptions=["--drain-timeout", "2", "--takeover-timeout", "3"],
        )
        waitServing(incumbent, 0)
        port = sitePort(incumbent)
        connection = self._halfRequest(incumbent, workspace, port, timeout=EXIT_TIMEOUT)

        startedSuccessor = time.monotonic()
        successor = startService(self, workspace, takeover=True)
        waitServing(successor, 1)
        incumbent.waitFor(HANDED_OFF, EXIT_TIMEOUT)
        timedOut = incumbent.waitFor(DRAIN_TIMEOUT, EXIT_TIMEOUT)
        self.assertEqual(timedOut.group("count"), "1")
        self.assertEqual(connection.readEOF(), b"")
        self.assertEqual(incumbent.waitForExit(EXIT_TIMEOUT), 0)
        self.assertGreaterEqual(time.monotonic() - startedSuccessor, 2.0)

    def _halfRequest(
        self,
        incumbent: ServiceProcess,
        workspace: Workspace,
        port: int,
        timeout: float = 10.0,
    ) -> HTTPConnection:
        """
        A keep-alive connection to the incumbent with half a request in
        progress, which the incumbent has certainly read.

        One write carries a whole request and the first half of the next
        (pipelined): once the answer to the first has arrived, the
        incumbent has read the second half too (it came in the same
        segment), and holds it.  No status polling, no delay.
        """
        connection = HTTPConnection(self, port, timeout=timeout)
        mark = len(incumbent.lines)
        connection.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\nGET / HTTP/1.1\r\nHost: test\r\n")
        code, _, body = connection.readResponse()
        self.assertEqual((code, body), (200, BODY))
        waitForAccess(incumbent, 1, mark)
        self.assertEqual(status(workspace.control)["connections"], {"open": 1})
        return connection
