# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
incumbent side: L{captureNative} pickles the batch's protocols with the C
pickler, where the graph writer (L{migrator.state._writer}) walks every
container in Python.  It costs a fraction per connection, and is tried
only for what it writes exactly as the graph writer would: adapted
objects written at this process's version with nothing to translate,
anchors (names only: a batch never carries the factories' state), the
batch's own transports (without a producer), atoms and plain containers.
Anything else (a scheduled call, a bound method, an object without an
adapter, a connection outside the batch, one declining, a graph sharing an
object with a batch already sent, deeper than a few hundred levels or
larger than L{CAP} bytes) makes it give up, having frozen and kept
nothing: the caller writes the batch with the graph writer, which says
what stays and why, or leaves a large connection for its slices.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from types import FunctionType
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime

from migrator.interfaces import IPortRegistry
from migrator.state import _nativeform as form
from migrator.state._capture import Captured, prepareCapture
from migrator.state._capturehooks import _CaptureHooks
from migrator.state._graph import GraphWriter, collectorPaused, dumpsPlain
from migrator.state._owned import Owned
from migrator.state._plan import Classifier
from migrator.state._translator import Translator
from migrator.state._versions import Readable

#: The most bytes a batch in the native form takes: past it, the pickling
#: stops there (a bounded part of one turn) and the graph writer writes
#: the batch, leaving a large connection out for its slices.  (A batch of
#: idle connections takes about 150 bytes per connection.)
CAP = 1 << 20

#: How many levels of containers the C pickler may recurse into (from the
#: caller's depth): past it, the graph writer, which does not recurse,
#: writes the batch.
DEPTH = 1000

#: Objects of these types are values, never another batch's.
_VALUES = frozenset({type(None), bool, int, float, str, bytes, tuple, frozenset, FunctionType})


class Fallback(Exception):
    """
    The batch is not for the native form: the graph writer writes it.
    """


class _Capped:
    """
    The pickle's file: keeps what is written, up to C{cap} bytes.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.size += len(data)
        if self.size > self.cap:
            raise Fallback(f"over {self.cap} bytes")
        # (A large value may be handed over as it is: a bytearray too.)
        self.parts.append(bytes(data))
        return len(data)


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
        self._names = {id(f) for f in (form.obj, form.state, form.anchor, form.transport)}
        #: The ids of the containers made here (not the application's).
        self.made: set[int] = set()
        self._args: dict[int, tuple[str, int]] = {}
        #: Whether each transport met reads.
        self.reading: list[bool] = []

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
                self.made.add(id(state))
            else:
                state = value.__dict__
            args = self._args.get(id(adapter))
            if args is None:
                # (One per class: the pickle refers back to it.)
                args = self._args[id(adapter)] = (adapter.typeName, adapter.version)
            return (form.obj, args, (state,), None, None, form.state)
        if isinstance(value, tcp.Connection):
            if id(value) not in self._picked or getattr(value, "producer", None) is not None:
                raise Fallback("a connection outside the batch, or with a producer")
            # (Its protocol is one of the batch's: asked if it may move.)
            key = self._hooks.checkTransport(value, "", asked=True)
            meta = self._hooks.recordTransport(value, key)
            self.reading.append(meta["reading"])
            self.made.update((id(meta), id(meta["peer"])))
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
    out = _Capped(cap)
    pickler = _Pickler(out, writer, hooks, translator, {id(t) for t in connections})
    try:
        with _boundedRecursion():
            pickler.dump([t.protocol for t in connections])
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
        pendingBytes=hooks.pendingBytes,
        frozenAt=frozenAt,
        translations=translator.log.asDict(),
        writer=NativeWritten(memo, anchors),
    )
    captured.freeze(pickler.reading)
    return captured
