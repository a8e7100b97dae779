# -*- test-case-name: tests.test_large -*-
"""
L{SlicedWriter}: a L{GraphWriter} that writes one root over several
reactor turns, for a connection whose state is too large for one (see
L{migrator.state._large}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from migrator.state._nodes import ATOMSET as _ATOMSET
from migrator.state._nodes import BIG_ATOM as _BIG_ATOM
from migrator.state._nodes import CHUNK as _CHUNK
from migrator.state._nodes import Unadaptable, dumpsPlain
from migrator.state._writer import UNLIMITED, GraphWriter

#: How many items a slice writes between looks at the clock.
_LOOK = 256
#: The most entries of one shard of a L{SlicedWriter}'s memo.
_SHARD = 1 << 17


class _ShardedMemo:
    """
    The memo of a L{SlicedWriter} (object id to node id; the node ids are
    never C{None}): a dictionary in shards of at most L{_SHARD} entries,
    so that no insertion grows more than one (a dictionary of a million
    entries takes 50 ms to grow, one reactor turn).
    """

    __slots__ = ("_shards", "_current")

    def __init__(self) -> None:
        self._current: dict[int, int] = {}
        self._shards = [self._current]

    def get(self, key: int, default: Any = None) -> Any:
        for shard in self._shards:
            found = shard.get(key)
            if found is not None:
                return found
        return default

    def __setitem__(self, key: int, value: int) -> None:
        current = self._current
        if len(current) >= _SHARD and key not in current:
            current = self._current = {}
            self._shards.append(current)
        current[key] = value

    def __contains__(self, key: object) -> bool:
        return any(key in shard for shard in self._shards)

    def __iter__(self) -> Iterator[int]:
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def pop(self, key: int, default: Any = None) -> Any:
        for shard in self._shards:
            if key in shard:
                return shard.pop(key)
        return default


class SlicedWriter(GraphWriter):
    """
    Writes one root in slices (L{startSliced}, L{proceed} until it says
    done, L{finishSliced}); what it writes otherwise, it writes as a
    L{GraphWriter} does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: Any = _ShardedMemo()
        self._chunks = 0
        self._blobs: list[bytes] = []
        # The long strings and bytes met, whose pieces are still to write,
        # each with the offset of the next piece.
        self._pieces: deque[list[Any]] = deque()
        self._sliced: Any = None

    # -- writing in slices --------------------------------------------------------

    def startSliced(self, value: Any) -> None:
        """
        Begin writing one root, C{value} (an object or a container), in
        slices (L{proceed}), for a graph too large for one reactor turn:
        a container's items are cut into a chunk once
        L{migrator.state._nodes.CHUNK} items were written into it and into
        the containers it holds since its last chunk (a segment's, when it
        ends), each encoded at once (L{takeChunks}); the node of a
        container cut so holds C{("C", [chunk numbers])} before its last
        items.  Once L{proceed}
        says the root is written, L{finishSliced} gives its node.
        """
        if self._segments is not None or self._stack:
            raise RuntimeError("a root is being written already")
        self._segments = []
        self._whole = _CHUNK
        self._sliced = self._writeNew(value, type(value))

    def proceed(self, deadline: float, timer: Callable[[], float]) -> bool:
        """
        Write on until C{timer()} passes C{deadline} (looked at every few
        hundred items) or the root is written.

        @return: whether the root is written.
        @raise Unadaptable: if something in it cannot be written (the
            writer is done with the root then).
        """
        try:
            while True:
                if self._pieces and not self._writePieces(deadline, timer):
                    return False
                done = self._drainSliced(deadline, timer)
                if not self._pieces:
                    return done
                # (It stopped at a long string or bytes: its pieces next.)
        except Unadaptable as e:
            self._unwind(e, 0)
            self.abandonSliced()
            raise
        except BaseException:
            self.abandonSliced()
            raise

    def finishSliced(self) -> Any:
        """
        @return: the root's node (C{("S", segments, node)} if it had to be
            cut into segments); its chunks are those L{takeChunks} gave.
        """
        node, self._sliced = self._sliced, None
        segments, self._segments = self._segments, None
        self._whole = UNLIMITED
        if segments:
            return ("S", segments, node)
        return node

    def abandonSliced(self) -> None:
        """
        Stop writing the root begun by L{startSliced}.
        """
        del self._stack[:]
        self._pieces.clear()
        self._sliced = self._segments = None
        self._whole = UNLIMITED

    def wroteAny(self, ids: list[int]) -> bool:
        """
        Whether it wrote any of the objects C{ids} (anchors aside).
        """
        memo, anchors = self._memo, self._anchors
        return any(i in memo for i in ids if i not in anchors)

    @property
    def chunkCount(self) -> int:
        """
        How many chunks it made (or reserved, for the pieces of a long
        value).
        """
        return self._chunks

    def takeChunks(self) -> list[bytes]:
        """
        @return: the chunks encoded since the last call (L{dumpsPlain} of a
            list of nodes each), numbered in the order given from 0.
        """
        blobs, self._blobs = self._blobs, []
        return blobs

    def _seal(self, frame: list[Any]) -> None:
        # Every item out is complete: the frame is the top one, so the
        # containers it started have ended.
        out = frame[1]
        chunk = out.copy()
        out.clear()
        frame[7] += len(chunk)
        frame[8] = 0
        if frame[6] is None:
            frame[6] = []
        frame[6].append(self._chunks)
        self._chunks += 1
        self._blobs.append(dumpsPlain(chunk))

    def _longValue(self, value: str | bytes) -> Any:
        """
        The node of a long string or bytes value, C{("B", [chunk
        numbers])}: its pieces are written next, a chunk each.
        """
        n = -(-len(value) // _BIG_ATOM)
        numbers = list(range(self._chunks, self._chunks + n))
        self._chunks += n
        self._pieces.append([value, 0])
        return ("B", numbers)

    def _writePieces(self, deadline: float, timer: Callable[[], float]) -> bool:
        """
        Encode the pieces of the long values met, one chunk each, until
        C{deadline}.

        @return: whether all are written.
        """
        pieces = self._pieces
        while pieces:
            entry = pieces[0]
            value, offset = entry
            self._blobs.append(dumpsPlain([value[offset : offset + _BIG_ATOM]]))
            entry[1] = offset + _BIG_ATOM
            if entry[1] >= len(value):
                pieces.popleft()
            if pieces and timer() > deadline:
                return False
        return True

    def _drainSliced(self, deadline: float, timer: Callable[[], float]) -> bool:
        """
        L{_drain} for a root written in slices: containers' items are cut
        into chunks, and the clock is looked at every L{_LOOK} items.
        """
        stack = self._stack
        memo = self._memo
        atoms = _ATOMSET
        writeNew = self._writeNew
        seal = self._seal
        look = _LOOK
        while stack:
            frame = stack[-1]
            out = frame[1]
            append = out.append
            depth = len(stack)
            for v in frame[0]:
                look -= 1
                kind = type(v)
                if kind in atoms:
                    if (kind is str or kind is bytes) and len(v) > _BIG_ATOM:
                        append(self._longValue(v))
                        return False
                    append(v)
                else:
                    seen = memo.get(id(v))
                    if seen is not None:
                        append(("r", seen))
                    else:
                        append(writeNew(v, kind))
                        if len(stack) != depth:
                            # A container started: its items first.
                            break
                frame[8] += 1
                if frame[8] >= _CHUNK:
                    seal(frame)
                if look <= 0:
                    look = _LOOK
                    if timer() > deadline:
                        return False
            else:
                stack.pop()
                if frame[9] and out:
                    # A segment's items go in chunks too, not all in the
                    # last message.
                    seal(frame)
                if frame[6] is not None:
                    out.insert(0, ("C", frame[6]))
                if stack:
                    # Its items count in the container that holds it: a
                    # deep or narrow graph is cut into chunks too.
                    parent = stack[-1]
                    parent[8] += frame[8] + 1
                    if parent[8] >= _CHUNK:
                        seal(parent)
            if look <= 0:
                look = _LOOK
                if timer() > deadline:
                    return False
        return True
