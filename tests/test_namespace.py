# -*- test-case-name: tests.test_namespace -*-
"""
Tests for L{migrator.adapters.namespace._namespace}: an interactive session's namespace
captured as plain data and rebuilt, here or in another Python version.

The sessions are real: lines are typed into Twisted's C{ColoredManhole}
(over C{insults}, as a telnet session would), whose namespace, history and
interpreter buffer are then captured.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

from twisted.conch import manhole
from twisted.conch.insults import insults
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from migrator.adapters import defaultRegistry
from migrator.adapters.namespace._namespace import (
    NotMoved,
    NotMovedError,
    captureNamespace,
    pendingLines,
    restoreNamespace,
    sessionFutures,
)
from migrator.state._graph import GraphError, dumpsPlain, loadsPlain
from migrator.state._registry import AdapterRegistry
from migrator.testing import childEnvironment


class Gadget:
    """
    An importable class with a registered adapter in these tests.
    """

    def __init__(self, size: int) -> None:
        self.size = size


class Stranger:
    """
    An importable class no adapter is registered for.
    """


class Service:
    """
    Something a service puts in the manhole's namespace.
    """


def _registry() -> AdapterRegistry:
    registry = defaultRegistry()
    registry.registerInstance(Gadget)
    return registry


class Session:
    """
    A manhole session: lines typed into a C{ColoredManhole} through the
    terminal protocol a telnet session uses.
    """

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.terminal = insults.ServerProtocol(manhole.ColoredManhole, namespace or {})
        self.transport = StringTransport()
        self.terminal.makeConnection(self.transport)
        self.manhole: Any = self.terminal.terminalProtocol

    @property
    def namespace(self) -> dict[str, Any]:
        namespace: dict[str, Any] = self.manhole.namespace
        return namespace

    def type(self, *lines: str) -> Session:
        """
        Type each line and Enter (an empty string is an empty line).
        """
        for line in lines:
            self.terminal.dataReceived(line.encode("utf-8") + b"\r")
        return self

    def block(self, text: str) -> Session:
        """
        Type a (dedented) block of lines, then the empty line that runs it.
        """
        return self.type(*textwrap.dedent(text).strip("\n").split("\n"), "")

    def capture(self, registry: AdapterRegistry | None = None, **kwargs: Any) -> dict[str, Any]:
        """
        Capture the session's namespace, as a manhole adapter would.
        """
        kwargs.setdefault("pending", self.manhole.interpreter.buffer)
        return captureNamespace(
            self.namespace, self.manhole.historyLines, registry or _registry(), **kwargs
        )

    def move(
        self, registry: AdapterRegistry | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], list[str]]:
        """
        Capture, encode, decode and restore the namespace.
        """
        provided = kwargs.pop("restoreProvided", None)
        state = loadsPlain(dumpsPlain(self.capture(registry, **kwargs)))
        return restoreNamespace(state, registry or _registry(), provided=provided)


def _bound(state: dict[str, Any]) -> list[str]:
    """
    The names a state binds, in the order it binds them.
    """
    names: list[str] = []
    for what, payload in state["steps"]:
        if what == "bind":
            names += payload[::2]
    return names


class PlainValueTests(SynchronousTestCase):
    """
    Plain values travel by value through the namespace's object graph.
    """

    def test_atomsAndContainers(self) -> None:
        """
        Atoms, the builtin containers and the few builtin values without a
        graph node of their own (complex, range, slice, Ellipsis) arrive
        equal.
        """
        session = Session().type(
            "a, b, c, d, e = 1, 2.5, 'text', b'raw', None",
            "f, g = True, 10**40",
            "nested = [1, (2, 3), {'k': [4, {5, 6}]}, frozenset({7}), bytearray(b'89')]",
            "z, r, s, dots = 1 + 2j, range(1, 10, 3), slice(1, None, 2), ...",
        )
        restored, notices = session.move()
        for name in ["a", "b", "c", "d", "e", "f", "g", "nested"]:
            self.assertEqual(restored[name], session.namespace[name])
        self.assertEqual(restored["z"], 1 + 2j)
        self.assertEqual(restored["r"], range(1, 10, 3))
        self.assertEqual(restored["s"], slice(1, None, 2))
        self.assertIs(restored["dots"], Ellipsis)
        self.assertEqual(notices, [])

    def test_sharedReferences(self) -> None:
        """
        An object reachable from several names (and several places) arrives
        as one object.
        """
        session = Session().type("shared = [1]", "other = {'k': shared}", "pair = (shared, shared)")
        restored, _ = session.move()
        self.assertIs(restored["other"]["k"], restored["shared"])
        self.assertIs(restored["pair"][0], restored["shared"])
        self.assertIs(restored["pair"][1], restored["shared"])
        self.assertIsNot(restored["shared"], session.namespace["shared"])

    def test_cycles(self) -> None:
        """
        Cycles through containers and through instances of session classes
        are preserved.
        """
        session = Session().type("loop = []", "loop.append(loop)", "d = {}", "d['me'] = d")
        session.block(
            """
            class Node:
                pass
            """
        )
        session.type("n = Node()", "n.me = n", "n.friends = [n, loop]")
        restored, _ = session.move()
        self.assertIs(restored["loop"][0], restored["loop"])
        self.assertIs(restored["d"]["me"], restored["d"])
        self.assertIs(restored["n"].me, restored["n"])
        self.assertIs(restored["n"].friends[0], restored["n"])
        self.assertIs(restored["n"].friends[1], restored["loop"])

    def test_adaptedInstance(self) -> None:
        """
        An object of an importable class moves through the adapter
        registered for its class, like any object in migrator.
        """
        session = Session({"Gadget": Gadget}).type("gadget = Gadget(3)", "buf = __import__('io').BytesIO(b'abc')")
        restored, notices = session.move(provided={"Gadget": Gadget}, restoreProvided={"Gadget": Gadget})
        self.assertIsInstance(restored["gadget"], Gadget)
        self.assertEqual(restored["gadget"].size, 3)
        self.assertEqual(restored["buf"].getvalue(), b"abc")
        self.assertEqual(notices, [])

    def test_instanceWithoutAdapter(self) -> None:
        """
        An object of an importable class with no adapter does not move: its
        name is bound to a placeholder saying so.
        """
        stranger = Stranger()
        session = Session({"stranger": stranger}).type("kept = stranger")
        restored, notices = session.move()
        self.assertIsInstance(restored["kept"], NotMoved)
        self.assertIn("no adapter is registered", repr(restored["kept"]))
        self.assertIn("tests.test_namespace.Stranger", notices[0])


class ModuleTests(SynchronousTestCase):
    """
    Modules, and functions and classes that importing finds, move by name.
    """

    def test_modulesReimported(self) -> None:
        """
        Imported modules (also nested in values, or imported as another
        name) are this process's modules after the move.
        """
        session = Session().type("import sys, os", "import os.path as osp", "mods = [sys, os]")
        state = session.capture()
        restored, notices = restoreNamespace(loadsPlain(dumpsPlain(state)), _registry())
        self.assertIs(restored["sys"], sys)
        self.assertIs(restored["os"], os)
        self.assertIs(restored["osp"], os.path)
        self.assertEqual(restored["mods"], [sys, os])
        self.assertNotIn(b"posix", dumpsPlain(state).replace(b"posixpath", b""))
        self.assertEqual(notices, [])

    def test_importableFunctionsAndClasses(self) -> None:
        """
        A function, builtin or class that importing finds moves by its
        module and qualified name.
        """
        session = Session().type(
            "from os.path import join",
            "from collections import OrderedDict",
            "from math import sqrt",
            "funcs = [len, join]",
        )
        restored, notices = session.move()
        self.assertIs(restored["join"], os.path.join)
        import collections
        import math

        self.assertIs(restored["OrderedDict"], collections.OrderedDict)
        self.assertIs(restored["sqrt"], math.sqrt)
        self.assertEqual(restored["funcs"], [len, os.path.join])
        self.assertEqual(notices, [])

    def test_importedObjects(self) -> None:
        """
        Any object a C{from module import name} of the session bound (a
        mapping, a list, the reactor...) stands for the successor's object
        of that name, not a copy.
        """
        session = Session().type("from os import environ", "from sys import path as syspath")
        session.type("both = [environ, syspath]")
        restored, notices = session.move()
        self.assertIs(restored["environ"], os.environ)
        self.assertIs(restored["syspath"], sys.path)
        self.assertIs(restored["both"][1], sys.path)
        self.assertEqual(notices, [])

    def test_moduleNotImportable(self) -> None:
        """
        A module that cannot be imported by its name (made in the session)
        becomes a placeholder; one missing in the successor too.
        """
        session = Session().type("import types", "fake = types.ModuleType('fake_mod')")
        restored, notices = session.move()
        self.assertIsInstance(restored["fake"], NotMoved)
        self.assertIn("cannot be imported by its name", notices[0])
        state = session.capture()
        state["steps"].append(["bind", ["gone", ("x", "module", "no_such_module_here")]])
        restored, notices = restoreNamespace(state, _registry())
        self.assertIsInstance(restored["gone"], NotMoved)
        self.assertIn("cannot be imported here", notices[-1])


class DefinitionTests(SynchronousTestCase):
    """
    Functions and classes defined in the session move as their source
    text, re-run in the new namespace.
    """

    def demo(self) -> Session:
        """
        The issue's session.
        """
        session = Session().type("import sys, os", 'x = [1, 2, {"a": 3}]')
        session.type('def greet(name): return "hello " + name', "")
        session.block(
            """
            class Point:
                def __init__(self, x, y): self.x, self.y = x, y
            """
        )
        return session.type("p = Point(1, 2)")

    def test_issueDemo(self) -> None:
        """
        The issue's demo: after the move, C{greet} works, C{p} is an
        instance of the re-created C{Point} (not the old class), and nothing
        is reported.
        """
        session = self.demo()
        restored, notices = session.move()
        self.assertEqual(restored["greet"]("you"), "hello you")
        self.assertEqual(restored["x"], [1, 2, {"a": 3}])
        self.assertIsInstance(restored["p"], restored["Point"])
        self.assertIsNot(restored["Point"], session.namespace["Point"])
        self.assertNotIsInstance(restored["p"], session.namespace["Point"])
        self.assertEqual((restored["p"].x, restored["p"].y), (1, 2))
        self.assertIs(restored["greet"].__globals__, restored)
        self.assertEqual(notices, [])

    def test_sourceNotCode(self) -> None:
        """
        The state holds the definitions' source text and plain data only:
        it encodes without any class or code object, and names no code.
        """
        state = self.demo().capture()
        self.assertEqual(loadsPlain(dumpsPlain(state)), state)
        sources = [d[2] for d in state["definitions"]]
        self.assertEqual(
            sources,
            [
                'def greet(name): return "hello " + name\n',
                "class Point:\n    def __init__(self, x, y): self.x, self.y = x, y\n",
            ],
        )

    def test_nothingRunsAtCapture(self) -> None:
        """
        Capturing runs nothing the user typed.
        """
        session = Session().type("calls = []")
        session.block(
            """
            def note(f):
                calls.append(f.__name__)
                return f
            """
        )
        session.type("@note", "def a(): pass", "")
        session.capture()
        self.assertEqual(session.namespace["calls"], ["a"])

    def test_redefinedTwice(self) -> None:
        """
        A function defined twice moves as its latest definition; an older
        version still referred to by another name moves as itself.
        """
        session = Session().type("def greet(): return 'first'", "", "old = greet")
        session.type("def greet(): return 'second'", "")
        session.type("def greet(): return 'third'", "")
        restored, notices = session.move()
        self.assertEqual(restored["greet"](), "third")
        self.assertEqual(restored["old"](), "first")
        self.assertEqual(notices, [])

    def test_failedRedefinition(self) -> None:
        """
        A later definition that failed when it ran (its decorator raised)
        did not rebind the name: the definition that did is the one moved.
        """
        session = Session().type("def f(): return 1", "", "@undefined_name", "def f(): return 2", "")
        self.assertEqual(session.namespace["f"](), 1)
        restored, _ = session.move()
        self.assertEqual(restored["f"](), 1)

    def test_instanceOfOlderClass(self) -> None:
        """
        An instance of a class that was redefined since is rebuilt as an
        instance of the re-created older class; the name stays bound to the
        newer one.
        """
        session = Session().block(
            """
            class Point:
                def kind(self): return 'old'
            """
        )
        session.type("p = Point()")
        session.block(
            """
            class Point:
                def kind(self): return 'new'
            """
        )
        restored, notices = session.move()
        self.assertEqual(restored["p"].kind(), "old")
        self.assertEqual(restored["Point"]().kind(), "new")
        self.assertNotIsInstance(restored["p"], restored["Point"])
        self.assertEqual(notices, [])

    def test_decoratorReferencingSessionFunction(self) -> None:
        """
        A definition decorated by a session function is re-run with the
        re-created decorator.
        """
        session = Session().block(
            """
            def shout(f):
                def wrapper(*a): return f(*a).upper()
                return wrapper
            """
        )
        session.type("@shout", 'def hello(name): return "hello " + name', "")
        restored, notices = session.move()
        self.assertEqual(restored["hello"]("you"), "HELLO YOU")
        self.assertEqual(restored["hello"].__code__.co_name, "wrapper")
        self.assertEqual(notices, [])

    def test_decoratorRedefinedBeforeUse(self) -> None:
        """
        A decorator defined after the function it decorates (the order in
        which definitions run is by what they need, not by history) is run
        first.
        """
        session = Session().type("def deco(f): return f", "")
        session.type("@deco", "def g(): return 'g'", "")
        session.type("def deco(f):", "    f.marked = True", "    return f", "")
        restored, notices = session.move()
        self.assertEqual(restored["g"](), "g")
        self.assertEqual(notices, [])

    def test_importedDecorator(self) -> None:
        """
        A definition decorated by something imported (here
        C{functools.lru_cache}, whose result is no function) moves as its
        decorated definition.
        """
        session = Session().type("import functools", "@functools.lru_cache", "def sq(n): return n * n", "")
        restored, notices = session.move()
        self.assertEqual(restored["sq"](4), 16)
        self.assertTrue(hasattr(restored["sq"], "cache_info"))
        self.assertEqual(notices, [])

    def test_methodReferencingGlobal(self) -> None:
        """
        A method that uses a global of the session finds it in the
        restored namespace, when called.
        """
        session = Session().type("RATE = 3")
        session.block(
            """
            class Scaler:
                def scale(self, v): return v * RATE
            """
        )
        session.type("s = Scaler()")
        restored, _ = session.move()
        self.assertEqual(restored["s"].scale(2), 6)
        restored["RATE"] = 4
        self.assertEqual(restored["s"].scale(2), 8)

    def test_definitionTimeValues(self) -> None:
        """
        Values a definition needs when it runs (a default value, a base
        class, a class body's expression) are bound before it; the default
        values the functions had are carried, whatever the names are bound
        to now.
        """
        session = Session().type("N = 5", "def f(n=N): return n", "", "N = 6")
        session.type("BASE_SIZE = 2")
        session.block(
            """
            class Base:
                size = BASE_SIZE * 2
            """
        )
        session.block(
            """
            class Derived(Base):
                pass
            """
        )
        restored, notices = session.move()
        self.assertEqual(restored["f"](), 5)
        self.assertEqual(restored["N"], 6)
        self.assertEqual(restored["Derived"].size, 4)
        self.assertTrue(issubclass(restored["Derived"], restored["Base"]))
        self.assertEqual(notices, [])

    def test_stateAcquiredAfterDefinition(self) -> None:
        """
        Function attributes, mutated default values and class attributes
        changed after the definition ran are carried.
        """
        session = Session().type("def f(acc=[]): acc.append(1); return acc", "", "f()", "f.calls = 2")
        session.block(
            """
            class Counter:
                count = 0
                def __init__(self): Counter.count += 1
            """
        )
        session.type("c = Counter()", "Counter()", "Counter.extra = 'x'")
        restored, notices = session.move()
        self.assertEqual(restored["f"].calls, 2)
        self.assertEqual(restored["f"](), [1, 1])
        self.assertEqual(restored["Counter"].count, 2)
        self.assertEqual(restored["Counter"].extra, "x")
        self.assertEqual(notices, [])

    def test_classAttributeKeptFresh(self) -> None:
        """
        A class attribute that cannot move (a lock made by the class body)
        is the one the re-run class statement made, without a notice; the
        same in an instance is a placeholder, reported.
        """
        session = Session().type("import threading")
        session.block(
            """
            class Guarded:
                lock = threading.Lock()
            """
        )
        session.type("g = Guarded()", "g.own = threading.Lock()")
        restored, notices = session.move()
        self.assertTrue(restored["Guarded"].lock.acquire(blocking=False))
        self.assertIsNot(restored["Guarded"].lock, session.namespace["Guarded"].lock)
        self.assertIsInstance(restored["g"].own, NotMoved)
        self.assertEqual(len(notices), 1)
        self.assertIn("'g.own' was a _thread.lock", notices[0])

    def test_decoratorsRunAgain(self) -> None:
        """
        Re-running a definition runs its decorators again, with what they
        use bound first (here a list the decorator appends to): their
        side effects on session state happen a second time.
        """
        session = Session().type("calls = []")
        session.block(
            """
            def note(f):
                calls.append(f.__name__)
                return f
            """
        )
        session.type("@note", "def a(): return 'a'", "")
        restored, notices = session.move()
        self.assertEqual(restored["a"](), "a")
        self.assertEqual(restored["calls"], ["a", "a"])
        self.assertEqual(notices, [])

    def test_futureImports(self) -> None:
        """
        C{__future__} imports of the session apply when its definitions are
        re-run (here, annotations naming something undefined), and are
        reported for the successor's interpreter.
        """
        session = Session().type("from __future__ import annotations")
        session.type("def f(x: Undefined) -> Undefined: return x", "")
        state = session.capture()
        self.assertEqual(sessionFutures(state), ["annotations"])
        restored, notices = restoreNamespace(state, _registry())
        self.assertEqual(restored["f"](1), 1)
        self.assertEqual(notices, [])

    def test_boundMethods(self) -> None:
        """
        A bound method moves as its object and the method's name.
        """
        session = Session().block(
            """
            class Scaler:
                def scale(self, v): return v * 2
            """
        )
        session.type("s = Scaler()", "m = s.scale", "items = [1]", "add = items.append")
        restored, notices = session.move()
        self.assertEqual(restored["m"](5), 10)
        self.assertIs(restored["m"].__self__, restored["s"])
        restored["add"](2)
        self.assertEqual(restored["items"], [1, 2])
        self.assertEqual(notices, [])

    def test_enumMembers(self) -> None:
        """
        Members of an enumeration defined in the session are the re-created
        enumeration's members.
        """
        session = Session().type("import enum")
        session.block(
            """
            class Color(enum.Enum):
                RED = 1
                BLUE = 2
            """
        )
        session.type("c = Color.BLUE")
        restored, notices = session.move()
        self.assertIs(restored["c"], restored["Color"].BLUE)
        self.assertEqual(notices, [])

    def test_classFeatures(self) -> None:
        """
        Decorated classes (a dataclass), abstract bases, class and static
        methods, properties, C{super()}, nested classes and coroutine
        functions are re-created with their behaviour.
        """
        session = Session().type("from dataclasses import dataclass", "import abc")
        session.block(
            """
            @dataclass
            class P:
                x: int
                y: int = 0
            """
        )
        session.block(
            """
            class Shape(abc.ABC):
                @abc.abstractmethod
                def area(self): ...
                @classmethod
                def make(cls): return cls()
                @staticmethod
                def unit(): return 1
                @property
                def double(self): return self.area() * 2
                class Inner:
                    def hi(self): return 'inner'
            """
        )
        session.block(
            """
            class Square(Shape):
                def area(self): return 4
            """
        )
        session.block(
            """
            class Bigger(Square):
                def area(self): return super().area() + 1
            """
        )
        session.block(
            """
            async def co():
                return 'co'
            """
        )
        session.type("p = P(1, 2)", "sq = Square.make()", "b = Bigger()", "inner = Shape.Inner()")
        restored, notices = session.move()
        self.assertEqual(restored["p"], restored["P"](1, 2))
        self.assertEqual(restored["sq"].double, 8)
        self.assertEqual(restored["Square"].unit(), 1)
        self.assertEqual(restored["b"].area(), 5)
        self.assertIsInstance(restored["b"], restored["Shape"])
        self.assertIsInstance(restored["inner"], restored["Shape"].Inner)
        self.assertEqual(restored["inner"].hi(), "inner")
        self.assertRaises(TypeError, restored["Shape"])
        coroutine = restored["co"]()
        self.assertRaises(StopIteration, coroutine.send, None)
        self.assertEqual(notices, [])

    def test_definitionFailing(self) -> None:
        """
        A definition that cannot be re-run (its decorator uses a value that
        refers back to the definition itself) is bound to a placeholder
        naming the error, and reported.
        """
        session = Session().block(
            """
            class Registry:
                def __init__(self): self.items = []
                def add(self, f):
                    self.items.append(f)
                    return f
            """
        )
        session.type("reg = Registry()", "@reg.add", "def job(): return 1", "")
        restored, notices = session.move()
        self.assertIsInstance(restored["job"], NotMoved)
        self.assertIn("could not be re-run here: NameError", repr(restored["job"]))
        self.assertEqual(len(notices), 1)
        self.assertIn("'job'", notices[0])

    def test_slottedInstance(self) -> None:
        """
        An instance of a session class that keeps state outside its
        C{__dict__} is not rebuilt half-empty: it is a placeholder.
        """
        session = Session().block(
            """
            class Pair:
                __slots__ = ('a', 'b')
            """
        )
        session.type("pair = Pair()", "pair.a = 1")
        restored, notices = session.move()
        self.assertIsInstance(restored["pair"], NotMoved)
        self.assertIn("outside its __dict__", notices[0])


class HistoryTests(SynchronousTestCase):
    """
    How the lines the user typed are grouped into blocks.
    """

    def test_halfEnteredBlock(self) -> None:
        """
        A block being typed (C{def h():} with its body unfinished) is not
        run: the state carries its lines as pending, and the restore
        reports it.
        """
        session = Session().type("def h():", "    return 1")
        self.assertEqual(session.manhole.interpreter.buffer, [b"def h():", b"    return 1"])
        state = session.capture()
        self.assertEqual(pendingLines(state), ["def h():", "    return 1"])
        restored, notices = restoreNamespace(state, _registry())
        self.assertNotIn("h", restored)
        self.assertEqual(notices, ["not run yet: the block being typed ('def h():', 2 lines)"])

    def test_halfEnteredBlockUnknownBuffer(self) -> None:
        """
        Without the interpreter's buffer, a block left open at the end of
        the history that made nothing in the namespace is taken as pending.
        """
        session = Session().type("x = 1", "def h():")
        state = session.capture(pending=None)
        self.assertEqual(pendingLines(state), ["def h():"])

    def test_lastBlockRanUnknownBuffer(self) -> None:
        """
        Without the interpreter's buffer, a definition left open at the end
        of the history (its closing empty line is not in history) that did
        make its object counts as run.
        """
        session = Session().type("def k(): return 1", "")
        state = session.capture(pending=None)
        self.assertEqual(pendingLines(state), [])
        restored, notices = restoreNamespace(state, _registry())
        self.assertEqual(restored["k"](), 1)
        self.assertEqual(notices, [])

    def test_noiseInHistory(self) -> None:
        """
        Lines in history that never ran (recalled with the up arrow but not
        entered, or refused by the compiler) do not hide the definitions
        around them.
        """
        session = Session().type("x = 1 +* 2", "x = 1")
        session.block(
            """
            def f():
                return 'f'
            """
        )
        session.type("y = 2")
        history = list(session.manhole.historyLines)
        history.insert(2, b"def never_entered(")
        history.insert(1, b"    indented(")
        state = captureNamespace(session.namespace, history, _registry(), pending=[])
        restored, notices = restoreNamespace(state, _registry())
        self.assertEqual(restored["f"](), "f")
        self.assertEqual(notices, [])

    def test_definitionNotInHistory(self) -> None:
        """
        A session function whose def is not in the history (the history
        given is incomplete) is a placeholder saying so.
        """
        session = Session().type("def f(): return 1", "")
        state = captureNamespace(session.namespace, [], _registry(), pending=[])
        restored, notices = restoreNamespace(state, _registry())
        self.assertIsInstance(restored["f"], NotMoved)
        self.assertIn("def statement was not found", notices[0])

    def test_unrelatedDefinitionSameName(self) -> None:
        """
        A name bound to a function that no block of that name made (a
        closure, assigned to the name) is not replaced by the source of an
        unrelated definition of the name.
        """
        session = Session().type("def f(): return 'block'", "")
        session.block(
            """
            def make():
                def inner(): return 'inner'
                return inner
            """
        )
        session.type("f = make()")
        restored, notices = session.move()
        self.assertIsInstance(restored["f"], NotMoved)
        self.assertIn("a nested function", notices[0])


class NotMovedTests(SynchronousTestCase):
    """
    What cannot move is bound to a placeholder that explains itself, and
    reported.
    """

    def test_unmovableValues(self) -> None:
        """
        An open file, a generator, a socket and a lambda each become a
        placeholder, with one notice naming the name, what it was and why.
        """
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.remove, path)
        session = Session().type(
            f"f = open({path!r})",
            "g = (i for i in range(3))",
            "import socket",
            "sock = socket.socket()",
            "sq = lambda v: v * v",
        )
        self.addCleanup(session.namespace["f"].close)
        self.addCleanup(session.namespace["sock"].close)
        restored, notices = session.move()
        expected = {
            "f": "files cannot move between processes",
            "g": "a generator",
            "sock": "a socket",
            "sq": "a lambda",
        }
        self.assertEqual(len(notices), len(expected))
        for (name, reason), notice in zip(expected.items(), notices, strict=True):
            placeholder = restored[name]
            self.assertIsInstance(placeholder, NotMoved)
            self.assertTrue(notice.startswith(f"not moved: {name!r} was "), notice)
            self.assertIn(reason, notice)
            self.assertIn(reason, repr(placeholder))
        self.assertIn(f"<not moved: 'f' was an open file (<_io.TextIOWrapper name={path!r}", repr(restored["f"]))

    def test_placeholderBehaviour(self) -> None:
        """
        Looking an attribute up, setting one or calling a placeholder raises
        L{NotMovedError} with the explanation; C{hasattr} answers C{False}.
        """
        session = Session().type("g = (i for i in range(3))")
        restored, _ = session.move()
        placeholder = restored["g"]
        error = self.assertRaises(NotMovedError, getattr, placeholder, "send")
        self.assertIn("'g' was a generator", str(error))
        self.assertIsInstance(error, AttributeError)
        self.assertRaises(NotMovedError, placeholder)
        self.assertRaises(NotMovedError, setattr, placeholder, "x", 1)
        self.assertFalse(hasattr(placeholder, "send"))
        self.assertEqual(str(placeholder), repr(placeholder))

    def test_nestedUnmovable(self) -> None:
        """
        Something that cannot move inside a value is replaced there, and
        the rest of the value moves; the notice says where it was.
        """
        session = Session().block(
            """
            class Holder:
                pass
            """
        )
        session.type("h = Holder()", "h.gen = (i for i in ())", "box = [1, {'k': h}]")
        restored, notices = session.move()
        self.assertEqual(restored["box"][0], 1)
        self.assertIs(restored["box"][1]["k"], restored["h"])
        self.assertIsInstance(restored["h"].gen, NotMoved)
        self.assertEqual(len(notices), 1)
        self.assertIn("'h.gen' was a generator", notices[0])

    def test_oneNoticePerName(self) -> None:
        """
        Many things that cannot move in one name make one notice, with an
        example and a count.
        """
        session = Session().type("gens = [(i for i in ()) for _ in range(50)]", "g = gens[0]")
        restored, notices = session.move()
        self.assertEqual(len(notices), 1)
        self.assertIn("'gens[0]' was a generator", notices[0])
        self.assertTrue(notices[0].endswith("(and 49 more in 'gens')"), notices[0])
        self.assertIs(restored["g"], restored["gens"][0])

    def test_movesAgain(self) -> None:
        """
        A placeholder moves on as the same placeholder at the next move.
        """
        session = Session().type("g = (i for i in range(3))")
        restored, notices = session.move()
        state = captureNamespace(restored, session.manhole.historyLines, _registry(), pending=[])
        again, againNotices = restoreNamespace(state, _registry())
        self.assertEqual(repr(again["g"]), repr(restored["g"]))
        self.assertEqual(againNotices, notices)

    def test_failingAdapter(self) -> None:
        """
        An object whose adapter fails makes its whole name a placeholder,
        without breaking the other names.
        """
        registry = _registry()
        registry.registerInstance(Stranger)

        class Slotted(Stranger):
            __slots__ = ("a",)

        registry.registerInstance(Slotted)
        session = Session({"Slotted": Slotted}).type("s = [Slotted()]", "ok = 1")
        restored, notices = session.move(registry, provided={"Slotted": Slotted}, restoreProvided={"Slotted": Slotted})
        self.assertIsInstance(restored["s"], NotMoved)
        self.assertEqual(restored["ok"], 1)
        self.assertIn("uses __slots__", notices[0])


class ProvidedTests(SynchronousTestCase):
    """
    What the service put in the namespace, and C{__builtins__}, are not
    carried: the successor provides its own.
    """

    def test_builtinsNotCarried(self) -> None:
        """
        C{__builtins__} (which running code adds) is not carried.
        """
        session = Session().type("x = 1")
        self.assertIn("__builtins__", session.namespace)
        state = session.capture()
        self.assertNotIn("__builtins__", _bound(state))
        restored, _ = restoreNamespace(state, _registry())
        self.assertIs(restored.get("__builtins__", __builtins__), __builtins__)

    def test_providedEntries(self) -> None:
        """
        Entries the service provided are not carried; references to them
        stand for the successor's entries; entries the user rebound are
        carried; entries the successor lacks are placeholders.
        """
        old, new = Service(), Service()
        provided: dict[str, Any] = {"service": old, "debug": True, "gone": Service()}
        session = Session(provided).type("keep = [service]", "debug = False")
        restored, notices = session.move(
            provided=provided, restoreProvided={"service": new, "debug": True}
        )
        self.assertIs(restored["service"], new)
        self.assertIs(restored["keep"][0], new)
        self.assertIs(restored["debug"], False)
        self.assertIsInstance(restored["gone"], NotMoved)
        self.assertEqual(
            notices,
            [
                "not moved: 'gone' was an entry the service provided: "
                "the new service provides nothing under that name"
            ],
        )

    def test_namespaceOrder(self) -> None:
        """
        The restored namespace lists the session's names in their original
        order (definitions run in another order).
        """
        session = Session().type("N = 1", "def f(n=N): return n", "", "a = 2")
        restored, _ = session.move()
        self.assertEqual(
            [n for n in restored if n != "__builtins__"],
            [n for n in session.namespace if n != "__builtins__"],
        )


class StateTests(SynchronousTestCase):
    """
    The state is checked when it is restored.
    """

    def test_otherFormat(self) -> None:
        """
        A state of another format (or no state at all) is refused.
        """
        self.assertRaises(GraphError, restoreNamespace, {"format": 99}, _registry())
        self.assertRaises(GraphError, restoreNamespace, [], _registry())

    def test_malformed(self) -> None:
        """
        Malformed steps and definitions raise L{GraphError}.
        """
        good = Session().type("def f(): return 1", "").capture()
        for steps in (
            [["nonsense", 1]],
            [["define", 7]],
            [["bind", ["x", ("x", "def", (0, 9, None))]]],
            [["bind", ["x", ("x", "unknown", None)]]],
            [["bind"]],
        ):
            state = dict(good, steps=steps)
            self.assertRaises(GraphError, restoreNamespace, state, _registry())

    def test_skippedKeys(self) -> None:
        """
        A namespace key that is not a string is reported, not carried.
        """
        session = Session().type("globals()[1] = 'one'")
        restored, notices = session.move()
        self.assertNotIn(1, restored)
        self.assertEqual(notices, ["not moved: the entry 1 (the namespace key is not a string)"])


# -- across interpreters --------------------------------------------------------

SCRIPT = [
    "import sys, os",
    'x = [1, 2, {"a": 3}]',
    "pair = [x, x]",
    'def greet(name): return "hello " + name',
    "",
    "class Point:",
    "    def __init__(self, x, y): self.x, self.y = x, y",
    "    def norm(self): return abs(self.x) + abs(self.y)",
    "",
    "p = Point(1, 2)",
    "def shout(f):",
    "    def wrapper(*a): return f(*a).upper()",
    "    return wrapper",
    "",
    "@shout",
    'def hello(name): return "hello " + name',
    "",
    "RATE = 3",
    "class Scaler:",
    "    def scale(self, v): return v * RATE",
    "",
    "s = Scaler()",
    "g = (i for i in range(3))",
    "z = 1 + 2j",
    "def h():",
]


def summary(namespace: dict[str, Any], notices: list[str]) -> dict[str, Any]:
    """
    What the cross-interpreter tests check of a namespace restored from
    L{SCRIPT}, as JSON-able data.
    """
    return {
        "python": "{}.{}".format(*sys.version_info[:2]),
        "sysIsMine": namespace["sys"] is sys,
        "osIsMine": namespace["os"] is os,
        "x": namespace["x"],
        "pairShared": namespace["pair"][0] is namespace["pair"][1] is namespace["x"],
        "greet": namespace["greet"]("you"),
        "isPoint": isinstance(namespace["p"], namespace["Point"]),
        "p": [namespace["p"].x, namespace["p"].y, namespace["p"].norm()],
        "hello": namespace["hello"]("you"),
        "scale": namespace["s"].scale(2),
        "z": [namespace["z"].real, namespace["z"].imag],
        "g": isinstance(namespace["g"], NotMoved),
        "h": "h" in namespace,
        "notices": notices,
    }


EXPECTED = {
    "sysIsMine": True,
    "osIsMine": True,
    "x": [1, 2, {"a": 3}],
    "pairShared": True,
    "greet": "hello you",
    "isPoint": True,
    "p": [1, 2, 3],
    "hello": "HELLO YOU",
    "scale": 6,
    "z": [1.0, 2.0],
    "g": True,
    "h": False,
}


def child() -> None:
    """
    The other interpreter's side: C{capture} types L{SCRIPT} into a session
    and writes its state (L{dumpsPlain}) to stdout; C{restore} reads a state
    from stdin and writes its L{summary} as JSON.
    """
    if sys.argv[1] == "capture":
        sys.stdout.buffer.write(dumpsPlain(Session().type(*SCRIPT).capture()))
    else:
        namespace, notices = restoreNamespace(loadsPlain(sys.stdin.buffer.read()), _registry())
        sys.stdout.write(json.dumps(summary(namespace, notices)))


_PROBE = "import sys, twisted, attrs, zope.interface; print('%d.%d' % sys.version_info[:2])"


@functools.lru_cache(maxsize=1)
def otherPython() -> tuple[str, str] | str:
    """
    Another Python interpreter able to import migrator's dependencies, from
    C{MIGRATOR_TEST_OTHER_PYTHON} or C{python3.N} on C{PATH}.

    @return: its path and version, or why there is none.
    """
    mine = "{}.{}".format(*sys.version_info[:2])

    def version(python: str) -> str | None:
        try:
            out = subprocess.run(
                [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None

    given = os.environ.get("MIGRATOR_TEST_OTHER_PYTHON")
    if given:
        found = version(given)
        if found is None:
            return f"MIGRATOR_TEST_OTHER_PYTHON={given} cannot import twisted, attrs and zope.interface"
        return given, found
    names = ["python3.13", "python3.11"] + [f"python3.{minor}" for minor in range(9, 20)]
    for name in dict.fromkeys(names):
        path = shutil.which(name)
        if path and name != f"python{mine}":
            found = version(path)
            if found and found != mine:
                return path, found
    return (
        "no second Python interpreter that can import twisted, attrs and zope.interface: "
        "set MIGRATOR_TEST_OTHER_PYTHON"
    )


class CrossInterpreterTests(SynchronousTestCase):
    """
    A namespace captured by one Python version is restored by another, in
    both directions.
    """

    def runChild(self, mode: str, data: bytes = b"") -> tuple[bytes, str]:
        other = otherPython()
        if isinstance(other, str):
            raise SkipTest(other)
        python, version = other
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = childEnvironment()
        env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        result = subprocess.run(
            [python, "-c", "from tests.test_namespace import child; child()", mode],
            input=data,
            capture_output=True,
            cwd=here,
            env=env,
            timeout=120,
        )
        if result.returncode:
            self.fail(f"{python} {mode} failed:\n{result.stderr.decode(errors='replace')}")
        return result.stdout, version

    def check(self, got: dict[str, Any], python: str) -> None:
        self.assertEqual(got["python"], python)
        self.assertEqual({k: got[k] for k in EXPECTED}, EXPECTED)
        self.assertEqual(len(got["notices"]), 2, got["notices"])
        self.assertIn("'g' was a generator", got["notices"][0])
        self.assertIn("def h():", got["notices"][1])

    def test_toOther(self) -> None:
        """
        Captured here, restored by the other interpreter: modules are its
        own, definitions re-run there, values equal.
        """
        state = Session().type(*SCRIPT).capture()
        out, version = self.runChild("restore", dumpsPlain(state))
        self.check(json.loads(out), version)

    def test_fromOther(self) -> None:
        """
        Captured by the other interpreter, restored here.
        """
        out, version = self.runChild("capture")
        namespace, notices = restoreNamespace(loadsPlain(out), _registry())
        self.assertIsInstance(namespace["p"], namespace["Point"])
        self.check(summary(namespace, notices), "{}.{}".format(*sys.version_info[:2]))

