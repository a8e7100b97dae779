# -*- test-case-name: tests.test_large -*-
"""
The part of a stream (L{migrator.state._stream.Stream}) that writes a
connection too large for a batch in slices of its own
(L{migrator.state._large}), one slice every other turn, between the
batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from migrator.state._capture import Captured, prepareCapture
from migrator.state._graph import GraphWriter
from migrator.state._large import LargeCapture, Part
from migrator.state._nodes import TooLarge, Unadaptable
from migrator.state._owned import Owned
from migrator.state._versions import Readable

_log = Logger()

#: In the stream's C{owned}, the batch of the objects of the connection
#: being written in slices (its number comes once it is written).
WALKING = -1


class WritesInSlices:
    """
    Writes the connections a batch left out as too large (C{_large}), one
    at a time (C{_walk}); see L{migrator.state._large} for what goes to
    the last turn instead.
    """

    # What it uses of the stream (declared here for type checkers).
    reactor: Any
    ports: Any
    adapters: Any
    claimed: frozenset[str]
    restorable: frozenset[str]
    readable: Mapping[str, Readable] | None
    selected: Callable[[Any], bool] | None
    budget: float
    timer: Callable[[], float]
    seconds: float
    partBytes: int
    owned: Owned
    batches: list[Any]
    _large: deque[Any]
    _walk: LargeCapture | None
    _walks: int
    _streamed: set[int]
    _watched: dict[int, Any]

    def _eligible(self, t: Any) -> bool | None:
        raise NotImplementedError()

    def _watch(self, t: Any, kind: str) -> None:
        raise NotImplementedError()

    def _unwatch(self, t: Any) -> None:
        raise NotImplementedError()

    def _readIfResumed(self, t: Any) -> None:
        raise NotImplementedError()

    def _addBatch(self, number: int, captured: Captured) -> None:
        raise NotImplementedError()

    def _prepare(self, withFactories: bool, writerClass: type[GraphWriter]) -> Any:
        return prepareCapture(
            self.reactor, self.ports, self.adapters, self.claimed, self.restorable,
            self.readable, self.selected, withFactories, writerClass,
        )

    def _startWalk(self) -> None:
        while self._large and self._walk is None:
            t = self._large.popleft()
            if id(t) in self._streamed or not self._eligible(t):
                # Busy, closing...: looked at in the last turn.
                continue
            self._watched.pop(id(t), None)
            self._unwatch(t)
            try:
                walk = LargeCapture.start(t, self._walks, self._prepare)
            except (Unadaptable, TooLarge):
                continue
            self._walks += 1
            self._watch(t, "write")
            walk.layer = self.owned.addWriter(walk.writer, WALKING)
            self._walk = walk

    def _stepWalk(self) -> Captured | Part | None:
        walk = self._walk
        assert walk is not None
        started = self.timer()
        try:
            new = walk.proceed(started + self.budget, self.timer)
            # Objects a batch sent already: they go together in the last
            # turn, with that batch.
            crossing = self.owned.owners(new, skip=walk.layer)
        except Unadaptable:
            # Left for the last turn, which says why it cannot move.
            self._dropWalk("something in it cannot move")
            return None
        except TooLarge:
            self._dropWalk("it reaches another connection")
            return None
        finally:
            self.seconds += self.timer() - started
        for n in crossing:
            self.batches[n].tainted = True
        if crossing or walk.crossed:
            self._dropWalk("it shares objects with another batch")
            return None
        part = walk.part()
        if part is not None:
            self.partBytes += len(part.payload)
        if part is not None or not walk.written:
            return part
        # Written, and every chunk sent: its batch.
        number = len(self.batches)
        try:
            captured = walk.finish({"batch": number, "last": False})
        except TooLarge:
            self._dropWalk("its protocol does not lead to its transport")
            return None
        self._walk = None
        _log.info(
            "a connection with a large state ({name}) was written in {slices} "
            "slice(s) over {ms:.1f} ms, {size} bytes in {parts} chunk(s), while "
            "the others were served",
            name=", ".join(captured.moved),
            slices=walk.slices,
            ms=(self.reactor.seconds() - captured.frozenAt) * 1000,
            size=walk.partBytes + len(captured.payload),
            parts=walk.writer.chunkCount,
        )
        walk.layer[1] = number
        self._streamed.add(id(walk.transport))
        self._addBatch(number, captured)
        return captured

    def _dropWalk(self, why: str = "the last turn came first") -> None:
        walk, self._walk = self._walk, None
        if walk is None:
            return
        _log.info(
            "a connection with a large state stops being written in slices "
            "(after {slices}), and goes with the last batch if the takeover "
            "goes on: {why}",
            slices=walk.slices,
            why=why,
        )
        self.owned.remove(walk.layer)
        self._unwatch(walk.transport)
        walk.abandon()
        self._readIfResumed(walk.transport)
