# -*- test-case-name: tests.test_inspect -*-
"""
Read-only answers of the control socket for operators (C{python -m
migrator plan} and the console): the plan of a takeover computed now,
without starting one (L{inspectPlan}), and the object graph behind the
connections (L{inspectGraph}); and the selection a successor may send in
C{begin}'s info (C{select}: connection and component ids, see
L{migrator.state._summary}), as the incumbent applies it (L{selectionOf}).

Nothing here changes the service: the walk reads the objects and calls
the adapters' C{capture}, which only reads.  Arguments come from a peer and
are checked (L{BadRequest}).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.spread import pb

from migrator._twistedinternals import pendingBytes
from migrator.interfaces import IPortRegistry
from migrator.state._plan import POLICIES

if TYPE_CHECKING:
    from migrator.state._summary import ObjectGraph

# (The reports and the graph's summary are imported where they are used:
# an operator's question, or a begin with a selection, never on a
# successor's way to its takeover.)

#: The most ids a selection or an expansion may name.
MAX_TOKENS = 100_000


class BadRequest(pb.Error):
    """
    A peer's arguments were not what the method takes; the message says
    which.
    """


def _tokens(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) > MAX_TOKENS:
        raise BadRequest(f"{what} must be a list of at most {MAX_TOKENS} ids")
    if not all(isinstance(v, str) and 0 < len(v) <= 200 for v in value):
        raise BadRequest(f"{what} must hold connection or component ids (strings)")
    return list(value)


def anchorsOf(registry: IPortRegistry) -> dict[int, tuple[str, Any]]:
    """
    The factories of the stream ports, as the capture anchors them.
    """
    anchors = {}
    for tracked in registry.listening():
        factory = getattr(tracked.port, "factory", None)
        if tracked.kind != "udp" and factory is not None:
            anchors[id(factory)] = (f"factory:{tracked.key}", factory)
    return anchors


def _graph(
    registry: IPortRegistry, adapters: Any, walk: bool = True
) -> tuple[ObjectGraph, dict[int, Any]]:
    """
    The connections, and (if C{walk}) the graph behind them: the walk runs
    in the reactor's thread, about 36 us per web connection.
    """
    from migrator.state._summary import summarizeGraph

    anchors = anchorsOf(registry)
    transports = list(registry.openConnections())
    return summarizeGraph(transports, adapters, anchors, budget=200_000 if walk else 0), anchors


def _pending(transport: Any) -> int:
    return len(pendingBytes(transport))


def _connections(
    registry: IPortRegistry, graph: ObjectGraph, clock: Callable[[], float]
) -> dict[str, dict[str, Any]]:
    from migrator.state._summary import describeConnection

    connectedAt = getattr(registry, "connectedAt", lambda t: None)
    now = clock()
    return {
        graph.connectionIds[i]: describeConnection(t, registry.keyOf, connectedAt, now, _pending)
        for i, t in enumerate(graph.connections)
    }


def inspectPlan(
    registry: IPortRegistry,
    adapters: Any,
    clock: Callable[[], float],
    policy: Any,
    select: Any = None,
) -> dict[str, Any]:
    """
    The plan of a takeover under C{policy} (and a selection), now.  The
    successor is assumed to read what this process writes (its own
    adapters are only known at C{begin}).

    @raise BadRequest: for an unknown policy or a malformed selection.
    """
    from migrator.state._report import planReport

    if policy not in POLICIES:
        raise BadRequest(f"policy must be one of {', '.join(POLICIES)}")
    tokens = _tokens(select, "select")
    # Without a selection the plan needs no walk of the graph.
    graph, anchors = _graph(registry, adapters, walk=tokens is not None)
    report = planReport(graph, adapters, policy, registry.keyOf, tokens, anchors)
    described = _connections(registry, graph, clock)
    for ident, record in report["connections"].items():
        record.update(described.get(ident, {}))
    addresses = {p.key: p.address() for p in registry.listening()}
    for port in report["ports"]:
        port["address"] = addresses.get(port["key"])
    for key, address in addresses.items():
        if key not in {p["key"] for p in report["ports"]}:
            report["ports"].append({"key": key, "address": address, "classes": []})
    report["ports"].sort(key=lambda p: p["key"])
    report["truncated"] = tokens is not None and graph.truncated
    return report


def inspectGraph(
    registry: IPortRegistry,
    adapters: Any,
    clock: Callable[[], float],
    expand: Any = None,
    maxNodes: Any = 400,
) -> dict[str, Any]:
    """
    The object graph behind the connections (L{graphReport}).

    @param expand: component ids to expand (default: the largest that fit).
    @raise BadRequest: for malformed arguments.
    """
    from migrator.state._report import graphReport

    tokens = _tokens(expand, "expand") or []
    if not isinstance(maxNodes, int) or isinstance(maxNodes, bool) or not 0 < maxNodes <= 5000:
        raise BadRequest("maxNodes must be an integer from 1 to 5000")
    graph, _ = _graph(registry, adapters)
    return graphReport(graph, _connections(registry, graph, clock), tokens, maxNodes)


def selectionOf(
    registry: IPortRegistry, adapters: Any, select: Sequence[str]
) -> tuple[Callable[[Any], bool], int, list[str]]:
    """
    The connections open now that C{select} names (connection ids, or
    component ids for all of a component's).

    @return: whether a transport is selected (one opened later is not),
        how many are, and the ids that name nothing open.
    """
    graph, _ = _graph(registry, adapters)
    chosen, unknown = graph.resolve(list(select))
    selected: weakref.WeakSet[Any] = weakref.WeakSet(graph.connections[i] for i in chosen)
    return (lambda transport: transport in selected), len(chosen), unknown


class OperatorQueries:
    """
    The read-only remote methods of the incumbent's control session (a
    mixin of L{migrator.takeover._incumbent.ControlSession}, which gives
    C{_incumbent()}): nothing they do starts a takeover or changes the
    service.
    """

    def _incumbent(self) -> Any:
        raise NotImplementedError

    def remote_plan(self, policy: Any = "refuse", select: Any = None) -> dict[str, Any]:
        """
        The plan of a takeover under C{policy} (and a selection), now.
        """
        i = self._incumbent()
        return inspectPlan(i.registry, i.adapters, i.clock, policy, select)

    def remote_graph(self, expand: Any = None, maxNodes: Any = 400) -> dict[str, Any]:
        """
        A safe summary of the object graph behind the connections.
        """
        i = self._incumbent()
        return inspectGraph(i.registry, i.adapters, i.clock, expand, maxNodes)
