# -*- test-case-name: tests.test_successor -*-
"""
What a process that talks to an incumbent (a successor taking over, a
staging process trying new code on a snapshot) tells its operator when
that fails: L{TakeoverFailed}, with what serves afterwards, and
L{describeFailure}, one line for whatever went wrong.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.python.failure import Failure
from twisted.spread import pb

from migrator.takeover._messages import MalformedMessage

#: What the operator is told when the incumbent is known to serve on.
KEEPS_SERVING = "the running service was not changed and keeps serving"


class TakeoverFailed(Exception):
    """
    The takeover did not happen; the message says why, for the operator.

    @ivar aftermath: what serves now, in words that never claim more than
        is known (e.g. L{KEEPS_SERVING}).
    """

    def __init__(self, message: str, aftermath: str = KEEPS_SERVING) -> None:
        Exception.__init__(self, message)
        self.aftermath = aftermath


def describeFailure(e: BaseException) -> str:
    """
    One line for the operator: what went wrong, in the incumbent's words
    when it refused.
    """
    if isinstance(e, CancelledError):
        return "the incumbent hung up (it gave up on this takeover)"
    if isinstance(e, (pb.PBConnectionLost, pb.DeadReferenceError)):
        return "the incumbent hung up"
    if isinstance(e, pb.RemoteError):
        # The message is the remote value; the traceback is withheld
        # ("Traceback unavailable") for pb.Error subclasses.
        return f"the incumbent refused: {e.args[0] if e.args else e.remoteType}"
    if isinstance(e, MalformedMessage):
        return f"the incumbent sent a malformed message: {e}"
    if isinstance(e, TimeoutError):
        return "timed out waiting for the incumbent"
    if isinstance(e, Failure):
        return e.getErrorMessage()
    text = str(e) or e.__class__.__name__
    if e.__class__.__module__ not in ("builtins", __name__):
        text = f"{e.__class__.__name__}: {text}"
    return text
