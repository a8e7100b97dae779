# -*- test-case-name: tests.test_graph -*-
"""
L{GraphReader}: nodes back into objects, in the successor (see
L{migrator.state._graph} for the node forms).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from itertools import islice
from typing import Any

from twisted.persisted.styles import Versioned

from migrator.state._nodes import ATOMSET as _ATOMSET
from migrator.state._nodes import MAX_NESTING as _MAX_NESTING
from migrator.state._nodes import GraphError, collectorPaused
from migrator.state._translator import Translator
from migrator.state._versions import KEPT, Untranslatable

# Frame kinds: what to do once a container's items are read.
_LIST = 0
_DICT = 1
_TUPLE = 2
_FROZENSET = 3
_STATE = 4
_STATEDICT = 5


class GraphReader:
    """
    Reads nodes back into objects, sharing one memo across calls.

    The reading is iterative (an explicit stack of containers being
    filled), so a chain of any depth is read without recursion; a node
    tree nested more than L{migrator.state._nodes.MAX_NESTING} levels between two segments is
    malformed (the writer never makes one).

    @ivar adapterNamed: returns the adapter registered under a type name,
        or C{None}.
    @ivar anchors: objects of this process that anchored objects map onto,
        by anchor name.
    @ivar special: called with C{(kind, payload, reader)} for C{"x"} nodes.
    @ivar translator: upgrades (or downgrades) states written at another
        version than the reading adapter's, sets their kept fields aside,
        and runs the upgrades of Twisted's C{Versioned} objects once all
        are populated (see L{migrator.state._versions}).
    """

    def __init__(
        self,
        adapterNamed: Callable[[str], Any],
        anchors: dict[str, Any] | None = None,
        special: Callable[[str, Any, GraphReader], Any] | None = None,
        context: Any = None,
        translator: Translator | None = None,
    ) -> None:
        self._adapterNamed = adapterNamed
        self._anchors = anchors or {}
        self.special = special
        self.context = context
        self.translator = translator if translator is not None else Translator()
        self._seen = self.translator.log.seen
        self._memo: dict[int, Any] = {}
        self._populate: list[tuple[Any, Any, Any]] = []
        self._reading = False
        self._adapters: dict[tuple[Any, Any], Any] = {}
        # The segments of the root being read, and which were read.
        self._segments: list[Any] | None = None
        self._used: set[int] = set()
        #: The chunks of a root written in slices, by number (see
        #: L{migrator.state._sliced}); each is used once.
        self.chunks: list[list[Any]] = []
        self._chunksUsed: set[int] = set()

    def remember(self, ident: int, value: Any) -> None:
        self._memo[ident] = value

    def read(self, node: Any) -> Any:
        """
        Read one node.  Nodes must be read in the order they were written
        (ids are assigned in that order).  Objects are created, and their
        state read, at once; they are populated when L{finish} is called,
        so that cycles through objects resolve.
        """
        if self._reading:
            # Nested (from a special hook).
            return self._read(node)
        self._reading = True
        collecting = gc.isenabled()
        if collecting:
            # See collectorPaused (the restore pauses it for longer).
            gc.disable()
        try:
            return self._read(node)
        except RecursionError as e:
            raise GraphError("the graph is nested too deeply to read") from e
        finally:
            self._reading = False
            if collecting:
                gc.enable()

    def finish(self) -> None:
        """
        Populate every object read so far, in the order they were created;
        then upgrade those of Twisted's C{Versioned} classes.
        """
        batch, self._populate = self._populate, []
        with collectorPaused():
            versioned = self._populateAll(batch)
            if versioned:
                try:
                    self.translator.upgradeVersioned(versioned)
                except Untranslatable as e:
                    raise GraphError(str(e)) from e

    def _populateAll(self, batch: list[tuple[Any, Any, Any]]) -> list[tuple[str, Any, Any]]:
        """
        Populate C{batch}'s objects.

        @return: the C{Versioned} ones (type name, object, state), to
            upgrade.
        """
        versioned = []
        for adapter, obj, state in batch:
            try:
                adapter.populate(obj, state, self.context)
            except GraphError:
                raise
            except Exception as e:
                # A state of the wrong shape for its adapter is as malformed
                # as a bad node.
                raise GraphError(
                    f"cannot populate a {adapter.typeName}: {e.__class__.__name__}: {e}"
                ) from e
            if isinstance(obj, Versioned) and type(state) is dict:
                versioned.append((adapter.typeName, obj, state))
        return versioned

    # -- for the native form (L{migrator.state._nativeread}) ------------------

    def adapterOf(self, name: Any, version: Any) -> Any:
        """
        The adapter that reads objects written as C{name} at C{version}.

        @raise GraphError: if there is none, or no translation reaches it.
        """
        return self._adapter(name, version)

    def queue(self, adapter: Any, obj: Any, version: int, state: Any) -> None:
        """
        Queue C{obj}, made by C{adapter}, for populating with C{state}
        (read to the end, written at C{version}) at L{finish}.
        """
        self._queue(adapter, obj, version, False, state)

    def anchorNamed(self, name: Any) -> Any:
        """
        The object of this process that the anchor C{name} stands for, or
        C{None}.
        """
        return self._anchors.get(name) if type(name) is str else None

    def _adapter(self, name: Any, version: Any) -> Any:
        if type(version) is int:
            # (Not a bool, which would find its int's entry.)
            try:
                return self._adapters[name, version]
            except (KeyError, TypeError):
                pass
        if not isinstance(name, str):
            raise GraphError(f"malformed type name {name!r}")
        adapter = self._adapterNamed(name)
        if adapter is None:
            raise GraphError(
                f"the graph holds a {name}, and this process has no adapter "
                f"registered for it"
            )
        if type(version) is not int:
            raise GraphError(f"malformed version for {name}: {version!r}")
        if version != adapter.version:
            try:
                self.translator.readRoute(adapter, version)
            except Untranslatable as e:
                raise GraphError(
                    f"{e} (written at version {version}, this process reads "
                    f"version {adapter.version})"
                ) from e
        self._adapters[name, version] = adapter
        return adapter

    def _translated(self, adapter: Any, obj: Any, version: int, state: Any) -> Any:
        """
        The state of C{obj} translated to C{adapter}'s version, its kept
        fields set aside.
        """
        try:
            return self.translator.read(adapter, obj, version, state)
        except Untranslatable as e:
            raise GraphError(str(e)) from e

    def _queue(self, adapter: Any, obj: Any, version: int, anchored: bool, state: Any) -> None:
        """
        Queue C{obj} for populating with C{state}, read to the end: counted,
        and translated as the recursive reader did (an anchored object's
        state always, an adapted object's when written at another version
        or carrying kept fields).
        """
        seen = self._seen
        key = (adapter.typeName, version)
        seen[key] = seen.get(key, 0) + 1
        if anchored or version != adapter.version or (type(state) is dict and KEPT in state):
            state = self._translated(adapter, obj, version, state)
        self._populate.append((adapter, obj, state))

    def _read(self, node: Any) -> Any:
        kind = type(node)
        if kind in _ATOMSET:
            return node
        if kind is tuple and len(node) == 2 and node[0] == "r":
            try:
                return self._memo[node[1]]
            except (KeyError, TypeError) as e:
                raise GraphError(f"malformed 'r' node: {e}") from e
        out: list[Any] = []
        # Frames: [item iterator, add, kind, a, b, depth].
        stack: list[list[Any]] = []
        start = self._start
        end = self._end
        atoms = _ATOMSET
        start(node, out.append, stack, 0)
        try:
            while stack:
                frame = stack[-1]
                add = frame[1]
                depth = len(stack)
                for v in frame[0]:
                    if type(v) in atoms:
                        add(v)
                        continue
                    start(v, add, stack, frame[5])
                    if len(stack) != depth:
                        # A container to fill first.
                        break
                else:
                    stack.pop()
                    if frame[2]:
                        end(frame)
        except TypeError as e:
            # An unhashable member of a set or key of a dict.
            raise GraphError(f"malformed graph: {e}") from e
        return out[0]

    def _end(self, frame: list[Any]) -> None:
        kind = frame[2]
        if kind == _DICT:
            d, values = frame[3], frame[4]
            d.update(zip(islice(values, 0, None, 2), islice(values, 1, None, 2), strict=False))
        elif kind == _TUPLE:
            frame[3](tuple(frame[4]))
        elif kind == _FROZENSET:
            frame[3](frozenset(frame[4]))
        elif kind == _STATE:
            adapter, obj, version, anchored = frame[3]
            self._queue(adapter, obj, version, anchored, frame[4][0])
        elif kind == _STATEDICT:
            d, values, adapter, obj, version, anchored = frame[3]
            d.update(zip(islice(values, 0, None, 2), islice(values, 1, None, 2), strict=False))
            self._queue(adapter, obj, version, anchored, d)

    def _items(self, nodes: Any) -> list[Any]:
        if type(nodes) is not list:
            raise GraphError(f"malformed items of type {type(nodes).__name__}")
        if nodes and type(nodes[0]) is tuple and nodes[0] and nodes[0][0] == "C":
            return self._unchunk(nodes)
        return nodes

    def _unchunk(self, nodes: list[Any]) -> list[Any]:
        """
        The items of a container cut into chunks: C{[("C", [numbers]),
        last items...]}.
        """
        mark = nodes[0]
        numbers = mark[1] if len(mark) == 2 else None
        if type(numbers) is not list:
            raise GraphError(f"malformed 'C' node: {mark!r}")
        items: list[Any] = []
        for n in numbers:
            items.extend(self._chunk(n, mark))
        items.extend(islice(nodes, 1, None))
        return items

    def _chunk(self, n: Any, node: Any) -> list[Any]:
        chunks, used = self.chunks, self._chunksUsed
        if type(n) is not int or not 0 <= n < len(chunks) or n in used:
            raise GraphError(f"malformed {node[0]!r} node: chunk {n!r} missing or used twice")
        used.add(n)
        return chunks[n]

    def _pieces(self, node: Any) -> str | bytes:
        """
        A long string or bytes value written in pieces: C{("B", [chunk
        numbers])}, each chunk a list of one piece, all of one type.
        """
        numbers = node[1] if len(node) == 2 else None
        if type(numbers) is not list or not numbers:
            raise GraphError(f"malformed 'B' node: {node!r}")
        pieces = [self._chunk(n, node) for n in numbers]
        kind = type(pieces[0][0]) if len(pieces[0]) == 1 else None
        if kind not in (str, bytes) or any(len(p) != 1 or type(p[0]) is not kind for p in pieces):
            raise GraphError("malformed 'B' node: its pieces are not all strings or all bytes")
        empty: Any = kind()
        return empty.join(p[0] for p in pieces)

    def _start(self, node: Any, add: Callable[[Any], Any], stack: list[list[Any]], depth: int) -> None:
        """
        Read C{node} (not an atom) and give its value to C{add}: at once,
        or, for a container whose items must be read first (a tuple, a
        frozenset), when they have been (L{_end}); a container whose items
        are to be read is pushed on C{stack}.  A container of atoms only is
        read at once.
        """
        kind = type(node)
        if kind is not tuple or not node:
            raise GraphError(f"malformed node of type {kind.__name__}")
        tag = node[0]
        try:
            while tag == "g":
                node, depth = self._segment(node), 0
                if type(node) in _ATOMSET:
                    add(node)
                    return
                if type(node) is not tuple or not node:
                    raise GraphError(f"malformed segment of type {type(node).__name__}")
                tag = node[0]
            if tag == "r":
                add(self._memo[node[1]])
                return
            if depth >= _MAX_NESTING:
                raise GraphError("the graph is nested too deeply to read")
            depth += 1
            if tag == "d":
                d: dict[Any, Any] = {}
                self._memo[node[1]] = d
                add(d)
                flat = self._items(node[2])
                if len(flat) % 2:
                    raise GraphError("malformed 'd' node: odd number of items")
                if _ATOMSET.issuperset(map(type, flat)):
                    d.update(zip(islice(flat, 0, None, 2), islice(flat, 1, None, 2), strict=False))
                else:
                    values: list[Any] = []
                    stack.append([iter(flat), values.append, _DICT, d, values, depth])
                return
            if tag == "o":
                _, ident, name, version, state = node
                adapter = self._adapter(name, version)
                obj = adapter.create(self.context)
                self._memo[ident] = obj
                add(obj)
                self._state(adapter, obj, version, False, state, stack, depth)
                return
            if tag == "l":
                out: list[Any] = []
                self._memo[node[1]] = out
                add(out)
                items = self._items(node[2])
                if _ATOMSET.issuperset(map(type, items)):
                    out.extend(items)
                else:
                    stack.append([iter(items), out.append, _LIST, None, None, depth])
                return
            if tag == "t":
                items = self._items(node[1])
                if _ATOMSET.issuperset(map(type, items)):
                    add(tuple(items))
                else:
                    members: list[Any] = []
                    stack.append([iter(items), members.append, _TUPLE, add, members, depth])
                return
            if tag == "s":
                s: set[Any] = set()
                self._memo[node[1]] = s
                add(s)
                stack.append([iter(self._items(node[2])), s.add, _LIST, None, None, depth])
                return
            if tag == "f":
                frozen: list[Any] = []
                stack.append([iter(self._items(node[1])), frozen.append, _FROZENSET, add, frozen, depth])
                return
            if tag == "b":
                if type(node[2]) is not bytes:
                    # bytearray(n) would allocate n bytes.
                    raise GraphError("malformed 'b' node: its value is not bytes")
                b = bytearray(node[2])
                self._memo[node[1]] = b
                add(b)
                return
            if tag == "a":
                _, ident, anchor, name, version, state = node
                if anchor not in self._anchors:
                    raise GraphError(f"this process has nothing to match {anchor!r}")
                obj = self._anchors[anchor]
                self._memo[ident] = obj
                add(obj)
                if name is not None:
                    self._state(self._adapter(name, version), obj, version, True, state, stack, depth)
                return
            if tag == "x":
                if self.special is None:
                    raise GraphError(f"unexpected special value {node[1]!r}")
                add(self.special(node[1], node[2], self))
                return
            if tag == "S":
                add(self._segmented(node))
                return
            if tag == "B":
                add(self._pieces(node))
                return
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise GraphError(f"malformed {tag!r} node: {e}") from e
        raise GraphError(f"unknown node tag {tag!r}")

    def _state(
        self,
        adapter: Any,
        obj: Any,
        version: int,
        anchored: bool,
        state: Any,
        stack: list[list[Any]],
        depth: int,
    ) -> None:
        """
        Read an object's state; once read to the end, it is translated
        (L{_queue}) and the object is populated with it by L{finish} (in
        the order the states were read to the end).
        """
        if type(state) in _ATOMSET:
            self._queue(adapter, obj, version, anchored, state)
            return
        if type(state) is tuple and len(state) == 3 and state[0] == "d" and type(state[2]) is list:
            # The usual state, a dictionary: filled, then the object queued
            # for populating, in one step.
            d: dict[Any, Any] = {}
            self._memo[state[1]] = d
            flat = self._items(state[2])
            if len(flat) % 2:
                raise GraphError("malformed 'd' node: odd number of items")
            values: list[Any] = []
            stack.append([iter(flat), values.append, _STATEDICT, (d, values, adapter, obj, version, anchored), None, depth])
            return
        holder: list[Any] = []
        stack.append([iter([state]), holder.append, _STATE, (adapter, obj, version, anchored), holder, depth])

    def _segment(self, node: Any) -> Any:
        """
        The node a C{("g", index)} stands for; each segment is read once.
        """
        segments = self._segments
        index = node[1] if len(node) == 2 else None
        if segments is None or type(index) is not int or not 0 <= index < len(segments):
            raise GraphError(f"malformed 'g' node: {node!r}")
        if index in self._used:
            raise GraphError(f"segment {index} is used twice")
        self._used.add(index)
        return segments[index]

    def _segmented(self, node: Any) -> Any:
        """
        Read a C{("S", segments, node)} root: C{node}, whose C{("g", n)}
        stand for C{segments[n]}.
        """
        _, segments, inner = node
        if type(segments) is not list:
            raise GraphError("malformed 'S' node: its segments are not a list")
        saved = self._segments, self._used
        self._segments, self._used = segments, set()
        try:
            return self._read(inner)
        finally:
            self._segments, self._used = saved


