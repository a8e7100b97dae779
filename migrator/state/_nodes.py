# -*- test-case-name: tests.test_graph -*-
"""
What the graph writer and reader share: the errors, type names, the
plain-data codec, and the collector pause (see L{migrator.state._graph}
for the node forms).
"""

from __future__ import annotations

import builtins
import gc
import io
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The values written as they are.
ATOMS = (type(None), bool, int, float, str, bytes)
#: The same, for a fast membership test.
ATOMSET = frozenset(ATOMS)
_RECURSION = 20000
#: Containers nested at most this deep in one node tree: a value nested
#: deeper is written as a segment (see L{migrator.state._graph}), so that
#: the C pickler, which recurses once or twice per level of a node tree,
#: never goes deeper than a few hundred levels (CPython 3.12's C recursion
#: limit stops it at about 1,200).
SEGMENT = 64
#: The reader's bound on one node tree's nesting between segments (the
#: writer never nests more than L{SEGMENT}, plus a few levels per special
#: value).
MAX_NESTING = 2000
#: In a graph written in slices, the most items of a container's node
#: written in one piece: past it, its items are cut into chunks, each
#: encoded when it is full (see L{migrator.state._graph}, C{("C", ...)}).
CHUNK = 1024
#: A string or bytes value longer than this (in characters or bytes) is
#: over any limit of a batch's writer, and written in pieces of this size
#: in slices (C{("B", [chunk numbers])}).
BIG_ATOM = 1 << 20


class Unadaptable(Exception):
    """
    An object in the graph has no adapter: it cannot move.

    @ivar obj: the object.
    @ivar path: how it was reached, for the report (e.g.
        C{"Chat.clients[3].avatar"}).
    """

    # Named where it always was (see GraphError).
    __module__ = "migrator.state._graph"

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


class TooLarge(Exception):
    """
    A root's graph is larger than the writer's limit (see
    L{migrator.state._writer.GraphWriter.limit}): it is written in slices
    of its own instead (L{migrator.state._large}).
    """


class GraphError(Exception):
    """
    A graph could not be read: malformed, or naming a type this process has
    no adapter for.
    """

    # Named where it always was (its name is in operators' reports).
    __module__ = "migrator.state._graph"


def neverDeclines(self: Any, obj: Any) -> str | None:
    """
    The C{movable} of an adapter that never declines (the default rule's,
    L{migrator.state._registry.InstanceAdapter}): the plan and the stream
    (L{migrator.state._plan}, L{migrator.state._stream}) count a connection
    whose adapter's C{movable} is this as moving without asking.
    """
    return None


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
def deepRecursion() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _RECURSION))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@contextmanager
def collectorPaused() -> Iterator[None]:
    """
    Keep the cyclic garbage collector from running while a graph is
    written or read (and encoded or decoded).

    Writing or reading a graph allocates several container objects per
    object moved, all of which survive; every few hundred allocations the
    collector runs, and its older generations rescan the whole heap,
    which grows with the number of connections: capture and restore
    become superlinear.  Nothing written or read here becomes garbage
    (every node is kept until the end), so nothing is lost by not
    collecting until the end; the collector is enabled again however the
    block ends, unless it was disabled before.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise GraphError(f"refusing to load {module}.{name}: only plain data is accepted")

    def persistent_load(self, pid: Any) -> Any:
        raise GraphError("refusing a persistent id: only plain data is accepted")


def plainUnpickler(file: Any) -> pickle.Unpickler:
    """
    An unpickler of C{file} that, as L{loadsPlain}, names no class,
    function or module (for a stream of pickles read in turn).
    """
    return _PlainUnpickler(file)


def dumpsPlain(value: Any) -> bytes:
    """
    Encode plain data (atoms, tuples, lists, dicts, sets) compactly.
    """
    # The C pickler recurses once per nesting level (about twice per level
    # of the application's graph, within a segment).
    with deepRecursion(), collectorPaused():
        return pickle.dumps(value, protocol=4)


def loadsPlain(data: bytes) -> Any:
    """
    Decode what L{dumpsPlain} wrote.  No class, function or module can be
    named by C{data}: any attempt raises L{GraphError}.
    """
    try:
        with collectorPaused():
            return _PlainUnpickler(io.BytesIO(data)).load()
    except GraphError:
        raise
    except Exception as e:
        raise GraphError(f"undecodable state: {e.__class__.__name__}: {e}") from e

