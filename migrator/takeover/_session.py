# -*- test-case-name: tests.test_incumbent -*-
"""
The incumbent's Perspective Broker face: the root of its control socket
(L{ControlRoot}) and one L{ControlSession} per connection.

This is the PB boundary: each C{remote_*} method checks the plain
dictionary that arrived and turns it into its typed record
(L{migrator.takeover._messages}), calls the L{Incumbent}'s step, and turns
the step's record back into a plain dictionary.  A malformed message is
refused with a one-line reason (and abandons the sender's takeover), never
answered with a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.spread import pb
from zope.interface import implementer

from migrator.takeover._inspect import OperatorQueries
from migrator.takeover._messages import (
    BeginRequest,
    CaptureReport,
    CaptureRequest,
    MalformedMessage,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
)
from migrator.takeover._refused import TakeoverRefused

if TYPE_CHECKING:
    from migrator.takeover._dryrun import DryRuns
    from migrator.takeover._incumbent import Incumbent

_R = TypeVar("_R")


@implementer(pb.IPBRoot)
@attrs.define(eq=False)
class ControlRoot:
    """
    The PB root of a control socket: each connection gets its own
    L{ControlSession}.

    @ivar status: returns the status record.
    @ivar incumbent: answers takeover steps, once this process serves.
    @ivar dryRuns: answers dry runs, once made by C{makeDryRuns} (when
        the first is asked for: its machinery is milliseconds of a
        process's start that most never use).
    @ivar makeDryRuns: makes C{dryRuns}, once this process serves.
    """

    status: Callable[[], dict[str, Any]]
    incumbent: Incumbent | None = None
    dryRuns: DryRuns | None = None
    makeDryRuns: Callable[[], DryRuns] | None = None

    def rootObject(self, broker: Any) -> ControlSession:
        """
        @param broker: the new connection's broker.
        @return: its session.
        """
        session = ControlSession(self, broker)
        broker.notifyOnDisconnect(session.disconnected)
        return session


class ControlSession(pb.Referenceable, OperatorQueries):
    """
    One peer's conversation with a control socket.
    """

    def __init__(self, root: ControlRoot, broker: Any) -> None:
        self._root = root
        self._broker = broker

    def _incumbent(self) -> Incumbent:
        if self._root.incumbent is None:
            raise TakeoverRefused("this process is not serving yet")
        return self._root.incumbent

    def _read(self, parse: Callable[[object], _R], wire: object, step: str) -> _R:
        """
        Check a message that arrived.

        @raise TakeoverRefused: if it is malformed (and then this session's
            takeover, if any, is abandoned).
        """
        try:
            return parse(wire)
        except MalformedMessage as e:
            self._incumbent().abort(f"malformed message at {step}: {e}", self)
            raise TakeoverRefused(f"malformed message: {e}") from None

    def sendFileDescriptor(self, fd: int) -> None:
        """
        Send C{fd} with the next bytes of this connection.
        """
        self._broker.transport.sendFileDescriptor(fd)

    def hangUp(self) -> None:
        """
        Close this connection.
        """
        self._broker.transport.loseConnection()

    def disconnected(self) -> None:
        """
        The peer is gone: abandon its takeover if it had one in progress,
        or note that the committed successor has hung up.
        """
        incumbent = self._root.incumbent
        if incumbent is not None:
            incumbent.detached(self)
        if self._root.dryRuns is not None:
            self._root.dryRuns.detached(self)

    def remote_status(self) -> dict[str, Any]:
        """
        @return: the status record (what C{python -m migrator status} shows).
        """
        return self._root.status()

    def remote_begin(self, request: object) -> dict[str, Any]:
        """
        Start a takeover (L{Incumbent.begin}).

        @param request: a L{BeginRequest} on the wire.
        @return: a L{migrator.takeover._messages.BeginAnswer} on the wire;
            the frame channel's descriptor rides with it.
        @raise TakeoverRefused: if the request is malformed or refused.
        """
        incumbent = self._incumbent()
        try:
            begin = BeginRequest.fromWire(request)
        except MalformedMessage as e:
            raise TakeoverRefused(f"malformed message: {e}") from None
        return incumbent.begin(self, begin).toWire()

    def remote_received(self, report: object) -> None:
        """
        The handshake's end (L{Incumbent.received}).

        @param report: a L{ReceivedReport} on the wire.
        @raise TakeoverRefused: if it is malformed, out of order or wrong.
        """
        incumbent = self._incumbent()
        incumbent.received(self, self._read(ReceivedReport.fromWire, report, "received"))

    def remote_prepared(self, report: object) -> None:
        """
        The successor's service runs (L{Incumbent.prepared}).

        @param report: a L{PreparedReport} on the wire.
        @raise TakeoverRefused: if it is malformed, out of order or wrong.
        """
        incumbent = self._incumbent()
        incumbent.prepared(self, self._read(PreparedReport.fromWire, report, "prepared"))

    def remote_capture(self, request: object) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        Freeze and send the connections (L{Incumbent.capture}).

        @param request: a L{CaptureRequest} on the wire.
        @return: a L{CaptureReport} on the wire, or a L{Deferred} firing
            with it.
        @raise TakeoverRefused: if it is malformed, out of order, or the
            capture fails.
        """
        incumbent = self._incumbent()
        result = incumbent.capture(self, self._read(CaptureRequest.fromWire, request, "capture"))
        if isinstance(result, CaptureReport):
            return result.toWire()
        return result.addCallback(CaptureReport.toWire)

    def remote_batchRestored(self, number: object) -> None:
        """
        A batch of a stream is restored (L{Incumbent.batchRestored}); not a
        step: the stream's last turn waits for the successor to catch up.

        @param number: the batch's number.
        """
        if type(number) is int:
            self._incumbent().batchRestored(self, number)

    def remote_restored(self, report: object) -> None:
        """
        The connections are restored (L{Incumbent.restored}).

        @param report: a L{RestoredReport} on the wire.
        @raise TakeoverRefused: if it is malformed, out of order or wrong.
        """
        incumbent = self._incumbent()
        incumbent.restored(self, self._read(RestoredReport.fromWire, report, "restored"))

    def remote_switch(self) -> dict[str, Any]:
        """
        Stop accepting (L{Incumbent.switch}).

        @return: a L{migrator.takeover._messages.SwitchAnswer} on the wire.
        @raise TakeoverRefused: if out of order.
        """
        return self._incumbent().switch(self).toWire()

    def remote_commit(self) -> dict[str, Any]:
        """
        Let go (L{Incumbent.commit}).

        @return: a L{migrator.takeover._messages.CommitAnswer} on the wire.
        @raise TakeoverRefused: if out of order.
        """
        return self._incumbent().commit(self).toWire()

    def remote_abort(self, reason: object) -> None:
        """
        The successor gives up (L{Incumbent.abort}).

        @param reason: why (its first 500 characters are logged).
        """
        self._incumbent().abort(f"the successor gave up: {str(reason)[:500]}", self)

    def _dryRuns(self) -> DryRuns:
        root = self._root
        if root.dryRuns is None and root.makeDryRuns is not None:
            root.dryRuns = root.makeDryRuns()
        if root.dryRuns is None:
            raise TakeoverRefused("this process is not serving yet")
        return root.dryRuns

    def remote_dryRun(self, request: object) -> dict[str, Any]:
        """
        Take a snapshot for a dry run (L{DryRuns.snapshot}).

        @param request: a L{DryRunRequest} on the wire.
        @return: a L{migrator.takeover._dryrun.DryRunAnswer} on the wire;
            the snapshot's channel descriptor rides with it.
        @raise TakeoverRefused: if the request is malformed or refused.
        """
        from migrator.takeover._dryrun import DryRunRequest

        dryRuns = self._dryRuns()
        try:
            parsed = DryRunRequest.fromWire(request)
        except MalformedMessage as e:
            raise TakeoverRefused(f"malformed message: {e}") from None
        return dryRuns.snapshot(self, parsed).toWire()

    def remote_dryRunDone(self, result: object) -> None:
        """
        The staging process reports what it found (L{DryRuns.done}).

        @param result: a L{DryRunResult} on the wire.
        @raise TakeoverRefused: if it is malformed or unexpected.
        """
        from migrator.takeover._dryrun import DryRunResult

        dryRuns = self._dryRuns()
        try:
            parsed = DryRunResult.fromWire(result)
        except MalformedMessage as e:
            raise TakeoverRefused(f"malformed message: {e}") from None
        dryRuns.done(self, parsed)
