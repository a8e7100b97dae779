# -*- test-case-name: tests.test_incumbent -*-
"""
L{TakeoverRefused}: a module of its own, so that the control root
(L{migrator.takeover._session}) can raise it without importing the
incumbent's side (L{migrator.takeover._incumbent} and the capture), which a
successor imports only once it serves.
"""

from __future__ import annotations

from twisted.spread import pb


class TakeoverRefused(pb.Error):
    """
    A takeover step was refused; the message says why.  Raised to the
    successor over PB.
    """


# Its name on the wire (PB sends a remote error's class by its qualified
# name), as before it moved here: L{migrator.takeover._incumbent} still
# has it under that name.
TakeoverRefused.__module__ = "migrator.takeover._incumbent"
