# -*- test-case-name: tests.test_graph -*-
"""
Tests for L{migrator.state._graph}: one object graph written in one process and
read back in another, with identity preserved and nothing reconstructed
that the reading side did not allow.
"""

from __future__ import annotations

import copyreg
import datetime
import gc
import os
import pickle
import random
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from migrator.state._graph import (
    GraphError,
    GraphReader,
    GraphWriter,
    Unadaptable,
    collectorPaused,
    dumpsPlain,
    loadsPlain,
    typeName,
)
from migrator.state._registry import AdapterRegistry, InstanceAdapter


class Thing:
    """
    An application object with plain attributes, covered by the default
    rule (L{migrator.state._registry.InstanceAdapter}) in these tests.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class NewThing:
    """
    The successor's version of L{Thing}: another class, read under the same
    type name.
    """


class Stranger:
    """
    An object no registry in these tests has an adapter for.
    """


def _registry(*classes: type) -> AdapterRegistry:
    registry = AdapterRegistry()
    for cls in classes:
        registry.registerInstance(cls)
    return registry


def roundTrip(
    value: Any,
    writeRegistry: AdapterRegistry | None = None,
    readRegistry: AdapterRegistry | None = None,
    writeAnchors: dict[int, str] | None = None,
    readAnchors: dict[str, Any] | None = None,
) -> Any:
    """
    Write C{value}, encode and decode the nodes as the two processes do,
    read them back and populate what was read.
    """
    writeRegistry = writeRegistry or _registry(Thing)
    readRegistry = readRegistry or writeRegistry
    writer = GraphWriter(writeRegistry.adapterFor, writeAnchors)
    node = writer.write(value)
    reader = GraphReader(readRegistry.adapterNamed, readAnchors)
    result = reader.read(loadsPlain(dumpsPlain(node)))
    reader.finish()
    return result


class AtomTests(SynchronousTestCase):
    """
    Atoms are written as they are and read back equal, with their type.
    """

    def test_atomsAreWrittenAsThemselves(self) -> None:
        """
        C{None}, booleans, ints (big ones too), floats, strings and bytes
        are their own nodes.
        """
        writer = GraphWriter(lambda cls: None)
        for atom in [None, True, False, 0, -7, 2**200, 1.5, float("inf"), "", "é", b"", b"\0\xff"]:
            self.assertIs(writer.write(atom), atom)

    def test_atomsRoundTrip(self) -> None:
        """
        Atoms survive the encoding unchanged, and a C{bool} stays a
        C{bool}, not an C{int}.
        """
        atoms = [None, True, False, 0, -7, 2**200, 1.5, float("-inf"), "", "é", b"", b"\0\xff"]
        result = roundTrip(atoms)
        self.assertEqual(result, atoms)
        self.assertEqual([type(a) for a in result], [type(a) for a in atoms])


class IdentityTests(SynchronousTestCase):
    """
    Mutable containers and adapted objects reachable from several places
    arrive as one object.
    """

    def test_sharedContainers(self) -> None:
        """
        A list, dict, set and bytearray each referenced from several places
        are read back as one object each (and not as the writer's objects).
        """
        shared = {"l": [1, 2], "d": {"k": "v"}, "s": {1, 2}, "b": bytearray(b"xy")}
        value = {
            "first": [shared["l"], shared["d"], shared["s"], shared["b"]],
            "second": (shared["l"], shared["d"], shared["s"], shared["b"]),
            "third": shared,
        }
        result = roundTrip(value)
        for i, key in enumerate("ldsb"):
            one = result["first"][i]
            self.assertIs(one, result["second"][i])
            self.assertIs(one, result["third"][key])
            self.assertEqual(one, shared[key])
            self.assertIsNot(one, shared[key])
        self.assertIsInstance(result["first"][3], bytearray)

    def test_sharedAcrossCalls(self) -> None:
        """
        One writer and one reader share their memo across calls: a list
        written in a second call as a reference to one written in the first
        is read back as the same list.
        """
        shared: list[Any] = ["x"]
        writer = GraphWriter(lambda cls: None)
        first = writer.write([shared])
        second = writer.write(shared)
        self.assertEqual(second[0], "r")
        reader = GraphReader(lambda name: None)
        a = reader.read(loadsPlain(dumpsPlain(first)))
        b = reader.read(loadsPlain(dumpsPlain(second)))
        self.assertIs(a[0], b)

    def test_sharedAdaptedObject(self) -> None:
        """
        An adapted object referenced twice is created once.
        """
        thing = Thing(name="t")
        result = roundTrip([thing, {"again": thing}])
        self.assertIs(result[0], result[1]["again"])
        self.assertIsInstance(result[0], Thing)
        self.assertEqual(result[0].name, "t")


class CycleTests(SynchronousTestCase):
    """
    Cycles through containers and adapted objects are read back as cycles.
    """

    def test_listContainingItself(self) -> None:
        """
        A list that contains itself.
        """
        value: list[Any] = [1]
        value.append(value)
        result = roundTrip(value)
        self.assertEqual(result[0], 1)
        self.assertIs(result[1], result)

    def test_dictContainingItself(self) -> None:
        """
        A dict that is one of its own values.
        """
        value: dict[str, Any] = {}
        value["me"] = value
        result = roundTrip(value)
        self.assertIs(result["me"], result)

    def test_cycleThroughTuple(self) -> None:
        """
        A cycle from a list through a tuple back to the list terminates and
        is read back with the list's identity intact.
        """
        value: list[Any] = []
        value.append((value, "t"))
        result = roundTrip(value)
        self.assertIs(result[0][0], result)
        self.assertEqual(result[0][1], "t")

    def test_objectReferencingItself(self) -> None:
        """
        An adapted object one of whose attributes is the object itself.
        """
        thing = Thing()
        thing.me = thing
        result = roundTrip(thing)
        self.assertIsInstance(result, Thing)
        self.assertIs(result.me, result)

    def test_twoObjectsReferencingEachOther(self) -> None:
        """
        Two adapted objects that refer to each other.
        """
        a, b = Thing(name="a"), Thing(name="b")
        a.other, b.other = b, a
        result = roundTrip([a, b])
        self.assertIs(result[0].other, result[1])
        self.assertIs(result[1].other, result[0])
        self.assertEqual((result[0].name, result[1].name), ("a", "b"))


class ByValueTests(SynchronousTestCase):
    """
    Tuples and frozensets are written by value.
    """

    def test_tupleByValue(self) -> None:
        """
        A tuple referenced twice is written twice, as a C{"t"} node with no
        id, and read back equal; the mutable list inside it is still shared.
        """
        inner = [1]
        t = (inner, "x")
        writer = GraphWriter(lambda cls: None)
        node = writer.write([t, t])
        self.assertEqual(node[2][0][0], "t")
        self.assertEqual(node[2][1][0], "t")
        result = roundTrip([t, t])
        self.assertEqual(result[0], result[1])
        self.assertIsInstance(result[0], tuple)
        self.assertIs(result[0][0], result[1][0])

    def test_frozensetByValue(self) -> None:
        """
        A frozenset is written as an C{"f"} node and read back equal.
        """
        f = frozenset({1, "two", (3, 4)})
        writer = GraphWriter(lambda cls: None)
        self.assertEqual(writer.write(f)[0], "f")
        result = roundTrip({"a": f, "b": f})
        self.assertEqual(result["a"], f)
        self.assertIsInstance(result["a"], frozenset)

    def test_tupleKeys(self) -> None:
        """
        Tuples (and frozensets) can be dictionary keys and set members.
        """
        value = {(1, "a"): "x", frozenset({2}): "y", "s": {(3, 4)}}
        self.assertEqual(roundTrip(value), value)


class AdaptedTests(SynchronousTestCase):
    """
    Objects other than plain data go through adapters found by exact class
    when written and by type name when read.
    """

    def test_readAsSuccessorClass(self) -> None:
        """
        An object is read back as an instance of the class the I{reader}
        registered under the same type name.
        """
        writeRegistry = _registry(Thing)
        readRegistry = AdapterRegistry()
        readRegistry.registerInstance(NewThing, typeName=typeName(Thing))
        result = roundTrip(Thing(a=1), writeRegistry, readRegistry)
        self.assertIs(type(result), NewThing)
        self.assertEqual(result.a, 1)

    def test_nodeCarriesTypeAndVersion(self) -> None:
        """
        An adapted object's node names its type and its adapter's version.
        """
        registry = AdapterRegistry()
        registry.registerInstance(Thing, version=7)
        node = GraphWriter(registry.adapterFor).write(Thing())
        self.assertEqual(node[0], "o")
        self.assertEqual(node[2:4], (typeName(Thing), 7))

    def test_populatedAfterFinish(self) -> None:
        """
        Objects are created when read, and populated by L{GraphReader.finish}.
        """
        registry = _registry(Thing)
        node = GraphWriter(registry.adapterFor).write(Thing(a=1))
        reader = GraphReader(registry.adapterNamed)
        result = reader.read(node)
        self.assertFalse(hasattr(result, "a"))
        reader.finish()
        self.assertEqual(result.a, 1)


class AnchorTests(SynchronousTestCase):
    """
    Anchors are objects both processes have: the reader maps them onto its
    own, and fills in the writer's captured state.
    """

    def test_anchorMapsOntoReaderObject(self) -> None:
        """
        An anchored object is read as the reader's object of the same
        anchor name, wherever it is referenced, and its captured state is
        populated into it.
        """
        mine = Thing(counter=3, items=["a"])
        theirs = Thing(counter=0, own="kept")
        value = {"x": mine, "y": [mine]}
        result = roundTrip(value, writeAnchors={id(mine): "app"}, readAnchors={"app": theirs})
        self.assertIs(result["x"], theirs)
        self.assertIs(result["y"][0], theirs)
        self.assertEqual(theirs.counter, 3)
        self.assertEqual(theirs.items, ["a"])
        self.assertEqual(theirs.own, "kept")

    def test_anchorWithoutAdapter(self) -> None:
        """
        An anchored object whose class has no adapter is only mapped: its
        node carries no state, and the reader's object is left alone.
        """
        mine, theirs = Stranger(), Stranger()
        theirs.x = 1  # type: ignore[attr-defined]
        writer = GraphWriter(lambda cls: None, {id(mine): "r"})
        node = writer.write([mine])
        self.assertEqual(node[2][0][2:], ("r", None, None, None))
        reader = GraphReader(lambda name: None, {"r": theirs})
        result = reader.read(loadsPlain(dumpsPlain(node)))
        reader.finish()
        self.assertIs(result[0], theirs)
        self.assertEqual(vars(theirs), {"x": 1})

    def test_unknownAnchor(self) -> None:
        """
        An anchor the reader has nothing for is a L{GraphError}.
        """
        mine = Stranger()
        node = GraphWriter(lambda cls: None, {id(mine): "gone"}).write(mine)
        reader = GraphReader(lambda name: None, {"other": object()})
        self.assertRaises(GraphError, reader.read, node)


class UnadaptableTests(SynchronousTestCase):
    """
    An object with no adapter cannot be written, and the error says where
    it was found.
    """

    def test_pathInContainers(self) -> None:
        """
        The path shows the keys and indices that led to the object.
        """
        stranger = Stranger()
        writer = GraphWriter(lambda cls: None)
        e = self.assertRaises(Unadaptable, writer.write, {"a": [1, stranger]}, "root")
        self.assertIs(e.obj, stranger)
        self.assertEqual(e.path, "root['a'][1]")
        self.assertIn("tests.test_graph.Stranger", str(e))
        self.assertIn("root['a'][1]", str(e))

    def test_pathThroughAdaptedObject(self) -> None:
        """
        The path goes through adapted objects, naming their class.
        """
        registry = _registry(Thing)
        writer = GraphWriter(registry.adapterFor)
        e = self.assertRaises(Unadaptable, writer.write, Thing(peer=Stranger()), "conn")
        self.assertEqual(e.path, "conn<Thing>['peer']")

    def test_defaultPath(self) -> None:
        """
        Without a path, the root is called C{root}.
        """
        e = self.assertRaises(Unadaptable, GraphWriter(lambda cls: None).write, [Stranger()])
        self.assertEqual(e.path, "root[0]")

    def test_specialHookConsulted(self) -> None:
        """
        The writer's C{special} hook gets the values no adapter covers; its
        node is used, and C{None} from it means unadaptable.
        """
        stranger = Stranger()
        seen = []

        def special(value: Any, writer: GraphWriter, path: str) -> Any:
            seen.append((value, path))
            if value is stranger:
                return ("x", "stranger", None)
            return None

        writer = GraphWriter(lambda cls: None, special=special)
        self.assertEqual(writer.write([stranger]), ("l", 0, [("x", "stranger", None)]))
        e = self.assertRaises(Unadaptable, writer.write, [1, Stranger()])
        self.assertIs(seen[0][0], stranger)
        # Paths are only built while an error unwinds.
        self.assertEqual(e.path, "root[1]")


class CheckpointTests(SynchronousTestCase):
    """
    A root that fails to be written leaves no trace in the writer's memo.
    """

    def test_rollbackForgetsFailedRoot(self) -> None:
        """
        Objects first seen by a root that was rolled back are written in
        full by the next root, not as references to nodes nobody received.
        """
        shared: list[Any] = [1]
        thing = Thing(n=1)
        registry = _registry(Thing)
        writer = GraphWriter(registry.adapterFor)
        writer.checkpoint()
        self.assertRaises(Unadaptable, writer.write, [shared, thing, Stranger()])
        writer.rollback()
        node = writer.write([shared, thing])
        self.assertEqual(node[2][0][0], "l")
        self.assertEqual(node[2][1][0], "o")
        reader = GraphReader(registry.adapterNamed)
        result = reader.read(loadsPlain(dumpsPlain(node)))
        reader.finish()
        self.assertEqual(result[0], [1])
        self.assertEqual(result[1].n, 1)

    def test_rollbackKeepsEarlierRoots(self) -> None:
        """
        Objects written before the checkpoint stay remembered after a
        rollback.
        """
        shared: list[Any] = [1]
        writer = GraphWriter(lambda cls: None)
        writer.write(shared)
        writer.checkpoint()
        self.assertRaises(Unadaptable, writer.write, [shared, Stranger()])
        writer.rollback()
        self.assertEqual(writer.write(shared)[0], "r")

    def test_releaseKeeps(self) -> None:
        """
        After L{GraphWriter.release}, what the root wrote stays remembered,
        and a later rollback does not undo it.
        """
        shared: list[Any] = [1]
        writer = GraphWriter(lambda cls: None)
        writer.checkpoint()
        writer.write(shared)
        writer.release()
        writer.rollback()
        self.assertEqual(writer.write(shared)[0], "r")

    def test_idsNotReused(self) -> None:
        """
        Ids given out in a rolled-back root are not given to other objects
        later (a reader never sees two objects under one id).
        """
        writer = GraphWriter(lambda cls: None)
        writer.checkpoint()
        self.assertRaises(Unadaptable, writer.write, [[], Stranger()])
        writer.rollback()
        node = writer.write([[]])
        self.assertNotIn(node[1], (0, 1))
        self.assertNotIn(node[2][0][1], (0, 1))


class ReaderRefusalTests(SynchronousTestCase):
    """
    The reader reconstructs only what its registry allows, and every
    failure is a L{GraphError}.
    """

    def test_unknownTypeName(self) -> None:
        """
        A type name the reader's registry does not know is refused, naming
        it.
        """
        node = ("o", 0, "os.system", 1, ("d", 1, []))
        reader = GraphReader(_registry(Thing).adapterNamed)
        e = self.assertRaises(GraphError, reader.read, node)
        self.assertIn("os.system", str(e))
        self.assertIn("no adapter", str(e))

    def test_versionMismatch(self) -> None:
        """
        A state written at another version than the reader's adapter reads,
        with no chain of steps from one to the other, is refused, saying
        both versions and the missing step.
        """
        registry = AdapterRegistry()
        registry.registerInstance(Thing, version=2)
        node = GraphWriter(_registry(Thing).adapterFor).write(Thing())
        e = self.assertRaises(GraphError, GraphReader(registry.adapterNamed).read, node)
        self.assertIn("version 1 -> 2: no upgrade from 1", str(e))
        self.assertIn("written at version 1, this process reads version 2", str(e))

    def test_malformedTypeAndVersion(self) -> None:
        """
        A type name that is not a string, or a version that is not an int,
        is refused.
        """
        reader = GraphReader(_registry(Thing).adapterNamed)
        self.assertRaises(GraphError, reader.read, ("o", 0, 5, 1, None))
        self.assertRaises(GraphError, reader.read, ("o", 0, typeName(Thing), "1", None))

    def test_specialWithoutHook(self) -> None:
        """
        A special value is refused by a reader with no hook for them.
        """
        self.assertRaises(GraphError, GraphReader(lambda n: None).read, ("x", "call", []))

    def test_malformedNodes(self) -> None:
        """
        A selection of malformed nodes: each is a L{GraphError}.
        """
        name = typeName(Thing)
        nodes: list[Any] = [
            (),
            [],
            {},
            ("q",),
            (5, 1),
            ("r",),
            ("r", 99),
            ("r", []),
            ("l", 0),
            ("l", [], []),
            ("l", 0, 5),
            ("d", 0, [1]),
            ("d", 0, [("l", 1, []), 1]),
            ("s", 0, [("l", 1, [])]),
            ("t", 5),
            ("f", [("d", 0, [])]),
            ("b", 0, "text"),
            ("b", 0, 10**30),
            ("b", 0, 2**40),
            ("b", 0, -1),
            ("o", 0, name, 1),
            ("o", 0, name, 1, 5),
            ("o", 0, name, 1, ("l", 1, [1, 2])),
            ("o", 0, name, 1, ("l", 1, [("t", [1])])),
            ("a", 0, "nowhere", None, None, None),
            ("a", 0, [], None, None, None),
            ("a", 0, "here", name, 1, 5),
        ]
        registry = _registry(Thing)
        for node in nodes:
            reader = GraphReader(registry.adapterNamed, {"here": Thing()})
            try:
                reader.read(node)
                reader.finish()
            except GraphError:
                pass
            except Exception as e:  # pragma: no cover - the failure report
                self.fail(f"{node!r}: {e.__class__.__name__}: {e}")
            else:
                self.fail(f"{node!r} was accepted")

    def test_fuzzedNodes(self) -> None:
        """
        Random node shapes (seeded, so every run tries the same ones) are
        either read or refused with a L{GraphError}; no other exception
        type escapes L{GraphReader.read} or L{GraphReader.finish}.
        """
        name = typeName(Thing)
        tags: list[Any] = ["l", "d", "s", "b", "t", "f", "r", "o", "a", "x", "?", 0, None]
        leaves: list[Any] = [
            None, True, 0, 1, -1, 2**63, 10**30, 1.5, float("nan"), "", "here",
            name, b"", b"ab", [], {}, [1, 2], {"a": 1},
        ]

        def node(rng: random.Random, depth: int) -> Any:
            if depth > 4 or rng.random() < 0.3:
                return rng.choice(leaves)
            items = [rng.choice(tags)] + [node(rng, depth + 1) for _ in range(rng.randint(0, 6))]
            if rng.random() < 0.2:
                return items
            return tuple(items)

        def wellFormed(rng: random.Random, depth: int, ident: list[int]) -> Any:
            # Mostly valid shapes with one thing wrong here and there, so
            # that the reader gets past the first check.
            ident[0] += 1
            if depth > 4:
                return rng.choice(leaves)
            kind = rng.choice("ldstfbor")
            bad = rng.random() < 0.2
            child = [wellFormed(rng, depth + 1, ident) for _ in range(rng.randint(0, 3))]
            if kind == "l":
                return ("l", ident[0], child if not bad else rng.choice(leaves))
            if kind == "d":
                return ("d", ident[0], child if not bad else child[:1])
            if kind == "s":
                return ("s", ident[0], child)
            if kind == "t":
                return ("t", child)
            if kind == "f":
                return ("f", child)
            if kind == "b":
                return ("b", ident[0], b"x" if not bad else rng.choice(leaves))
            if kind == "o":
                state = ("d", ident[0] + 1000, ["a", child]) if not bad else rng.choice(leaves + child)
                return ("o", ident[0], name, 1 if not bad else rng.choice(leaves), state)
            return ("r", rng.randint(0, ident[0]))

        registry = _registry(Thing)
        outcomes = {"read": 0, "refused": 0}
        for seed in range(3000):
            rng = random.Random(seed)
            value = node(rng, 0) if seed % 2 else wellFormed(rng, 0, [0])
            reader = GraphReader(registry.adapterNamed, {"here": Thing()})
            try:
                reader.read(value)
                reader.finish()
            except GraphError:
                outcomes["refused"] += 1
            except Exception as e:  # pragma: no cover - the failure report
                self.fail(f"seed {seed}: {value!r}: {e.__class__.__name__}: {e}")
            else:
                outcomes["read"] += 1
        # Both kinds of outcome were exercised.
        self.assertGreater(outcomes["read"], 100)
        self.assertGreater(outcomes["refused"], 100)

    def test_tooDeepIsGraphError(self) -> None:
        """
        A node nested more deeply than the reader can follow is a
        L{GraphError}, not a C{RecursionError}.
        """
        value: Any = 1
        for _ in range(50000):
            value = ("t", [value])
        self.assertRaises(GraphError, GraphReader(lambda n: None).read, value)


class _Evil:
    """
    Pickles as a call of C{os.system}.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo this must never run",))


class LoadsPlainTests(SynchronousTestCase):
    """
    L{loadsPlain} decodes plain data only: a pickle that names any class,
    function or persistent id is refused.
    """

    def test_plainRoundTrip(self) -> None:
        """
        What L{dumpsPlain} encodes (every kind of node) is decoded equal.
        """
        value = {
            "atoms": [None, True, 1, 2**100, 1.5, "s", b"b"],
            "t": (1, (2,)),
            "s": {1, 2},
            "f": frozenset({3}),
            "d": {(1, 2): [3]},
        }
        self.assertEqual(loadsPlain(dumpsPlain(value)), value)

    def test_plainProtocol5(self) -> None:
        """
        Plain data pickled with protocol 5 (which may use the
        C{BYTEARRAY8} opcode) is decoded too.
        """
        value = [bytearray(b"x"), {"a": (1, frozenset({2}))}]
        self.assertEqual(loadsPlain(pickle.dumps(value, protocol=5)), value)

    def test_classesRefused(self) -> None:
        """
        A C{datetime}, pickled at every protocol, is refused: it names its
        class (C{GLOBAL}, C{STACK_GLOBAL}) and rebuilds with C{REDUCE}.
        """
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(datetime.datetime(2020, 1, 1), protocol=protocol)
            e = self.assertRaises(GraphError, loadsPlain, data)
            self.assertIn("datetime", str(e))

    def test_functionsRefused(self) -> None:
        """
        A pickle naming C{os.system} through C{__reduce__} is refused at
        every protocol, before anything is called.
        """
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            data = pickle.dumps(_Evil(), protocol=protocol)
            e = self.assertRaises(GraphError, loadsPlain, data)
            self.assertIn("system", str(e))

    def test_craftedOpcodes(self) -> None:
        """
        Hand-made pickles using C{GLOBAL}, C{STACK_GLOBAL}, C{INST},
        C{OBJ}, C{REDUCE} and C{NEWOBJ} are all refused.
        """
        crafted = [
            b"cos\nsystem\n(S'true'\ntR.",  # GLOBAL + REDUCE
            b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.",  # STACK_GLOBAL
            b"(S'true'\nios\nsystem\n.",  # INST
            b"(cos\nsystem\nS'true'\no.",  # OBJ with a GLOBAL
            b"(S'x'\nS'y'\no.",  # OBJ with a string for a class
            b"S'x'\n(tR.",  # REDUCE of a string
            b"\x80\x02S'x'\n)\x81.",  # NEWOBJ of a string
        ]
        for data in crafted:
            self.assertRaises(GraphError, loadsPlain, data)

    def test_extensionCodes(self) -> None:
        """
        C{EXT1}, C{EXT2} and C{EXT4} are refused, also when the code is
        registered with C{copyreg} (the lookup would name a function).
        """
        code = 240
        copyreg.add_extension("os", "system", code)
        self.addCleanup(copyreg.remove_extension, "os", "system", code)
        for data in [
            b"\x80\x02\x82" + bytes([code]) + b".",
            b"\x80\x02\x83" + code.to_bytes(2, "little") + b".",
            b"\x80\x02\x84" + code.to_bytes(4, "little") + b".",
        ]:
            e = self.assertRaises(GraphError, loadsPlain, data)
            self.assertIn("os.system", str(e))
        self.assertRaises(GraphError, loadsPlain, b"\x80\x02\x82\xf1.")

    def test_persistentIds(self) -> None:
        """
        C{PERSID} and C{BINPERSID} are refused.
        """

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                return "pid" if obj == "special" else None

        import io

        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            buffer = io.BytesIO()
            Pickler(buffer, protocol=protocol).dump(["special"])
            e = self.assertRaises(GraphError, loadsPlain, buffer.getvalue())
            self.assertIn("persistent", str(e))
        self.assertRaises(GraphError, loadsPlain, b"Pfoo\n.")

    def test_garbage(self) -> None:
        """
        Truncated and meaningless input is a L{GraphError}.
        """
        good = dumpsPlain({"a": [1, 2, 3]})
        for data in [b"", b"\x00", good[:-3], b"not a pickle at all"]:
            self.assertRaises(GraphError, loadsPlain, data)


class DepthTests(SynchronousTestCase):
    """
    Deep structures are written, encoded, decoded and read without hitting
    the recursion limit, and the limit is put back afterwards.
    """

    depth = 3000

    def test_deepList(self) -> None:
        """
        A list nested 3000 deep makes the whole trip.
        """
        limit = sys.getrecursionlimit()
        value: list[Any] = []
        inner = value
        for _ in range(self.depth):
            inner.append([])
            inner = inner[0]
        result = roundTrip(value)
        n = 0
        while result:
            result = result[0]
            n += 1
        self.assertEqual(n, self.depth)
        self.assertEqual(sys.getrecursionlimit(), limit)

    def test_deepObjectChain(self) -> None:
        """
        A chain of 3000 adapted objects makes the whole trip.
        """
        head = Thing(next=None)
        for _ in range(self.depth - 1):
            head = Thing(next=head)
        result = roundTrip(head)
        n = 0
        while result is not None:
            self.assertIsInstance(result, Thing)
            result = result.next
            n += 1
        self.assertEqual(n, self.depth)


def _chainLength(value: Any, step: Any) -> int:
    n = 0
    while value is not None:
        value = step(value)
        n += 1
    return n


class DeepChainTests(SynchronousTestCase):
    """
    Deep chains (the writer and reader use no recursion; the encoding is
    cut into segments, so that C{pickle} does not recurse deeply either)
    make the whole trip, identity and cycles included: 20,000 deep (far
    past any recursion limit), and 100,000 adapted objects through
    L{migrator.testing.roundTrip}.
    """

    depth = 20_000

    def test_objects(self) -> None:
        """
        A linked list of 20,000 adapted objects, whose last one refers
        back to the first, arrives whole, with the cycle.
        """
        depth = self.depth
        head = tail = Thing(n=0, next=None)
        for i in range(1, depth):
            head = Thing(n=i, next=head)
        tail.first = head  # type: ignore[attr-defined]
        result = roundTrip(head)
        self.assertEqual(result.n, depth - 1)
        node, n = result, 0
        while node.next is not None:
            self.assertEqual(node.n, depth - 1 - n)
            node, n = node.next, n + 1
        self.assertEqual(n, depth - 1)
        self.assertIs(node.first, result)

    def test_lists(self) -> None:
        """
        Lists nested 20,000 deep.
        """
        value: list[Any] = []
        inner = value
        for _ in range(self.depth - 1):
            inner.append([])
            inner = inner[0]
        result = roundTrip(value)
        self.assertEqual(_chainLength(result, lambda v: v[0] if v else None), self.depth)

    def test_dicts(self) -> None:
        """
        Dicts nested 20,000 deep, with a value beside each.
        """
        value: dict[str, Any] = {"i": 0, "next": None}
        for i in range(1, self.depth):
            value = {"i": i, "next": value}
        result = roundTrip(value)
        self.assertEqual(list(result), ["i", "next"])
        self.assertEqual(_chainLength(result, lambda v: v["next"]), self.depth)

    def test_tuples(self) -> None:
        """
        Tuples (written by value) nested 20,000 deep.
        """
        value: Any = None
        for i in range(self.depth):
            value = (i, value)
        result = roundTrip(value)
        self.assertIsInstance(result, tuple)
        self.assertEqual(_chainLength(result, lambda v: v[1]), self.depth)

    def test_mixed(self) -> None:
        """
        An object holding a list holding a dict holding a tuple holding an
        object..., 20,000 containers in all, and shared objects along the
        way arrive as one.
        """
        shared = Thing(name="shared")
        value: Any = None
        for i in range(self.depth // 4):
            value = Thing(items=[{"t": (i, value), "s": shared}])
        result = roundTrip(value)
        n, seen = 0, set()
        while result is not None:
            entry = result.items[0]
            seen.add(id(entry["s"]))
            result = entry["t"][1]
            n += 1
        self.assertEqual(n, self.depth // 4)
        self.assertEqual(len(seen), 1)

    def test_publicRoundTrip(self) -> None:
        """
        L{migrator.testing.roundTrip} moves a chain of 100,000 adapted
        objects too.
        """
        from migrator.testing import roundTrip as publicRoundTrip

        depth = 100_000
        head = None
        for i in range(depth):
            head = Thing(n=i, next=head)
        result = publicRoundTrip(head, _registry(Thing))
        self.assertEqual(_chainLength(result, lambda v: v.next), depth)

    def test_encodedShallow(self) -> None:
        """
        The nodes of a 20,000-deep chain are cut into segments shallow
        enough for C{pickle} at the default recursion limit (no segment
        nests more than C{SEGMENT} containers).
        """
        value: list[Any] = []
        inner = value
        for _ in range(self.depth):
            inner.append([])
            inner = inner[0]
        node = GraphWriter(lambda cls: None).write(value)
        self.assertEqual(node[0], "S")
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(1000)
        try:
            pickle.dumps(node, protocol=4)
        finally:
            sys.setrecursionlimit(limit)

    def test_shallowUncut(self) -> None:
        """
        A graph no deeper than a segment (64 containers with items in
        them, and an empty one) is written as it always was, without
        segments; one container more is cut.
        """
        def nested(depth: int) -> list[Any]:
            value: list[Any] = []
            for _ in range(depth - 1):
                value = [value]
            return value

        self.assertEqual(GraphWriter(lambda cls: None).write(nested(65))[0], "l")
        node = GraphWriter(lambda cls: None).write(nested(66))
        self.assertEqual(node[0], "S")
        self.assertEqual(len(node[1]), 1)

    def test_errorPathThroughSegments(self) -> None:
        """
        An object with no adapter at the end of a deep chain is reported
        with its whole path.
        """
        value: list[Any] = [Stranger()]
        for _ in range(199):
            value = [value]
        e = self.assertRaises(Unadaptable, GraphWriter(lambda cls: None).write, value)
        self.assertEqual(e.path, "root" + "[0]" * 200)


class SegmentRefusalTests(SynchronousTestCase):
    """
    Segments that are malformed, missing or used twice are a
    L{GraphError}.
    """

    def test_refused(self) -> None:
        """
        Each of these is refused.
        """
        nodes: list[Any] = [
            ("g", 0),
            ("l", 0, [("g", 0)]),
            ("S", "segments", 1),
            ("S", [], ("l", 0, [("g", 0)])),
            ("S", [("l", 1, [])], ("l", 0, [("g", 1)])),
            ("S", [("l", 1, [])], ("l", 0, [("g", -1)])),
            ("S", [("l", 1, [])], ("l", 0, [("g", "0")])),
            ("S", [("l", 1, [])], ("l", 0, [("g", 0), ("g", 0)])),
            ("S", [("g", 0)], ("l", 0, [("g", 0)])),
            ("S", [("g", 1), ("g", 0)], ("l", 0, [("g", 0)])),
            ("S", [("q",)], ("l", 0, [("g", 0)])),
            ("S", [[1]], ("l", 0, [("g", 0)])),
            ("S", [("l", 1, [])], ("l", 0, [("g",)])),
            ("S", [], ("g", 0)),
        ]
        for node in nodes:
            reader = GraphReader(lambda n: None)
            try:
                reader.read(node)
            except GraphError:
                pass
            except Exception as e:  # pragma: no cover - the failure report
                self.fail(f"{node!r}: {e.__class__.__name__}: {e}")
            else:
                self.fail(f"{node!r} was accepted")

    def test_segmentAnAtom(self) -> None:
        """
        A segment may hold an atom or a reference (the reader does not care
        what was cut).
        """
        node = ("S", [5], ("l", 0, [("g", 0)]))
        self.assertEqual(GraphReader(lambda n: None).read(node), [5])
        node = ("S", [("r", 0)], ("l", 0, [("g", 0)]))
        result = GraphReader(lambda n: None).read(node)
        self.assertIs(result[0], result)


class Slotted:
    """
    Keeps its state in slots.
    """

    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


class PlainAttributesTests(SynchronousTestCase):
    """
    Objects under the default rule (L{InstanceAdapter}) are written from
    their instance dictionary directly, exactly as its C{capture} would
    have written them.
    """

    def test_sameNodesAsCapture(self) -> None:
        """
        The nodes are those of the adapter's own C{capture} (a subclass
        that only calls it goes the general way).
        """

        class Through(InstanceAdapter):
            def capture(self, obj: Any) -> dict[str, Any]:
                return InstanceAdapter.capture(self, obj)

        value = Thing(a=1, b=[1, 2], c={"x": Thing(d=None)}, e=(1,))
        fast = _registry(Thing)
        slow = AdapterRegistry()
        slow.register(Through(Thing))
        self.assertEqual(fast.adapterFor(Thing).plainAttributes, frozenset())
        self.assertIsNone(slow.adapterFor(Thing).plainAttributes)
        self.assertEqual(
            GraphWriter(fast.adapterFor).write(value), GraphWriter(slow.adapterFor).write(value)
        )

    def test_excluded(self) -> None:
        """
        Excluded attributes are not written.
        """
        registry = AdapterRegistry()
        registry.registerInstance(Thing, exclude=frozenset({"secret"}))
        result = roundTrip(Thing(a=1, secret=Stranger()), registry)
        self.assertEqual(vars(result), {"a": 1})

    def test_overriddenCapture(self) -> None:
        """
        A subclass with its own C{capture} has it used.
        """

        class Summary(InstanceAdapter):
            def capture(self, obj: Any) -> dict[str, Any]:
                return {"total": sum(obj.values)}

        registry = AdapterRegistry()
        registry.register(Summary(Thing))
        self.assertEqual(vars(roundTrip(Thing(values=[1, 2, 3]), registry)), {"total": 6})

    def test_slotsRefused(self) -> None:
        """
        A class with slots under the default rule cannot be written, with
        the rule's reason.
        """
        registry = _registry(Slotted)
        e = self.assertRaises(Unadaptable, GraphWriter(registry.adapterFor).write, Slotted())
        self.assertIn("__slots__", str(e))


class _Spy(InstanceAdapter):
    """
    Records whether the collector ran while it captured and populated.
    """

    seen: list[bool] = []

    def capture(self, obj: Any) -> dict[str, Any]:
        self.seen.append(gc.isenabled())
        return InstanceAdapter.capture(self, obj)

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        self.seen.append(gc.isenabled())
        InstanceAdapter.populate(self, obj, state, context)


class CollectorTests(SynchronousTestCase):
    """
    The garbage collector does not run while a graph is written, read or
    populated, and is enabled again afterwards unless it was disabled.
    """

    def setUp(self) -> None:
        self.addCleanup(gc.enable if gc.isenabled() else gc.disable)
        gc.enable()
        _Spy.seen = []

    def test_paused(self) -> None:
        """
        L{collectorPaused} disables the collector and enables it again,
        also when the block raises; it leaves a disabled collector
        disabled.
        """
        with collectorPaused():
            self.assertFalse(gc.isenabled())
        self.assertTrue(gc.isenabled())
        with self.assertRaises(ZeroDivisionError):
            with collectorPaused():
                raise ZeroDivisionError()
        self.assertTrue(gc.isenabled())
        gc.disable()
        with collectorPaused():
            pass
        self.assertFalse(gc.isenabled())

    def test_writeAndRead(self) -> None:
        """
        Adapters capture and populate with the collector paused; it runs
        again after the write, the read and L{GraphReader.finish}, also
        after an error.
        """
        registry = AdapterRegistry()
        registry.register(_Spy(Thing))
        writer = GraphWriter(registry.adapterFor)
        node = writer.write([Thing(a=1)])
        self.assertTrue(gc.isenabled())
        reader = GraphReader(registry.adapterNamed)
        reader.read(loadsPlain(dumpsPlain(node)))
        self.assertTrue(gc.isenabled())
        reader.finish()
        self.assertTrue(gc.isenabled())
        self.assertEqual(_Spy.seen, [False, False])
        self.assertRaises(Unadaptable, writer.write, [Thing(a=Stranger())])
        self.assertTrue(gc.isenabled())
        self.assertRaises(GraphError, GraphReader(registry.adapterNamed).read, ("q",))
        self.assertTrue(gc.isenabled())
