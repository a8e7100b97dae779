# -*- test-case-name: tests.integration.test_graph_semantics -*-
"""
The application's object graph keeps its meaning across a real takeover
(L{tests.integration.apps.scheduled}): an object shared by two connections
is still one object, a C{DelayedCall} fires once, in the successor, at its
original deadline, a C{LoopingCall} keeps its cadence, and a connection
that declines to move stays however the graph reaches it.

The clients are blocking loopback sockets in the test, every read bounded
by a timeout; times compared are the wall-clock times the app reports.
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

from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
SCHEDULED_TAC = os.path.join(APPS, "scheduled.tac")
ADAPTERS = "tests.integration.apps.scheduled"
LISTENING = re.compile(r"ScheduledFactory starting on (?P<port>\d+)")
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) .*?; (?P<staying>\d+) stay here and drain"
)
FROZEN_FOR = re.compile(
    r"connections were frozen for p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms, "
    r"max (?P<max>[\d.]+) ms"
)
FIRED_LOG = re.compile(r"SCHEDULED FIRED pid=(?P<pid>\d+)")

#: Generous bounds for waiting on a noisy 2-core machine; a wait ends as
#: soon as its line arrives.
STEP = 60.0
#: How far ahead the C{DelayedCall} is set: long enough for a successor to
#: start and take over before it comes due.
DELAY = 3.0
#: How far from its deadline the C{DelayedCall} may fire.
DEADLINE_TOLERANCE = 0.3
#: The C{LoopingCall}'s interval, and how far one interval may stray from it.
INTERVAL = 0.25
INTERVAL_TOLERANCE = 0.1


def report(case: TestCase, text: str) -> None:
    """
    Keep a measured figure in the test log, and on stderr when
    C{MIGRATOR_IT_VERBOSE} is set.
    """
    line = f"{case.id()}: {text}"
    log.msg(line)
    if os.environ.get("MIGRATOR_IT_VERBOSE"):
        sys.stderr.write(line + "\n")


class LineConnection:
    """
    One blocking loopback connection to the scheduled app.  C{tick} lines
    (which arrive whenever the app's loop runs) are set aside in L{ticks};
    every other line is kept, in order, in L{lines}.

    @ivar ticks: C{(n, time, pid)} of every tick received.
    @ivar lines: every other line received, as lists of fields.
    """

    def __init__(self, case: TestCase, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        case.addCleanup(self.sock.close)
        self._buffer = b""
        self.ticks: list[tuple[int, float, int]] = []
        self.lines: list[list[str]] = []

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\r\n")

    def _next(self, deadline: float) -> list[str] | None:
        """
        The next line that is not a tick, reading until C{deadline}
        (monotonic); C{None} if none arrived by then.
        """
        while True:
            while b"\r\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\r\n", 1)
                fields = raw.decode("ascii").split()
                if fields and fields[0] == "tick":
                    self.ticks.append((int(fields[1]), float(fields[2]), int(fields[3])))
                    continue
                self.lines.append(fields)
                return fields
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise AssertionError(f"the server closed the connection; unread {self._buffer!r}")
            self._buffer += chunk

    def expect(self, word: str, timeout: float = STEP) -> list[str]:
        """
        Read until a line starting with C{word} arrives (ticks are set
        aside; any other line is an error).

        @return: its fields, C{word} first.
        """
        fields = self._next(time.monotonic() + timeout)
        if fields is None:
            raise AssertionError(f"no {word!r} line within {timeout:g} s")
        if fields[0] != word:
            raise AssertionError(f"expected a {word!r} line, got {fields!r}")
        return fields

    def ask(self, line: str, word: str) -> list[str]:
        """
        Send C{line} and return the fields of its answer, which starts with
        C{word}.
        """
        self.send(line)
        return self.expect(word)

    def silence(self, duration: float) -> None:
        """
        Read for C{duration} seconds; any line other than a tick is an
        error.
        """
        fields = self._next(time.monotonic() + duration)
        if fields is not None:
            raise AssertionError(f"unexpected line {fields!r}")

    def waitTicks(self, pid: int, count: int, timeout: float = STEP) -> None:
        """
        Read until C{count} ticks from C{pid} have arrived (any other line
        is an error).
        """
        deadline = time.monotonic() + timeout
        while sum(1 for tick in self.ticks if tick[2] == pid) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"fewer than {count} ticks from pid {pid}: {self.ticks}")
            fields = self._next(min(deadline, time.monotonic() + 0.5))
            if fields is not None:
                raise AssertionError(f"unexpected line {fields!r}")


class _Fixture:
    """
    The scheduled app under C{twistd migrate}, in a private directory.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-graph-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, True)  # type: ignore[attr-defined]
        self.control = os.path.join(self.work, "ctl")

    def start(self, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", SCHEDULED_TAC],
            takeover=takeover,
            migrateOptions=["--adapters", ADAPTERS, "--drain-timeout", "30"],
            cwd=self.work,
            env={"MIGRATOR_FAULT": ""},
        )
        self.addCleanup(process.stop)  # type: ignore[attr-defined]
        return process

    def startIncumbent(self) -> tuple[ServiceProcess, int]:
        """
        @return: the incumbent, serving, and its port.
        """
        incumbent = self.start()
        ready = incumbent.waitFor(READY, STEP)
        self.assertEqual(  # type: ignore[attr-defined]
            (int(ready["generation"]), int(ready["pid"])), (0, incumbent.pid)
        )
        return incumbent, int(incumbent.waitFor(LISTENING, STEP)["port"])

    def takeOver(self, incumbent: ServiceProcess, moving: int, staying: int = 0) -> ServiceProcess:
        """
        Take over from C{incumbent}, which must move C{moving} connections
        and keep C{staying}; if it keeps none, it must then exit with code
        0.

        @return: the successor, serving as generation 1.
        """
        successor = self.start(takeover=True)
        ready = successor.waitFor(READY, STEP)
        self.assertEqual(  # type: ignore[attr-defined]
            (int(ready["generation"]), int(ready["pid"])), (1, successor.pid)
        )
        froze = incumbent.waitFor(FROZE, STEP)
        self.assertEqual(  # type: ignore[attr-defined]
            (int(froze["count"]), int(froze["staying"])), (moving, staying), froze.string
        )
        self.assertEqual(int(incumbent.waitFor(HANDED_OFF, STEP)["pid"]), successor.pid)  # type: ignore[attr-defined]
        if not staying:
            self.assertEqual(incumbent.waitForExit(STEP), 0)  # type: ignore[attr-defined]
        return successor


