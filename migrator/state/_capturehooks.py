# -*- test-case-name: tests.test_connections -*-
"""
What a capture writes besides atoms, containers and adapted objects (the
graph writer's C{special} hook, L{_CaptureHooks}): transports, scheduled
calls, loops, bound methods and allowed functions; and the checks and
records of a transport that both the graph writer and the native form
(L{migrator.state._nativewrite}) use.
"""

from __future__ import annotations

import socket
import types
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import base, task, tcp
from twisted.internet.interfaces import IReactorTime

from migrator._twistedinternals import isClosing, peerAddress
from migrator._twistedinternals import pendingBytes as _pending
from migrator.interfaces import IPortRegistry
from migrator.state._graph import GraphWriter, Unadaptable
from migrator.state._nodes import TooLarge
from migrator.state._plan import NOT_SELECTED

#: How far into the future a suspended call is pushed while frozen.
FAR = 10.0**9


def ungated(function: Any) -> Any:
    """
    The function a restored scheduled call was made with, if C{function}
    is the commit gate's wrapper of it (L{migrator.state._restore._Gate}):
    once the gate is open, calling either is the same.
    """
    return getattr(function, "__migrator_gated__", function)


def _methodName(method: types.MethodType) -> str | None:
    """
    The attribute name that gives C{method} back from its object (the
    mangled one for a private C{__name}), or C{None} if there is none.
    """
    name = method.__func__.__name__
    if name.startswith("__") and not name.endswith("__"):
        owner = method.__func__.__qualname__.rpartition(".")[0].rpartition(".")[2]
        name = f"_{owner.lstrip('_')}{name}"
    try:
        same = getattr(method.__self__, name, None) == method
    except Exception:
        return None
    return name if same else None



