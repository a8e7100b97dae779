# -*- test-case-name: tests.test_alone -*-
"""
Tests for L{migrator.takeover._alone} (through L{Successor}): a successor
whose incumbent I{died} (its process is gone, not merely hung up) before the
commit completes the takeover on its own, at every step; one whose
incumbent lives, or gave up on purpose, or that is itself stopping, rolls
back; and what it tells the operator never claims more than it knows.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._messages import Farewell
from migrator.takeover._successor import KEEPS_SERVING, TakeoverFailed
from tests.test_successor import (
    BEGUN,
    CAPTURED,
    KEYS,
    SuccessorTestMixin,
    doReads,
    doWrites,
    receive,
)

PID = BEGUN["pid"]


class CompleteAloneTests(SuccessorTestMixin, SynchronousTestCase):
    """
    The incumbent dies at each step before the commit.
    """

    def die(self) -> None:
        """
        The incumbent's process dies: its connection drops (and so does
        its end of the frame channel).
        """
        self.alive[PID] = False
        if self.channelEnd is not None:
            self.channelEnd.close()
            doReads(self.reactor)
        self.root.broker.connectionLost()
        self.reactor.advance(0)

    def assertServesAlone(self, d: Any, step: str, generation: int) -> dict[str, Any]:
        """
        The takeover completed without the incumbent: every declared port
        accepts, the control socket is published, nothing was released or
        told to the (dead) incumbent, and the result says what happened.

        @return: the result's C{alone} record.
        """
        result = self.successResultOf(d)
        self.assertEqual(result["generation"], generation)
        alone = result["alone"]
        self.assertEqual((alone["pid"], alone["step"]), (PID, step))
        self.assertEqual([p.accepting for p in self.registry.ports], [True] * len(self.declares))
        self.assertEqual([p.key for p in self.registry.ports], self.declares)
        [control] = self.controls
        self.assertTrue(control.published)
        self.assertFalse(control.closed)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertNotIn("abort", self.root.methods())
        self.assertEqual(self.successor.step, "done")
        return alone

    def test_diesBeforeAnsweringBegin(self) -> None:
        """
        Dead before answering C{begin} (no port arrived): the successor
        binds the ports itself, as a fresh start would, and serves as
        generation 0; how many connections died with the incumbent is not
        known.
        """
        self.peerPid = PID
        d = self.connect()
        with capturedLogs() as events:
            self.die()
        alone = self.assertServesAlone(d, "begin", 0)
        self.assertEqual(self.started, 1)
        self.assertEqual([p.adopted for p in self.registry.ports], [False, False])
        self.assertEqual((alone["ports_adopted"], alone["ports_bound"]), (0, 2))
        self.assertIsNone(alone["connections_lost"])
        [event] = [e for e in events if "completed the takeover on its own" in e["log_format"]]
        self.assertEqual((event["pid"], event["step"], event["lost"]), (PID, "begin", "an unknown number"))

    def test_diesBeforeAdopting(self) -> None:
        """
        Dead once the ports arrived, before they were adopted: the
        successor adopts them and serves as the next generation; the
        connections the incumbent held at C{begin} are counted lost.
        """
        d = self.toBegun("hang:before-adopt", begun={**BEGUN, "connections": 3})
        self.assertEqual(self.started, 0)
        self.die()
        alone = self.assertServesAlone(d, "adopt", BEGUN["generation"] + 1)
        self.assertEqual(self.started, 1)
        self.assertEqual([p.adopted for p in self.registry.ports], [True, True])
        self.assertEqual((alone["ports_adopted"], alone["ports_bound"]), (2, 0))
        self.assertEqual((alone["connections_moved"], alone["connections_lost"]), (0, 3))
        # The successor's copies are the ports now: the incumbent's are gone.
        self.closeIncumbentCopies()
        self.assertPortsNotShutDown()

    def test_diesAfterAdopting(self) -> None:
        """
        Dead while the successor reports C{prepared}: it accepts on the
        ports it adopted.
        """
        d = self.toBegun(begun={**BEGUN, "connections": 2})
        self.root.pending("prepared")
        self.die()
        alone = self.assertServesAlone(d, "prepared", 5)
        self.assertEqual(self.started, 1)
        self.assertEqual((alone["ports_adopted"], alone["connections_lost"]), (2, 2))

    def test_diesAfterSendingState(self) -> None:
        """
        Dead after sending the connections' state and descriptors but before
        answering C{capture}: the successor restores them from what arrived
        and activates them; the client gets what the incumbent had not
        sent, and is served from here.
        """
        captured, client = self.captureOne()
        d = self.toCapturing()
        self.sendConnections(captured)
        self.readChannels()
        self.die()
        alone = self.assertServesAlone(d, "capture", 5)
        self.assertEqual((alone["connections_moved"], alone["connections_lost"]), (1, 0))
        [transport] = self.registry.openConnections()
        self.assertIn(transport, self.reactor.getReaders())
        self.releaseIncumbentConnection()
        doWrites(self.reactor)
        self.assertEqual(receive(client), b"1 hello one\r\n")
        client.sendall(b"o\r\n")
        doReads(self.reactor)
        doWrites(self.reactor)
        self.assertEqual(receive(client), b"2 hello two\r\n")

    def test_diesBeforeStateArrives(self) -> None:
        """
        Dead after answering C{capture} but before its state message
        arrived: the connections it announced are counted lost, and so are
        those that were to stay in it; the ports serve.
        """
        d = self.toCapturing()
        self.root.answer(
            "capture", {**CAPTURED, "connections": 4, "staying": {"web.Legacy: no adapter": 2}}
        )
        self.die()
        alone = self.assertServesAlone(d, "capture", 5)
        self.assertEqual(
            (alone["connections_moved"], alone["connections_lost"], alone["connections_ended"]),
            (0, 4, 2),
        )
        self.assertEqual(self.registry.openConnections(), [])

    def test_diesAfterRestore(self) -> None:
        """
        Dead while the successor reports C{restored}: the restored
        connections are activated, and what the incumbent had not sent is
        written first.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.die()
        alone = self.assertServesAlone(d, "restore", 5)
        self.assertEqual(alone["connections_moved"], 1)
        self.releaseIncumbentConnection()
        doWrites(self.reactor)
        self.assertEqual(receive(client), b"1 hello one\r\n")

    def test_diesAfterSwitch(self) -> None:
        """
        Dead after the switch, during C{commit}: as after a commit, with the
        death said (step C{commit}).
        """
        captured, client = self.captureOne()
        d = self.toSwitched(captured=captured)
        self.die()
        alone = self.assertServesAlone(d, "commit", 5)
        self.assertEqual(alone["connections_moved"], 1)

    def test_hungUpAliveRollsBack(self) -> None:
        """
        An incumbent that hung up and lives on past the grace (it took its
        sockets back) is not replaced: the successor rolls back once the
        grace is over, and says the service keeps serving.
        """
        self.deathGrace = 3.0
        d = self.toCapturing()
        self.root.broker.connectionLost()
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.reactor.advance(0.2)
        e = self.assertFailed(d, "capture", "the incumbent hung up")
        self.assertEqual(e.aftermath, KEEPS_SERVING)

    def test_diesWithinGrace(self) -> None:
        """
        A killed process hangs up a little before the kernel reports it
        gone: an incumbent that is gone within the grace is dead, and the
        successor completes the takeover.
        """
        self.deathGrace = 3.0
        d = self.toCapturing()
        self.root.broker.connectionLost()
        self.reactor.advance(0.5)
        self.assertNoResult(d)
        self.alive[PID] = False
        self.reactor.advance(0.01)
        self.assertServesAlone(d, "capture", 5)

    def test_farewellRollsBack(self) -> None:
        """
        An incumbent that said it abandoned the takeover (its farewell on
        the frame channel) is not replaced, even if it then exits: the
        successor rolls back at once, saying why, and, since it was
        stopping, that nothing will serve once it has exited.
        """
        self.deathGrace = 3.0
        d = self.toCapturing()
        self.sendOnChannel(Farewell("this process is stopping", stopping=True).toBytes(), [])
        self.readChannels()
        self.alive[PID] = False
        e = self.assertFailed(
            d, "capture", "the incumbent abandoned the takeover: this process is stopping"
        )
        self.assertIn("because it is stopping: once it has exited, nothing serves", e.aftermath)
        self.assertNotIn("keeps serving", e.aftermath)

    def test_stoppingSuccessorRollsBack(self) -> None:
        """
        A successor that is itself stopping rolls back, even if the
        incumbent is dead: it would not serve for long.
        """
        d = self.toCapturing()
        self.alive[PID] = False
        self.successor.cancel()
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertEqual(str(e), "takeover failed at step capture: this process is stopping")
        self.assertIn("is gone: nothing serves", e.aftermath)
        self.assertIn("releaseAll", self.registry.calls)

    def test_completingFailsNothingServes(self) -> None:
        """
        If the service cannot be started without the incumbent either, the
        successor rolls back and says that nothing serves.
        """
        d = self.toBegun("hang:before-adopt")
        self.startError = OSError(98, "Address already in use")
        self.die()
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertIn("completing the takeover alone failed", str(e))
        self.assertEqual(e.aftermath, f"the incumbent (pid {PID}) is gone: nothing serves")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_declaresOtherPorts(self) -> None:
        """
        Ports the incumbent sent that the successor's service does not
        declare are closed; ports it declares besides are bound.
        """
        self.declares = [KEYS[0], "tcp:9090:#0"]
        d = self.toBegun("hang:before-adopt")
        self.die()
        alone = self.assertServesAlone(d, "adopt", 5)
        self.assertEqual((alone["ports_adopted"], alone["ports_bound"]), (1, 1))