class SharedObjectTests(_Fixture, TestCase):
    """
    An object shared by two connections' protocols and their factory moves
    as one object.
    """

    def test_roomStaysShared(self) -> None:
        """
        A value added through connection A before the move is seen through
        B after it; a value added through A after the move is seen through
        B, and through the factory, and by a connection made after the
        move: the protocols and the factory hold one room, not copies.
        C{connectionMade} ran once per connection.
        """
        incumbent, port = self.startIncumbent()
        a = LineConnection(self, port)
        b = LineConnection(self, port)
        self.assertEqual(a.ask("add before", "added"), ["added", "before", str(incumbent.pid)])
        before = b.ask("room", "room")
        self.assertEqual((before[1], before[3]), (str(incumbent.pid), "before"))

        successor = self.takeOver(incumbent, moving=2)

        seen = b.ask("room", "room")
        self.assertEqual((seen[1], seen[3]), (str(successor.pid), "before"))
        self.assertEqual(a.ask("add after", "added"), ["added", "after", str(successor.pid)])
        rooms = [
            b.ask("room", "room"),
            a.ask("room", "room"),
            b.ask("froom", "room"),
            LineConnection(self, port).ask("room", "room"),
        ]
        # Same pid, same object (its id in the successor), same items.
        self.assertEqual(
            rooms, [["room", str(successor.pid), seen[2], "before,after"]] * len(rooms)
        )
        self.assertEqual(a.ask("stats", "stats"), ["stats", str(successor.pid), "made=3", "open=3"])


class DeclinedConnectionTests(_Fixture, TestCase):
    """
    A connection whose adapter declines to move stays, however the graph
    reaches it.
    """

    def test_declinedStaysWhenShared(self) -> None:
        """
        A connection that declines to move but is still in its factory's
        client list (so every other connection's graph reaches it, through
        the factory) stays in the incumbent, and so does the connection
        that shares that graph with it: a half-moved graph would split the
        shared state in two.  The incumbent's log says why; both go on
        being served by the incumbent, sharing one room, while new
        connections go to the successor.
        """
        incumbent, port = self.startIncumbent()
        declined = LineConnection(self, port)
        self.assertEqual(declined.ask("decline", "declining"), ["declining", str(incumbent.pid)])
        a = LineConnection(self, port)
        self.assertEqual(a.ask("add x", "added"), ["added", "x", str(incumbent.pid)])

        successor = self.takeOver(incumbent, moving=0, staying=2)
        self.assertIn(
            "a connection that declines to move (asked to stay)",
            incumbent.waitFor(FROZE, STEP).string,
        )
        rooms = [declined.ask("room", "room"), a.ask("room", "room")]
        self.assertEqual(rooms, [["room", str(incumbent.pid), rooms[0][2], "x"]] * 2)
        self.assertEqual(LineConnection(self, port).ask("stats", "stats")[1], str(successor.pid))
        declined.sock.close()
        a.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)


