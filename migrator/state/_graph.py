# -*- test-case-name: tests.test_graph -*-
"""
One object graph, written in the incumbent and read back in the successor,
with identity preserved and nothing reconstructed that the reading side did
not explicitly allow.

The writer walks values:

  - atoms (C{None}, C{bool}, C{int}, C{float}, C{str}, C{bytes}) are
    written as they are;
  - C{list}, C{dict}, C{set}, C{bytearray} get an id the first time they are
    seen and are written as references after that, so an object reachable
    from several places arrives as one object (cycles included); C{tuple}
    and C{frozenset} are written by value;
  - any other object must be covered by an adapter registered for its exact
    class (L{AdapterRegistry}), which turns it into plain state; or be an
    I{anchor} (an object both processes already have, such as a port's
    factory, which the reading side maps onto its own; an adapter that
    provides L{IAnchorOnly} covers anchors only); or be one of the
    special values the writer's C{special} hook knows (transports, scheduled
    calls, bound methods).

The result is a tree of tuples, lists and atoms ("nodes").  It is encoded
with C{pickle} protocol 4 for speed (a C codec), and decoded with an
unpickler that refuses to name any class or function at all
(L{loadsPlain}): the pickle can only carry plain data.  Types are named in
the nodes, as strings, and the reader resolves them through its own
registry, which is the allow-list.

Node forms (first element is the tag)::

    ("l", id, [items])          list
    ("d", id, [k, v, k, v...])  dict
    ("s", id, [items])          set
    ("b", id, bytes)            bytearray
    ("t", [items])              tuple
    ("f", [items])              frozenset
    ("r", id)                   a reference to an id seen before
    ("o", id, type, version, state)      adapted object
    ("a", id, anchor, type, version, state)  anchored object (+ its state)
    ("x", kind, payload)        a special value (see L{GraphWriter.special})
"""

from __future__ import annotations

import builtins
import io
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.persisted.styles import Versioned

from migrator.interfaces import IAnchorOnly
from migrator.state._translator import Translator
from migrator.state._versions import KEPT, Untranslatable

_ATOMS = (type(None), bool, int, float, str, bytes)
_RECURSION = 20000


class Unadaptable(Exception):
    """
    An object in the graph has no adapter: it cannot move.

    @ivar obj: the object.
    @ivar path: how it was reached, for the report (e.g.
        C{"Chat.clients[3].avatar"}).
    """

    def __init__(self, obj: Any, path: str, why: str = "") -> None:
        self.obj = obj
        self.path = path
        self.why = why or f"no adapter for {typeName(type(obj))}"
        Exception.__init__(self, f"{path}: {self.why}")

    def within(self, segment: str) -> None:
        """
        Prepend C{segment} to the path (the writer builds paths only while
        an error unwinds, never on the happy path).
        """
        self.path = segment + self.path
        self.args = (f"{self.path}: {self.why}",)


class GraphError(Exception):
    """
    A graph could not be read: malformed, or naming a type this process has
    no adapter for.
    """


#: CPython's C{Py_TPFLAGS_HEAPTYPE}: a class made by a C{class} statement.
_HEAPTYPE = 1 << 9


def typeName(cls: type) -> str:
    """
    The default type name of C{cls}: C{module.qualname}.

    A class defined in a C{.tac} file says its module is C{builtins} (twistd
    runs the file's code in a namespace without C{__name__}, so the class
    statement finds the builtins module's): such a class is named
    C{tac:qualname}, the same in every generation that runs that C{.tac},
    whatever the file is called.
    """
    module = cls.__module__
    if (
        module == "builtins"
        and getattr(cls, "__flags__", 0) & _HEAPTYPE
        and getattr(builtins, cls.__qualname__, None) is not cls
    ):
        return f"tac:{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


