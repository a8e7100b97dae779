# -*- test-case-name: tests.test_incumbent -*-
"""
The steps of a takeover, as data: the incumbent's states and the
transitions between them (L{TRANSITIONS}), and the fault-injection points
of the rollback drills (L{Faults}).

The incumbent's state machine, all of it::

    idle --begin--> begun --received--> received --prepared--> prepared
         --capture--> capturing --captured--> captured --restored--> restored
         --switch--> switched --commit--> committed

    any state but idle and committed --abort--> idle (everything as it was)

C{captured} is the one step the incumbent takes itself: the end of the
bounded wait for busy connections, when it freezes and sends them.  Every
other step is the successor's PB call of the same name.  A step that the
table does not allow in the current state is a protocol error, and aborts
the takeover.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

_log = Logger()

IDLE = "idle"
BEGUN = "begun"
RECEIVED = "received"
PREPARED = "prepared"
CAPTURING = "capturing"
CAPTURED = "captured"
RESTORED = "restored"
SWITCHED = "switched"
COMMITTED = "committed"

#: The limit a step's wait is bounded by: the short handshake timeout (a
#: peer that sends C{begin} and then nothing must not hold the takeover
#: for long), or C{--takeover-timeout}.
HANDSHAKE = "handshake"
TAKEOVER = "takeover"


@attrs.frozen
class Transition:
    """
    Where a step leads, and what the incumbent then waits for.

    @ivar state: the state after the step.
    @ivar waitingFor: what the successor must do next, for the timeout's
        message (C{None}: nothing is awaited from the successor, either
        because the incumbent itself works, bounded on its own, or because
        the takeover is over).
    @ivar limit: L{HANDSHAKE} or L{TAKEOVER}: which timeout bounds that
        wait.
    """

    state: str
    waitingFor: str | None = None
    limit: str = TAKEOVER


#: C{(state, step) -> Transition}: the whole state machine of the
#: incumbent.  Abort is allowed from every state but L{IDLE} and
#: L{COMMITTED}; see L{ABORTABLE}.
TRANSITIONS: dict[tuple[str, str], Transition] = {
    (IDLE, "begin"): Transition(BEGUN, "acknowledge the ports", HANDSHAKE),
    (BEGUN, "received"): Transition(RECEIVED, "prepare"),
    (RECEIVED, "prepared"): Transition(PREPARED, "ask for the connections"),
    # The wait for busy connections is bounded on its own (the settle
    # timeout); nothing is awaited from the successor meanwhile.
    (PREPARED, "capture"): Transition(CAPTURING),
    (CAPTURING, "captured"): Transition(CAPTURED, "restore the connections"),
    (CAPTURED, "restored"): Transition(RESTORED, "switch"),
    (RESTORED, "switch"): Transition(SWITCHED, "commit"),
    (SWITCHED, "commit"): Transition(COMMITTED),
}

#: The states from which a takeover can be abandoned (and everything put
#: back as it was).
ABORTABLE = frozenset(state for state, _ in TRANSITIONS) - {IDLE}


class ProtocolError(Exception):
    """
    A step was asked for in a state that does not allow it.
    """


def advance(state: str, step: str) -> Transition:
    """
    Look a step up in L{TRANSITIONS}.

    @param state: the current state.
    @param step: the step asked for.
    @return: where it leads.
    @raise ProtocolError: if C{step} is not allowed in C{state}.
    """
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise ProtocolError(f"{step} is not allowed at step {state}") from None


#: The points at which a successor consults its L{Faults}.
SUCCESSOR_POINTS = (
    "connected",
    "before-adopt",
    "after-adopt",
    "after-batch",
    "after-restore",
    "after-switch",
    "before-commit",
)

#: The points at which an incumbent consults its L{Faults}: C{state-sent}
#: is once the connections' state and descriptors are handed to the
#: kernel, before C{capture} is answered.
INCUMBENT_POINTS = ("state-sent",)

#: Every point a fault may name.
POINTS = SUCCESSOR_POINTS + INCUMBENT_POINTS

#: The fault actions: C{kill} (C{SIGKILL} this process), C{hang} (stop
#: progressing, the reactor still running), C{raise} (raise an exception),
#: C{gate} (wait, the reactor still running, until the gate file exists).
ACTIONS = ("kill", "hang", "raise", "gate")

#: How long a C{gate} waits at most for its file, and how often it looks.
GATE_TIMEOUT = 600.0
GATE_INTERVAL = 0.01


def _killSelf() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class InvalidFaults(ValueError):
    """
    A fault specification names an unknown action or point.
    """


@attrs.frozen
class Faults:
    """
    Failures to inject on purpose, for rollback drills (an operator feature,
    see docs/operators.md, "Fault injection"): C{action -> point} pairs.

    Built once, where the service is built (from C{MIGRATOR_FAULT}), and
    handed to the role that consults it.

    @ivar points: the C{(action, point)} pairs, in the order given.
    @ivar gate: the file a C{gate} waits for (C{MIGRATOR_FAULT_GATE}).
    @ivar kill: how to kill this process (a seam for tests).
    """

    points: tuple[tuple[str, str], ...] = ()
    gate: str | None = None
    kill: Callable[[], None] = attrs.field(default=_killSelf, eq=False, repr=False)

    @classmethod
    def parse(cls, spec: str, known: tuple[str, ...] = POINTS, gate: str | None = None) -> Faults:
        """
        Read a comma-separated list of C{ACTION:POINT}.

        @param spec: e.g. C{"kill:after-switch"}; empty for none.
        @param known: the points that may be named.
        @param gate: the gate file, required by a C{gate} action.
        @return: the faults.
        @raise InvalidFaults: if an action or point is unknown, or a
            C{gate} has no gate file.
        """
        points = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            action, _, point = item.partition(":")
            if action not in ACTIONS or point not in known:
                raise InvalidFaults(
                    f"{item!r}: expected ACTION:POINT with ACTION one of "
                    f"{', '.join(ACTIONS)} and POINT one of {', '.join(known)}"
                )
            if action == "gate" and not gate:
                raise InvalidFaults(f"{item!r}: a gate needs MIGRATOR_FAULT_GATE, the file it waits for")
            points.append((action, point))
        return cls(tuple(points), gate or None)

    def __bool__(self) -> bool:
        return bool(self.points)

    async def at(
        self, point: str, hangs: list[Deferred[None]], clock: IReactorTime | None = None
    ) -> None:
        """
        Inject the faults given for C{point}, if any.

        @param point: where the caller is.
        @param hangs: where a C{hang} (or C{gate}) keeps the L{Deferred} it
            waits on (a coroutine suspended on a L{Deferred} that nothing
            else references is garbage-collected, which would turn the hang
            into a failure).
        @param clock: what a C{gate} polls its file with.
        @raise RuntimeError: for a C{raise} fault.
        """
        for action, where in self.points:
            if where != point:
                continue
            _log.warn("fault injection: {action} at {point}", action=action, point=point)
            if action == "kill":
                self.kill()
            elif action == "hang":
                hang: Deferred[None] = Deferred()
                hangs.append(hang)
                await hang
            elif action == "gate":
                assert clock is not None and self.gate is not None
                await self._gate(clock, self.gate, hangs)
            else:
                raise RuntimeError(f"injected fault at {point}")

    @staticmethod
    def _gate(clock: IReactorTime, path: str, hangs: list[Deferred[None]]) -> Deferred[None]:
        """
        Wait, polling, until C{path} exists (at most L{GATE_TIMEOUT}).
        """
        opened: Deferred[None] = Deferred()
        hangs.append(opened)
        deadline = clock.seconds() + GATE_TIMEOUT

        def look() -> None:
            if opened.called:
                return
            if os.path.exists(path) or clock.seconds() >= deadline:
                _log.info("fault injection: the gate opened")
                opened.callback(None)
            else:
                clock.callLater(GATE_INTERVAL, look)

        look()
        return opened