class DelayedCallTests(_Fixture, TestCase):
    """
    A C{DelayedCall} set before the move fires once, in the successor, at
    its original deadline.
    """

    def test_firesOnceInSuccessorAtDeadline(self) -> None:
        """
        A call set C{DELAY} seconds ahead just before a takeover fires
        exactly once: in the successor (the pid it reports), within
        C{DEADLINE_TOLERANCE} of the deadline the incumbent gave it; the
        client receives one C{fired} line and nothing more.  It never runs
        in the incumbent, which lives past the deadline (a connection that
        stays keeps it draining): that connection, which the incumbent
        would tell, hears nothing, and the incumbent's whole log has no
        such line.
        """
        incumbent, port = self.startIncumbent()
        watcher = LineConnection(self, port)
        self.assertEqual(watcher.ask("stay", "staying"), ["staying", str(incumbent.pid)])
        a = LineConnection(self, port)
        scheduled = a.ask(f"schedule {DELAY}", "scheduled")
        self.assertEqual(scheduled[1], str(incumbent.pid))
        deadline = float(scheduled[2])

        successor = self.takeOver(incumbent, moving=1, staying=1)
        takenOverBy = time.time()
        self.assertLess(
            takenOverBy,
            deadline - DEADLINE_TOLERANCE,
            f"the takeover ended {takenOverBy - deadline:+.3f} s after the deadline; "
            f"this machine is too slow for DELAY={DELAY}",
        )

        fired = a.expect("fired", deadline - time.time() + STEP)
        firedAt = float(fired[2])
        error = firedAt - deadline
        report(
            self,
            f"DelayedCall deadline error {error * 1000:+.1f} ms "
            f"(takeover done {(deadline - takenOverBy) * 1000:.0f} ms before the deadline)",
        )
        self.assertEqual(fired[1], str(successor.pid))
        self.assertLessEqual(abs(error), DEADLINE_TOLERANCE, f"fired {error:+.3f} s off")
        # The restored call kept the deadline the incumbent gave it.
        self.assertLess(abs(float(fired[3]) - deadline), 0.001, (fired, deadline))

        # Nothing more for a while (a second firing would show here), and
        # the connection still answers.
        a.silence(1.0)
        self.assertEqual(a.ask("stats", "stats"), ["stats", str(successor.pid), "made=2", "open=1"])
        self.assertEqual([fields[0] for fields in a.lines], ["scheduled", "fired", "stats"])
        self.assertEqual(
            [m["pid"] for m in map(FIRED_LOG.search, successor.lines) if m],
            [str(successor.pid)],
        )

        # The incumbent, still serving the connection that stayed, is past
        # the deadline and never ran the call.
        self.assertIsNone(incumbent.process.poll())
        self.assertEqual(watcher.ask("stats", "stats")[:3], ["stats", str(incumbent.pid), "made=2"])
        self.assertGreater(time.time(), deadline)
        self.assertEqual([fields[0] for fields in watcher.lines], ["staying", "stats"])
        watcher.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        self.assertEqual([line for line in incumbent.lines if FIRED_LOG.search(line)], [])


