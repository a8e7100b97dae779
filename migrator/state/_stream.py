# -*- test-case-name: tests.test_stream -*-
"""
A capture in batches (incumbent side): the connections move a bounded
batch per reactor turn, while this process keeps accepting and serving
everything else, and the last batch is captured in the turn in which
accepting stops.  L{migrator.takeover._attempt} drives it; each batch is
a message of its own on the frame channel, restored by the successor as
it arrives (L{migrator.takeover._batches}).

What a batch may hold: a connection whose graph shares no object with a
batch already sent.  Every batch is written by its own
L{migrator.state._graph.GraphWriter}, and the objects each one wrote
(kept alive by it, so their ids stay theirs) are I{owned} by it; a root
whose graph reaches an owned object is left for the last batch, and the
batch that owns the object is I{tainted}: the last turn thaws it and
captures its connections again, with the rest, and the successor drops
its copy (the last message lists the batches dropped).  A batch is
tainted too if, while frozen, something wrote to one of its transports
(a broadcast from a connection still served here) or closed it.  The
ports' factories (anchors, and the only objects the batches may all
refer to) are written in the last batch; a factory that reaches an owned
object (a list of its protocols) taints the batch that owns it.  So no
object travels twice, and no state sent early is stale at the commit.

The order: connections that are idle (no adapter's C{busy} says
otherwise) and have not read since the stream started go first; those
that read meanwhile (a client in conversation) go last, so that a client
that talks is frozen for the last turn only; at most L{Stream.finalLimit}
of them are left for the last turn.  A busy connection waits, still
served here, and moves in a later batch once it is idle, until the
operator's deadline (see L{migrator.takeover._attempt}).

The commit stays all-or-nothing: every batch sent stays frozen here until
the commit (L{Stream.release}) or the abandon (L{Stream.thaw}, every batch
in the order sent).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger

from migrator.interfaces import IPortRegistry
from migrator.state._capture import Captured, captureConnections
from migrator.state._choosing import ChoosesConnections
from migrator.state._large import LIMIT, LargeCapture, Part
from migrator.state._nativewrite import captureNative
from migrator.state._owned import Owned
from migrator.state._totals import BatchTotals
from migrator.state._turns import eachTurn
from migrator.state._versions import Readable
from migrator.state._walk import WALKING, WritesInSlices
from migrator.state._watches import HeldCloses, WatchesTransports

if TYPE_CHECKING:
    from migrator.state._quicklook import SuspectTest

_log = Logger()

#: How many batches in a row may fail to be in the native form before
#: the graph writer writes every other.
NATIVE_MISSES = 3


@attrs.define(eq=False)
class Batch:
    """
    One batch sent.

    @ivar number: its number (0, 1, ...), as the successor knows it.
    @ivar captured: what it captured and froze.
    @ivar tainted: whether it is dropped (captured again in the last).
    """

    number: int
    captured: Captured
    tainted: bool = False


@attrs.define(eq=False)
class Stream(ChoosesConnections, WatchesTransports, WritesInSlices, BatchTotals):
    """
    The connections of one takeover, captured in batches; see the module
    docstring.  Call L{start}, then L{next} once per reactor turn while it
    gives batches (and L{waiting} says whether busy connections are still
    to come), then L{finish} in the turn in which accepting stops.

    @ivar maxBatch: the most connections per batch (0: no batches, all
        in the last).
    @ivar budget: the capture time aimed at per batch, in seconds: the
        size of a batch follows the time the last one took.
    @ivar finalLimit: how many connections that read meanwhile may be
        left for the last turn.
    @ivar timer: measures the capture's time (for L{budget}).
    """

    reactor: IReactorTime
    ports: IPortRegistry
    adapters: Any
    claimed: frozenset[str]
    restorable: frozenset[str]
    readable: Mapping[str, Readable] | None = None
    selected: Callable[[Any], bool] | None = None
    maxBatch: int = 512
    budget: float = 0.005
    finalLimit: int = 64
    timer: Callable[[], float] = time.perf_counter
    batches: list[Batch] = attrs.field(factory=list)
    final: Captured | None = None
    #: The ids of the objects each batch wrote, with its number.
    owned: Owned = attrs.field(factory=Owned)
    #: The time spent capturing, all batches (L{timer}).
    seconds: float = 0.0
    _size: int = 64
    _queue: deque[Any] = attrs.field(factory=deque)
    _later: deque[Any] = attrs.field(factory=deque)
    _seen: set[int] = attrs.field(factory=set)
    _busy: int = 0
    _active: set[int] = attrs.field(factory=set)
    _quietBusy: set[int] = attrs.field(factory=set)
    _readsNoted: Callable[[], None] | None = None
    _dirty: set[int] = attrs.field(factory=set)
    _resumed: set[int] = attrs.field(factory=set)
    #: The transports whose first read is watched, by id.
    _watched: dict[int, Any] = attrs.field(factory=dict)
    _streamed: set[int] = attrs.field(factory=set)
    _kinds: dict[type, Any] = attrs.field(factory=dict)
    #: Whether the successor declares each port (by the port's id).
    _claimedBy: dict[int, bool] = attrs.field(factory=dict)
    #: The watching subclasses made, by C{(kind, class)}; and each watched
    #: transport's own class, by id.
    _watchers: dict[tuple[str, type], type] = attrs.field(factory=dict)
    #: What the transports under the watch of writes see as their reactor
    #: (by the real one's id).
    _frozenReactors: dict[int, Any] = attrs.field(factory=dict)
    #: The closes asked of them once the last batch is sent.
    _held: HeldCloses = attrs.field(factory=HeldCloses)
    _classOf: dict[int, type] = attrs.field(factory=dict)
    #: The ids of the connections open when the stream started; the
    #: registry's note of those added since; those busy at the last look.
    _present: set[int] | None = None
    _arrivals: Any = None
    #: The connections the caller listed (L{listed}), until the first look;
    #: its test of those never two looks at, and those it said yes of.
    _listed: list[Any] | None = None
    _suspect: SuspectTest | None = None
    suspects: list[Any] = attrs.field(factory=list)
    _recheck: list[Any] = attrs.field(factory=list)
    #: Whether the collector was paused here (and is to be resumed).
    _collecting: bool = False
    #: Whether a connection too large for a batch is written in slices of
    #: its own (L{migrator.state._large}; the successor reads parts); if
    #: not, it goes in a batch whatever its size.
    slices: bool = False
    #: Whether the successor reads batches in the native form
    #: (L{migrator.state._nativewrite}); how many were, and how many
    #: batches in a row were not for it.
    native: bool = False
    nativeBatches: int = 0
    nativeMisses: int = 0
    #: The connections too large for a batch, still to write in slices;
    #: the one being written; how many were begun.
    _large: deque[Any] = attrs.field(factory=deque)
    _walk: LargeCapture | None = None
    _walks: int = 0
    #: The size of the part messages sent (L{migrator.state._large}).
    partBytes: int = 0
    _walkTurn: bool = True

    # -- choosing ----------------------------------------------------------------

    def listed(self, connections: list[Any], suspect: SuspectTest | None = None) -> None:
        """
        The open connections, listed by the caller in this reactor turn:
        the first look (L{start}, in a later turn) takes them, and what
        arrives from now on.

        @param suspect: if given, the first look keeps those of them it
            says yes of in L{suspects} (for never two's check).
        """
        self._arrivals = self.ports.noteArrivals()
        self._listed = connections
        self._suspect = suspect

    def start(self) -> None:
        """
        Find the connections that may go in batches, and watch which of
        them read from now on.
        """
        self._size = max(1, min(self._size, self.maxBatch))
        self._scan()

    def _scan(self) -> None:
        # The first look is at every connection; the later ones only at
        # those added since and those busy at the last look (with
        # thousands held, a look at all is milliseconds, every turn).
        if self._present is None:
            self._firstScan()
            return
        arrived = self._arrivals.take() if self._arrivals is not None else []
        candidates = self._recheck + arrived
        # A connection that arrived since the stream started is taken for
        # one in conversation: it goes last, like one that read.
        present = self._present
        recheck: list[Any] = []
        looked: set[int] = set()
        streamed, seen, queue, isEligible = self._streamed, self._seen, self._queue, self._eligible
        for t in candidates:
            i = id(t)
            # (One busy at an earlier look may have gone in a batch since,
            # reached through another connection's graph.)
            if i in seen or i in looked or i in streamed:
                continue
            looked.add(i)
            eligible = isEligible(t)
            if eligible is None:
                recheck.append(t)
                continue
            seen.add(i)
            if eligible:
                queue.append(t)
                if i not in present:
                    self._active.add(i)
                else:
                    # (Quiet until busy when picked: what it read while
                    # busy does not make it one in conversation.)
                    if i in self._quietBusy:
                        self._quietBusy.discard(i)
                        self._active.discard(i)
                    self._watch(t, "read")
        self._recheck = recheck
        self._busy = len(recheck)

    def _firstScan(self) -> None:
        """
        The first look, at every connection open (each listed once): the
        one long turn of a stream's start.  It puts them all in the queue
        and under the watch of reads; whether each may go in a batch now
        is asked once, when it is picked (L{_pick}), not here as well
        (with tens of thousands, each look is milliseconds of this turn,
        before the first batch).
        """
        listed, self._listed = self._listed, None
        if listed is None:
            self._arrivals = self.ports.noteArrivals()
            listed = self.ports.openConnections()
        # (Each once, whatever the registry: a dictionary's keys keep order.)
        candidates = list(dict.fromkeys(listed))
        self._present = set(map(id, candidates))
        if self._suspect is not None:
            self.suspects.extend(self._suspect.among(candidates))
        self._seen.update(self._present)
        self._queue.extend(candidates)
        self._watchReads(candidates)
        self._recheck = []
        self._busy = 0

    def waiting(self) -> int:
        """
        @return: how many connections that may move are busy (as last
            seen).
        """
        return self._busy

    def _pick(self) -> list[Any]:
        picked: list[Any] = []
        queue, size = self._queue, self._size
        streamed, active, isEligible = self._streamed, self._active, self._eligible
        while queue and len(picked) < size:
            t = queue.popleft()
            if id(t) in streamed:
                # Reached through an earlier batch's graph: sent with it.
                continue
            eligible = isEligible(t)
            if eligible is None:
                # Busy now: looked at again by the next scan.
                self._seen.discard(id(t))
                if id(t) not in active:
                    self._quietBusy.add(id(t))
                self._recheck.append(t)
            elif not eligible:
                continue
            elif id(t) in active:
                self._later.append(t)
            else:
                picked.append(t)
        later = self._later
        if not queue and len(later) > self.finalLimit:
            # Only those still open count (clients that connected, talked
            # and left while the stream went on would otherwise push the
            # ones still talking into batches).
            streamed = self._streamed
            later = self._later = deque(
                t for t in later if t.connected and id(t) not in streamed
            )
        while not queue and len(picked) < self._size and len(later) > self.finalLimit:
            t = later.popleft()
            if id(t) not in self._streamed and self._eligible(t):
                picked.append(t)
        return picked

    # -- batches -----------------------------------------------------------------

    def next(self) -> Captured | Part | None:
        """
        Capture and freeze the next batch (its message is
        L{Captured.payload}), or write the next slice of a connection too
        large for a batch (every other turn, while there is one).

        @return: the batch; or a slice's message (a L{Part}); or C{None}
            if nothing is ready (see L{waiting} and L{walking}).
        """
        if self.maxBatch <= 0:
            return None
        if self._walk is None and self._large:
            self._startWalk()
        if self._walk is not None and self._walkTurn:
            self._walkTurn = False
            return self._stepWalk()
        self._walkTurn = True
        return self._nextBatch()

    @property
    def walking(self) -> bool:
        """
        Whether a connection is being written in slices, or waits to be.
        """
        return self._walk is not None or bool(self._large)

    def _nextBatch(self) -> Captured | None:
        started = self.timer()
        while True:
            picked = self._pick()
            if not picked:
                self._scan()
                picked = self._pick()
            if not picked:
                return None
            header = {"batch": len(self.batches), "last": False}
            captured = self._captureBatch(picked, header)
            self._large.extend(captured.large)
            # What could not go now (shared with a batch sent, declining,
            # or unadaptable) is left for the last turn; the batches it
            # shares objects with go again there.
            for n in captured.crossed:
                if n == WALKING:
                    assert self._walk is not None
                    self._walk.crossed = True
                else:
                    self.batches[n].tainted = True
            if captured.count or self.timer() - started > 4 * self.budget:
                break
            # Everything picked was left out: pick again, a bounded time.
        elapsed = self.timer() - started
        self.seconds += elapsed
        if elapsed > 0:
            self._size = min(self.maxBatch, max(16, int(self._size * self.budget / elapsed)))
        if not captured.count:
            return None
        number = len(self.batches)
        self._watchWrites(captured.transports)
        self._streamed.update(map(id, captured.transports))
        self.owned.add(captured.writer.written(), number)
        self._addBatch(number, captured)
        return captured

    def _addBatch(self, number: int, captured: Captured) -> None:
        self.batches.append(Batch(number, captured))

    def _captureBatch(self, picked: list[Any], header: dict[str, Any]) -> Captured:
        """
        A batch (not the last): in the native form if the successor reads
        it and everything in the batch is for it, else by the graph
        writer.  After L{NATIVE_MISSES} batches in a row that were not,
        the graph writer writes the rest.
        """
        if self.native and self.nativeMisses < NATIVE_MISSES:
            captured = captureNative(
                self.reactor, self.ports, self.adapters, self.claimed, self.restorable,
                self.readable, self.selected, picked, self.owned, header,
            )
            if captured is not None:
                self.nativeMisses = 0
                self.nativeBatches += 1
                return captured
            self.nativeMisses += 1
        return self._capture(
            picked, self.owned, header, withFactories=False, limit=LIMIT if self.slices else None
        )

    def _capture(
        self,
        connections: list[Any],
        owned: Owned,
        header: dict[str, Any],
        withFactories: bool,
        limit: int | None = None,
    ) -> Captured:
        return captureConnections(
            self.reactor,
            self.ports,
            self.adapters,
            self.claimed,
            self.restorable,
            self.readable,
            self.selected,
            connections=connections,
            owned=owned,
            withFactories=withFactories,
            header=header,
            limit=limit,
        )

    def finish(self, rest: list[Any] | None = None) -> Captured:
        """
        The last turn (accepting has stopped): drop the batches that
        something changed since they were sent, and capture, with the
        ports' factories, every connection not in a batch kept.

        @param rest: the open connections not in a batch, if the caller
            listed them in this turn (else they are listed here).
        @return: the last batch, frozen (its message says which batches
            the successor drops).
        """
        started = self.timer()
        try:
            return self._finish(rest)
        finally:
            self.seconds += self.timer() - started

    def _finish(self, listed: list[Any] | None) -> Captured:
        # A connection still being written in slices goes with the rest.
        self._dropWalk()
        self._unwatchReads()
        dirty = self._dirty
        for batch in self.batches if dirty else ():
            if not batch.tainted and any(id(t) in dirty for t in batch.captured.transports):
                batch.tainted = True
        for _ in range(len(self.batches) + 1):
            kept = [b for b in self.batches if not b.tainted]
            owned = self.owned
            if len(kept) < len(self.batches):
                numbers = {b.number for b in kept}
                owned = owned.keeping(numbers)
            for batch in self.batches:
                if batch.tainted and batch.captured.frozen:
                    self._thaw(batch.captured)
            allKept = len(kept) == len(self.batches)
            if allKept and listed is not None:
                rest = listed
            else:
                streamed: AbstractSet[int] = (
                    self._streamed if allKept
                    else {id(t) for b in kept for t in b.captured.transports}
                )
                rest = [t for t in self.ports.openConnections() if id(t) not in streamed]
            header = {"batch": len(self.batches), "last": True, "dropped": self.dropped}
            final = self._capture(rest, owned, header, withFactories=True)
            if final.refused and kept:
                # Nothing moves (a factory's state cannot): nor do the
                # batches.
                final.crossed = {b.number for b in kept}
            if not final.crossed:
                self.final = final
                # Until the commit, nothing here writes to them, makes them
                # read or closes them: what the successor got is all there is.
                for t in final.transports:
                    self._watch(t, "write")
                self._held.sealed = True
                return final
            # Shared with batches kept: those go again, with this one.
            final.thaw()
            for n in final.crossed:
                self.batches[n].tainted = True
        raise AssertionError("every batch tainted, yet the last one still crosses")

    def ownCollector(self) -> None:
        """
        Resume the collector (paused by the caller, the takeover's attempt)
        after the release or the thaw, not before: the batches' writers
        keep what they wrote until then, and a full collection would
        rescan it all.
        """
        self._collecting = True

    def _resumeCollector(self, exiting: bool = False) -> None:
        if self._collecting:
            self._collecting = False
            if exiting:
                # Everything allocated since the pause (all that the
                # takeover wrote) is left out of every collection: the
                # first one would scan it all (10 ms at 10,000
                # connections), in the exit's last turn.
                gc.freeze()
            gc.enable()

    def _thaw(self, part: Captured) -> None:
        for t in part.transports:
            self._unwatch(t)
        part.thaw()
        for t in part.transports if self._resumed else ():
            self._readIfResumed(t)

    def thaw(self) -> None:
        """
        The takeover was abandoned: thaw every batch, in the order sent,
        then the last one.
        """
        self._resumeCollector()
        self._dropWalk("the takeover was abandoned")
        self._unwatchReads()
        for batch in self.batches:
            self._thaw(batch.captured)
        if self.final is not None:
            self._thaw(self.final)
        self._doHeldCloses()

    def release(
        self,
        later: Callable[[Callable[[], None]], object] | None = None,
        done: Callable[[], None] | None = None,
        close: bool = True,
    ) -> Callable[[bool], None]:
        """
        The commit: let go of every connection sent (see
        L{Captured.release}).

        @param later: if given, runs a function in a later reactor turn:
            the batches are released a few milliseconds' worth per turn
            (tens of thousands of closes would make one long turn), and
            the collector resumes after the last.
        @param done: called once all are released.
        @param close: if false (this process exits next), the handles
            are left for the exit to close.
        @return: a function that releases what is left at once (before
            this process stops), closing the handles or (given C{False},
            when this process exits next) leaving them for the exit.
        """
        self._unwatchReads()
        held: AbstractSet[int] | None = None

        def releasePart(part: Captured) -> None:
            nonlocal held
            if close:
                for t in part.transports:
                    self._unwatch(t)
                part.release(close=True)
                return
            # This process exits next: its transports stay under the watch
            # (they read, write and close nothing here), their handles for
            # the exit to close; only those the reactor holds (through a
            # method bound before the watch) are let go of, lest its
            # shutdown close them.  (10 ms at 10,000 otherwise, at exit.)
            if held is None:
                fds = cast(IReactorFDSet, self.reactor)
                held = {id(t) for t in (*fds.getReaders(), *fds.getWriters())}
            part.release(close=False, held=held)

        def released() -> None:
            # What the batches wrote is garbage now: dropped before the
            # collector resumes (reference counting frees it), so that its
            # first full pass has less to scan; unless this process exits
            # next (nothing is freed faster than by the exit).
            if close:
                for batch in self.batches:
                    batch.captured.writer = None
                if self.final is not None:
                    self.final.writer = None
                self.owned.clear()
            self._resumeCollector(exiting=not close)
            if self._held.requests:
                _log.info(
                    "{count} moved connection(s) asked to close here after the last "
                    "batch was sent: not closed here; the successor has them as sent",
                    count=len(self._held.requests),
                )
            if done is not None:
                done()

        # (As many batches a turn as fit in the budget: nothing here is
        # served any more but what stays to drain.)
        rest = eachTurn(self._parts(), releasePart, later, released, self.budget, self.timer)

        def hurry(closing: bool) -> None:
            nonlocal close
            close = closing
            rest()

        return hurry
