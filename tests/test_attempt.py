# -*- test-case-name: tests.test_attempt -*-
"""
L{migrator.takeover._attempt.Attempt}: closing its channel.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._attempt import Attempt
from migrator.takeover._messages import BeginRequest


class _StuckChannel:
    """
    A frame channel whose messages never leave: closing it fails the
    ones still queued (as L{migrator.takeover._channel.FrameChannel}
    does).
    """

    def __init__(self) -> None:
        self.queued: list[Deferred[None]] = []
        self.closes = 0

    def sendMessage(self, payload: bytes, fds: Any = ()) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.queued.append(d)
        return d

    def close(self) -> None:
        self.closes += 1
        queued, self.queued = self.queued, []
        for d in queued:
            d.errback(ConnectionError("the channel closed"))


class CloseTests(SynchronousTestCase):
    """
    L{Attempt.close} with a farewell.
    """

    def test_farewellStuckPastTheBound(self) -> None:
        """
        A farewell still queued when the bound expires: the channel is
        closed once (which fails the queued send) and the close fires
        once.
        """
        reactor = MemoryReactorClock()
        attempt = Attempt(
            session=object(),
            successorPid=4242,
            request=BeginRequest.fromWire({"pid": 4242, "python": "3.13.0"}),
            startedAt=0.0,
        )
        channel = _StuckChannel()
        attempt.channel = channel  # type: ignore[assignment]
        closed = attempt.close(reactor, b"farewell", bound=5.0)
        self.assertNoResult(closed)
        reactor.advance(5.0)
        self.assertIsNone(self.successResultOf(closed))
        self.assertEqual(channel.closes, 1)
        self.assertEqual(reactor.getDelayedCalls(), [])
