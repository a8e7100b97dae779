# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
incumbent side: L{captureNative} pickles the batch's protocols with the C
pickler, where the graph writer (L{migrator.state._writer}) walks every
container in Python.  It costs a fraction per connection, and is tried
only for what it writes exactly as the graph writer would: adapted
objects written at this process's version with nothing to translate,
anchors (names only: a batch never carries the factories' state), the
batch's own transports (without a producer), scheduled calls (suspended
with the batch), bound methods of objects, functions allowed by name,
atoms and plain containers.  Anything else (a looping call, an object
without an adapter, a connection outside the batch, one declining, a
graph sharing an object with a batch already sent, deeper than a few
hundred levels or larger than L{CAP} bytes) makes it give up, having
frozen and kept nothing: the caller writes the batch with the graph
writer, which says what stays and why, or leaves a large connection for
its slices.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from types import FunctionType
from typing import Any

from twisted.internet import base, tcp
from twisted.internet.interfaces import IReactorTime

from migrator.interfaces import IPortRegistry
from migrator.state import _nativeform as form
from migrator.state._capture import Captured, prepareCapture
from migrator.state._capturehooks import _CaptureHooks, _methodName, ungated
from migrator.state._graph import GraphWriter, collectorPaused, dumpsPlain
from migrator.state._owned import Owned
from migrator.state._plan import Classifier
from migrator.state._translator import Translator
from migrator.state._versions import Readable

#: The most bytes one connection's graph takes in a batch in the native
#: form, and the most a batch takes: past either, the pickling stops there
#: (a bounded part of one turn) and the graph writer writes the batch,
#: leaving a large connection out for its slices.  (An idle connection of
#: the benchmark's service takes about 170 bytes.)
ROOT_CAP = 1 << 18
CAP = 1 << 23

#: How many levels of containers the C pickler may recurse into (from the
#: caller's depth): past it, the graph writer, which does not recurse,
#: writes the batch.
DEPTH = 1000

#: Objects of these types are values, never another batch's.
_VALUES = frozenset({type(None), bool, int, float, str, bytes, tuple, frozenset, FunctionType})
#: What the C pickler writes itself: a bound method of one of these is not
#: for the native form (its reader makes methods of objects only).
_PLAIN = _VALUES | {dict, list, set, bytearray}


class Fallback(Exception):
    """
    The batch is not for the native form: the graph writer writes it.
    """


class _Capped:
    """
    The pickle's file: keeps what is written, up to C{cap} bytes, and
    C{rootCap} since the last L{root}.  (The C pickler writes each root's
    pickle at its end, and a frame of 64 KiB whenever one is full.)
    """

    def __init__(self, cap: int, rootCap: int) -> None:
        self.cap = cap
        self.rootCap = rootCap
        self.size = 0
        self.rootSize = 0
        self.parts: list[bytes] = []

    def root(self) -> None:
        self.rootSize = 0

    def write(self, data: Any) -> int:
        n = len(data)
        self.size += n
        self.rootSize += n
        if self.size > self.cap or self.rootSize > self.rootCap:
            raise Fallback("over the native form's bounds")
        # (A large value may be handed over as it is: a bytearray too.)
        self.parts.append(bytes(data))
        return n


class NativeWritten:
    """
    What a batch in the native form wrote (the pickle's memo), kept alive
    so that their ids stay theirs, as a graph writer's
    L{GraphWriter.written}: every object but the anchors.  Values (strings,
    tuples) are among them, unlike a graph writer's, since sorting them out
    would cost more than it saves: no other batch's objects are ever
    values, and one native batch meeting another's values (shared
    strings) looks past them (L{captureNative}).
    """

    def __init__(self, memo: dict[int, tuple[int, Any]], anchors: dict[int, str]) -> None:
        self._memo = memo
        self._anchors = anchors

    def written(self) -> AbstractSet[int]:
        return self._memo.keys() - self._anchors.keys()


