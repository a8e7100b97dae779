# -*- test-case-name: tests.test_translatedconnections -*-
"""
Tests for versions across L{migrator.state._capture.captureConnections} and
L{migrator.state._restore.restoreConnections}: the newer side translates
(the incumbent downgrades, the successor upgrades), an object no chain of
steps reaches stays with the reason, the fields kept aside live beside the
successor's objects, and both sides say what they translated.

Same set-up as L{tests.test_connections}: two sides in this process, real
sockets, memory reactors.
"""

from __future__ import annotations

from typing import Any

from migrator.state._capture import Captured, captureConnections
from migrator.state._registry import AdapterRegistry, InstanceAdapter, factoryAdapter
from migrator.state._versions import KEPT, readableFrom, readableTypes
from tests.test_connections import _KEY, Numbered, Room, _Sides

NUMBERED = f"{Numbered.__module__}.Numbered"
ROOM = f"{Room.__module__}.Room"


def upNumbered(state: dict[str, Any]) -> dict[str, Any]:
    state["seen"] = state.pop("count")
    state["firstSeen"] = None
    return state


def downNumbered(state: dict[str, Any]) -> dict[str, Any]:
    state["count"] = state.pop("seen")
    del state["firstSeen"]
    return state


def registry(version: int, roomVersion: int = 1, roomSteps: bool = True) -> AdapterRegistry:
    """
    A registry for L{Numbered} at C{version} (2: C{count} renamed C{seen},
    C{firstSeen} new) and L{Room} at C{roomVersion} (2: C{v2Lines} new).
    """
    result = AdapterRegistry()
    steps = {"upgrades": {1: upNumbered}, "downgrades": {1: downNumbered}} if version == 2 else {}
    result.register(InstanceAdapter(Numbered, version=version, **steps))
    roomSteps_: dict[str, Any] = {}
    if roomVersion == 2 and roomSteps:
        roomSteps_ = {
            "upgrades": {1: lambda s: {**s, "v2Lines": 0}},
            "downgrades": {1: lambda s: {k: v for k, v in s.items() if k != "v2Lines"}},
        }
    result.register(factoryAdapter(Room, keep=("greeting",), version=roomVersion, **roomSteps_))
    return result


class TranslatedConnectionTests(_Sides):
    """
    Connections move between processes whose adapters have other versions.
    """

    def captureFor(self) -> Captured:
        """
        Capture as the incumbent does for a successor with L{adapters2}:
        what it reads of each type name comes with the request.
        """
        return captureConnections(
            self.reactor,
            self.ports,
            self.adapters,
            frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()),
            readableFrom({"readable": readableTypes(self.adapters2)}),
        )

    def test_successorUpgrades(self) -> None:
        """
        The successor, newer, upgrades after reading: the restored
        protocol has its new fields; the incumbent translated nothing; the
        successor's record says the version seen and the step run.
        """
        self.adapters, self.adapters2 = registry(1), registry(2)
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\ntwo\r\n")
        captured = self.captureFor()
        self.assertEqual((captured.count, captured.translations), (1, {}))
        restored = self.restore(captured)
        [t] = restored.transports
        self.assertEqual((t.protocol.seen, t.protocol.firstSeen), (2, None))
        self.assertNotIn("count", vars(t.protocol))
        self.assertEqual(restored.translations[NUMBERED]["steps"], {"up 1->2": 1})
        self.assertEqual(restored.translations[NUMBERED]["versions"], [1, 2])
        self.assertEqual(restored.translations[ROOM], {"versions": [1], "objects": 1, "translated": 0, "steps": {}, "ms": 0.0})

    def test_incumbentDowngrades(self) -> None:
        """
        The incumbent, newer, downgrades before writing; the successor
        reads its own version, and keeps the fields it does not know
        beside the restored objects (not on them), for its next takeover.
        """
        self.adapters, self.adapters2 = registry(2, 2), registry(1, 1)
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\n")
        p.seen, p.firstSeen = p.__dict__.pop("count"), 7
        self.factory.v2Lines = 5
        captured = self.captureFor()
        self.assertEqual(captured.count, 1)
        self.assertEqual(captured.translations[NUMBERED]["steps"], {"down 2->1": 1})
        self.assertEqual(captured.translations[ROOM]["steps"], {"down 2->1": 1})
        restored = self.restore(captured)
        [t] = restored.transports
        r = t.protocol
        self.assertEqual(r.count, 1)
        self.assertNotIn("firstSeen", vars(r))
        self.assertNotIn(KEPT, vars(r))
        self.assertNotIn("v2Lines", vars(self.factory2))
        self.assertEqual(self.adapters2.kept.get(r), {2: {"values": {"firstSeen": 7}, "bases": {"firstSeen": None}}})
        self.assertEqual(self.adapters2.kept.get(self.factory2), {2: {"values": {"v2Lines": 5}, "bases": {"v2Lines": 0}}})

    def test_noChainStays(self) -> None:
        """
        A protocol no chain of steps takes to the successor's version stays,
        saying why; so does one whose factory's state cannot get there.
        """
        self.adapters, self.adapters2 = registry(2), AdapterRegistry()
        self.adapters2.register(InstanceAdapter(Numbered, version=3))
        self.adapters2.register(factoryAdapter(Room, keep=("greeting",)))
        self.accept()
        captured = self.captureFor()
        self.assertEqual(captured.count, 0)
        self.assertEqual(
            captured.staying,
            {f"{NUMBERED}: version 2 -> 3: no upgrade from 2 in the successor": 1},
        )
        self.adapters, self.adapters2 = registry(1, 2, roomSteps=False), registry(1, 1)
        captured = self.captureFor()
        self.assertEqual(captured.count, 0)
        [reason] = captured.staying
        self.assertIn(f"['factory']: {ROOM}: version 2 -> 1: no downgrade from 2", reason)