@attrs.define(eq=False)
class _CaptureHooks:
    """
    The writer's C{special} hook: transports, scheduled calls, loops, bound
    methods and allowed functions.
    """

    reactor: IReactorTime
    adapters: Any
    ports: IPortRegistry
    claimed: frozenset[str]
    isReading: Callable[[Any], bool] = lambda t: False
    #: If given, whether the operator selected a connection to move.
    selected: Callable[[Any], bool] | None = None
    checkedProtocol: Any = None
    transports: list[Any] = attrs.field(factory=list)
    calls: list[tuple[Any, float]] = attrs.field(factory=list)
    loops: list[tuple[Any, float]] = attrs.field(factory=list)
    #: The unsent bytes of the transports captured, in all.
    pendingBytes: int = 0
    #: How many of the transports captured have a port (accepted through
    #: one, or restored for one: the registry counts those).
    ported: int = 0
    #: Writing in slices (L{migrator.state._large}): the one connection
    #: written (any other met raises L{TooLarge}), and the scheduled calls
    #: are suspended as they are met, not once all is written; those
    #: suspended before, with the time they were due, by id.
    only: Any = None
    suspended: dict[int, float] = attrs.field(factory=dict)
    #: Port keys and address families, by the id of the port object
    #: (looked up once per port).
    _keys: dict[int, str | None] = attrs.field(factory=dict)
    _families: dict[int, int] = attrs.field(factory=dict)

    def __call__(self, value: Any, writer: GraphWriter, path: str) -> Any:
        if isinstance(value, tcp.Connection):
            return self._transport(value, writer, path)
        if isinstance(value, base.DelayedCall):
            ident, _ = writer.rememberSpecial(value)
            if not value.active():
                return ("x", "call", [ident, None, None, None, None])
            when = self.recordCall(value)
            return (
                "x",
                "call",
                [
                    ident,
                    when,
                    writer._write(ungated(value.func), f"{path}.func"),
                    writer._write(tuple(value.args), f"{path}.args"),
                    writer._write(dict(value.kw), f"{path}.kw"),
                ],
            )
        if isinstance(value, task.LoopingCall):
            if value.clock is not self.reactor:
                raise Unadaptable(value, path, "a LoopingCall on another clock")
            ident, _ = writer.rememberSpecial(value)
            nextTime = value.call.getTime() if value.call is not None and value.call.active() else None
            if value.call is not None and id(value.call) in self.suspended:
                nextTime = self.suspended[id(value.call)]
            if value.running and nextTime is not None:
                self.loops.append((value, nextTime))
                if self.only is not None and value.call is not None:
                    value.call.reset(FAR)
            return (
                "x",
                "loop",
                [
                    ident,
                    writer._write(value.f, f"{path}.f"),
                    writer._write(tuple(value.a), f"{path}.a"),
                    writer._write(dict(value.kw), f"{path}.kw"),
                    bool(value.running and nextTime is not None),
                    value.interval,
                    getattr(value, "starttime", None),
                    nextTime,
                ],
            )
        if isinstance(value, types.MethodType):
            name = _methodName(value)
            if name is None:
                raise Unadaptable(value, path, "a bound method its object does not have under its name")
            return ("x", "method", [writer._write(value.__self__, f"{path}.__self__"), name])
        name = self.adapters.functionName(value)
        if name is not None:
            return ("x", "function", name)
        return None

    def _transport(self, t: Any, writer: GraphWriter, path: str) -> Any:
        key = self.checkTransport(t, path)
        ident, _ = writer.rememberSpecial(t)
        meta = self.recordTransport(t, key)
        producer = getattr(t, "producer", None)
        return (
            "x",
            "transport",
            [
                ident,
                writer._write(t.protocol, f"{path}.protocol"),
                meta,
                writer._write(producer, f"{path}.producer") if producer is not None else None,
            ],
        )

    def recordCall(self, call: Any) -> float:
        """
        Count the active scheduled call C{call} among those the capture
        suspends (at once, if writing in slices).

        @return: when it is due (as it was before a suspension).
        """
        when = self.suspended.get(id(call))
        if when is None:
            when = call.getTime()
        self.calls.append((call, when))
        if self.only is not None:
            call.reset(FAR)
        return when

    def checkTransport(self, t: Any, path: str, asked: bool = False) -> str | None:
        """
        May C{t}, met in the graph, move?

        @param asked: whether its protocol was asked already if it may move.
        @return: the key of its port (C{None} for a connection of none).
        @raise Unadaptable: if it may not (closing, declining, not selected,
            or of a port the successor does not declare).
        @raise TooLarge: if another connection is being written in slices.
        """
        if self.only is not None and t is not self.only:
            # Another connection cannot wait, unfrozen, for the slices.
            raise TooLarge()
        if isClosing(t):
            raise Unadaptable(t, path, "a connection that is closing")
        # A connection reached through the graph (a factory's client list,
        # a peer) may not move if its own protocol declines, any more than
        # when it is captured as a root.
        why = None
        if not asked and t.protocol is not self.checkedProtocol:
            adapter = self.adapters.adapterFor(type(t.protocol))
            why = adapter.movable(t.protocol) if adapter is not None else None
        if why:
            raise Unadaptable(t, path, f"a connection that declines to move ({why})")
        if self.selected is not None and not self.selected(t):
            # Carrying it would move a connection the operator chose to
            # leave: what reaches it stays too.
            raise Unadaptable(t, path, f"a connection {NOT_SELECTED}")
        server = getattr(t, "server", None)
        key = None
        if server is not None:
            try:
                key = self._keys[id(server)]
            except KeyError:
                # (Ports stay open, so their ids are not reused, while this
                # runs.)
                key = self._keys[id(server)] = self.ports.keyOf(server)
            if key not in self.claimed:
                raise Unadaptable(t, path, "a connection of a port the successor does not declare")
        return key

    def recordTransport(self, t: Any, key: str | None) -> dict[str, Any]:
        """
        Count C{t} among the transports captured (its descriptor is the
        next one sent).

        @return: what the successor builds its transport from.
        """
        index = len(self.transports)
        self.transports.append(t)
        if key is not None:
            self.ported += 1
        family = self._family(t)
        if family == socket.AF_UNIX:
            try:
                peer = t.socket.getpeername()
            except OSError:
                peer = None
        else:
            peer = peerAddress(t)
        pending = _pending(t)
        self.pendingBytes += len(pending)
        return {
            "fd": index,
            "family": family,
            "unix": family == socket.AF_UNIX,
            "port": key,
            "peer": list(peer) if isinstance(peer, tuple) else peer,
            "pending": pending,
            "reading": self.isReading(t),
            "producerPaused": bool(getattr(t, "producerPaused", False)),
            "streaming": bool(getattr(t, "streamingProducer", False)),
        }

    def _family(self, t: Any) -> int:
        # A connection accepted on a port has the port's address family
        # (looked up once per port: the socket's property makes an enum).
        server = getattr(t, "server", None)
        if server is None:
            return int(t.socket.family)
        try:
            return self._families[id(server)]
        except KeyError:
            family = self._families[id(server)] = int(t.socket.family)
            return family
