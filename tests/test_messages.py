# -*- test-case-name: tests.test_messages -*-
"""
Tests for L{migrator.takeover._messages}: every record survives the trip to
plain data and back, and a malformed message is a L{MalformedMessage} with
a one-line reason, never a C{KeyError} or C{TypeError}.
"""

from __future__ import annotations

from typing import Any

from twisted.spread import jelly
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._control import controlSecurity
from migrator.takeover._messages import (
    BeginAnswer,
    BeginRequest,
    CaptureReport,
    CaptureRequest,
    CommitAnswer,
    MalformedMessage,
    PortsMessage,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
    SwitchAnswer,
)

RECORDS: list[Any] = [
    BeginRequest(4242, "3.13.0", ("twistd", "-n")),
    BeginAnswer(100, 4, "3.11.7", 2),
    ReceivedReport(2),
    PreparedReport(2, 1, ("unix:/run/x#0",)),
    CaptureRequest(("a.B",), {"a.B": 1}),
    CaptureRequest(("a.B",)),
    CaptureReport(1, 300, {"a.B": 1}, {"c.D: no adapter": 2}, 1000.5),
    RestoredReport(1),
    SwitchAnswer(2),
    CommitAnswer(5, ("tcp:8080:#0",), 1, 0.25),
]


class MessagesTests(SynchronousTestCase):
    """
    Tests for the takeover's message records.
    """

    def test_roundTrip(self) -> None:
        """
        C{fromWire(toWire())} gives back an equal record, and the wire form
        passes the control socket's jelly allow-list (basic types only).
        """
        security = controlSecurity()
        for record in RECORDS:
            wire = record.toWire()
            again = jelly.unjelly(jelly.jelly(wire, security), security)
            self.assertEqual(type(record).fromWire(again), record)

    def test_portsMessage(self) -> None:
        """
        The ports message travels as JSON on the frame channel and comes
        back equal.
        """
        message = PortsMessage(({"key": "tcp:0:#0", "kind": "tcp"},))
        self.assertEqual(PortsMessage.fromBytes(message.toBytes()), message)

    def test_unknownFieldsIgnoredDefaultsFilled(self) -> None:
        """
        Fields a record does not know are ignored, and optional ones
        missing (or C{None}) take their defaults, so that a later version
        may add fields.
        """
        self.assertEqual(
            PreparedReport.fromWire({"received": 2, "future": [1], "unclaimed": None}),
            PreparedReport(2),
        )
        self.assertEqual(CommitAnswer.fromWire({"generation": 5}), CommitAnswer(5))

    def test_malformed(self) -> None:
        """
        A wire value that is not a dictionary, lacks a required field, or
        has one of the wrong type (a boolean is not a count) is refused
        with a message naming the message and the field.
        """
        cases: list[tuple[Any, Any, str]] = [
            (BeginRequest, None, "begin: expected a dictionary, got NoneType"),
            (BeginRequest, {"pid": 1.5}, "begin: pid must be an integer, not float"),
            (BeginAnswer, {"pid": 1, "generation": 0}, "begin's answer: ports is missing"),
            (ReceivedReport, {"ports": True}, "received: ports must be an integer, not bool"),
            (
                PreparedReport,
                {"received": 1, "unclaimed": [1]},
                "prepared: unclaimed must be a list of strings, not list",
            ),
            (
                CaptureRequest,
                {"types": [], "versions": {"a": "1"}},
                "capture: versions must be a dictionary of names to counts, not dict",
            ),
            (
                CaptureReport,
                {"connections": 1, "frozen_at": "now"},
                "capture's answer: frozen_at must be a number, not str",
            ),
            (RestoredReport, {}, "restored: connections is missing"),
            (CommitAnswer, {"generation": 5, "released": "all"},
             "commit's answer: released must be a list of strings, not str"),
        ]
        for cls, wire, reason in cases:
            e = self.assertRaises(MalformedMessage, cls.fromWire, wire)
            self.assertEqual(str(e), reason)

    def test_malformedPorts(self) -> None:
        """
        A ports message that is not JSON, not of type C{ports}, or whose
        records have no key, is malformed.
        """
        for payload, reason in [
            (b"\xff", "ports message: not JSON"),
            (b'{"type": "state", "ports": []}', "ports message: unexpected type 'state'"),
            (b'{"type": "ports", "ports": [{}]}', "ports message: ports must be a list of records"),
        ]:
            e = self.assertRaises(MalformedMessage, PortsMessage.fromBytes, payload)
            self.assertTrue(str(e).startswith(reason), str(e))
