# -*- test-case-name: tests.test_unmovable -*-
"""
Never two, in the takeover protocol: the incumbent plans what becomes of
its connections (L{migrator.state._plan}) at C{begin}, before any
descriptor is sent, and applies the successor's C{--unmovable} policy to
the connections no adapter can move.

  - C{refuse} (the successor's default): if there is any, the takeover is
    refused (at C{begin}, or, for one that arrived since, at C{capture} or
    right after accepting stopped at C{switch}, which abandons the
    takeover: nothing changed).
  - C{drain}: they stay with the old process until they close; the log of
    both processes and C{status} say the service's state is now split.
  - C{close}: after the commit, the old process closes them as a shutdown
    would (C{loseConnection}: unsent bytes are written, the application's
    C{connectionLost} runs).

A successor that sends no policy (one older than this protocol field) gets
what it always got: C{drain}.

A successor may also send a selection (C{select}: connection and component
ids, from C{twistd migrate --select}): only those move this time; the
others are planned as not selected and follow the policy like connections
no adapter can move (or drain, if their adapter says that is harmless),
and the capture keeps back a selected one whose graph reaches them.

The successor's side is two small things: what it sends in C{begin}'s info
(L{beginInfo}), and the plan it logs (L{describePlan}).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import attrs
from twisted.logger import Logger

from migrator.interfaces import IPortRegistry
from migrator.state._plan import (
    CLOSE,
    DRAIN,
    POLICIES,
    REFUSE,
    UNKNOWN,
    Plan,
    planConnections,
    refusalMessage,
    refusedCounts,
    settledCounts,
)
from migrator.state._quicklook import SuspectTest, anyUnknown, suspectTest
from migrator.state._versions import Readable, readableFrom, readableTypes
from migrator.takeover._inspect import selectionOf
from migrator.takeover._messages import BeginRequest, CaptureRequest, Streaming

_log = Logger()


def beginInfo(adapters: Any, policy: str, select: Sequence[str] = ()) -> dict[str, Any]:
    """
    What a successor adds to C{begin}'s info: its policy for connections no
    adapter can move, the type names (with versions) it can restore, and,
    if the operator chose which connections move this time, their ids
    (C{select}: connection or component ids, as C{python -m migrator plan}
    and the console show them).
    """
    names = adapters.typeNames()
    info: dict[str, Any] = {
        "unmovable": policy,
        "types": names,
        "versions": {name: adapters.adapterNamed(name).version for name in names},
        "readable": readableTypes(adapters),
    }
    if select:
        info["select"] = list(select)
    return info


def beginRequest(adapters: Any, policy: str, select: Sequence[str] = ()) -> BeginRequest:
    """
    A successor's C{begin}: who it is, its policy for connections no
    adapter can move, the type names (with versions) it can restore, and
    the connections the operator selected to move (all if none).
    """
    mine = beginInfo(adapters, policy, select)
    return BeginRequest(
        os.getpid(),
        sys.version.split()[0],
        tuple(sys.argv[:50]),
        mine["unmovable"],
        tuple(mine["types"]),
        mine["versions"],
        mine["readable"],
        tuple(select),
    )


def captureRequestFor(adapters: Any, stream: Streaming | None = None) -> CaptureRequest:
    """
    A successor's C{capture}: the type names it can restore, with what it
    reads of each (versions, upgrades), and how to stream them.
    """
    mine = beginInfo(adapters, REFUSE)
    return CaptureRequest(tuple(mine["types"]), mine["versions"], mine["readable"], stream)


def describePlan(plan: Any) -> str | None:
    """
    The plan an incumbent answered C{begin} with, as a line for the
    successor's log (C{None} if it sent none).
    """
    if not isinstance(plan, dict):
        return None
    return Plan.fromDict(plan).summary()


@attrs.frozen
class Refusal:
    """
    A takeover refused because connections no adapter can move would stay.

    @ivar message: for the operator (the successor prints it).
    @ivar record: for C{status}'s C{last_takeover}.
    """

    message: str
    record: dict[str, Any]


@attrs.define(eq=False)
class UnmovableGuard:
    """
    The incumbent's plan of one takeover, and the policy applied to it.

    @ivar policy: the policy the current (or last) successor asked for.
    @ivar planned: the latest plan of the current takeover.
    """

    _registry: IPortRegistry
    _adapters: Any
    clock: Callable[[], float] = time.time
    policy: str = DRAIN
    planned: Plan | None = None
    _successorPid: int = -1
    _versions: dict[str, Readable] | None = None
    #: After a commit with C{drain}: the connections left here that split
    #: the service, with their class names.
    _left: list[tuple[str, Any]] = attrs.field(factory=list)
    _splitWith: int | None = None
    #: If the successor sent a selection (C{select}): whether a connection
    #: was selected to move; the others follow the policy.
    selected: Callable[[Any], bool] | None = None

    def start(self, info: dict[str, Any], listed: list[Any] | None = None) -> dict[str, Any]:
        """
        A takeover begins: take the successor's policy and adapters from
        C{info}, plan (the open connections C{listed}, if the caller has
        just listed them), and log the plan.

        @return: the plan, as plain data, for C{begin}'s answer.
        """
        policy = info.get("unmovable", DRAIN)
        # An unknown policy (a newer successor's) is treated as the safe one.
        self.policy = policy if policy in POLICIES else REFUSE
        pid = info.get("pid")
        self._successorPid = pid if isinstance(pid, int) else -1
        # What the successor reads of each type name (versions, upgrades);
        # without it (an older successor) not checked until the capture.
        self._versions = readableFrom(info)
        self.selected = None
        chosen = ""
        select = info.get("select")
        if isinstance(select, list) and select and all(isinstance(t, str) for t in select):
            self.selected, count, unknown = selectionOf(self._registry, self._adapters, select)
            chosen = f"; the operator selected {count} connection(s) to move" + (
                f" ({len(unknown)} id(s) name nothing open)" if unknown else ""
            )
        self.planned = self._plan(self._rest() if listed is None else listed)
        _log.info(
            "takeover by pid {pid}: {summary}; policy for connections no adapter "
            "can move: {policy}{chosen}",
            pid=self._successorPid,
            summary=self.planned.summary(),
            policy=self.policy,
            chosen=chosen,
        )
        return self.planned.asDict()

    def _plan(self, connections: list[Any]) -> Plan:
        return planConnections(connections, self._adapters, self._versions, self.selected)

    def suspects(self) -> SuspectTest | None:
        """
        For a look at every connection that comes anyway (a stream's first
        look), before L{check} at a later step: a test of whether a
        connection may be L{UNKNOWN} (C{check} then needs only those); or
        C{None} if the policy refuses nothing.
        """
        if self.policy != REFUSE:
            return None
        return suspectTest(self._adapters, self._versions, self.selected)

    def _rest(self, leaving: AbstractSet[int] = frozenset(), counted: int = -1) -> list[Any]:
        # (The caller holds the transports of leaving.)
        return self._registry.openConnectionsBesides(leaving, counted)

    def check(self, step: str, rest: list[Any] | None = None) -> Refusal | None:
        """
        Apply the C{refuse} policy: at C{begin} to the plan L{start} made,
        at a later step to a new plan (connections may have arrived since).

        @param rest: the open connections to look at, if not all (a
            stream's last turn leaves out those its batches took).
        @return: the refusal, or C{None} if the takeover may go on.
        """
        if self.policy != REFUSE:
            return None
        if step == "begin" and self.planned is not None:
            plan = self.planned
        else:
            if rest is None:
                rest = self._rest()
            # A quick look first: at switch, accepting is paused meanwhile.
            if not anyUnknown(rest, self._adapters, self._versions, self.selected):
                return None
            plan = self.planned = self._plan(rest)
        if not plan.count(UNKNOWN):
            return None
        message = refusalMessage(plan, os.getpid(), step)
        if step == "begin":
            # Later steps abandon the takeover, which logs the reason.
            _log.warn(
                "takeover by pid {pid} refused before anything moved; this process "
                "keeps serving, unchanged: {message}",
                pid=self._successorPid,
                message=message,
            )
        return Refusal(
            message,
            {
                "outcome": "refused" if step == "begin" else "abandoned",
                "successor_pid": self._successorPid,
                "at": self.clock(),
                "step": step,
                "reason": message,
                "unmovable": self.policy,
                "classes": refusedCounts(plan),
                "plan": plan.asDict(),
            },
        )

    def committed(
        self, moved: dict[str, int], leaving: frozenset[int] = frozenset(), counted: int = -1
    ) -> dict[str, Any]:
        """
        The takeover committed (this process has released what moved, or
        is about to): apply the policy to the connections no adapter could
        move, and count, per class, what moved, drained and was closed.

        @param moved: the connections that moved, by class.
        @param leaving: the ids of the transports that moved, if this
            process has not released them yet (and holds them), of which
            the registry counts C{counted} (-1: not known).
        @return: the report, for C{commit}'s answer and C{status}.
        """
        remaining = self._plan(self._rest(leaving, counted))
        unknown = list(remaining.unknownTransports)
        split: dict[str, int] = {}
        if unknown and self.policy == CLOSE:
            _log.info(
                "closing {count} connection(s) no adapter can move, as a shutdown "
                "would (--unmovable close): {classes}",
                count=len(unknown),
                classes=_classes(remaining.byClass(UNKNOWN)),
            )
            for _, transport in unknown:
                transport.loseConnection()
        elif unknown:
            split = remaining.byClass(UNKNOWN)
            self._left = unknown
            self._splitWith = self._successorPid
            _log.warn(
                "the service's state is now split: {count} connection(s) no adapter "
                "can move stay in this process (pid {pid}, the old one) until they "
                "close, seeing only its state, while pid {successor} serves every "
                "other connection (--unmovable {policy}): {classes}",
                count=len(unknown),
                pid=os.getpid(),
                successor=self._successorPid,
                policy=self.policy,
                classes=_classes(split),
            )
        return {
            "unmovable": self.policy,
            "classes": settledCounts(moved, remaining, self.policy),
            "split": bool(split),
            "split_classes": split,
        }

    def splitStatus(self) -> dict[str, Any]:
        """
        Whether connections that split the service still live here, for
        C{status}.
        """
        classes: dict[str, int] = {}
        for name, transport in self._left:
            if getattr(transport, "connected", False):
                classes[name] = classes.get(name, 0) + 1
        return {
            "split": bool(classes),
            "split_classes": classes,
            "split_with": self._splitWith if classes else None,
        }


def splitStatus(
    guard: UnmovableGuard | None,
    tookOver: dict[str, Any] | None,
    predecessor: dict[str, Any] | None,
) -> dict[str, Any]:
    """
    C{status}'s C{split}, C{split_classes} and C{split_with}: the service's
    state is split if this process left connections behind when it handed
    off (and some are still open), or if its predecessor did and still
    runs.
    """
    if guard is not None:
        mine = guard.splitStatus()
        if mine["split"]:
            return mine
    if tookOver and tookOver.get("split") and predecessor and predecessor.get("draining"):
        classes = tookOver.get("split_classes")
        return {
            "split": True,
            "split_classes": dict(classes) if isinstance(classes, dict) else {},
            "split_with": predecessor.get("pid"),
        }
    return {"split": False, "split_classes": {}, "split_with": None}


def _classes(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in counts.items())
