# -*- test-case-name: tests.test_summary -*-
"""
What an operator may see of the object graph behind a service's open
connections: which connections share which objects, each object's class,
adapter and version, and the I{shape} of its state (attribute names, types
and sizes), never a value.

L{summarizeGraph} walks from every open connection's protocol, the way a
capture would (an adapted object's state is what its adapter's C{capture}
returns; scheduled calls, loops and bound methods are looked through), and
also into the instance dictionary of a protocol with no adapter, so that
the operator sees what such a connection shares (the chat room of the
documentation's chat server) before any adapter is written.  It never
descends into any other object without an adapter.

Objects reached from two connections join them into one I{component}
(union-find).  A port's factory and the reactor are I{anchors}: the
successor has its own, so they never join components; they are listed
with the components that reach them.  A container (list, dict, set)
reached from two objects is drawn as a node of its own (a I{shared}
container: the users dictionary of a chat, say); one reached from a single
object is part of that object's shape.

The walk is bounded (L{summarizeGraph}'s C{budget}); a walk cut short says
so (C{truncated}).

Connection ids (L{connectionId}) and component ids are stable for as long
as the connection lives: the descriptor number with the peer's port, and
C{k} plus the smallest connection id of the component.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet import base, task
from twisted.internet.interfaces import IReactorCore

from migrator.state._graph import typeName

CONNECTION = "connection"
OBJECT = "object"
ANCHOR = "anchor"
SHARED = "shared"
CONTAINER = "container"

#: How many attribute names an object's shape lists.
_MAX_KEYS = 40
_ATOMS = (type(None), bool, int, float, str, bytes, complex)
_CONTAINERS = (list, dict, set, bytearray)
_SKIPPED = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType, property)


def connectionId(transport: Any) -> str:
    """
    A connection's id: C{c} with its descriptor number and, for TCP, the
    peer's port (unique among this process's open connections, and stable
    while it is open); an object without a descriptor gets its memory
    address.
    """
    try:
        fd = transport.fileno()
    except Exception:
        fd = None
    if not isinstance(fd, int) or fd < 0:
        return f"c{id(transport):x}"
    port = getattr(_peer(transport), "port", None)
    return f"c{fd}.{port}" if isinstance(port, int) else f"c{fd}"


def _peer(transport: Any) -> Any:
    try:
        return transport.getPeer()
    except Exception:
        return None


def peerText(transport: Any) -> str | None:
    """
    The peer's address, as an operator reads it (C{host:port}, or a UNIX
    socket's path, or C{unix} for an unnamed one).
    """
    peer = _peer(transport)
    if peer is None:
        return None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    name = getattr(peer, "name", None)
    if name:
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return "unix"


def shapeOf(value: Any) -> str:
    """
    A value's type and size, never the value: C{"str[5]"}, C{"dict[3]"},
    C{"int"}, or the class name of an object.
    """
    kind = type(value)
    if value is None:
        return "None"
    if kind in (bool, int, float, complex):
        return kind.__name__
    if isinstance(value, (str, bytes, bytearray, list, tuple, dict, set, frozenset)):
        return f"{kind.__name__}[{len(value)}]"
    return typeName(kind)


def stateShape(state: Any) -> Any:
    """
    The shape of an object's state: for a dictionary keyed by attribute
    names, each name with the shape of its value (at most L{_MAX_KEYS},
    the rest counted); otherwise the state's own L{shapeOf}.
    """
    if not isinstance(state, dict):
        return shapeOf(state)
    names = sorted(k for k in state if isinstance(k, str) and k.isidentifier() and len(k) <= 64)
    shape: dict[str, str] = {name: shapeOf(state[name]) for name in names[:_MAX_KEYS]}
    others = len(state) - len(shape)
    if others:
        shape["..."] = f"{others} more"
    return shape


@attrs.define(eq=False)
class Node:
    """
    One object of the graph (or one connection).

    @ivar ident: stable while the object lives: a connection's id, C{o}
        and the object's address, or C{a:} and the anchor's name.
    @ivar kind: L{CONNECTION}, L{OBJECT}, L{ANCHOR} or L{CONTAINER}.
    @ivar referrers: how many nodes hold a reference to it.
    """

    ident: str
    kind: str
    cls: str
    adapter: str | None = None
    version: int | None = None
    shape: Any = None
    note: str | None = None
    connection: int | None = None
    referrers: int = 0

    @property
    def shared(self) -> bool:
        """
        Whether it is drawn: not a container held by one object only
        (that is part of its holder's shape).
        """
        return self.kind != CONTAINER or self.referrers > 1

    def asDict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.ident,
            "kind": SHARED if self.kind == CONTAINER else self.kind,
            "class": self.cls,
            "adapter": self.adapter,
            "version": self.version,
            "shape": self.shape,
            "referrers": self.referrers,
        }
        if self.note:
            record["note"] = self.note
        return record


@attrs.frozen
class Component:
    """
    Connections that share objects, and those objects.

    @ivar connections: indices into L{ObjectGraph.connections}.
    @ivar nodes: indices into L{ObjectGraph.nodes}.
    @ivar anchors: the names of the anchors its objects reach.
    """

    ident: str
    connections: tuple[int, ...]
    nodes: tuple[int, ...]
    anchors: tuple[str, ...]


@attrs.define(eq=False)
class ObjectGraph:
    """
    The result of L{summarizeGraph}.

    @ivar connections: the transports, in the order walked.
    @ivar connectionIds: their ids.
    @ivar nodes: the first C{len(connections)} are the connections'.
    @ivar edges: the references, as pairs of node indices (holder, held).
    @ivar protocols: each connection's protocol node, by connection index.
    @ivar componentOf: a connection's component, by connection index.
    """

    connections: list[Any]
    connectionIds: list[str]
    nodes: list[Node]
    edges: set[tuple[int, int]]
    protocols: dict[int, int]
    components: list[Component]
    componentOf: dict[int, Component]
    truncated: bool = False
    visits: int = 0

    def component(self, ident: str) -> Component | None:
        for c in self.components:
            if c.ident == ident:
                return c
        return None

    def resolve(self, tokens: Sequence[str]) -> tuple[set[int], list[str]]:
        """
        Connection indices named by C{tokens}: connection ids, or
        component ids (all of that component's connections).

        @return: the indices, and the tokens that name nothing open.
        """
        byId = {ident: i for i, ident in enumerate(self.connectionIds)}
        chosen: set[int] = set()
        unknown = []
        for token in tokens:
            if token in byId:
                chosen.add(byId[token])
                continue
            component = self.component(token)
            if component is None:
                unknown.append(token)
            else:
                chosen.update(component.connections)
        return chosen, unknown

    def reachable(self, connections: set[int]) -> set[int]:
        """
        The nodes reachable from the protocols of C{connections} without
        going through another connection (its protocol or its transport)
        or through an anchor (which are reached, not entered).
        """
        stops = set(range(len(self.connections))) | set(self.protocols.values())
        starts = [self.protocols[i] for i in connections if i in self.protocols]
        out: dict[int, list[int]] = {}
        for a, b in self.edges:
            out.setdefault(a, []).append(b)
        seen = set(starts)
        stack = list(starts)
        while stack:
            for b in out.get(stack.pop(), ()):
                if b in seen:
                    continue
                seen.add(b)
                if b not in stops and self.nodes[b].kind != ANCHOR:
                    stack.append(b)
        return seen

    def splitPoints(self, selected: set[int]) -> list[int]:
        """
        The indices of the objects reachable (L{reachable}) both from a
        selected and from an unselected connection: where the state would
        split if only the selected ones moved.  Connections and their
        protocols are not counted (a connection that reaches another is
        kept back by the capture instead).
        """
        others = set(range(len(self.connections))) - selected
        if not selected or not others:
            return []
        stops = set(range(len(self.connections))) | set(self.protocols.values())
        both = self.reachable(selected) & self.reachable(others)
        return sorted(i for i in both if i not in stops and self.nodes[i].shared)


@attrs.define(eq=False)
class _Walker:
    adapters: Any
    anchors: Mapping[int, str]
    budget: int
    nodes: list[Node] = attrs.field(factory=list)
    edges: set[tuple[int, int]] = attrs.field(factory=set)
    parent: list[int] = attrs.field(factory=list)
    nodeOf: dict[int, int] = attrs.field(factory=dict)
    looked: set[int] = attrs.field(factory=set)
    keep: list[Any] = attrs.field(factory=list)
    protocols: set[int] = attrs.field(factory=set)
    anchorNodes: set[int] = attrs.field(factory=set)
    visits: int = 0
    truncated: bool = False

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def link(self, owner: int, target: int) -> None:
        if owner == target or (owner, target) in self.edges:
            return
        self.edges.add((owner, target))
        self.nodes[target].referrers += 1
        if owner in self.anchorNodes or target in self.anchorNodes:
            return
        a, b = self.find(owner), self.find(target)
        if a != b:
            self.parent[b] = a

    def add(self, node: Node, obj: Any = None) -> int:
        index = len(self.nodes)
        self.nodes.append(node)
        self.parent.append(index)
        if obj is not None:
            self.nodeOf[id(obj)] = index
            self.keep.append(obj)
        return index

    def anchor(self, obj: Any, name: str) -> int:
        index = self.nodeOf.get(id(obj))
        if index is None:
            adapter = self.adapters.adapterFor(type(obj))
            index = self.add(
                Node(
                    f"a:{name}",
                    ANCHOR,
                    typeName(type(obj)),
                    getattr(adapter, "typeName", None),
                    getattr(adapter, "version", None),
                    note=name,
                ),
                obj,
            )
            self.anchorNodes.add(index)
        return index

    def walk(self, start: Any, owner: int) -> None:
        stack: list[tuple[Any, int]] = [(start, owner)]
        names: dict[int, str] = {}
        while stack:
            if self.visits >= self.budget:
                self.truncated = True
                return
            self.visits += 1
            value, owner = stack.pop()
            kind = type(value)
            if kind in _ATOMS or isinstance(value, _SKIPPED):
                continue
            if kind is _Opaque:
                state = value.state
                if type(state) is dict:
                    for k, v in state.items():
                        if type(k) is str and k.isidentifier() and type(v) in _CONTAINERS:
                            # The attribute a container is held as (a name,
                            # never data): its node's label.
                            names[id(v)] = k
                        stack.append((v, owner))
                    stack.extend((k, owner) for k in state if type(k) not in _ATOMS)
                else:
                    stack.append((state, owner))
                continue
            if kind is tuple or kind is frozenset:
                stack.extend((v, owner) for v in value)
                continue
            index = self.nodeOf.get(id(value))
            if index is not None:
                self.link(owner, index)
            elif kind in _CONTAINERS:
                name = names.get(id(value))
                index = self.add(
                    Node(
                        f"o{id(value):x}",
                        CONTAINER,
                        kind.__name__,
                        shape=shapeOf(value),
                        note=f"held as .{name}" if name else None,
                    ),
                    value,
                )
                self.link(owner, index)
                if kind is dict:
                    for k, v in value.items():
                        stack.append((k, index))
                        stack.append((v, index))
                elif kind is not bytearray:
                    stack.extend((v, index) for v in value)
            else:
                self._object(value, owner, stack)

    def _object(self, value: Any, owner: int, stack: list[Any]) -> None:
        ident = id(value)
        if ident in self.anchors:
            self.link(owner, self.anchor(value, self.anchors[ident]))
            return
        if IReactorCore.providedBy(value):
            self.link(owner, self.anchor(value, "reactor"))
            return
        if isinstance(value, types.MethodType):
            stack.append((value.__self__, owner))
            return
        if isinstance(value, (base.DelayedCall, task.LoopingCall)):
            if ident not in self.looked:
                self.looked.add(ident)
                self.keep.append(value)
                if isinstance(value, base.DelayedCall):
                    stack.extend([(value.func, owner), (value.args, owner), (value.kw, owner)])
                else:
                    stack.extend([(value.f, owner), (value.a, owner), (value.kw, owner)])
            return
        adapter = self.adapters.adapterFor(type(value))
        node = Node(
            f"o{ident:x}",
            OBJECT,
            typeName(type(value)),
            getattr(adapter, "typeName", None),
            getattr(adapter, "version", None),
        )
        index = self.add(node, value)
        self.link(owner, index)
        if adapter is not None:
            try:
                state = adapter.capture(value)
            except Exception as e:
                node.note = f"its adapter cannot capture it now ({e.__class__.__name__})"
                return
            node.shape = stateShape(state)
            self.keep.append(state)
            stack.append((_Opaque(state), index))
            return
        node.note = "no adapter"
        if ident in self.protocols:
            # A connection's protocol: what it holds is what it shares.
            state = getattr(value, "__dict__", None)
            if isinstance(state, dict):
                node.shape = stateShape(state)
                stack.append((_Opaque(state), index))


@attrs.frozen
class _Opaque:
    """
    An object's state (its adapter's, or its instance dictionary): walked
    for what it references, without a node of its own.
    """

    state: Any


def summarizeGraph(
    transports: Sequence[Any],
    adapters: Any,
    anchors: Mapping[int, tuple[str, Any]],
    budget: int = 200_000,
) -> ObjectGraph:
    """
    Walk the objects behind C{transports} (see the module docstring).

    @param adapters: the registry (C{adapterFor(cls)}).
    @param anchors: the objects the successor has its own of (the ports'
        factories), by C{id}, with their names (C{"factory:KEY"}) and the
        objects themselves; their state is walked after the connections'.
    @param budget: the most values visited.
    """
    names = {ident: name for ident, (name, _) in anchors.items()}
    walker = _Walker(adapters, names, budget)
    ids = [connectionId(t) for t in transports]
    for i, t in enumerate(transports):
        walker.add(Node(ids[i], CONNECTION, "", connection=i), t)
        walker.protocols.add(id(getattr(t, "protocol", None)))
    protocols: dict[int, int] = {}
    for i, t in enumerate(transports):
        protocol = getattr(t, "protocol", None)
        walker.nodes[i].cls = typeName(type(protocol))
        if protocol is not None:
            walker.walk(protocol, i)
            if id(protocol) in walker.nodeOf:
                protocols[i] = walker.nodeOf[id(protocol)]
    for name, obj in sorted(anchors.values(), key=lambda item: item[0]):
        index = walker.anchor(obj, name)
        adapter = walker.adapters.adapterFor(type(obj))
        if adapter is None:
            continue
        try:
            state = adapter.capture(obj)
        except Exception as e:
            why = f"its adapter cannot capture it now ({e.__class__.__name__})"
            walker.nodes[index].shape = why
            continue
        walker.nodes[index].shape = stateShape(state)
        walker.keep.append(state)
        walker.walk(_Opaque(state), index)
    return _components(walker, list(transports), ids, protocols)


def _components(
    walker: _Walker, transports: list[Any], ids: list[str], protocols: dict[int, int]
) -> ObjectGraph:
    groups: dict[int, list[int]] = {}
    for index in range(len(walker.nodes)):
        if index not in walker.anchorNodes:
            groups.setdefault(walker.find(index), []).append(index)
    anchorsReached: dict[int, set[str]] = {}
    for a, b in walker.edges:
        if b in walker.anchorNodes and a not in walker.anchorNodes:
            anchorsReached.setdefault(walker.find(a), set()).add(walker.nodes[b].note or "")
    components = []
    componentOf: dict[int, Component] = {}
    for root, members in groups.items():
        conns = tuple(
            walker.nodes[i].connection for i in members if walker.nodes[i].kind == CONNECTION
        )
        if not conns:
            continue
        connections = tuple(sorted((c for c in conns if c is not None), key=lambda c: ids[c]))
        reached = sorted(anchorsReached.get(root, ()))
        component = Component(
            "k" + ids[connections[0]][1:], connections, tuple(members), tuple(reached)
        )
        components.append(component)
        for c in connections:
            componentOf[c] = component
    components.sort(key=lambda c: (-len(c.connections), c.ident))
    return ObjectGraph(
        transports,
        ids,
        walker.nodes,
        walker.edges,
        protocols,
        components,
        componentOf,
        walker.truncated,
        walker.visits,
    )


def describeConnection(
    transport: Any,
    keyOf: Callable[[Any], str | None],
    connectedAt: Callable[[Any], float | None],
    now: float,
    pending: Callable[[Any], int],
) -> dict[str, Any]:
    """
    What an operator may see of one connection: its port, peer, age (in
    this process) and unsent bytes.
    """
    since = connectedAt(transport)
    server = getattr(transport, "server", None)
    try:
        waiting = pending(transport)
    except Exception:
        waiting = None
    return {
        "id": connectionId(transport),
        "port": keyOf(server) if server is not None else None,
        "peer": peerText(transport),
        "age": round(now - since, 3) if since is not None else None,
        "pending": waiting,
    }
