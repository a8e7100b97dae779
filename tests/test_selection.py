# -*- test-case-name: tests.test_selection -*-
"""
Choosing what moves, with real transports (socket pairs and a loopback
port, as in L{tests.test_connections}): the capture honours a selection
(the unselected connections stay, and so does a selected one whose graph
reaches one of them, or everything if a port's factory's state does), and
the plan of L{migrator.state._report} says so before anything runs.
"""

from __future__ import annotations

from typing import Any

from migrator.state._plan import DRAIN, NOT_SELECTED
from migrator.state._report import planReport
from migrator.state._summary import connectionId, describeConnection, summarizeGraph
from tests.test_connections import _KEY, Loner, Numbered, _Sides


class SelectionTests(_Sides):
    """
    L{migrator.state._capture.captureConnections} with C{selected}, and the
    plan of the same selection.
    """

    def captureOnly(self, *transports: Any) -> Any:
        chosen = {id(t) for t in transports}
        return self._captureWith(lambda t: id(t) in chosen)

    def _captureWith(self, selected: Any) -> Any:
        from migrator.state._capture import captureConnections

        captured = captureConnections(
            self.reactor,
            self.ports,
            self.adapters,
            frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()),
            selected=selected,
        )
        self.addCleanup(captured.thaw)
        return captured

    def plan(self, selection: list[str]) -> dict[str, Any]:
        transports = list(self.ports.openConnections())
        anchors = {id(self.factory): (f"factory:{_KEY}", self.factory)}
        graph = summarizeGraph(transports, self.adapters, anchors)
        return planReport(graph, self.adapters, DRAIN, self.ports.keyOf, selection, anchors)

    def test_unselectedStay(self) -> None:
        """
        Of two connections, only the selected one is captured; the other
        stays (still reading), counted as not selected.  The plan said so.
        """
        a, b = Loner(), Loner()
        self.pair(a)
        self.pair(b)
        report = self.plan([connectionId(a.transport)])
        self.assertEqual(report["connections"][connectionId(b.transport)]["reason"], NOT_SELECTED)
        self.assertEqual(report["move"], 1)
        captured = self.captureOnly(a.transport)
        self.assertEqual(captured.transports, [a.transport])
        self.assertEqual(captured.staying, {f"{Loner.__module__}.Loner: {NOT_SELECTED}": 1})
        self.assertIn(b.transport, self.reactor.getReaders())

    def test_reachingUnselectedKeptBack(self) -> None:
        """
        A selected connection whose protocol holds an unselected one's is
        kept back by the capture (carrying it would move the other); the
        plan predicted it.
        """
        a, b = Loner(), Loner()
        self.pair(a)
        self.pair(b)
        a.friend = b
        report = self.plan([connectionId(a.transport)])
        predicted = report["connections"][connectionId(a.transport)]
        self.assertEqual(predicted["outcome"], "drain")
        self.assertIn(f"connection {connectionId(b.transport)}, which stays", predicted["reason"])
        self.assertEqual(report["selection"]["kept_back"], 1)
        captured = self.captureOnly(a.transport)
        self.assertEqual(captured.count, 0)
        self.assertEqual(len(captured.staying), 2, captured.staying)
        self.assertTrue(
            any(f"a connection {NOT_SELECTED}" in r for r in captured.staying), captured.staying
        )

    def test_factoryStateBlocks(self) -> None:
        """
        Two connections of a port whose factory lists every client: with
        one selected, the factory's state reaches the other, so nothing
        moves; the plan says which factory.
        """
        first, _ = self.accept()
        second, _ = self.accept()
        report = self.plan([connectionId(first.transport)])
        self.assertEqual(report["move"], 0)
        self.assertIn(f"the state of factory:{_KEY} reaches", report["selection"]["blocked"])
        captured = self.captureOnly(first.transport)
        self.assertEqual(captured.count, 0)
        self.assertTrue(
            any("its factory's state cannot move" in r for r in captured.staying), captured.staying
        )
        self.assertIn(second.transport, self.reactor.getReaders())

    def test_wholeComponentMoves(self) -> None:
        """
        Selecting the component of the accepted connections moves them all
        (and the loner outside it stays).
        """
        first, _ = self.accept()
        second, _ = self.accept()
        loner = Loner()
        self.pair(loner)
        transports = list(self.ports.openConnections())
        anchors = {id(self.factory): (f"factory:{_KEY}", self.factory)}
        graph = summarizeGraph(transports, self.adapters, anchors)
        component = graph.componentOf[transports.index(first.transport)]
        self.assertIn(transports.index(second.transport), component.connections)
        report = planReport(
            graph, self.adapters, DRAIN, self.ports.keyOf, [component.ident], anchors
        )
        self.assertEqual((report["move"], report["drain"]), (2, 1))
        self.assertEqual(report["selection"]["split_points"], [])
        chosen = {id(first.transport), id(second.transport)}
        captured = self._captureWith(lambda t: id(t) in chosen)
        self.assertEqual(sorted(map(id, captured.transports)), sorted(chosen))

    def test_describeReal(self) -> None:
        """
        A real accepted connection: its port key, its peer, its age in this
        process (by the reactor's clock) and its unsent bytes.
        """
        self.reactor.advance(5)
        protocol, client = self.accept()
        self.reactor.advance(2.5)
        record = describeConnection(
            protocol.transport,
            self.ports.keyOf,
            self.ports.connectedAt,
            self.reactor.seconds(),
            lambda t: len(t.dataBuffer),
        )
        host, port = client.getsockname()
        self.assertEqual(
            record,
            {
                "id": f"c{protocol.transport.fileno()}.{port}",
                "port": _KEY,
                "peer": f"{host}:{port}",
                "age": 2.5,
                "pending": 0,
            },
        )
        self.assertIsInstance(protocol, Numbered)
