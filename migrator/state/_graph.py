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
    ("g", index)                the node of segment C{index} (below)
    ("S", [segments], node)     a root cut into segments

Writer and reader walk the graph with an explicit stack, not recursion, so
a chain of objects or containers of any depth (a linked list of 100,000
objects) moves.  The encoding, though, is C{pickle}'s, which recurses once
or twice per level of a node tree: so that no node tree is nested deeper
than C{SEGMENT} containers, the writer cuts a deeper container off into a
I{segment}, written beside the tree and referred to as C{("g", index)} in
its place; a root that was cut is written as C{("S", [segments], node)}.
A graph shallower than that is written exactly as before segments
existed.  The reader reads a segment where it is referred to (the order of
the ids is the order of a walk through the uncut tree), each segment once.

This module gathers the names of L{migrator.state._nodes} (errors, type
names, the codec, L{collectorPaused}), L{migrator.state._writer} and
L{migrator.state._reader}.
"""


from migrator.state._nodes import (
    GraphError,
    Unadaptable,
    collectorPaused,
    dumpsPlain,
    loadsPlain,
    typeName,
)
from migrator.state._reader import GraphReader
from migrator.state._writer import GraphWriter

__all__ = [
    "GraphError",
    "GraphReader",
    "GraphWriter",
    "Unadaptable",
    "collectorPaused",
    "dumpsPlain",
    "loadsPlain",
    "typeName",
]
