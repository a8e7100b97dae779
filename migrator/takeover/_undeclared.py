# -*- test-case-name: tests.test_undeclared -*-
"""
Ports the incumbent holds that the successor's service does not declare.

A takeover closes them at the commit: their clients would find nothing
there any more, which is rarely what an operator meant (a typo in the new
command line, a port renamed).  So the incumbent refuses such a takeover
at C{prepared}, before anything has changed hands, unless the successor
was started with L{FLAG}; the refusal names the ports and the flag.  A dry
run reports the same.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The successor's option that allows closing them.
FLAG = "--close-undeclared-ports"


def undeclaredRefusal(undeclared: Sequence[str], allowed: bool) -> str | None:
    """
    Why a takeover is refused because of undeclared ports, if it is.

    @param undeclared: the keys of the incumbent's ports the successor's
        service does not declare.
    @param allowed: whether the successor was started with L{FLAG}.
    @return: the refusal, for the operator, or C{None}.
    """
    if not undeclared or allowed:
        return None
    them = "it" if len(undeclared) == 1 else "them"
    return (
        f"the incumbent listens on {', '.join(undeclared)}, which the successor's "
        f"service does not declare: the takeover would close {them}. Declare "
        f"{them} in the new command line, or start the successor with {FLAG} "
        f"to close {them} at the commit"
    )