@contextmanager
def _deepRecursion() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _RECURSION))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class GraphWriter:
    """
    Writes values into nodes, sharing one memo across calls so that every
    call's values can refer to objects written by earlier calls.

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
        self._undo: list[int] | None = None
        self.types: dict[str, int] = {}

    # -- checkpoints: a root that fails leaves no trace ---------------------

    def checkpoint(self) -> None:
        self._undo = []

    def rollback(self) -> None:
        for key in self._undo or ():
            self._memo.pop(key, None)
        self._undo = None

    def release(self) -> None:
        self._undo = None

    def _remember(self, obj: Any) -> int:
        ident = len(self._keep)
        self._memo[id(obj)] = ident
        self._keep.append(obj)
        if self._undo is not None:
            self._undo.append(id(obj))
        return ident

    # -- writing ----------------------------------------------------------------

    def write(self, value: Any, path: str = "root") -> Any:
        with _deepRecursion():
            try:
                return self._write(value)
            except Unadaptable as e:
                e.within(path)
                raise

    def _write(self, value: Any, path: str = "") -> Any:
        """
        Write one value.  C{path} labels this value in an error message; it
        is never formatted unless something cannot be written.
        """
        kind = type(value)
        if kind in _ATOMS:
            return value
        seen = self._memo.get(id(value))
        if seen is not None:
            return ("r", seen)
        try:
            return self._writeNew(value, kind)
        except Unadaptable as e:
            e.within(path)
            raise

    def _writeItems(self, values: Any) -> list[Any]:
        out: list[Any] = []
        append = out.append
        write = self._write
        atoms = _ATOMS
        try:
            for v in values:
                append(v if type(v) in atoms else write(v))
        except Unadaptable as e:
            e.within(f"[{len(out)}]")
            raise
        return out

    def _writeNew(self, value: Any, kind: type) -> Any:
        if kind is list:
            ident = self._remember(value)
            return ("l", ident, self._writeItems(value))
        if kind is dict:
            ident = self._remember(value)
            flat: list[Any] = []
            append = flat.append
            write = self._write
            atoms = _ATOMS
            for k, v in value.items():
                try:
                    append(k if type(k) in atoms else write(k))
                    append(v if type(v) in atoms else write(v))
                except Unadaptable as e:
                    e.within(f"[{k!r}]")
                    raise
            return ("d", ident, flat)
        if kind is tuple:
            return ("t", self._writeItems(value))
        if kind is set:
            ident = self._remember(value)
            return ("s", ident, self._writeItems(value))
        if kind is frozenset:
            return ("f", self._writeItems(value))
        if kind is bytearray:
            return ("b", self._remember(value), bytes(value))
        anchor = self._anchors.get(id(value))
        adapter = self._adapterFor(kind)
        if anchor is not None:
            ident = self._remember(value)
            state = None
            name = version = None
            if adapter is not None:
                name = adapter.typeName
                version, state = self._translate(adapter, value, self._capture(adapter, value))
                state = self._write(state)
            return ("a", ident, anchor, name, version, state)
        if adapter is not None:
            if IAnchorOnly.providedBy(adapter):
                # Its objects are only ever matched onto the reading side's
                # own (e.g. a web Site, whose resource tree never moves).
                raise Unadaptable(value, "", f"a {typeName(kind)} moves only as a port's factory")
            ident = self._remember(value)
            name = adapter.typeName
            self.types[name] = self.types.get(name, 0) + 1
            state = self._capture(adapter, value)
            version = adapter.version
            translator = self.translator
            if translator is not None and translator.writes:
                version, state = self._translate(adapter, value, state)
            state = self._write(state, f"<{kind.__name__}>")
            return ("o", ident, name, version, state)
        if self.special is not None:
            node = self.special(value, self, "")
            if node is not None:
                return node
        raise Unadaptable(value, "")

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


class GraphReader:
    """
    Reads nodes back into objects, sharing one memo across calls.

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
            # Nested (from a special hook): the limit is already raised.
            return self._read(node)
        self._reading = True
        try:
            with _deepRecursion():
                return self._read(node)
        except RecursionError as e:
            raise GraphError("the graph is nested too deeply to read") from e
        finally:
            self._reading = False

    def finish(self) -> None:
        """
        Populate every object read so far, in the order they were created;
        then upgrade those of Twisted's C{Versioned} classes.
        """
        batch, self._populate = self._populate, []
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
        if versioned:
            try:
                self.translator.upgradeVersioned(versioned)
            except Untranslatable as e:
                raise GraphError(str(e)) from e

    def _adapter(self, name: Any, version: Any) -> Any:
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

    def _readInto(self, add: Callable[[Any], Any], nodes: Any) -> None:
        # A plain loop: generator expressions here would cost a C-level
        # frame per nesting level (and hit 3.12's C recursion limit).
        if type(nodes) is not list:
            raise GraphError(f"malformed items of type {type(nodes).__name__}")
        read = self._read
        atoms = _ATOMS
        for v in nodes:
            add(v if type(v) in atoms else read(v))

    def _read(self, node: Any) -> Any:
        kind = type(node)
        if kind in _ATOMS:
            return node
        if kind is not tuple or not node:
            raise GraphError(f"malformed node of type {kind.__name__}")
        tag = node[0]
        try:
            if tag == "r":
                return self._memo[node[1]]
            if tag == "l":
                out: list[Any] = []
                self._memo[node[1]] = out
                self._readInto(out.append, node[2])
                return out
            if tag == "d":
                d: dict[Any, Any] = {}
                self._memo[node[1]] = d
                flat = node[2]
                for i in range(0, len(flat), 2):
                    d[self._read(flat[i])] = self._read(flat[i + 1])
                return d
            if tag == "t":
                items: list[Any] = []
                self._readInto(items.append, node[1])
                return tuple(items)
            if tag == "s":
                s: set[Any] = set()
                self._memo[node[1]] = s
                self._readInto(s.add, node[2])
                return s
            if tag == "f":
                members: list[Any] = []
                self._readInto(members.append, node[1])
                return frozenset(members)
            if tag == "b":
                if type(node[2]) is not bytes:
                    # bytearray(n) would allocate n bytes.
                    raise GraphError("malformed 'b' node: its value is not bytes")
                b = bytearray(node[2])
                self._memo[node[1]] = b
                return b
            if tag == "o":
                _, ident, name, version, state = node
                adapter = self._adapter(name, version)
                obj = adapter.create(self.context)
                self._memo[ident] = obj
                state = self._read(state)
                seen = self._seen
                seen[name, version] = seen.get((name, version), 0) + 1
                if version != adapter.version or (type(state) is dict and KEPT in state):
                    state = self._translated(adapter, obj, version, state)
                self._populate.append((adapter, obj, state))
                return obj
            if tag == "a":
                _, ident, anchor, name, version, state = node
                if anchor not in self._anchors:
                    raise GraphError(f"this process has nothing to match {anchor!r}")
                obj = self._anchors[anchor]
                self._memo[ident] = obj
                if name is not None:
                    adapter = self._adapter(name, version)
                    state = self._read(state)
                    seen = self._seen
                    seen[name, version] = seen.get((name, version), 0) + 1
                    self._populate.append((adapter, obj, self._translated(adapter, obj, version, state)))
                return obj
            if tag == "x":
                if self.special is None:
                    raise GraphError(f"unexpected special value {node[1]!r}")
                return self.special(node[1], node[2], self)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise GraphError(f"malformed {tag!r} node: {e}") from e
        raise GraphError(f"unknown node tag {tag!r}")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise GraphError(f"refusing to load {module}.{name}: only plain data is accepted")

    def persistent_load(self, pid: Any) -> Any:
        raise GraphError("refusing a persistent id: only plain data is accepted")


def dumpsPlain(value: Any) -> bytes:
    """
    Encode plain data (atoms, tuples, lists, dicts, sets) compactly.
    """
    # The C pickler recurses once per nesting level (about twice per level
    # of the application's graph).
    with _deepRecursion():
        return pickle.dumps(value, protocol=4)


def loadsPlain(data: bytes) -> Any:
    """
    Decode what L{dumpsPlain} wrote.  No class, function or module can be
    named by C{data}: any attempt raises L{GraphError}.
    """
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except GraphError:
        raise
    except Exception as e:
        raise GraphError(f"undecodable state: {e.__class__.__name__}: {e}") from e
