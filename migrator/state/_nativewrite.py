# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
incumbent side: L{captureNative} has the C pickler write the batch's
connections, looking in Python only at each object that is not plain
data (L{_Pickler.reducer_override}), where the graph writer
(L{migrator.state._writer}) walks every container in Python.  It costs a
fraction per connection, and is tried only for what it writes exactly as
the graph writer would: adapted objects written at this process's
version with nothing to translate (the default rule's state, a fresh
copy of the instance dictionary; an adapter's own state as it is, its
identity kept), anchors (names only: a batch never carries the
factories' state), the batch's own transports and their producers,
scheduled calls (suspended with the batch) of methods of objects or of
functions allowed by name, and plain data, wherever they sit.
Anything else (a looping call, a call of a call's method, a bound
method or a function held as a value, an object without an adapter, a
connection outside the batch, one declining, a graph sharing an object
with a batch already sent, holding more than L{UNITS} objects and
entries, deeper than L{DEPTH} levels or larger than L{ROOT_CAP} bytes)
makes it give up, having frozen and kept nothing: the caller writes the
batch with the graph writer, which says what stays and why, or leaves a
large connection for its slices.
"""

from __future__ import annotations

import gc
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
from migrator.state._owned import VALUES, Owned
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

#: What the C pickler writes itself (exact types).
_PLAIN = VALUES | {dict, list, set, bytearray}


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

    def joined(self) -> bytes:
        """
        Everything written, in one; no longer kept here.
        """
        joined, self.parts = b"".join(self.parts), []
        return joined


class NativeWritten:
    """
    What a batch in the native form wrote, kept alive so that their ids
    stay theirs, as a graph writer's L{GraphWriter.written}: its pickler,
    whose memo holds every object it wrote.  The ids it owns are those of
    the objects another batch could hold too: not the values (strings,
    tuples: no other batch's objects are ever values, and one native batch
    meeting another's values, shared strings, looks past them), not the
    anchors or the form's markers (every batch refers to them).  What the
    pickling made for itself (a state's copy, a transport's description)
    is among them: no other batch can reach it.
    """

    def __init__(self, pickler: pickle.Pickler, ids: set[int]) -> None:
        self._pickler = pickler
        self._ids = ids

    def written(self) -> set[int]:
        """
        @return: the ids owned.
        """
        return self._ids


def _ownedIds(pickler: _Pickler, own: list[Any], probes: tuple[Any, Any]) -> set[int]:
    """
    The ids of the objects, not values, that C{pickler}'s memo holds, less
    the anchors and the form's markers.

    The memo's own copy (C{pickler.memo.copy()}) makes a tuple and two
    integers per entry, parsing a format string each time: 1.8 us a
    connection.  Where the collector's view of the pickler holds the
    memo's objects (CPython 3.11 and later traverse it, all of it), they
    are taken from there (L{_referents}), less the pickler's own (C{own}:
    what it referred to before it wrote anything, its class, dictionary,
    methods; held, so that their ids stay theirs); the C{probes}, objects
    surely in the memo (the batch's first and last protocols), say
    whether they are.
    """
    values = VALUES
    ids = {id(o) for o in _referents(pickler) if type(o) not in values}
    if id(probes[0]) in ids and id(probes[1]) in ids:
        ids.difference_update(map(id, own))
    else:
        ids = {i for i, (_, o) in pickler.memo.copy().items() if type(o) not in values}
    ids.difference_update(pickler.anchorsMet, _MARKER_IDS)
    return ids


#: (A name of this module's: tests replace it.)
_referents = gc.get_referents


class _Pickler(pickle.Pickler):
    """
    Writes a batch's connections in the native form: plain data as the C
    pickler does, every other object as a call of a marker
    (L{migrator.state._nativeform}), or gives up (L{Fallback}).
    """

    def __init__(
        self,
        file: _Capped,
        writer: GraphWriter,
        hooks: _CaptureHooks,
        translator: Translator,
        picked: set[int],
    ) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self._info = writer._info
        self._anchors = writer._anchors
        self._hooks = hooks
        self._translator = translator
        self._picked = picked
        self._functionName = hooks.adapters.functionName
        self._kinds: dict[int, tuple[str, int]] = {}
        #: The ids of the anchors met (the pickler's memo holds them).
        self.anchorsMet: set[int] = set()
        self._callsMet: set[int] = set()
        #: Whether each transport written reads.
        self.reading: list[bool] = []
        #: What is left of the current root's L{UNITS}.
        self.units = UNITS

    @staticmethod
    def _buffer(buffer: Any) -> bool:
        raise Fallback("a pickle buffer")

    def reducer_override(self, value: Any) -> Any:
        # (Called for what is not plain data and not in the memo yet: the
        # markers too, the first time each is written.)
        i = id(value)
        name = self._anchors.get(i)
        if name is not None:
            self.anchorsMet.add(i)
            return (form.ANCHOR, (name,))
        if i in _MARKER_IDS:
            return NotImplemented
        self.units -= 1
        info = self._info(type(value))
        adapter = info.adapter
        if adapter is not None:
            if info.anchorOnly or self._translator.writes:
                raise Fallback("an object moved only as an anchor, or translated")
            kind = self._kinds.get(id(adapter))
            if kind is None:
                kind = self._kinds[id(adapter)] = (adapter.typeName, adapter.version)
            plain = info.plain
            if plain is None:
                # An adapter's own state, written as it is (its identity
                # kept: it may be the application's, shared).  (A Refusing
                # adapter's capture raises: that gives up too.)
                state = adapter.capture(value)
                if self._translator.writes:
                    raise Fallback("a state to translate")
                if type(state) is dict:
                    self.units -= len(state)
            else:
                # The default rule: the instance dictionary, made afresh on
                # the other side (as the graph writer's).
                if plain:
                    state = {k: v for k, v in value.__dict__.items() if k not in plain}
                else:
                    state = value.__dict__.copy()
                self.units -= len(state)
            if self.units < 0:
                raise Fallback("a graph too large for a batch")
            if state is None:
                # (Pickle writes a state of None as no state at all.)
                return (form.OBJECT, (*kind, True))
            return (form.OBJECT, kind, state, None, None, form.POPULATE)
        if isinstance(value, base.DelayedCall):
            if i in self._callsMet:
                # Reached again through its own arguments (its method's
                # object refers back to it) before the pickler memoized
                # it: it would be written, and held, twice.
                raise Fallback("a scheduled call reached through its own arguments")
            self._callsMet.add(i)
            return (form.CALL, self._call(value))
        if isinstance(value, tcp.Connection):
            if i not in self._picked:
                raise Fallback("a connection outside the batch")
            # (Its protocol is one of the batch's, not an anchor: asked if
            # it may move, by captureNative.)
            key = self._hooks.checkTransport(value, "", asked=True)
            meta = self._hooks.recordTransport(value, key)
            self.reading.append(meta["reading"])
            producer = getattr(value, "producer", None)
            return (form.TRANSPORT, (meta,), (value.protocol, producer), None, None, form.ATTACH)
        raise Fallback(f"a {type(value).__name__}, for the graph writer")

    def _call(self, call: Any) -> tuple[Any, ...]:
        """
        A scheduled call's arguments, as the graph writer's hook writes it
        (and suspends it with the batch's freeze).
        """
        if not call.active():
            return (None, None, (), {})
        f = ungated(call.func)
        if isinstance(f, types.MethodType):
            name = _methodName(f)
            if name is None or type(f.__self__) in _PLAIN or isinstance(f.__self__, base.DelayedCall):
                raise Fallback("a method not under its name, of plain data, or of a call")
            function: Any = (form.METHOD, f.__self__, name)
        elif isinstance(f, types.FunctionType) and (allowed := self._functionName(f)) is not None:
            function = (form.FUNCTION, allowed)
        else:
            raise Fallback("a call of something not allowed by name")
        when = self._hooks.recordCall(call)
        return (when, function, tuple(call.args), dict(call.kw))


#: The markers' ids (written as globals, by the pickler itself).
_MARKER_IDS = frozenset(id(getattr(form, name)) for name in form.MARKERS)


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
    anchors = writer._anchors
    asks: dict[type, bool] = {}
    for t in connections:
        protocol = t.protocol
        if id(protocol) in anchors:
            return None
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
    pickler = _Pickler(out, writer, hooks, translator, {id(t) for t in connections})
    own = _referents(pickler)
    try:
        with _boundedRecursion():
            # One pickle per root (its protocol), one memo: each root's
            # size is known.
            for t in connections:
                # (A root begins: its bounds start again.)
                out.rootSize = 0
                pickler.units = units
                pickler.dump(t.protocol)
    except Exception:
        # Fallback, RecursionError, an adapter that failed (the graph
        # writer says so, with its path), an object pickle refuses.
        return None
    if len(hooks.transports) != len(connections):
        # A protocol whose graph does not hold its transport.
        return None
    ids = _ownedIds(pickler, own, (connections[0].protocol, connections[-1].protocol))
    if owned and owned.holdsAnyOf(ids):
        # Shared with a batch already sent: the graph writer leaves out
        # what shares, root by root.
        return None
    message = {
        "roots": [],
        "factories": [],
        "count": len(hooks.transports),
        "native": out.joined(),
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
        writer=NativeWritten(pickler, ids),
        ported=hooks.ported,
    )
    captured.freeze(pickler.reading)
    return captured
