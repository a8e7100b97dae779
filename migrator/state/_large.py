# -*- test-case-name: tests.test_large -*-
"""
One connection whose state is too large to capture in a reactor turn
(incumbent side), written over several turns while this process serves
everything else (L{migrator.state._stream} drives it, one slice per turn,
between its batches).

A batch's capture writes each root up to a limit (L{LIMIT}); a root over
it is left out of the batch (L{Captured.large}) and captured here on its
own:

  - its transport is frozen first (not reading, not writing, a write to
    it from elsewhere watched as for any batch), and so are the scheduled
    calls of its protocol or transport (a bound method of either, or a
    C{LoopingCall} of one); every other scheduled call its graph reaches
    is suspended as it is met.  So nothing of the connection's own
    changes while it is written (a call due meanwhile that belongs to
    some other object of its graph, not met yet, could still run: see
    C{docs/adapters.md});
  - its graph is written by a L{SlicedWriter}, a few milliseconds per
    turn; the items of a large container are cut into chunks, each
    encoded as soon as it is full, and sent in the turn it was written as
    a I{part} message, C{{"part": n, "chunks": [encoded, ...]}}, without
    descriptors;
  - once written, it is sent as a batch of its own, whose message names
    its parts (C{"parts": n}): the successor reads the chunks it holds
    for it.

What cannot be sliced is left for the stream's last turn, captured with
the rest in one turn as before (nothing is lost, the turn is long): a
graph that reaches another connection (it would have to be frozen
unwritten for the turns in between), one that reaches an object a batch
already sent (or that a batch captured meanwhile reaches: the walk is
I{crossed}), one that cannot be written, and one still being written when
the last turn comes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from twisted.internet import task
from twisted.internet.interfaces import IReactorFDSet, IReactorTime

from migrator._reactorinternals import readingTest
from migrator.state._capture import Captured
from migrator.state._capturehooks import FAR, ungated
from migrator.state._nodes import TooLarge, dumpsPlain
from migrator.state._plan import Classifier
from migrator.state._sliced import SlicedWriter

#: The largest graph a root of a batch may have (a container or object
#: counts one, and one more per item or attribute; see
#: L{migrator.state._writer.GraphWriter.limit}): about 5 to 15 ms of
#: writing and encoding.
LIMIT = 10_000


@attrs.define(eq=False)
class Part:
    """
    A message of chunks for the successor to hold until the batch that
    names them: what L{migrator.takeover._attempt.Attempt.send} sends.
    """

    payload: bytes
    fds: list[int] = attrs.field(factory=list)


@attrs.define(eq=False)
class LargeCapture:
    """
    One connection written in slices; see the module docstring.

    @ivar transport: its transport, frozen from L{start}.
    @ivar number: its number among the stream's large connections (the
        part messages' C{part}).
    @ivar captured: what it froze (L{Captured.thaw} undoes it); its
        message once L{finish}ed.
    @ivar layer: its writer's layer of the stream's L{Owned}.
    @ivar crossed: whether a batch captured meanwhile reached one of them
        (see L{migrator.state._stream}).
    @ivar written: whether the whole graph is written.
    """

    transport: Any
    number: int
    writer: SlicedWriter
    captured: Captured
    adapters: Any
    hooks: Any
    layer: list[Any] = attrs.field(factory=list)
    #: The calls suspended before the walk (see L{_suspendOwn}).
    early: list[Any] = attrs.field(factory=list)
    crossed: bool = False
    written: bool = False
    #: How many slices it took, and the size of its part messages.
    slices: int = 0
    partBytes: int = 0
    #: How many of the writer's objects were given by L{proceed}.
    checked: int = 0

    @classmethod
    def start(cls, transport: Any, number: int, prepare: Callable[..., Any]) -> LargeCapture:
        """
        Freeze C{transport} and begin writing its protocol.

        @param prepare: L{prepareCapture} with the stream's arguments, but
            C{withFactories} and C{writerClass}.
        @raise Unadaptable: if its protocol cannot be written at all.
        """
        writer, hooks, _, _, _ = prepare(False, SlicedWriter)
        reactor, adapters = hooks.reactor, hooks.adapters
        isReading = readingTest(cast(IReactorFDSet, reactor))
        reading = isReading(transport)
        hooks.isReading = lambda t: reading if t is transport else isReading(t)
        hooks.only = transport
        hooks.checkedProtocol = transport.protocol
        transport.stopReading()
        transport.stopWriting()
        early = _suspendOwn(reactor, transport, hooks.suspended)
        captured = Captured(
            b"",
            [transport.fileno()],
            [transport],
            {},
            {},
            wasReading=[reading],
            # The hooks add (and suspend) what the walk meets.
            calls=hooks.calls,
            loops=hooks.loops,
            reactor=reactor,
            frozen=True,
            frozenAt=reactor.seconds(),
            writer=writer,
        )
        large = cls(transport, number, writer, captured, adapters, hooks, early=early)
        try:
            writer.startSliced(transport.protocol)
        except BaseException:
            large.abandon()
            raise
        return large

    def proceed(self, deadline: float, timer: Callable[[], float]) -> list[int]:
        """
        Write on until C{deadline} (by C{timer}) or the end.

        @return: the ids of the objects written since the last call (since
            L{start}, the first time).
        @raise Unadaptable: if something in it cannot be written.
        @raise TooLarge: if it cannot be written in slices (another
            connection in its graph).
        """
        self.slices += 1
        self.written = self.writer.proceed(deadline, timer)
        # (From the last slice's end: the first also gives what the start
        # wrote, the protocol and any state its adapter gave whole.)
        new = self.writer.writtenSince(self.checked)
        self.checked = self.writer.count
        return new

    def part(self) -> Part | None:
        """
        @return: the message of the chunks written since the last call, if
            any.
        """
        blobs = self.writer.takeChunks()
        if not blobs:
            return None
        part = Part(dumpsPlain({"part": self.number, "chunks": blobs}))
        self.partBytes += len(part.payload)
        return part

    def finish(self, header: Mapping[str, Any]) -> Captured:
        """
        The whole graph is written: its batch (frozen since L{start}).

        @param header: the batch's fields (its number...).
        """
        t = self.transport
        node = self.writer.finishSliced()
        if len(self.hooks.transports) != 1 or self.hooks.transports[0] is not t:
            # Its protocol does not lead to its transport: captured with the
            # rest, where what is missing is said.
            raise TooLarge()
        message = {"roots": [node], "factories": [], "count": 1, "parts": self.number}
        message.update(header, frozen_at=self.captured.frozenAt)
        captured = self.captured
        captured.payload = dumpsPlain(message)
        captured.moved = {Classifier(self.adapters).nameOf(t.protocol): 1}
        captured.pendingBytes = self.hooks.pendingBytes
        # (A call suspended early but not in the graph stays here, due when
        # it was.)
        self._resumeUnmet()
        translator = self.writer.translator
        captured.translations = translator.log.asDict() if translator is not None else {}
        return captured

    def abandon(self) -> None:
        """
        Stop writing it, and thaw what was frozen (it is left for the last
        turn).
        """
        self.writer.abandonSliced()
        self.captured.thaw()
        self._resumeUnmet()

    def _resumeUnmet(self) -> None:
        """
        Resume the calls suspended before the walk that it did not meet
        (those it met are the captured's, frozen or thawed with it).
        """
        seen = {id(call) for call, _ in self.hooks.calls}
        seen |= {id(loop.call) for loop, _ in self.hooks.loops if loop.call is not None}
        now = self.hooks.reactor.seconds()
        for call in self.early:
            if call.active() and id(call) not in seen:
                call.reset(max(0.0, self.hooks.suspended[id(call)] - now))
        self.early = []


def _suspendOwn(reactor: IReactorTime, transport: Any, suspended: dict[int, float]) -> list[Any]:
    """
    Suspend the scheduled calls of C{transport} and its protocol (a bound
    method of either, or a C{LoopingCall} of one), noting in C{suspended}
    when each was due.

    @return: those calls.
    """
    owners = (id(transport), id(transport.protocol))
    early = []
    for call in reactor.getDelayedCalls():
        func = ungated(getattr(call, "func", None))
        if isinstance(func, task.LoopingCall):
            func = func.f
        if id(getattr(func, "__self__", None)) in owners and call.active():
            suspended[id(call)] = call.getTime()
            call.reset(FAR)
            early.append(call)
    return early

