# -*- test-case-name: tests.test_versioned -*-
"""
Twisted's own convention: a L{twisted.persisted.styles.Versioned} class
moving under the default rule is captured as C{Versioned.__getstate__}
would, and upgraded by its own C{upgradeToVersionN} methods in the
successor, the way Twisted upgrades unpickled objects.
"""

from __future__ import annotations

from typing import Any

from twisted.persisted import styles
from twisted.trial.unittest import SynchronousTestCase

from migrator.state._graph import GraphError, GraphReader, GraphWriter, Unadaptable
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._roundtrip import roundTrip
from migrator.state._translator import Translator
from migrator.state._versions import Readable, Untranslatable, persistenceVersions, writeRoute

HERE = __name__


class Base(styles.Versioned):
    """
    The old code's base class, at persistence version 1.
    """

    persistenceVersion = 1


class Greeter(Base):
    """
    The old code's class: it counts C{lines}, and C{cache} is forgotten.
    """

    persistenceVersion = 1
    persistenceForgets = ("cache",)


class NewBase(styles.Versioned):
    """
    The new code's base class, at persistence version 2.
    """

    persistenceVersion = 2

    def upgradeToVersion2(self) -> None:
        self.order = [*getattr(self, "order", []), "base"]


class NewGreeter(NewBase):
    """
    The new code's class, at persistence version 3: C{lines} became
    C{total} (version 2), and it knows its peer's greeting (version 3,
    which needs the peer upgraded first).
    """

    persistenceVersion = 3

    def upgradeToVersion2(self) -> None:
        self.total = self.__dict__.pop("lines")
        self.order.append("greeter2")

    def upgradeToVersion3(self) -> None:
        self.order.append("greeter3")
        if self.peer is not None:
            styles.requireUpgrade(self.peer)
            self.peerTotal = self.peer.total


# The same classes, in new code: Twisted names a class's persistence
# version by its module and name, so the new code keeps them.
NewBase.__name__ = NewBase.__qualname__ = "Base"
NewGreeter.__name__ = NewGreeter.__qualname__ = "Greeter"


def registries() -> tuple[AdapterRegistry, AdapterRegistry]:
    old, new = AdapterRegistry(), AdapterRegistry()
    old.registerInstance(Greeter)
    new.register(InstanceAdapter(NewGreeter, typeName=f"{HERE}.Greeter"))
    return old, new


def greeter(lines: int, peer: Any = None) -> Greeter:
    g = Greeter()
    g.lines, g.cache, g.peer = lines, object(), peer
    return g


class VersionedTests(SynchronousTestCase):
    """
    Twisted's C{Versioned} under the default rule.
    """

    def test_capture(self) -> None:
        """
        The state is the instance dictionary as C{Versioned.__getstate__}
        makes it: each class's C{persistenceVersion} under its qualified
        name, C{persistenceForgets} left out.
        """
        old, _ = registries()
        g = greeter(3)
        state = old.adapterFor(Greeter).capture(g)
        self.assertEqual(state, g.__getstate__())
        self.assertEqual(
            state,
            {
                "lines": 3,
                "peer": None,
                f"{HERE}.Base.persistenceVersion": 1,
                f"{HERE}.Greeter.persistenceVersion": 1,
            },
        )
        self.assertEqual(
            persistenceVersions(NewGreeter),
            {f"{HERE}.Base": 2, f"{HERE}.Greeter": 3},
        )
        self.assertIsNone(persistenceVersions(int))

    def test_upgradedInTheSuccessor(self) -> None:
        """
        In the successor, the object's own C{upgradeToVersionN} methods
        run once the whole graph is populated, superclasses first, from
        the version written to the class's own; one may require another
        object upgraded first (C{styles.requireUpgrade}); the version keys
        are gone from the object afterwards.
        """
        old, new = registries()
        first = greeter(5)
        second = greeter(7, peer=first)
        a, b = roundTrip([second, first], old, restoreWith=new)
        self.assertIsInstance(a, NewGreeter)
        self.assertEqual(vars(b), {"total": 5, "peer": None, "order": ["base", "greeter2", "greeter3"]})
        self.assertEqual(
            vars(a),
            {"total": 7, "peer": b, "peerTotal": 5, "order": ["base", "greeter2", "greeter3"]},
        )
        self.assertEqual(styles.versionedsToUpgrade, {})

    def test_upgradeLog(self) -> None:
        """
        The reader's record names the upgrade methods that ran.
        """
        old, new = registries()
        node = GraphWriter(old.adapterFor).write(greeter(1))
        translator = Translator()
        reader = GraphReader(new.adapterNamed, translator=translator)
        reader.read(node)
        reader.finish()
        [record] = translator.log.asDict().values()
        self.assertEqual(
            record["steps"],
            {
                f"{HERE}.Base.upgradeToVersion2": 1,
                f"{HERE}.Greeter.upgradeToVersion2": 1,
                f"{HERE}.Greeter.upgradeToVersion3": 1,
            },
        )

    def test_noDowngrade(self) -> None:
        """
        C{Versioned} has no downgrades: an incumbent whose class is newer
        than the successor's cannot move its objects (the reason says
        which class), and a reader given a newer state refuses it rather
        than run Twisted's assertion.
        """
        old, new = registries()
        adapter = new.adapterFor(NewGreeter)
        theirs = Readable.of(old.adapterFor(Greeter))
        self.assertEqual(theirs.persistence, {f"{HERE}.Base": 1, f"{HERE}.Greeter": 1})
        newer = NewGreeter()
        newer.total, newer.peer = 1, None
        e = self.assertRaises(Unadaptable, roundTrip, [newer], new, restoreWith=old)
        self.assertIn(f"{HERE}.Base.persistenceVersion 2 -> 1: twisted.persisted.styles.Versioned has no downgrades", e.why)
        self.assertRaises(Untranslatable, writeRoute, adapter, theirs)
        node = GraphWriter(new.adapterFor).write(newer)
        reader = GraphReader(old.adapterNamed)
        reader.read(node)
        e2 = self.assertRaises(GraphError, reader.finish)
        self.assertIn("has no downgrades", str(e2))
        self.assertEqual(styles.versionedsToUpgrade, {})

    def test_failingUpgrade(self) -> None:
        """
        An upgrade method that raises fails the restore, naming the class.
        """

        class Broken(styles.Versioned):
            persistenceVersion = 2

            def upgradeToVersion2(self) -> None:
                raise ValueError("no")

        Broken.__name__ = Broken.__qualname__ = "Greeter"
        Broken.__module__ = HERE
        old, _ = registries()
        new = AdapterRegistry()
        new.register(InstanceAdapter(Broken, typeName=f"{HERE}.Greeter"))
        node = GraphWriter(old.adapterFor).write(greeter(1))
        reader = GraphReader(new.adapterNamed)
        reader.read(node)
        e = self.assertRaises(GraphError, reader.finish)
        self.assertIn("upgrading a tests.test_versioned.Greeter failed: ValueError: no", str(e))
        self.assertEqual((styles.versionedsToUpgrade, styles.upgraded), ({}, {}))

    def test_sameVersionRunsNothing(self) -> None:
        """
        Between processes running the same class, nothing is upgraded.
        """
        old, _ = registries()
        restored = roundTrip(greeter(2), old)
        self.assertEqual(vars(restored), {"lines": 2, "peer": None})
