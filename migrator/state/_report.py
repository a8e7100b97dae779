# -*- test-case-name: tests.test_summary -*-
"""
The operator's view of a takeover before it runs: L{planReport} says, per
port and per class of connection, how many would move, drain, be closed or
refuse the takeover under a policy (C{--unmovable}), and why; with a
I{selection} (the connections or components the operator chose to move this
time) it also says which selected connections would be kept back because
their graph reaches one that stays, and where the state would split.
L{graphReport} is the object graph of L{migrator.state._summary}, as plain
data small enough for a page: a service with 10,000 connections is
summarised by class and component, and components are expanded on demand.

Both are plain data made of dicts, lists, strings and numbers, for the
control socket (PB) and for JSON.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet import base, task
from twisted.internet.interfaces import IReactorCore

from migrator.state._graph import GraphWriter, Unadaptable
from migrator.state._plan import (
    CLOSE,
    DECLINED,
    DRAIN,
    HARMLESS,
    MOVES,
    REFUSE,
    Classifier,
    Verdict,
)
from migrator.state._summary import ANCHOR, CONNECTION, ObjectGraph

MOVE = "move"
CLOSED = "close"
REFUSED = "refused"
#: What becomes of a connection, in the order a page shows them.
OUTCOMES = (MOVE, DRAIN, CLOSED, REFUSED)


def outcomeOf(kind: str, policy: str) -> str:
    """
    What becomes of a connection of C{kind} (L{migrator.state._plan.KINDS})
    under C{policy}.
    """
    if kind == MOVES:
        return MOVE
    if kind in (HARMLESS, DECLINED):
        return DRAIN
    return {REFUSE: REFUSED, CLOSE: CLOSED}.get(policy, DRAIN)


@attrs.define(eq=False)
class _PreviewHooks:
    """
    The capture's C{special} hook, for a preview: a connection that stays
    cannot be carried (so what reaches it stays too), anything else the
    capture carries is accepted without being frozen.
    """

    adapters: Any
    transports: Mapping[int, int]
    staying: Mapping[int, str]

    def __call__(self, value: Any, writer: GraphWriter, path: str) -> Any:
        index = self.transports.get(id(value))
        if index is not None:
            if index in self.staying:
                raise Unadaptable(value, path, f"connection {self.staying[index]}, which stays")
            writer.rememberSpecial(value)
            return ("x", "transport", writer._write(getattr(value, "protocol", None)))
        if isinstance(value, base.DelayedCall):
            writer.rememberSpecial(value)
            return ("x", "call", writer._write((value.func, value.args, dict(value.kw))))
        if isinstance(value, task.LoopingCall):
            writer.rememberSpecial(value)
            return ("x", "loop", writer._write((value.f, value.a, dict(value.kw))))
        if isinstance(value, types.MethodType):
            return ("x", "method", writer._write(value.__self__))
        if IReactorCore.providedBy(value) or self.adapters.functionName(value) is not None:
            return ("x", "known", None)
        return None


_CLASS = re.compile(r"<[A-Za-z_][A-Za-z0-9_.]*>")
_ATTRIBUTE = re.compile(r"\['[A-Za-z_][A-Za-z0-9_]*'\]")
_INDEX = re.compile(r"\[\d+\]")


def safePath(path: str) -> str:
    """
    A capture's path to an object (C{"factory['users'][b'bob']<Chat>"}),
    without the application's data: after the root's name, only an
    object's C{<Class>}, list positions and the attribute names of an
    object's state (a key right after C{<Class>} or the root) are kept;
    anything else (a dictionary's keys: user names, session ids) becomes
    C{[...]}.
    """
    cut = min((i for i in (path.find("["), path.find("<")) if i >= 0), default=len(path))
    out = [path[:cut]]
    i, attributeNext, hidden = cut, True, False
    while i < len(path):
        for pattern, isClass in ((_CLASS, True), (_ATTRIBUTE, False), (_INDEX, False)):
            match = pattern.match(path, i)
            if match and (pattern is not _ATTRIBUTE or attributeNext):
                out.append(match.group())
                i, attributeNext, hidden = match.end(), isClass, False
                break
        else:
            if not hidden:
                out.append("[...]")
            i, attributeNext, hidden = i + 1, False, True
    return "".join(out)


def previewCapture(
    graph: ObjectGraph,
    movers: Sequence[int],
    staying: Mapping[int, str],
    adapters: Any,
    anchors: Mapping[int, tuple[str, Any]],
) -> tuple[dict[int, str], str | None]:
    """
    Which of the connections planned to move (C{movers}) the capture would
    keep back, because their graph reaches a connection that stays (or an
    object no adapter covers); and whether a port's factory's state reaches
    one, which keeps everything back.

    @param staying: the connections that stay, by index, with their ids.
    @return: the reason for each connection kept back, by index, and the
        reason nothing would move (or C{None}).
    """
    transports = {id(t): i for i, t in enumerate(graph.connections)}
    hooks = _PreviewHooks(adapters, transports, staying)
    writer = GraphWriter(adapters.adapterFor, {k: name for k, (name, _) in anchors.items()}, hooks)
    kept: dict[int, str] = {}
    carried: set[int] = set()
    for i in movers:
        if i in carried:
            continue
        protocol = getattr(graph.connections[i], "protocol", None)
        writer.checkpoint()
        try:
            writer.write(protocol, type(protocol).__name__)
        except Unadaptable as e:
            writer.rollback()
            kept[i] = f"its graph reaches {e.why} ({safePath(e.path)})"
            continue
        except RecursionError:
            writer.rollback()
            kept[i] = "its graph is nested too deeply"
            continue
        writer.release()
        carried.add(i)
    for _, (name, factory) in sorted(anchors.items(), key=lambda item: item[1][0]):
        adapter = adapters.adapterFor(type(factory))
        if adapter is None or not name.startswith("factory:"):
            continue
        try:
            writer.write(factory, name)
        except Unadaptable as e:
            return kept, f"the state of {name} reaches {e.why} ({safePath(e.path)})"
    return kept, None


def planReport(
    graph: ObjectGraph,
    adapters: Any,
    policy: str,
    keyOf: Callable[[Any], str | None],
    selection: Sequence[str] | None = None,
    anchors: Mapping[int, tuple[str, Any]] | None = None,
    successorVersions: Mapping[str, Any] | None = None,
    maxConnections: int = 2000,
) -> dict[str, Any]:
    """
    What a takeover would do now, per port and class (see the module
    docstring), and for at most C{maxConnections} connections one by one
    (those that would not move first; C{connections_left_out} counts the
    others).

    @param graph: the connections and their graph (L{summarizeGraph}).
    @param keyOf: the declared key of a connection's listening port.
    @param selection: connection or component ids the operator chose to
        move; C{None} for all.
    """
    chosen: set[int] | None = None
    unknownTokens: list[str] = []
    if selection is not None:
        chosen, unknownTokens = graph.resolve(selection)
    classifier = Classifier(adapters, successorVersions)
    verdicts: list[Verdict] = []
    for i, t in enumerate(graph.connections):
        verdict = classifier.classify(t, selected=chosen is None or i in chosen)
        assert verdict is not None
        verdicts.append(verdict)
    outcomes = [(outcomeOf(v.kind, policy), v.reason) for v in verdicts]
    kept: dict[int, str] = {}
    blocked = None
    keptBack = 0
    if chosen is not None:
        movers = [i for i, v in enumerate(verdicts) if v.kind == MOVES]
        staying = {i: graph.connectionIds[i] for i, v in enumerate(verdicts) if v.kind != MOVES}
        kept, blocked = previewCapture(graph, movers, staying, adapters, anchors or {})
        for i in movers:
            why = blocked or kept.get(i)
            if why:
                outcomes[i] = (DRAIN, why)
                keptBack += 1
    refusedCount = sum(1 for o, _ in outcomes if o == REFUSED)
    # One by one: those that do not move first, at most maxConnections.
    listed = sorted(range(len(outcomes)), key=lambda i: outcomes[i][0] == MOVE)[:maxConnections]
    listed.sort()
    ports: dict[str, dict[str, dict[str, Any]]] = {}
    for i, t in enumerate(graph.connections):
        server = getattr(t, "server", None)
        key = (keyOf(server) if server is not None else None) or "(no port)"
        entry = ports.setdefault(key, {}).setdefault(
            verdicts[i].typeName, {"total": 0, **dict.fromkeys(OUTCOMES, 0), "reasons": {}}
        )
        outcome, reason = outcomes[i]
        entry["total"] += 1
        entry[outcome] += 1
        if reason:
            label = f"{outcome}: {reason}"
            entry["reasons"][label] = entry["reasons"].get(label, 0) + 1
    report: dict[str, Any] = {
        "policy": policy,
        "total": len(graph.connections),
        **{o: sum(1 for x, _ in outcomes if x == o) for o in OUTCOMES},
        "takeover_refused": bool(refusedCount),
        "ports": [
            {
                "key": key,
                "classes": [
                    {"class": name, **counts, "reasons": sorted(counts["reasons"].items())}
                    for name, counts in sorted(classes.items())
                ],
            }
            for key, classes in sorted(ports.items())
        ],
        "connections": {
            graph.connectionIds[i]: {
                "outcome": outcomes[i][0],
                "reason": outcomes[i][1],
                "kind": verdicts[i].kind,
            }
            for i in listed
        },
        "connections_left_out": len(outcomes) - len(listed),
    }
    for port in report["ports"]:
        for c in port["classes"]:
            c["reasons"] = [[label, n] for label, n in c["reasons"]]
    if refusedCount:
        report["message"] = (
            f"the takeover would be refused (--unmovable {policy}): {refusedCount} "
            f"connection(s) cannot move and nothing says leaving them is harmless; "
            f"nothing would change"
        )
    if chosen is not None:
        report["selection"] = {
            "tokens": list(selection or ()),
            "selected": len(chosen),
            "unknown": unknownTokens,
            "kept_back": keptBack,
            "blocked": blocked,
            "split_points": [graph.nodes[p].asDict() for p in graph.splitPoints(chosen)[:200]],
        }
    return report


def graphReport(
    graph: ObjectGraph,
    connections: Mapping[str, dict[str, Any]],
    expand: Sequence[str] = (),
    maxNodes: int = 400,
    maxComponents: int = 50,
    maxIds: int = 2000,
) -> dict[str, Any]:
    """
    The graph as plain data for a page: every class of object with its
    count; the largest C{maxComponents} components one by one, the others
    grouped by what classes of connection they hold; the anchors; and the
    nodes and edges of the expanded components (those named in C{expand},
    or, by default, the largest ones while they fit in C{maxNodes} nodes).

    @param connections: what to say of each connection (its port, peer,
        age, plan...), by connection id.
    """
    nodes = graph.nodes
    classes: dict[tuple[str, Any, Any], int] = {}
    for node in nodes:
        if node.kind != CONNECTION and node.shared:
            key = (node.cls, node.adapter, node.version)
            classes[key] = classes.get(key, 0) + 1
    shown = graph.components[:maxComponents]
    expanded: list[Any] = []
    budget = maxNodes
    if expand:
        wanted = set(expand)
        expanded = [c for c in graph.components if c.ident in wanted]
        budget = max(maxNodes, 2000)
        shown = shown + [c for c in expanded if c not in shown]
    else:
        for c in shown:
            size = sum(1 for i in c.nodes if nodes[i].shared)
            if size > budget:
                break
            expanded.append(c)
            budget -= size
    groups: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}
    for c in graph.components[maxComponents:]:
        if c in shown:
            continue
        signature = tuple(sorted(_protocolClasses(graph, c).items()))
        group = groups.setdefault(
            signature,
            {"classes": dict(signature), "components": 0, "connections": 0, "examples": []},
        )
        group["components"] += 1
        group["connections"] += len(c.connections)
        if len(group["examples"]) < 10:
            group["examples"].append(c.ident)
    drawn: list[int] = []
    cut: list[str] = []
    for c in expanded:
        members = [i for i in c.nodes if nodes[i].shared]
        if len(members) > budget and expand:
            cut.append(c.ident)
            members = members[:budget]
        budget -= len(members)
        drawn.extend(members)
    anchorIndices = [i for i, n in enumerate(nodes) if n.kind == ANCHOR]
    inDrawing = set(drawn) | set(anchorIndices)
    componentOfNode = {i: c.ident for c in expanded for i in c.nodes}
    return {
        "connections": len(graph.connections),
        "objects": sum(1 for n in nodes if n.kind != CONNECTION),
        "truncated": graph.truncated,
        "visits": graph.visits,
        "classes": [
            {"class": cls, "adapter": adapter, "version": version, "objects": count}
            for (cls, adapter, version), count in sorted(
                classes.items(), key=lambda item: (-item[1], item[0][0])
            )
        ],
        "components": [
            {
                "id": c.ident,
                "connections": len(c.connections),
                "objects": sum(1 for i in c.nodes if nodes[i].shared) - len(c.connections),
                "classes": _protocolClasses(graph, c),
                "anchors": list(c.anchors),
                "connection_ids": [graph.connectionIds[i] for i in c.connections[:maxIds]],
                "expanded": c in expanded,
            }
            for c in shown
        ],
        "more_components": len(graph.components) - len(shown),
        "groups": sorted(groups.values(), key=lambda g: -g["connections"]),
        "cut": cut,
        "nodes": [
            {
                **nodes[i].asDict(),
                "component": componentOfNode.get(i),
                **(
                    {"connection": connections.get(nodes[i].ident, {})}
                    if nodes[i].kind == CONNECTION
                    else {}
                ),
            }
            for i in sorted(inDrawing)
        ],
        "edges": _drawnEdges(graph, inDrawing),
    }


def _drawnEdges(graph: ObjectGraph, drawn: set[int]) -> list[list[str]]:
    """
    The edges between drawn nodes, a private container (held by one
    object) standing for its holder.
    """
    holder = {b: a for a, b in graph.edges if not graph.nodes[b].shared}

    def owner(i: int) -> int:
        for _ in range(10_000):
            if i not in holder:
                return i
            i = holder[i]
        return i

    edges = set()
    for a, b in graph.edges:
        if b in drawn:
            a = owner(a)
            if a in drawn and a != b:
                edges.add((a, b))
    return [[graph.nodes[a].ident, graph.nodes[b].ident] for a, b in sorted(edges)]


def _protocolClasses(graph: ObjectGraph, component: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in component.connections:
        cls = graph.nodes[i].cls
        counts[cls] = counts.get(cls, 0) + 1
    return counts
