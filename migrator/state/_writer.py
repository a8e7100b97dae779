# -*- test-case-name: tests.test_graph -*-
"""
L{GraphWriter}: values into nodes, in the incumbent (see
L{migrator.state._graph} for the node forms).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary

from migrator.interfaces import IAnchorOnly
from migrator.state._nodes import ATOMSET as _ATOMSET
from migrator.state._nodes import BIG_ATOM as _BIG_ATOM
from migrator.state._nodes import SEGMENT as _SEGMENT
from migrator.state._nodes import TooLarge, Unadaptable, typeName
from migrator.state._translator import Translator
from migrator.state._versions import Untranslatable

_SEQUENCE = 0
_MAPPING = 1
#: No limit on a root's size (L{GraphWriter.limit}).
UNLIMITED = 1 << 62


def _slottedOrBare(cls: type) -> bool:
    """
    Whether instances of C{cls} have no instance dictionary, or keep
    state in slots beside it (C{__dict__} and C{__weakref__} slots hold
    none).  (Asked of every class once per writer, that is once per
    batch of a stream: remembered, as a class's slots never change.)
    """
    try:
        return _SLOTTED[cls]
    except KeyError:
        pass
    found = _slottedOrBareNow(cls)
    try:
        _SLOTTED[cls] = found
    except TypeError:
        # (A class that cannot be referred to weakly.)
        pass
    return found


def _slottedOrBareNow(cls: type) -> bool:
    if "__dict__" not in dir(cls):
        return True
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        if any(name not in ("__dict__", "__weakref__") for name in slots):
            return True
    return False


#: See L{_slottedOrBare}.
_SLOTTED: WeakKeyDictionary[type, bool] = WeakKeyDictionary()


class _ClassInfo:
    """
    What the writer needs about one class, looked up once per writer.

    @ivar adapter: its adapter, or C{None}.
    @ivar plain: the attribute names excluded by an adapter that captures
        the instance dictionary as it is (see L{GraphWriter}), or C{None}
        when its state must come from C{adapter.capture}.
    @ivar anchorOnly: whether the adapter provides L{IAnchorOnly}.
    @ivar label: the class's segment of an error path.
    """

    __slots__ = ("adapter", "plain", "anchorOnly", "label")

    def __init__(self, cls: type, adapter: Any) -> None:
        self.adapter = adapter
        plain = getattr(adapter, "plainAttributes", None) if adapter is not None else None
        if plain is not None and _slottedOrBare(cls):
            # The adapter's own capture refuses it, with its reason.
            plain = None
        self.plain: frozenset[str] | None = plain
        self.anchorOnly = adapter is not None and IAnchorOnly.providedBy(adapter)
        self.label = f"<{cls.__name__}>"


class GraphWriter:
    """
    Writes values into nodes, sharing one memo across calls so that every
    call's values can refer to objects written by earlier calls.

    The walk is iterative (an explicit stack of containers being written),
    so a chain of any depth is written without recursion.  A container
    nested more than L{migrator.state._nodes.SEGMENT} levels below the previous cut is written
    as a segment: its node goes to a list kept beside the tree, and the
    tree holds C{("g", index)} in its place; L{write} returns
    C{("S", [segments], node)} when it made any, and the plain node
    otherwise.

    An adapter whose C{plainAttributes} attribute is a set of names (the
    default rule, L{migrator.state._registry.InstanceAdapter}, when its
    C{capture} is not overridden) declares that its C{capture(obj)} is
    exactly the instance dictionary minus those names: the writer then
    reads the dictionary itself, without building a copy.

    @ivar special: called with C{(value, writer, path)} for values that are
        neither atoms, containers, anchors nor adapted; returns a node, or
        C{None} if it does not know the value.
    @ivar translator: adds the fields kept aside to the states it writes
        and downgrades them where the reading side is older (see
        L{migrator.state._versions}); C{None}: states are written as
        captured.
    """

    def __init__(
        self,
        adapterFor: Callable[[type], Any],
        anchors: dict[int, str] | None = None,
        special: Callable[[Any, GraphWriter, str], Any] | None = None,
        translator: Translator | None = None,
    ) -> None:
        self._adapterFor = adapterFor
        self._anchors = anchors or {}
        self.special = special
        self.translator = translator
        self._memo: dict[int, int] = {}
        self._keep: list[Any] = []
        self._next = 0
        self._undo: list[int] | None = None
        self._classes: dict[type, _ClassInfo] = {}
        # Frames: [iterator, output list, kind, label source, prefix, depth,
        # then for L{migrator.state._sliced}: chunk numbers (or None), items
        # moved into chunks, items written under it since its last chunk,
        # whether it is a segment's root].
        self._stack: list[list[Any]] = []
        self._segments: list[Any] | None = None
        # A root's limit, as the id past which remembering an object
        # raises TooLarge (lowered by the items of containers of atoms).
        self._cap = UNLIMITED
        self._bigAtom = UNLIMITED
        # The largest container of atoms written in one piece (see
        # L{migrator.state._sliced}).
        self._whole = UNLIMITED
        self.types: dict[str, int] = {}
        #: Whether an anchor's state is written (else only its name: a
        #: stream's batch, whose anchors' state goes in the last one).
        self.anchorState = True

    # -- checkpoints: a root that fails leaves no trace ---------------------

    def checkpoint(self) -> None:
        self._undo = []

    def rollback(self) -> None:
        for key in self._undo or ():
            self._memo.pop(key, None)
        self._undo = None

    def release(self) -> None:
        self._undo = None

    def added(self) -> list[int]:
        """
        The ids (C{id(obj)}) of the objects written since L{checkpoint}.
        """
        return list(self._undo or ())

    def written(self) -> list[int]:
        """
        The ids (C{id(obj)}) of every object written but the anchors (which
        every writer may refer to).  The writer keeps the objects alive, so
        the ids are not reused while it lives.
        """
        anchors = self._anchors
        return [i for i in self._memo if i not in anchors]

    def limit(self, units: int | None) -> None:
        """
        Limit the size of what is written from now on, until the next call:
        past C{units} (a container or object counts one, and one more per
        item or attribute), or at a string or bytes value longer than
        L{migrator.state._nodes.BIG_ATOM} among an object's attributes or
        the items of a container that holds more than atoms (one that holds
        atoms only is written at once, not looked into), writing raises
        L{TooLarge}.

        @param units: the size, or C{None} for no limit.
        """
        self._cap = UNLIMITED if units is None else self._next + units
        self._bigAtom = UNLIMITED if units is None else _BIG_ATOM

    def writtenSince(self, mark: int) -> list[int]:
        """
        The ids of the objects written (but the anchors) after the first
        C{mark} (see L{count}).
        """
        anchors = self._anchors
        return [i for i in map(id, self._keep[mark:]) if i not in anchors]

    @property
    def count(self) -> int:
        """
        How many objects were written (a mark for L{writtenSince}).
        """
        return len(self._keep)

    def _remember(self, obj: Any) -> int:
        ident = self._next
        self._next = ident + 1
        if ident >= self._cap:
            raise TooLarge()
        self._memo[id(obj)] = ident
        self._keep.append(obj)
        if self._undo is not None:
            self._undo.append(id(obj))
        return ident

    def _fresh(self) -> int:
        # An id for a container made here that nothing else can refer to.
        ident = self._next
        self._next = ident + 1
        return ident

    def _info(self, cls: type) -> _ClassInfo:
        info = self._classes.get(cls)
        if info is None:
            info = self._classes[cls] = _ClassInfo(cls, self._adapterFor(cls))
        return info

    # -- writing ----------------------------------------------------------------

    def write(self, value: Any, path: str = "root") -> Any:
        """
        Write one root value.

        @param path: the root's name in an error's path.
        @return: its node (C{("S", segments, node)} if it had to be cut
            into segments).
        @raise Unadaptable: if something in it cannot be written.
        """
        outer = self._segments is None
        collecting = outer and gc.isenabled()
        if outer:
            self._segments = []
            if collecting:
                # See collectorPaused (the capture pauses it for longer).
                gc.disable()
        try:
            node = self._write(value)
        except Unadaptable as e:
            e.within(path)
            raise
        finally:
            if outer:
                segments, self._segments = self._segments, None
                if collecting:
                    gc.enable()
        if outer and segments:
            return ("S", segments, node)
        return node

    def _write(self, value: Any, path: str = "") -> Any:
        """
        Write one value.  C{path} labels this value in an error message; it
        is never formatted unless something cannot be written.
        """
        kind = type(value)
        if kind in _ATOMSET:
            return value
        seen = self._memo.get(id(value))
        if seen is not None:
            return ("r", seen)
        stack = self._stack
        base = len(stack)
        try:
            node = self._writeNew(value, kind)
            if len(stack) > base:
                self._drain(base)
        except Unadaptable as e:
            self._unwind(e, base)
            e.within(path)
            raise
        finally:
            del stack[base:]
        return node

    def _drain(self, base: int) -> None:
        """
        Write the items of the containers on the stack above C{base}, the
        most recently started first.
        """
        stack = self._stack
        memo = self._memo
        atoms = _ATOMSET
        writeNew = self._writeNew
        big = self._bigAtom
        while len(stack) > base:
            frame = stack[-1]
            append = frame[1].append
            depth = len(stack)
            for v in frame[0]:
                kind = type(v)
                if kind in atoms:
                    if (kind is str or kind is bytes) and len(v) > big:
                        raise TooLarge()
                    append(v)
                    continue
                seen = memo.get(id(v))
                if seen is not None:
                    append(("r", seen))
                    continue
                append(writeNew(v, kind))
                if len(stack) != depth:
                    # A container started: its items first.
                    break
            else:
                stack.pop()

    def _unwind(self, e: Unadaptable, base: int) -> None:
        """
        Add the frames above C{base} to C{e}'s path: the item being
        written in each, innermost first.
        """
        stack = self._stack
        top = len(stack) - 1
        for i in range(top, base - 1, -1):
            frame = stack[i]
            out, kind, source, prefix, chunked = frame[1], frame[2], frame[3], frame[4], frame[7]
            # Below the top, the item being written is the last one out.
            position = chunked + (len(out) if i == top else len(out) - 1)
            if kind == _MAPPING:
                key = source[position // 2][0] if source is not None else "?"
                e.within(f"[{key!r}]")
            else:
                e.within(f"[{position}]")
            if prefix:
                e.within(prefix)

    def _push(
        self, node: Any, items: Any, out: list[Any], kind: int, source: Any, prefix: str = ""
    ) -> Any:
        """
        Start a container whose node is C{node}: its items (from the
        iterator C{items}) are written into C{out}.  Past the segment
        depth, C{node} goes to the segments.

        @return: what the parent holds: C{node} or C{("g", index)}.
        """
        stack = self._stack
        depth = stack[-1][5] + 1 if stack else 1
        segments = self._segments
        cut = False
        if depth > _SEGMENT and segments is not None:
            cut = True
            segments.append(node)
            node = ("g", len(segments) - 1)
            depth = 1
        stack.append([items, out, kind, source, prefix, depth, None, 0, 0, cut])
        return node

    def _writeNew(self, value: Any, kind: type) -> Any:
        """
        The node of a value not written before; a container's items are
        written later (see L{_push}).
        """
        # A container of atoms only is written at once.
        if kind is dict:
            self._cap -= len(value)
            ident = self._remember(value)
            pairs = list(value.items())
            if (
                len(value) <= self._whole
                and _ATOMSET.issuperset(map(type, value))
                and _ATOMSET.issuperset(map(type, value.values()))
            ):
                return ("d", ident, list(chain.from_iterable(pairs)))
            flat: list[Any] = []
            return self._push(("d", ident, flat), chain.from_iterable(pairs), flat, _MAPPING, pairs)
        if kind is list:
            self._cap -= len(value)
            ident = self._remember(value)
            if len(value) <= self._whole and _ATOMSET.issuperset(map(type, value)):
                return ("l", ident, list(value))
            items: list[Any] = []
            return self._push(("l", ident, items), iter(value), items, _SEQUENCE, None)
        if kind is tuple:
            self._cap -= len(value)
            if self._next >= self._cap:
                raise TooLarge()
            if len(value) <= self._whole and _ATOMSET.issuperset(map(type, value)):
                return ("t", list(value))
            members: list[Any] = []
            return self._push(("t", members), iter(value), members, _SEQUENCE, None)
        if kind is set:
            self._cap -= len(value)
            ident = self._remember(value)
            elements = list(value)
            if len(elements) <= self._whole and _ATOMSET.issuperset(map(type, elements)):
                return ("s", ident, elements)
            written: list[Any] = []
            return self._push(("s", ident, written), iter(elements), written, _SEQUENCE, None)
        if kind is frozenset:
            self._cap -= len(value)
            if self._next >= self._cap:
                raise TooLarge()
            frozen = list(value)
            if len(frozen) <= self._whole and _ATOMSET.issuperset(map(type, frozen)):
                return ("f", frozen)
            out: list[Any] = []
            return self._push(("f", out), iter(frozen), out, _SEQUENCE, None)
        if kind is bytearray:
            return ("b", self._remember(value), bytes(value))
        info = self._info(kind)
        adapter = info.adapter
        anchor = self._anchors.get(id(value))
        if anchor is not None:
            ident = self._remember(value)
            state = None
            name = version = None
            if adapter is not None and self.anchorState:
                name = adapter.typeName
                version, state = self._translate(adapter, value, self._capture(adapter, value))
                state = self._stateNode(state, "")
            return ("a", ident, anchor, name, version, state)
        if adapter is not None:
            if info.anchorOnly:
                # Its objects are only ever matched onto the reading side's
                # own (e.g. a web Site, whose resource tree never moves).
                raise Unadaptable(value, "", f"a {typeName(kind)} moves only as a port's factory")
            ident = self._remember(value)
            name = adapter.typeName
            types = self.types
            types[name] = types.get(name, 0) + 1
            plain = info.plain
            version = adapter.version
            translator = self.translator
            if translator is not None and translator.writes:
                # A translated state is the adapter's, never the instance
                # dictionary as it is.
                plain = None
            if plain is not None:
                # The default rule, without copying the dictionary.
                if plain:
                    pairs = [(k, v) for k, v in value.__dict__.items() if k not in plain]
                else:
                    pairs = list(value.__dict__.items())
                self._cap -= len(pairs)
                if self._next >= self._cap:
                    raise TooLarge()
                flat = []
                state = self._push(
                    ("d", self._fresh(), flat), chain.from_iterable(pairs), flat, _MAPPING, pairs, info.label
                )
            else:
                state = self._capture(adapter, value)
                if translator is not None and translator.writes:
                    version, state = self._translate(adapter, value, state)
                state = self._stateNode(state, info.label)
            return ("o", ident, name, version, state)
        if self.special is not None:
            node = self.special(value, self, "")
            if node is not None:
                return node
        raise Unadaptable(value, "")

    def _stateNode(self, state: Any, label: str) -> Any:
        """
        The node of an adapter's state: a container is started on the
        stack (its items written later), anything else written now.
        """
        kind = type(state)
        if kind in _ATOMSET:
            return state
        seen = self._memo.get(id(state))
        if seen is not None:
            return ("r", seen)
        if kind in (dict, list, tuple, set, frozenset):
            stack = self._stack
            depth = len(stack)
            node = self._writeNew(state, kind)
            if len(stack) > depth:
                stack[-1][4] = label
            return node
        return self._write(state, label)

    @staticmethod
    def _capture(adapter: Any, value: Any) -> Any:
        try:
            return adapter.capture(value)
        except Unadaptable:
            raise
        except Untranslatable as e:
            raise Unadaptable(value, "", str(e)) from e
        except Exception as e:
            # A failing adapter keeps its object (and its connection) here;
            # it does not abort the whole takeover.
            raise Unadaptable(
                value, "", f"its adapter failed: {e.__class__.__name__}: {e}"
            ) from e

    def _translate(self, adapter: Any, value: Any, state: Any) -> tuple[Any, Any]:
        if self.translator is None or not self.translator.writes:
            return adapter.version, state
        try:
            return self.translator.write(adapter, value, state)
        except Untranslatable as e:
            # Its connection stays; the takeover goes on.
            raise Unadaptable(value, "", str(e)) from e

    def rememberSpecial(self, value: Any) -> tuple[int, Any]:
        """
        For a C{special} hook: give C{value} an id (so later references to
        it are written as C{("r", id)}).

        @return: the id, and the C{("r", id)} node for later use.
        """
        ident = self._remember(value)
        return ident, ("r", ident)


