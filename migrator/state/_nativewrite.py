# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
incumbent side: L{captureNative} writes the batch's objects as flat
records whose plain data the C pickler writes, where the graph writer
(L{migrator.state._writer}) walks every container in Python.  It costs a
fraction per connection, and is tried only for what it writes exactly as
the graph writer would: adapted objects written at this process's
version with nothing to translate, anchors (names only: a batch never
carries the factories' state), the batch's own transports and their
producers, scheduled calls (suspended with the batch) of methods of
objects or of functions allowed by name, each reached through the
top-level entries of an instance dictionary (the default rule's state,
or a dictionary an adapter made for its capture; any other state of an
adapter's own is written as it is, plain throughout), and plain data.
Anything else (a looping call, a call of a call's method, an
object without an adapter, or inside a container or an adapter's own
state, a connection outside the batch, one declining, a graph sharing
an object with a batch already sent, holding more than L{UNITS} objects
and entries, deeper than a few hundred levels or larger than
L{ROOT_CAP} bytes) makes it give up, having frozen and kept nothing: the
caller writes the batch with the graph writer, which says what stays
and why, or leaves a large connection for its slices.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from twisted.internet import base, tcp
from twisted.internet.interfaces import IReactorTime

from migrator.interfaces import IPortRegistry
from migrator.state import _nativeform as form
from migrator.state._capture import Captured, movedByClass, prepareCapture
from migrator.state._capturehooks import _CaptureHooks, _methodName, ungated
from migrator.state._graph import GraphWriter, collectorPaused, dumpsPlain
from migrator.state._nodes import neverDeclines
from migrator.state._owned import Owned
from migrator.state._translator import Translator
from migrator.state._versions import Readable

#: The most bytes one connection's graph takes in a batch in the native
#: form, and the most a batch takes: past either, the pickling stops there
#: (a bounded part of one turn) and the graph writer writes the batch,
#: leaving a large connection out for its slices.  (An idle connection of
#: the benchmark's service takes about 170 bytes.)
ROOT_CAP = 1 << 18
CAP = 1 << 23
#: The most objects and state entries one connection's graph may hold in
#: a batch in the native form (each object counts one, and one more per
#: entry of its state), as the graph writer's batches
#: (L{migrator.state._large.LIMIT}): a larger one moves in slices.
UNITS = 10_000

#: How many levels of containers the C pickler may recurse into (from the
#: caller's depth): past it, the graph writer, which does not recurse,
#: writes the batch.
DEPTH = 1000

#: Objects of these types are values, never another batch's.
_VALUES = frozenset({type(None), bool, int, float, str, bytes, tuple, frozenset})
#: What the C pickler writes itself (exact types): an entry of a state of
#: one of these types is plain data.
_PLAIN = _VALUES | {dict, list, set, bytearray}


def _freshCount() -> int:
    """
    What C{sys.getrefcount} says of a dictionary a function made and
    returned, held by one local variable only (this interpreter's count).
    """

    def made() -> dict[Any, Any]:
        return {}

    state = made()
    return sys.getrefcount(state)


#: See L{_freshCount}.
_FRESH = _freshCount()


class Fallback(Exception):
    """
    The batch is not for the native form: the graph writer writes it.
    """


class _Capped:
    """
    The pickle's file: keeps what is written, up to C{cap} bytes, and
    C{rootCap} since C{rootSize} was last set to 0 (as each root begins).
    (The C pickler writes each root's pickle at its end, and a frame of 64
    KiB whenever one is full.)
    """

    def __init__(self, cap: int, rootCap: int) -> None:
        self.cap = cap
        self.rootCap = rootCap
        self.size = 0
        self.rootSize = 0
        self.parts: list[bytes] = []

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
    What a batch in the native form wrote, kept alive so that their ids
    stay theirs, as a graph writer's L{GraphWriter.written}: its objects,
    and what its pickle's memo holds.  Values (strings, tuples) are among
    them, unlike a graph writer's, since sorting them out would cost more
    than it saves: no other batch's objects are ever values, and one
    native batch meeting another's values (shared strings) looks past
    them (L{captureNative}).
    """

    def __init__(self, memo: dict[int, tuple[int, Any]], objects: dict[int, Any]) -> None:
        # (One dictionary of them all, by id, what it holds kept alive: the
        # stream's Owned takes its keys in one step, 22 -> 13 ms of a
        # takeover of 10,000 connections.)
        self._written: dict[int, Any] = memo
        memo.update(objects)

    def written(self) -> Mapping[int, Any]:
        """
        @return: the ids written (its keys).
        """
        return self._written


class _PlainPickler(pickle.Pickler):
    """
    Pickles plain data only: anything else gives up (L{Fallback}).
    """

    def __init__(self, file: _Capped) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)

    def reducer_override(self, value: Any) -> Any:
        raise Fallback(f"a {type(value).__name__} inside a container")

    @staticmethod
    def _buffer(buffer: Any) -> bool:
        raise Fallback("a pickle buffer")


class _Records:
    """
    A batch's objects as the native form's records (L{migrator.state._nativeform}).
    """

    def __init__(
        self, writer: GraphWriter, hooks: _CaptureHooks, translator: Translator, picked: set[int]
    ) -> None:
        self._info = writer._info
        self._anchors = writer._anchors
        self._hooks = hooks
        self._translator = translator
        self._picked = picked
        self._functionName = hooks.adapters.functionName
        self.records: list[Any] = []
        #: The objects recorded, by id: the batch's own.
        self.objects: dict[int, Any] = {}
        self._index: dict[int, int] = {}
        self._pending: list[tuple[int, Any]] = []
        #: Whether each transport recorded reads.
        self.reading: list[bool] = []
        self._args: dict[int, tuple[str, str, int]] = {}
        #: What is left of the current root's L{UNITS}.
        self.units = UNITS

    def add(self, value: Any) -> int | str:
        """
        A reference to C{value} (not plain data): an anchor's name, or the
        index of its record (made later, by L{drain}).
        """
        i = id(value)
        name = self._anchors.get(i)
        if name is not None:
            return name
        n = self._index.get(i)
        if n is None:
            n = self._index[i] = len(self.records)
            self.records.append(None)
            self.objects[i] = value
            self._pending.append((n, value))
        return n

    def drain(self) -> None:
        """
        Make the records of the objects referred to so far (and of those
        they refer to).
        """
        pending = self._pending
        while pending:
            n, value = pending.pop()
            self.units -= 1
            self.records[n] = self._record(value)

    def _split(self, state: dict[Any, Any]) -> tuple[dict[Any, Any], dict[Any, Any] | None]:
        """
        An instance dictionary's plain entries (the references' keys
        holding C{None}, in their places) and its references.
        """
        self.units -= len(state)
        if self.units < 0:
            raise Fallback("a graph too large for a batch")
        plain = _PLAIN
        refs = {k: v for k, v in state.items() if type(v) not in plain}
        if not refs:
            return state, None
        copy = dict(state)
        add = self.add
        for k, v in refs.items():
            if type(k) is not str:
                # (A key pickled is another object: a float NaN is not
                # even equal to itself, to find its entry again.)
                raise Fallback("a reference under a key that is not a string")
            copy[k] = None
            refs[k] = add(v)
        return copy, refs

    def _record(self, value: Any) -> Any:
        info = self._info(type(value))
        adapter = info.adapter
        if adapter is not None:
            if info.anchorOnly or self._translator.writes:
                raise Fallback("an object moved only as an anchor, or translated")
            kind = self._args.get(id(adapter))
            if kind is None:
                kind = self._args[id(adapter)] = (form.OBJECT, adapter.typeName, adapter.version)
            plain = info.plain
            if plain is None:
                # (A Refusing adapter's capture raises: that gives up too.)
                self.units -= 1
                state = adapter.capture(value)
                if self._translator.writes:
                    raise Fallback("a state to translate")
                if type(state) is dict and sys.getrefcount(state) == _FRESH:
                    # A dictionary the adapter made for this (nothing
                    # else holds it): its identity is nobody's, and it
                    # may refer to objects, as an instance dictionary.
                    return (*kind, *self._split(state))
                # Anything else is written as it is (its identity kept: it
                # may be the application's, shared), plain throughout or
                # the pickling gives up.
                return (*kind, state, None)
            # The default rule: the instance dictionary, made afresh on
            # the other side (as the graph writer's).
            if plain:
                state = {k: v for k, v in value.__dict__.items() if k not in plain}
            else:
                state = value.__dict__
            return (*kind, *self._split(state))
        if isinstance(value, base.DelayedCall):
            return self._call(value)
        if isinstance(value, tcp.Connection):
            if id(value) not in self._picked:
                raise Fallback("a connection outside the batch")
            # (Its protocol is one of the batch's: asked if it may move.)
            key = self._hooks.checkTransport(value, "", asked=True)
            meta = self._hooks.recordTransport(value, key)
            self.reading.append(meta["reading"])
            protocol = self.add(value.protocol)
            if type(protocol) is not int:
                raise Fallback("a transport whose protocol is an anchor")
            producer = getattr(value, "producer", None)
            return (form.TRANSPORT, meta, protocol, None if producer is None else self.add(producer))
        raise Fallback(f"a {type(value).__name__}, for the graph writer")

    def _call(self, call: Any) -> Any:
        """
        A scheduled call, as the graph writer's hook writes it (and
        suspends it with the batch's freeze).
        """
        if not call.active():
            return (form.CALL, None, None, (), {})
        f = ungated(call.func)
        if isinstance(f, types.MethodType):
            name = _methodName(f)
            if name is None or type(f.__self__) in _PLAIN or isinstance(f.__self__, base.DelayedCall):
                raise Fallback("a method not under its name, of plain data, or of a call")
            function: Any = (form.METHOD, self.add(f.__self__), name)
        elif isinstance(f, types.FunctionType) and (allowed := self._functionName(f)) is not None:
            function = (form.FUNCTION, allowed)
        else:
            raise Fallback("a call of something not allowed by name")
        when = self._hooks.recordCall(call)
        return (form.CALL, when, function, tuple(call.args), dict(call.kw))


def _shares(memo: dict[int, tuple[int, Any]], objects: dict[int, Any], owned: Owned) -> bool:
    """
    Does a batch whose objects are C{objects} and whose pickle's memo is
    C{memo} hold something (not a value) that a batch already sent holds?
    """
    if owned.ids.keys() & objects.keys():
        return True
    for i in owned.ids.keys() & memo.keys():
        if type(memo[i][1]) not in _VALUES:
            return True
    if owned.layers:
        # (A connection written in slices: its writer says.)
        mine = [i for i, (_, o) in memo.items() if type(o) not in _VALUES]
        return bool(owned.owners([*mine, *objects]))
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
    units: int = UNITS,
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
    asks: dict[type, bool] = {}
    for t in connections:
        protocol = t.protocol
        ask = asks.get(type(protocol))
        if ask is None:
            adapter = adapterFor(type(protocol))
            if adapter is None:
                return None
            # (The default rule's never declines: not asked.)
            ask = asks[type(protocol)] = type(adapter).movable is not neverDeclines
        if ask and adapterFor(type(protocol)).movable(protocol):
            return None
        if selected is not None and not selected(t):
            return None
    out = _Capped(cap, rootCap)
    pickler = _PlainPickler(out)
    batch = _Records(writer, hooks, translator, {id(t) for t in connections})
    records = batch.records
    try:
        with _boundedRecursion():
            # One pickle per root (its records), one memo: each root's
            # size is known.
            for t in connections:
                # (A root begins: its bounds start again.)
                out.rootSize = 0
                batch.units = units
                start = len(records)
                if type(batch.add(t.protocol)) is not int:
                    return None
                batch.drain()
                pickler.dump(records[start:])
    except Exception:
        # Fallback, RecursionError, an adapter that failed (the graph
        # writer says so, with its path), an object pickle refuses.
        return None
    if len(hooks.transports) != len(connections):
        # A protocol whose graph does not hold its transport.
        return None
    memo = pickler.memo.copy()
    if owned and _shares(memo, batch.objects, owned):
        # Shared with a batch already sent: the graph writer leaves out
        # what shares, root by root.
        return None
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
        movedByClass(adapters, hooks.transports),
        {},
        reactor=reactor,
        calls=hooks.calls,
        pendingBytes=hooks.pendingBytes,
        frozenAt=frozenAt,
        translations=translator.log.asDict(),
        writer=NativeWritten(memo, batch.objects),
    )
    captured.freeze(batch.reading)
    return captured
