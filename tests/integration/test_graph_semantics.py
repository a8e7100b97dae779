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
SLICED = re.compile(
    r"a connection with a large state \((?P<name>[^)]*)\) was written in (?P<slices>\d+) slice"
)

#: Generous bounds for waiting on a noisy 2-core machine; a wait ends as
#: soon as its line arrives.
STEP = 60.0
#: How far ahead the C{DelayedCall} is set: beyond any bound of a test, so
#: that it never comes due by itself during one (the test makes it due).
FAR = 3600.0
#: How far a moved or thawed call's deadline may be from the original: the
#: restore (and the thaw) read the clock twice, microseconds apart on an
#: idle machine.  Losing the deadline would be off by the seconds the
#: takeover took.
SAME_DEADLINE = 0.05
#: The C{LoopingCall}'s interval.
INTERVAL = 0.25
#: How far from the loop's grid (start time plus whole intervals) its next
#: scheduled call may be: Twisted reads the clock twice when it schedules.
#: The grid, not the times ticks ran at: those depend on how busy the
#: machine is (see benchmarks/timers.py).
ON_GRID = 0.05


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
    A C{DelayedCall} set before the move keeps its deadline and fires
    once, in the successor.
    """

    def test_firesOnceInSuccessor(self) -> None:
        """
        A call set C{FAR} seconds ahead before a takeover moves with its
        deadline: the successor's call is due at the deadline the
        incumbent gave it, and the incumbent's copy is no longer pending.
        Made due (the test's gate: C{DelayedCall.reset(0)} through the
        app), it fires exactly once, in the successor (the pid it
        reports): the client receives one C{fired} line, nothing is left
        pending in either process, and the incumbent, told to fire it too
        through a connection that stayed with it, has nothing to fire and
        never logs such a line.

        No delay has to outlast the takeover: the deadline is far beyond
        any bound of the test, and the call comes due when the test says
        so.  How close to its deadline a moved call fires by itself is a
        figure of C{benchmarks/timers.py}.
        """
        incumbent, port = self.startIncumbent()
        watcher = LineConnection(self, port)
        self.assertEqual(watcher.ask("stay", "staying"), ["staying", str(incumbent.pid)])
        a = LineConnection(self, port)
        scheduled = a.ask(f"schedule {FAR}", "scheduled")
        self.assertEqual(scheduled[1], str(incumbent.pid))
        deadline = float(scheduled[2])
        self.assertEqual(a.ask("when", "when"), ["when", str(incumbent.pid), repr(deadline)])

        successor = self.takeOver(incumbent, moving=1, staying=1)

        # The restored call kept the deadline the incumbent gave it (to
        # within the two clock readings of the restore), and the
        # incumbent's copy was cancelled when it handed off.
        when = a.ask("when", "when")
        self.assertEqual(when[1], str(successor.pid))
        self.assertLess(abs(float(when[2]) - deadline), SAME_DEADLINE, (when, deadline))
        self.assertEqual(watcher.ask("when", "when"), ["when", str(incumbent.pid), "inactive"])

        due = a.ask("due", "due")
        self.assertEqual(due[:2], ["due", str(successor.pid)])
        fired = a.expect("fired")
        self.assertEqual(fired[1], str(successor.pid))
        # Fired, not re-armed: nothing is pending in the successor any
        # more, so no second firing can come.
        self.assertEqual(a.ask("when", "when"), ["when", str(successor.pid), "inactive"])
        self.assertEqual(a.ask("stats", "stats"), ["stats", str(successor.pid), "made=2", "open=1"])
        self.assertEqual(
            [fields[0] for fields in a.lines],
            ["scheduled", "when", "when", "due", "fired", "when", "stats"],
        )
        self.assertEqual(
            [m["pid"] for m in map(FIRED_LOG.search, successor.lines) if m],
            [str(successor.pid)],
        )

        # The incumbent, still serving the connection that stayed, has
        # nothing to fire even when told to, and never ran the call.
        self.assertIsNone(incumbent.process.poll())
        self.assertEqual(watcher.ask("due", "due"), ["due", str(incumbent.pid), "inactive"])
        self.assertEqual(watcher.ask("stats", "stats")[:3], ["stats", str(incumbent.pid), "made=2"])
        self.assertEqual(
            [fields[0] for fields in watcher.lines], ["staying", "when", "due", "stats"]
        )
        watcher.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        self.assertEqual([line for line in incumbent.lines if FIRED_LOG.search(line)], [])


def loopInfo(connection: LineConnection, pid: int) -> tuple[float, float, float | None]:
    """
    Ask the app, through C{connection}, for its loop's schedule, served by
    C{pid}.

    @return: the loop's start time, interval, and when its next call is
        due (C{None} if none is pending).
    """
    fields = connection.ask("loopinfo", "loopinfo")
    if fields[1] != str(pid):
        raise AssertionError(f"loopinfo answered by pid {fields[1]}, not {pid}: {fields}")
    following = None if fields[4] == "none" else float(fields[4])
    return float(fields[2]), float(fields[3]), following


def offGrid(starttime: float, interval: float, when: float) -> float:
    """
    How far C{when} is from the nearest point of a loop's grid (its start
    time plus a whole number of intervals), in seconds.
    """
    phase = (when - starttime) / interval
    return abs(phase - round(phase)) * interval


class LoopingCallTests(_Fixture, TestCase):
    """
    A running C{LoopingCall} moves with its interval and schedule.
    """

    def _loopAcrossTakeover(self, ballast: int = 0) -> tuple[list[float], int, float]:
        """
        Start the loop on one of two connections, take over after 8 ticks
        (with C{ballast} extra objects in the graph), read 8 more ticks on
        both, and check what any move must keep: the incumbent runs no tick
        after the move (a third connection, which stays there, sees exactly
        the ticks before it, and its loop has nothing pending); tick
        numbers run on with no gap and no duplicate, the same on both
        connections; the ticks come from the incumbent, then from the
        successor; the successor's loop has the incumbent's start time and
        interval, and its next call is on that grid (the loop is back on
        its original schedule); the interval spanning the move is longer
        than the freeze (the successor's first tick came after it resumed,
        the incumbent's last before it froze: an order of events, which a
        slow machine cannot break).

        How regular the ticks are around the move is a figure of
        C{benchmarks/timers.py}, not a check here.

        @return: the intervals between ticks, the index of the interval
            spanning the move, and the freeze (seconds, as the successor
            measured it).
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
        starttime, interval, following = loopInfo(a, incumbent.pid)
        self.assertEqual(interval, INTERVAL)
        assert following is not None
        self.assertLess(offGrid(starttime, interval, following), ON_GRID)

        successor = self.takeOver(incumbent, moving=2, staying=1)
        frozen = float(successor.waitFor(FROZEN_FOR, STEP)["max"]) / 1000

        a.waitTicks(successor.pid, 8)
        b.waitTicks(successor.pid, 8)
        moved = loopInfo(a, successor.pid)
        self.assertEqual(moved[:2], (starttime, interval))
        assert moved[2] is not None
        self.assertLess(offGrid(starttime, interval, moved[2]), ON_GRID, (moved, starttime))

        numbers = [n for n, _, _ in a.ticks]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)))
        # b connected with a, before the loop started: it saw the same ticks.
        self.assertEqual(b.ticks[: len(a.ticks)], a.ticks[: len(b.ticks)])
        pids = [pid for _, _, pid in a.ticks]
        movedAt = pids.index(successor.pid)
        self.assertEqual(pids, [incumbent.pid] * movedAt + [successor.pid] * (len(pids) - movedAt))
        self.assertGreaterEqual(movedAt, 8)

        times = [t for _, t, _ in a.ticks]
        intervals = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        spanning = movedAt - 1
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
        self.assertGreater(intervals[spanning], frozen, (intervals, frozen))

        # The incumbent ran no tick after the move: the connection that
        # stayed saw exactly the incumbent's ticks, and its loop is over.
        self.assertEqual(loopInfo(watcher, incumbent.pid), (starttime, interval, None))
        self.assertEqual(watcher.ticks, a.ticks[:movedAt])
        watcher.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        return intervals, spanning, frozen

    def test_keepsCadence(self) -> None:
        """
        A loop ticking every C{INTERVAL} seconds before the move ticks on
        after it, from the successor, on its original schedule, numbers
        running on with no gap and no duplicate (see
        L{_loopAcrossTakeover}).
        """
        self._loopAcrossTakeover()

    def test_tickHeldThroughLongFreeze(self) -> None:
        """
        With a graph big enough that the freeze outlasts an interval, a
        tick necessarily comes due while the loop is frozen: the incumbent
        does not run it (the connection that stayed never sees it), the
        successor runs it once, after it resumed (numbers still run on
        without a gap or a duplicate, and the interval over the move is
        longer than the freeze), then the loop is back on its original
        schedule.

        That the freeze outlasted an interval is the successor's own
        measure; a slower machine only lengthens it.
        """
        _, _, frozen = self._loopAcrossTakeover(ballast=150_000)
        self.assertGreater(
            frozen, INTERVAL, "the freeze was shorter than an interval: raise the ballast"
        )


class DeepChainTests(_Fixture, TestCase):
    """
    A connection whose state is a 10,000-link chain moves (the graph is
    written and read without recursion; in slices when it shares nothing).
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

    def test_privateChainMovesInSlices(self) -> None:
        """
        A connection sharing nothing whose state is a 10,000-link chain is
        too large for a batch: it is written in slices of its own while the
        other connection is served, and arrives whole.
        """
        incumbent, port = self.startIncumbent()
        deep = LineConnection(self, port)
        other = LineConnection(self, port)
        self.assertEqual(deep.ask("private", "private"), ["private", str(incumbent.pid)])
        self.assertEqual(deep.ask("chain 10000", "chained"), ["chained", str(incumbent.pid), "10000"])
        successor = self.takeOver(incumbent, moving=2)
        sliced = incumbent.waitFor(SLICED, STEP)
        self.assertGreater(int(sliced["slices"]), 1, sliced.string)
        self.assertEqual(
            deep.ask("walk", "walked"), ["walked", str(successor.pid), "10000", "1", "10000"]
        )
        self.assertEqual(other.ask("stats", "stats")[1], str(successor.pid))
