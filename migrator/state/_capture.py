# -*- test-case-name: tests.test_connections -*-
"""
Established connections and the objects behind them, captured as one graph
(incumbent side).  L{migrator.state._restore} is the other half.

Incumbent side, all in one reactor turn (so nothing changes in between):
L{captureConnections} walks the protocols of the open connections whose
classes have adapters, writes them (and everything they reference) into one
graph, and I{freezes} what it captured: the transports stop reading and
writing, the scheduled calls it met are suspended.  The bytes the transport
had not sent yet travel with it.  L{Captured.thaw} undoes the freeze (the
takeover was abandoned); L{Captured.release} lets go after the commit
(close, never C{shutdown}; the application's C{connectionLost} never runs).

Versions: where the successor reads a type at another version, the
newer side translates (L{migrator.state._versions}): this process
downgrades what it writes if it is newer, and leaves a connection whose
graph holds an object no chain of steps reaches (it stays, with the
reason).

File descriptors: those in L{Captured.fds} stay owned by the incumbent's
transports (they are sent, not given away).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, cast

import attrs
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from migrator._reactorinternals import (
    abandonLoopingCall,
    readingTest,
    registeredTest,
    stopReadingAll,
)
from migrator._twistedinternals import needsWriting, releaseConnection
from migrator.interfaces import IPortRegistry
from migrator.state._capturehooks import FAR, _CaptureHooks
from migrator.state._graph import (
    GraphWriter,
    Unadaptable,
    collectorPaused,
    dumpsPlain,
    typeName,
)
from migrator.state._nodes import TooLarge
from migrator.state._owned import Owned
from migrator.state._plan import NOT_SELECTED, Classifier
from migrator.state._translator import TranslationLog, Translator
from migrator.state._versions import Readable

_log = Logger()

#: How many wrapping factories deep a port's factories are anchored.
_MAX_WRAPPED = 4


def portFactories(tracked: Any) -> list[tuple[str, Any]]:
    """
    The factories of a stream port that the successor's own stand for,
    with their anchor names: the port's factory (C{factory:KEY}), then
    those it wraps, one inside the other (C{factory:KEY/1}, ...): a
    C{WrappingFactory} such as TLS's wraps the application's factory (a
    web C{Site}), which the application's protocols refer to.  A port
    whose wrapping changes between generations (TLS added or removed) has
    anchors the other side cannot match: its restore fails, and the
    takeover is rolled back.
    """
    name = "factory:" + tracked.key
    factory = tracked.port.factory
    found = [(name, factory)]
    for depth in range(1, _MAX_WRAPPED + 1):
        if not isinstance(factory, WrappingFactory):
            break
        factory = factory.wrappedFactory
        found.append((f"{name}/{depth}", factory))
    return found


@attrs.define(eq=False)
class Captured:
    """
    What the incumbent captured: the encoded graph, the descriptors to send,
    and what it froze.

    @ivar translations: what was downgraded, by type name
        (L{migrator.state._translator.TranslationLog.asDict}).
    """

    payload: bytes
    fds: list[int]
    transports: list[Any]
    moved: dict[str, int]
    staying: dict[str, int]
    _wasReading: list[bool] = attrs.field(factory=list)
    _calls: list[tuple[Any, float]] = attrs.field(factory=list)
    _loops: list[tuple[Any, float]] = attrs.field(factory=list)
    _reactor: IReactorTime = attrs.field(kw_only=True)
    frozen: bool = False
    pendingBytes: int = 0
    frozenAt: float = 0.0
    translations: dict[str, Any] = attrs.field(factory=dict)
    #: Streaming (L{migrator.state._stream}): the numbers of the earlier
    #: batches whose objects (C{owned}) a root's graph reached: such a root
    #: was left out (for the last batch, with those batches sent again).
    crossed: set[int] = attrs.field(factory=set)
    #: The writer, kept so that the ids of the objects written (its
    #: C{written}) stay theirs while this lives.
    writer: Any = None
    #: Whether nothing moves because the factories' state cannot.
    refused: bool = False
    #: The connections left out because their graph is over the capture's
    #: C{limit} (written in slices instead: L{migrator.state._large}).
    large: list[Any] = attrs.field(factory=list)
    #: How many of C{transports} have a port (the registry counts them),
    #: or -1 if not known.
    ported: int = -1

    @property
    def count(self) -> int:
        return len(self.transports)

    def freeze(self, reading: list[bool] | None = None) -> None:
        """
        Stop the transports reading and writing, and suspend the calls.

        @param reading: whether each transport reads, if the caller asked
            already.
        """
        if reading is None:
            isReading = readingTest(cast(IReactorFDSet, self._reactor))
            reading = [isReading(t) for t in self.transports]
        self._wasReading = reading
        # (Those the reactor only reads, in one call on epoll.)
        for t in stopReadingAll(self._reactor, self.transports):
            t.stopReading()
            t.stopWriting()
        for call, _ in self._calls:
            if call.active():
                call.reset(FAR)
        for loop, _ in self._loops:
            if loop.call is not None and loop.call.active():
                loop.call.reset(FAR)
        self.frozen = True

    def thaw(self) -> None:
        """
        The takeover was abandoned: carry on as if nothing happened.
        """
        if not self.frozen:
            return
        self.frozen = False
        now = self._reactor.seconds()
        for t, reading in zip(self.transports, self._wasReading, strict=True):
            if not t.connected:
                continue
            if reading and not t.disconnecting:
                t.startReading()
            if needsWriting(t):
                t.startWriting()
        for call, when in self._calls:
            if call.active():
                call.reset(max(0.0, when - now))
        for loop, when in self._loops:
            if loop.call is not None and loop.call.active():
                loop.call.reset(max(0.0, when - now))

    def release(
        self,
        later: Callable[[Callable[[], None]], object] | None = None,
        done: Callable[[], None] | None = None,
        close: bool = True,
        held: AbstractSet[int] | None = None,
    ) -> Callable[[bool], None]:
        """
        The successor owns it all now: close our handles (no shutdown), and
        make sure no captured call runs here too.

        @param later: ignored (all in this turn; the same face as
            L{migrator.state._stream.Stream.release}, with C{done}, C{close}
            and what it returns: here nothing is left).
        @param held: with C{close} false, if given: the ids of what the
            reactor reads or writes; only those of the transports are let
            go of (asked to stop), the others are left as they are, for the
            exit.  Only for transports that neither read, write nor close
            whatever is asked of them (a stream's, under its watch).
        Only a transport the reactor still reads or writes is asked to stop
        (a dictionary lookup each, not two calls: tens of thousands).
        """
        self.frozen = False
        if held is not None and not close:
            for t in self.transports:
                if id(t) in held:
                    releaseConnection(t, False)
        else:
            registered = registeredTest(cast(IReactorFDSet, self._reactor))
            for t in self.transports:
                releaseConnection(t, close, registered(t))
        for call, _ in self._calls:
            if call.active():
                call.cancel()
        for loop, _ in self._loops:
            abandonLoopingCall(loop)
        if done is not None:
            done()
        return lambda close: None


def prepareCapture(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    claimed: frozenset[str],
    restorable: frozenset[str],
    readable: Mapping[str, Readable] | None,
    selected: Callable[[Any], bool] | None,
    withFactories: bool,
    writerClass: type[GraphWriter] = GraphWriter,
) -> tuple[Any, _CaptureHooks, Translator, list[Any], Callable[[type], Any]]:
    """
    What a capture writes with (see L{captureConnections} for the
    parameters): its writer (a C{writerClass}), the writer's hooks, its
    translator, the ports' factories (anchored), and the writer's lookup
    of an adapter by class (C{None}: the successor has none).
    """
    known: dict[type, Any] = {}
    translator = Translator(
        readable, getattr(adapters, "kept", None), TranslationLog(reactor.seconds)
    )

    def adapterFor(cls: type) -> Any:
        try:
            return known[cls]
        except KeyError:
            adapter = adapters.adapterFor(cls)
            if adapter is not None:
                if adapter.typeName not in restorable:
                    adapter = None
                else:
                    # A Refusing stand-in if no chain of steps reaches the
                    # successor's version.
                    adapter = translator.writing(adapter)
            known[cls] = adapter
            return adapter

    anchors: dict[int, str] = {id(reactor): "reactor"}
    factories = []
    for tracked in ports.listening():
        if tracked.key in claimed and tracked.kind != "udp":
            for name, factory in portFactories(tracked):
                anchors[id(factory)] = name
                factories.append(factory)
    hooks = _CaptureHooks(
        reactor, adapters, ports, claimed, readingTest(cast(IReactorFDSet, reactor)), selected
    )
    writer = writerClass(adapterFor, anchors, hooks, translator)
    # A batch without the factories writes no anchor's state either.
    writer.anchorState = withFactories
    return writer, hooks, translator, factories, adapterFor


def movedByClass(adapters: Any, transports: list[Any]) -> dict[str, int]:
    """
    How many of C{transports} move, by the names the plan gives (a
    protocol inside TLS is C{Wrapper(Inner)}), so that what moved and
    what stays add up per class.
    """
    names = Classifier(adapters)
    moved: dict[str, int] = {}
    for t in transports:
        name = names.nameOf(t.protocol)
        moved[name] = moved.get(name, 0) + 1
    return moved


@collectorPaused()
def captureConnections(
    reactor: IReactorTime,
    ports: IPortRegistry,
    adapters: Any,
    claimed: frozenset[str],
    restorable: frozenset[str],
    readable: Mapping[str, Readable] | None = None,
    selected: Callable[[Any], bool] | None = None,
    connections: list[Any] | None = None,
    owned: Owned | None = None,
    withFactories: bool = True,
    header: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> Captured:
    """
    Capture and freeze every connection that can move; see the module
    docstring.  The garbage collector does not run meanwhile
    (L{collectorPaused}).

    @param reactor: the clock of the scheduled calls that may move (and
        the reactor whose readers say which connections read).
    @param claimed: the port keys the successor declared.
    @param restorable: the type names the successor has adapters for.
    @param readable: what the successor reads of each type name
        (L{migrator.state._versions.readableFrom}); C{None} if it did not
        say (every state is written at this process's version).
    @param selected: if given, whether the operator selected a connection
        (a transport) to move this time: the others stay, and so does a
        selected one whose graph reaches one of them.
    @param connections: the transports to capture (default: every open
        connection of C{ports}).
    @param owned: the ids of the objects (C{id(obj)}) already sent in an
        earlier batch, each with its batch's number: a root whose graph
        reaches one is left out, and the batch noted
        (L{Captured.crossed}), so that no object is sent twice.
    @param withFactories: whether the ports' factories are written too
        (the last batch of a stream, or a capture in one message).
    @param header: more fields for the message, with C{frozen_at} (a
        stream's batch: its number, whether it is the last one...).
    @param limit: if given, the largest graph a root may have (see
        L{GraphWriter.limit}): a larger one is left out, and listed in
        L{Captured.large}.
    """
    writer, hooks, translator, factories, adapterFor = prepareCapture(
        reactor, ports, adapters, claimed, restorable, readable, selected, withFactories
    )
    # Connections are not served from here on (this all runs in one reactor
    # turn): the freeze, as a client sees it, starts now.  (A real reactor's
    # clock is the wall clock: the successor compares this with its own.)
    frozenAt = reactor.seconds()
    staying: dict[str, int] = {}
    roots: list[Any] = []
    large: list[Any] = []

    def stay(reason: str) -> None:
        staying[reason] = staying.get(reason, 0) + 1

    alreadyCaptured: set[int] = set()
    crossed: set[int] = set()
    # (The batches sent do not change while this runs.)
    owners = owned.owners if owned else None
    for t in list(ports.openConnections()) if connections is None else connections:
        if id(t) in alreadyCaptured:
            # Already part of an earlier connection's graph.
            continue
        protocol = t.protocol
        cls = type(protocol)
        adapter = adapterFor(cls)
        if adapter is None:
            why = "no adapter" if adapters.adapterFor(cls) is None else "no adapter in the successor"
            stay(f"{typeName(cls)}: {why}")
            continue
        why = adapter.movable(protocol)
        if not why and selected is not None and not selected(t):
            why = NOT_SELECTED
        if why:
            stay(f"{typeName(cls)}: {why}")
            continue
        # Asked already: the hook need not ask again when it meets this
        # protocol's transport (this all runs in the freeze).
        hooks.checkedProtocol = protocol
        mark = (
            len(hooks.transports),
            len(hooks.calls),
            len(hooks.loops),
            translator.log.mark(),
            hooks.pendingBytes,
            hooks.ported,
        )
        def undo(mark: tuple[int, int, int, Any, int, int] = mark) -> None:
            # This root leaves no trace (nor does its transport in the
            # count of those the registry counts: see Captured.ported).
            writer.rollback()
            del hooks.transports[mark[0] :]
            del hooks.calls[mark[1] :]
            del hooks.loops[mark[2] :]
            translator.log.rollback(mark[3])
            hooks.pendingBytes = mark[4]
            hooks.ported = mark[5]

        writer.checkpoint()
        writer.limit(limit)
        try:
            roots.append(writer.write(protocol, cls.__name__))
        except Unadaptable as e:
            undo()
            stay(f"{typeName(cls)}: {e}")
            continue
        except TooLarge:
            undo()
            large.append(t)
            continue
        if owners is not None and (met := owners(writer.added())):
            # Shared with a batch already sent: it goes later, with that
            # batch sent again (L{migrator.state._stream}).
            undo()
            roots.pop()
            crossed |= met
            continue
        writer.release()
        reached = len(hooks.transports) - mark[0]
        if reached > 1 or (reached == 1 and hooks.transports[-1] is not t):
            # Other connections reached through this one's graph (its own
            # is not met again).
            alreadyCaptured.update(id(x) for x in hooks.transports[mark[0] :])

    writer.limit(None)
    # The factories' own state travels too (merged into the successor's
    # factories).  If that fails, nothing moves: a half-moved factory would
    # split the application's shared state in two.
    factoryNodes = []
    try:
        writer.checkpoint()
        for factory in factories if withFactories else ():
            factoryNodes.append(writer.write(factory, type(factory).__name__))
        if owned:
            # (A factory is never left out: the stream sends those batches
            # again, with it.)
            crossed |= owned.owners(writer.added())
        writer.release()
    except Unadaptable as e:
        for t in hooks.transports:
            cls = type(t.protocol)
            stay(f"{typeName(cls)}: its factory's state cannot move ({e})")
        empty = {"roots": [], "factories": [], "count": 0}
        if header is not None:
            empty.update(header, frozen_at=frozenAt)
        return Captured(dumpsPlain(empty), [], [], {}, staying, reactor=reactor, refused=True)
    moved = movedByClass(adapters, hooks.transports)

    message = {"roots": roots, "factories": factoryNodes, "count": len(hooks.transports)}
    if header is not None:
        message.update(header, frozen_at=frozenAt)
    payload = dumpsPlain(message)
    captured = Captured(
        payload,
        [t.fileno() for t in hooks.transports],
        list(hooks.transports),
        moved,
        staying,
        calls=hooks.calls,
        loops=hooks.loops,
        reactor=reactor,
        pendingBytes=hooks.pendingBytes,
        frozenAt=frozenAt,
        translations=translator.log.asDict(),
        crossed=crossed,
        writer=writer,
        large=large,
        ported=hooks.ported,
    )
    captured.freeze()
    return captured