class _Pickler(pickle.Pickler):
    """
    Pickles a batch's protocols: C{reducer_override} is called for every
    object the C pickler does not write itself (anything but atoms and
    exact plain containers) and makes it one of the native form's calls,
    or gives up (L{Fallback}).
    """

    def __init__(
        self,
        file: _Capped,
        writer: GraphWriter,
        hooks: _CaptureHooks,
        translator: Translator,
        picked: set[int],
    ) -> None:
        super().__init__(file, protocol=5)
        self._info = writer._info
        self._anchors = writer._anchors
        self._hooks = hooks
        self._translator = translator
        self._picked = picked
        self._names = {
            id(f)
            for f in (form.obj, form.state, form.anchor, form.transport, form.call, form.method, form.function)
        }
        self._functionName = hooks.adapters.functionName
        self._args: dict[int, tuple[str, int]] = {}
        #: Whether each transport met reads.
        self.reading: list[bool] = []

    def _call(self, call: Any) -> Any:
        """
        A scheduled call, as the graph writer's hook writes it (and
        suspends it with the batch's freeze).
        """
        hooks = self._hooks
        if not call.active():
            return (form.call, (None, None, (), {}))
        when = hooks.suspended.get(id(call))
        if when is None:
            when = call.getTime()
        hooks.calls.append((call, when))
        return (form.call, (when, ungated(call.func), tuple(call.args), dict(call.kw)))

    def reducer_override(self, value: Any) -> Any:
        name = self._anchors.get(id(value))
        if name is not None:
            return (form.anchor, (name,))
        if id(value) in self._names:
            # The form's own names, written as such.
            return NotImplemented
        info = self._info(type(value))
        adapter = info.adapter
        if adapter is not None:
            if info.anchorOnly or self._translator.writes:
                raise Fallback("an object moved only as an anchor, or translated")
            plain = info.plain
            if plain is None:
                # (A Refusing adapter's capture raises: that gives up too.)
                state = adapter.capture(value)
                if self._translator.writes:
                    raise Fallback("a state to translate")
            elif plain:
                state = {k: v for k, v in value.__dict__.items() if k not in plain}
            else:
                state = value.__dict__
            args = self._args.get(id(adapter))
            if args is None:
                # (One per class: the pickle refers back to it.)
                args = self._args[id(adapter)] = (adapter.typeName, adapter.version)
            return (form.obj, args, (state,), None, None, form.state)
        if isinstance(value, base.DelayedCall):
            return self._call(value)
        if isinstance(value, types.MethodType):
            target = value.__self__
            name = _methodName(value)
            if name is None or type(target) in _PLAIN:
                raise Fallback("a bound method of a value, or not under its name")
            return (form.method, (target, name))
        if isinstance(value, types.FunctionType):
            allowed = self._functionName(value)
            if allowed is None:
                raise Fallback("a function not allowed by name")
            return (form.function, (allowed,))
        if isinstance(value, tcp.Connection):
            if id(value) not in self._picked or getattr(value, "producer", None) is not None:
                raise Fallback("a connection outside the batch, or with a producer")
            # (Its protocol is one of the batch's: asked if it may move.)
            key = self._hooks.checkTransport(value, "", asked=True)
            meta = self._hooks.recordTransport(value, key)
            self.reading.append(meta["reading"])
            return (form.transport, (meta,), (value.protocol,), None, None, form.state)
        raise Fallback(f"a {type(value).__name__}, for the graph writer")


def _shares(memo: dict[int, tuple[int, Any]], anchors: dict[int, str], owned: Owned) -> bool:
    """
    Does a batch whose pickle's memo is C{memo} hold an object (not a
    value, not an anchor) that a batch already sent holds?
    """
    for i in owned.ids.keys() & memo.keys():
        if type(memo[i][1]) not in _VALUES and i not in anchors:
            return True
    if owned.layers:
        # (A connection written in slices: its writer says.)
        objects = [i for i, (_, o) in memo.items() if type(o) not in _VALUES and i not in anchors]
        return bool(owned.owners(objects))
    return False


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
    return depth


@contextmanager
def _boundedRecursion() -> Iterator[None]:
    """
    Bound the C pickler's recursion (whatever limit the application set):
    a graph deeper than L{DEPTH} levels raises C{RecursionError} early.
    """
    old = sys.getrecursionlimit()
    bound = _depth() + DEPTH
    if bound >= old:
        yield
        return
    sys.setrecursionlimit(bound)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@collectorPaused()
def captureNative(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    claimed: frozenset[str],
    restorable: frozenset[str],
    readable: Mapping[str, Readable] | None,
    selected: Callable[[Any], bool] | None,
    connections: list[Any],
    owned: Owned | None,
    header: Mapping[str, Any],
    cap: int = CAP,
    rootCap: int = ROOT_CAP,
) -> Captured | None:
    """
    Capture and freeze the batch C{connections} in the native form (the
    parameters are those of
    L{migrator.state._capture.captureConnections}, for a batch without
    the factories).

    @return: the batch, frozen; or C{None}, having frozen and kept
        nothing, if any of it is not for the native form.
    """
    writer, hooks, translator, _, adapterFor = prepareCapture(
        reactor, ports, adapters, claimed, restorable, readable, selected, False
    )
    frozenAt = reactor.seconds()
    for t in connections:
        protocol = t.protocol
        adapter = adapterFor(type(protocol))
        if adapter is None or adapter.movable(protocol):
            return None
        if selected is not None and not selected(t):
            return None
    out = _Capped(cap, rootCap)
    pickler = _Pickler(out, writer, hooks, translator, {id(t) for t in connections})
    try:
        with _boundedRecursion():
            # One pickle per root, one memo: each root's size is known.
            for t in connections:
                out.root()
                pickler.dump(t.protocol)
    except Exception:
        # Fallback, RecursionError, an adapter that failed (the graph
        # writer says so, with its path), an object pickle refuses.
        return None
    if len(hooks.transports) != len(connections):
        # A protocol whose graph does not hold its transport.
        return None
    memo, anchors = pickler.memo.copy(), writer._anchors
    if owned and _shares(memo, anchors, owned):
        # Shared with a batch already sent: the graph writer leaves out
        # what shares, root by root.
        return None
    names = Classifier(adapters)
    moved: dict[str, int] = {}
    for t in hooks.transports:
        name = names.nameOf(t.protocol)
        moved[name] = moved.get(name, 0) + 1
    message = {
        "roots": [],
        "factories": [],
        "count": len(hooks.transports),
        "native": b"".join(out.parts),
        **header,
        "frozen_at": frozenAt,
    }
    captured = Captured(
        dumpsPlain(message),
        [t.fileno() for t in hooks.transports],
        list(hooks.transports),
        moved,
        {},
        reactor=reactor,
        calls=hooks.calls,
        pendingBytes=hooks.pendingBytes,
        frozenAt=frozenAt,
        translations=translator.log.asDict(),
        writer=NativeWritten(memo, anchors),
    )
    captured.freeze(pickler.reading)
    return captured
