# -*- test-case-name: tests.test_inspect -*-
"""
Tests for L{migrator.takeover._inspect}: the control session's read-only
C{plan} and C{graph} methods over a real PB broker pair in memory, and the
selection a successor sends in C{begin}'s info (C{select}), which the
incumbent's plan, refusal and capture honour.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from migrator.state._plan import NOT_SELECTED
from migrator.state._summary import connectionId
from migrator.takeover._control import ControlClientFactory, ControlServerFactory
from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._inspect import BadRequest, inspectPlan
from migrator.takeover._messages import BeginRequest, PreparedReport, ReceivedReport
from migrator.takeover._session import ControlRoot
from migrator.takeover._unmovable import beginInfo
from tests._fakes import FakePeerPolicy, FakeSession, connectControl
from tests.test_incumbent import ECHO, KEYS, SUCCESSOR, ChannelReader, IncumbentTestMixin


class QueriesTests(IncumbentTestMixin, SynchronousTestCase):
    """
    C{plan} and C{graph} over PB.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = ControlRoot(lambda: {}, self.incumbent)
        clientFactory = ControlClientFactory(FakePeerPolicy())
        self.client, _, self.pump = connectControl(
            ControlServerFactory(self.root, FakePeerPolicy()), clientFactory, self.reactor
        )
        self.addCleanup(self.disconnect)
        d = clientFactory.getRootObject()
        self.pump.flush()
        self.remote = self.successResultOf(d)
        self.protocols = [self.connection()[0], self.connection()[0]]

    def disconnect(self) -> None:
        self.client.transport.loseConnection()
        self.pump.flush()

    def call(self, method: str, *args: Any) -> Any:
        d = self.remote.callRemote(method, *args)
        self.pump.flush()
        return d

    def test_plan(self) -> None:
        """
        C{plan} answers the plan under a policy, per port (every port, with
        its address) and class, each connection with its unsent bytes.
        Nothing started (the last dry run is C{status}'s, not the plan's).
        """
        plan = self.successResultOf(self.call("plan", "drain"))
        self.assertEqual(
            (plan["policy"], plan["move"], plan["takeover_refused"]), ("drain", 2, False)
        )
        self.assertEqual([p["key"] for p in plan["ports"]], sorted([*KEYS, "(no port)"]))
        [noPort] = [p for p in plan["ports"] if p["key"] == "(no port)"]
        self.assertEqual([(c["class"], c["move"]) for c in noPort["classes"]], [(ECHO, 2)])
        record = plan["connections"][connectionId(self.protocols[0].transport)]
        # The fake registry does not know when a connection arrived.
        self.assertEqual((record["outcome"], record["age"], record["pending"]), ("move", None, 0))
        self.assertNotIn("dry_run", plan)
        self.assertIsNone(self.incumbent.current)

    def test_planSelection(self) -> None:
        """
        C{plan} with a selection: the unselected connection is refused
        under the default policy.
        """
        chosen = connectionId(self.protocols[0].transport)
        plan = self.successResultOf(self.call("plan", "refuse", [chosen]))
        self.assertTrue(plan["takeover_refused"])
        self.assertEqual(plan["selection"]["selected"], 1)
        other = plan["connections"][connectionId(self.protocols[1].transport)]
        self.assertEqual((other["outcome"], other["reason"]), ("refused", NOT_SELECTED))

    def test_graph(self) -> None:
        """
        C{graph} answers the components (each connection its own here) with
        their nodes, and expands one on demand.
        """
        graph = self.successResultOf(self.call("graph"))
        self.assertEqual(graph["connections"], 2)
        self.assertEqual([c["connections"] for c in graph["components"]], [1, 1])
        kinds = sorted(n["kind"] for n in graph["nodes"])
        self.assertEqual(kinds.count("connection"), 2)
        last = graph["components"][-1]["id"]
        expanded = self.successResultOf(self.call("graph", [last], 10))
        self.assertEqual([c["id"] for c in expanded["components"] if c["expanded"]], [last])

    def test_badArguments(self) -> None:
        """
        An unknown policy, a selection that is not a list of ids, or a node
        bound out of range is refused with a one-line reason.
        """
        for method, args, message in [
            ("plan", ("bogus",), "policy must be one of"),
            ("plan", ("drain", "c1"), "select must be a list"),
            ("plan", ("drain", [1, 2]), "select must hold connection or component ids"),
            ("graph", (None, 10**9), "maxNodes must be an integer"),
            ("graph", ("k1",), "expand must be a list"),
        ]:
            failure = self.failureResultOf(self.call(method, *args))
            self.assertIn(message, failure.getErrorMessage(), f"{method}{args}")
            self.assertIn("BadRequest", str(failure.type))

    def test_notServing(self) -> None:
        """
        Before the process serves, C{plan} is refused.
        """
        self.root.incumbent = None
        failure = self.failureResultOf(self.call("plan", "drain"))
        self.assertIn("not serving yet", failure.getErrorMessage())


class BeginSelectionTests(IncumbentTestMixin, SynchronousTestCase):
    """
    A successor's C{select} in C{begin}'s info.
    """

    def begin(self, session: FakeSession, policy: str, select: list[str]) -> ChannelReader:
        info = dict(SUCCESSOR, **beginInfo(self.adapters, policy, select))
        self.incumbent.begin(session, BeginRequest.fromWire(info))
        [channelFd] = session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        _, fds = reader.next()
        self.ownFds(fds)
        self.incumbent.received(session, ReceivedReport(len(fds)))
        self.incumbent.prepared(session, PreparedReport(len(fds), len(fds)))
        return reader

    def test_beginInfo(self) -> None:
        """
        C{select} is sent only when given.
        """
        self.assertNotIn("select", beginInfo(self.adapters, "drain"))
        self.assertEqual(beginInfo(self.adapters, "drain", ["c1"])["select"], ["c1"])

    def test_onlySelectedMove(self) -> None:
        """
        With C{drain}, only the selected connection is captured; the other
        stays, counted as not selected.
        """
        a, _ = self.connection()
        b, _ = self.connection()
        session = self.session()
        reader = self.begin(session, "drain", [connectionId(a.transport)])
        planned = self.incumbent.unmovable.planned
        assert planned is not None
        self.assertEqual(planned.byClass("unknown"), {ECHO: 1})
        answer, _, fds = self.capture(session, reader)
        self.assertEqual(answer.connections, 1)
        self.assertEqual(answer.staying, {f"{ECHO}: {NOT_SELECTED}": 1})
        self.assertIn(b.transport, self.reactor.getReaders())

    def test_refusedWhenUnselected(self) -> None:
        """
        With C{refuse}, leaving a movable connection out refuses the
        takeover at C{begin}, saying it was not selected.
        """
        a, _ = self.connection()
        self.connection()
        info = dict(SUCCESSOR, **beginInfo(self.adapters, "refuse", [connectionId(a.transport)]))
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.begin, self.session(), BeginRequest.fromWire(info)
        )
        self.assertIn("not selected to move", str(e))


class InspectTests(SynchronousTestCase):
    """
    L{inspectPlan} directly.
    """

    def test_policy(self) -> None:
        """
        The policy is checked before anything is walked.
        """
        self.assertRaises(BadRequest, inspectPlan, None, None, lambda: 0.0, "maybe")  # type: ignore[arg-type]