class LoopingCallTests(_Fixture, TestCase):
    """
    A running C{LoopingCall} moves with its interval and schedule.
    """

    def _loopAcrossTakeover(
        self, ballast: int = 0
    ) -> tuple[list[tuple[int, float, int]], list[float], int, float]:
        """
        Start the loop on one of two connections, take over after 8 ticks
        (with C{ballast} extra objects in the graph), read 8 more ticks on
        both, and check what any move must keep: the incumbent runs no tick
        after the move (a third connection, which stays there, sees exactly
        the ticks before it); tick numbers run on with
        no gap and no duplicate, the same on both connections; the ticks
        come from the incumbent, then from the successor; every interval
        except the one spanning the move and the one after it is
        C{INTERVAL}; those two add up to whole intervals (the loop is back
        on its original schedule); no tick but the first in the successor
        is off that schedule.

        @return: the ticks, the intervals between them, the index of the
            interval spanning the move, and the freeze (seconds, as the
            successor measured it).
        """
        incumbent, port = self.startIncumbent()
        # Stays in the incumbent, keeping it alive after the move: it would
        # see any tick the incumbent ran after the move.
        watcher = LineConnection(self, port)
        self.assertEqual(watcher.ask("stay", "staying"), ["staying", str(incumbent.pid)])
        a = LineConnection(self, port)
        b = LineConnection(self, port)
        if ballast:
            self.assertEqual(a.ask(f"ballast {ballast}", "ballast")[2], str(ballast))
        self.assertEqual(a.ask(f"loop {INTERVAL}", "looping"), ["looping", str(incumbent.pid)])
        a.waitTicks(incumbent.pid, 8)

        successor = self.takeOver(incumbent, moving=2, staying=1)
        frozen = float(successor.waitFor(FROZEN_FOR, STEP)["max"]) / 1000

        a.waitTicks(successor.pid, 8)
        b.waitTicks(successor.pid, 8)

        numbers = [n for n, _, _ in a.ticks]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)))
        # b connected with a, before the loop started: it saw the same ticks.
        self.assertEqual(b.ticks[: len(a.ticks)], a.ticks[: len(b.ticks)])
        pids = [pid for _, _, pid in a.ticks]
        moved = pids.index(successor.pid)
        self.assertEqual(pids, [incumbent.pid] * moved + [successor.pid] * (len(pids) - moved))
        self.assertGreaterEqual(moved, 8)

        times = [t for _, t, _ in a.ticks]
        intervals = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        spanning = moved - 1
        report(
            self,
            f"ballast {ballast}: tick intervals around the move (ms): "
            + " ".join(
                f"{'[' if i == spanning else ''}{gap * 1000:.0f}{']' if i == spanning else ''}"
                for i, gap in enumerate(intervals)
                if spanning - 3 <= i <= spanning + 3
            )
            + f"; freeze max {frozen * 1000:.1f} ms",
        )
        for i, gap in enumerate(intervals):
            if i not in (spanning, spanning + 1):
                self.assertLess(abs(gap - INTERVAL), INTERVAL_TOLERANCE, (i, intervals))
        pair = intervals[spanning] + intervals[spanning + 1]
        self.assertLess(
            abs(pair - round(pair / INTERVAL) * INTERVAL), INTERVAL_TOLERANCE, intervals
        )
        offSchedule = [
            n
            for n, t, _ in a.ticks
            if abs((t - times[0]) / INTERVAL - round((t - times[0]) / INTERVAL)) * INTERVAL
            > INTERVAL_TOLERANCE
        ]
        self.assertLessEqual(set(offSchedule), {moved + 1}, (offSchedule, intervals))

        # The incumbent ran no tick after the move: the connection that
        # stayed saw exactly the incumbent's ticks.
        self.assertEqual(watcher.ask("stats", "stats")[1], str(incumbent.pid))
        self.assertEqual(watcher.ticks, a.ticks[:moved])
        watcher.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        return a.ticks, intervals, spanning, frozen

    def test_keepsCadence(self) -> None:
        """
        A loop ticking every C{INTERVAL} seconds before the move ticks on
        after it, from the successor, numbers running on with no gap and no
        duplicate; consecutive ticks are C{INTERVAL} apart except for at
        most one longer gap, over the move, shorter than 1 s and than the
        freeze plus one interval (see L{_loopAcrossTakeover} for the rest).
        """
        _, intervals, spanning, frozen = self._loopAcrossTakeover()
        long = [i for i, gap in enumerate(intervals) if gap > INTERVAL + INTERVAL_TOLERANCE]
        self.assertLessEqual(set(long), {spanning}, intervals)
        self.assertLess(intervals[spanning], 1.0)
        self.assertLess(intervals[spanning], frozen + INTERVAL + INTERVAL_TOLERANCE)

    def test_tickHeldThroughLongFreeze(self) -> None:
        """
        With a graph big enough that the freeze outlasts an interval, a
        tick necessarily comes due while the loop is frozen: the incumbent
        does not run it, the successor holds it and runs it once when it
        resumes (so the interval over the move is at least the freeze, at
        most the freeze plus one interval), then the loop is back on its
        original schedule, numbers still running on without a gap.
        """
        _, intervals, spanning, frozen = self._loopAcrossTakeover(ballast=150_000)
        self.assertGreater(
            frozen, INTERVAL, "the freeze was shorter than an interval: raise the ballast"
        )
        self.assertGreater(intervals[spanning], frozen - INTERVAL_TOLERANCE, intervals)
        self.assertLess(intervals[spanning], frozen + INTERVAL + INTERVAL_TOLERANCE, intervals)


class DeepChainTests(_Fixture, TestCase):
    """
    A connection whose state is a 10,000-link chain moves (the graph is
    written and read without recursion).
    """

    def test_chainMoves(self) -> None:
        """
        A linked list of 10,000 adapted objects held by a connection is
        whole in the successor, and the connection beside it moves too.
        """
        incumbent, port = self.startIncumbent()
        deep = LineConnection(self, port)
        other = LineConnection(self, port)
        self.assertEqual(deep.ask("chain 10000", "chained"), ["chained", str(incumbent.pid), "10000"])
        successor = self.takeOver(incumbent, moving=2)
        self.assertEqual(
            deep.ask("walk", "walked"), ["walked", str(successor.pid), "10000", "1", "10000"]
        )
        self.assertEqual(other.ask("stats", "stats")[1], str(successor.pid))
