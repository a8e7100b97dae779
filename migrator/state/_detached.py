# -*- test-case-name: tests.test_detached -*-
"""
A snapshot of the incumbent's connections, restored in a I{staging}
process: the dry run of a takeover (C{twistd migrate --dry-run}).

The incumbent captures its connections as for a takeover and thaws them in
the same reactor turn; it sends their state, never a descriptor.  The
staging process reads the state back with the same graph reader, adapters
and C{populate} steps as a successor
(L{migrator.state._restore.restoreConnections}), except that:

  - transports are L{DetachedTransport}s, attached to no socket: what a
    restored protocol writes is kept, never sent, and nothing is read;
  - the ports' factories are those the staging process's service built
    for L{migrator.state._detachedport.DetachedPort}s, ports that listen nowhere;
  - each connection is read and populated on its own (L{restoreDetached}),
    so that one that fails is reported with its class and the last line of
    its traceback, and every other one is still tried;
  - scheduled calls are created but held (the gate never opens) and
    cancelled at the end.

An adapters module (or a C{.tac}) may define C{checkRestored(protocol)}: a
dry run calls it with the protocol of each connection restored without
error, after all of them are populated, and a connection whose check
raises fails the dry run (see docs/operators.md, "Trying new code on live
state first").
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from migrator._reactorinternals import abandonLoopingCall
from migrator.interfaces import IPortRegistry
from migrator.state._graph import GraphError, GraphReader, loadsPlain, typeName
from migrator.state._restore import RestoreContext, _RestoreHooks
from migrator.state._translator import TranslationLog, Translator

_log = Logger()

#: Under which name a connection whose class cannot be told is counted.
UNKNOWN_CLASS = "(unknown class)"

#: At most this many different error lines are kept per class.
MAX_ERRORS = 3

#: What a check of the restored connections is: called with a protocol,
#: raises if that connection would not work.
Check = Callable[[Any], object]


def peerAddress(meta: dict[str, Any]) -> IAddress:
    """
    The peer of a captured transport, as an address object, from its
    record (C{family}, C{unix}, C{peer}).
    """
    peer = meta.get("peer")
    if meta.get("unix") or meta.get("family") == int(socket.AF_UNIX):
        name = peer if isinstance(peer, (str, bytes)) and peer else None
        return UNIXAddress(name)
    if isinstance(peer, (list, tuple)) and len(peer) >= 2:
        host, port = str(peer[0]), int(peer[1])
        if meta.get("family") == int(socket.AF_INET6):
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)
    return IPv4Address("TCP", "0.0.0.0", 0)


class DetachedTransport(StringTransport):
    """
    The transport of a connection restored in a staging process: attached
    to no socket.  It reads nothing; what is written to it is kept in
    memory (L{value}); closing it only marks it closed.

    @ivar meta: the captured transport's record (peer, port key, unsent
        bytes...).
    @ivar protocol: the restored protocol.
    """

    protocol: Any = None

    def __init__(self, meta: dict[str, Any]) -> None:
        StringTransport.__init__(self, peerAddress=peerAddress(meta), lenient=True)
        self.meta = meta
        self.connected = True

    def getHandle(self) -> None:
        """
        There is no socket.
        """
        return None


@attrs.define
class ClassOutcome:
    """
    The connections of one class in a dry run.

    @ivar typeName: the class's type name (the adapter's).
    @ivar restored: how many connections were restored and populated (and
        passed the check, if any).
    @ivar failed: how many failed (the connections of the graph that
        failed, or at least one).
    @ivar errors: the last line of each distinct failure's traceback (at
        most L{MAX_ERRORS}).
    """

    typeName: str
    restored: int = 0
    failed: int = 0
    errors: list[str] = attrs.field(factory=list)

    def fail(self, error: str) -> None:
        self.failed += 1
        if error not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def asDict(self) -> dict[str, Any]:
        return {"restored": self.restored, "failed": self.failed, "errors": list(self.errors)}


@attrs.define
class Staged:
    """
    What a dry run's restore found.

    @ivar classes: per class of connection (and of factory whose state
        did not merge), what was restored and what failed.
    @ivar connections: how many transports were restored.
    @ivar announced: how many connections the state announced.
    @ivar problems: what went wrong with the state as a whole (malformed,
        counts that do not agree).
    @ivar protocols: the protocols restored without error.
    @ivar pendingBytes: the unsent bytes the connections carried.
    """

    classes: dict[str, ClassOutcome] = attrs.field(factory=dict)
    connections: int = 0
    announced: int = 0
    problems: list[str] = attrs.field(factory=list)
    protocols: list[Any] = attrs.field(factory=list)
    pendingBytes: int = 0

    def outcome(self, name: str) -> ClassOutcome:
        if name not in self.classes:
            self.classes[name] = ClassOutcome(name)
        return self.classes[name]

    @property
    def failed(self) -> list[str]:
        """
        The classes with a failure, sorted.
        """
        return sorted(name for name, c in self.classes.items() if c.failed)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed


def lastLine(e: BaseException) -> str:
    """
    The last line of C{e}'s traceback (its type and message), and where the
    innermost exception it wraps was raised, if that is known.
    """
    line = traceback.format_exception_only(type(e), e)[-1].strip()
    cause = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    frames = traceback.extract_tb(cause.__traceback__) if cause.__traceback__ else []
    if frames:
        last = frames[-1]
        line += f" (raised at {last.filename}:{last.lineno}, in {last.name})"
    return line


@attrs.define(eq=False)
class _DetachedHooks(_RestoreHooks):
    """
    The restore's special values, with transports attached to no socket.
    """

    def _transport(self, payload: Any, reader: GraphReader) -> Any:
        ident, protocolNode, meta, producerNode = payload
        if not isinstance(meta, dict):
            raise GraphError("malformed transport record")
        t = DetachedTransport(meta)
        # Before its protocol is read: a failure there still counts it.
        self.transports.append(t)
        reader.remember(ident, t)
        t.protocol = reader.read(protocolNode)
        self.metas.append(meta)
        if producerNode is not None:
            # Read (it is part of the graph), never registered.
            reader.read(producerNode)
        return t


def _dangling(e: BaseException) -> bool:
    """
    Did reading fail on a reference to an object never made (one of a
    connection that failed before it)?
    """
    return isinstance(e, GraphError) and str(e).startswith("malformed 'r' node")


def _nodeName(node: Any, tagged: str, position: int) -> str | None:
    if type(node) is tuple and len(node) > position and node[0] == tagged:
        name = node[position]
        return name if isinstance(name, str) else None
    return None


def _nameOf(adapters: Any, obj: Any) -> str:
    adapter = adapters.adapterFor(type(obj))
    return adapter.typeName if adapter is not None else typeName(type(obj))


def restoreDetached(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    payload: bytes,
    check: Check | None = None,
) -> Staged:
    """
    Restore the incumbent's snapshot with detached transports, one
    connection at a time, and report per class; see the module docstring.

    Each connection's objects are read, then populated (the same order as a
    takeover's restore: objects are populated in the order they were
    created), before the next connection is read.  A connection that fails
    leaves its objects half made; a later connection that refers to them
    may fail too.

    @param reactor: the clock of the restored calls (which never run).
    @param ports: the staging process's ports, whose factories receive the
        incumbent's factory state.
    @param adapters: the staging process's registry.
    @param payload: the incumbent's state (the wire format of a takeover's
        connections).
    @param check: called with each restored protocol; raises if that
        connection would not work.
    @return: what was restored and what failed.
    """
    staged = Staged()
    anchors: dict[str, Any] = {"reactor": reactor}
    for tracked in ports.listening():
        if tracked.kind != "udp":
            anchors["factory:" + tracked.key] = tracked.port.factory
    hooks = _DetachedHooks(reactor, adapters, ports, [])
    # Translated (and logged) as a takeover's restore is.
    translator = Translator(None, getattr(adapters, "kept", None), TranslationLog(reactor.seconds))
    reader = GraphReader(
        adapters.adapterNamed, anchors, hooks, RestoreContext(hooks.gate), translator
    )
    try:
        try:
            data = loadsPlain(payload)
        except GraphError as e:
            staged.problems.append(f"the state cannot be read: {lastLine(e)}")
            return staged
        if data is None:
            data = {"roots": [], "factories": [], "count": 0}
        if not (
            isinstance(data, dict)
            and isinstance(data.get("roots"), list)
            and isinstance(data.get("factories"), list)
            and type(data.get("count")) is int
        ):
            staged.problems.append("the state lacks its roots, factories or count")
            return staged
        staged.announced = data["count"]
        # Connections are counted by their transports: one connection's
        # graph may hold others (a factory's list of its clients), which
        # then have no root of their own.
        restored: list[DetachedTransport] = []
        for node in data["roots"]:
            name = _nodeName(node, "o", 2)
            mark = len(hooks.transports)
            try:
                obj = reader.read(node)
                name = name or _nameOf(adapters, obj)
                reader.finish()
            except Exception as e:
                why = lastLine(e)
                if _dangling(e) and staged.failed:
                    why = f"it refers to objects of a connection that failed: {why}"
                names = [
                    _nameOf(adapters, t.protocol)
                    for t in hooks.transports[mark:]
                    if t.protocol is not None
                ]
                for failed in names or [name or UNKNOWN_CLASS]:
                    staged.outcome(failed).fail(why)
                continue
            restored.extend(hooks.transports[mark:])
        for node in data["factories"]:
            name = _nodeName(node, "a", 3)
            try:
                reader.read(node)
                reader.finish()
            except Exception as e:
                if _dangling(e) and staged.failed:
                    # Written with a connection that failed: counted there.
                    continue
                staged.outcome(name or UNKNOWN_CLASS).fail(
                    f"its factory's state did not merge: {lastLine(e)}"
                )
        for t in restored:
            name = _nameOf(adapters, t.protocol)
            try:
                if check is not None:
                    check(t.protocol)
            except Exception as e:
                staged.outcome(name).fail(f"checkRestored: {lastLine(e)}")
                continue
            staged.outcome(name).restored += 1
            staged.protocols.append(t.protocol)
        staged.connections = len(hooks.transports)
        staged.pendingBytes = sum(
            len(m.get("pending") or b"") for m in hooks.metas if isinstance(m, dict)
        )
        if not staged.failed and staged.connections != staged.announced:
            staged.problems.append(
                f"{staged.connections} connections restored, {staged.announced} announced"
            )
        return staged
    finally:
        # Nothing restored here ever runs: the gate never opens.
        hooks.gate.close()
        for loop in hooks.loops:
            abandonLoopingCall(loop)
