# -*- test-case-name: tests.test_service -*-
"""
How a C{twistd migrate} process ends: at once after a failed takeover, and
without the interpreter's teardown after a drain.
"""

from __future__ import annotations

import atexit
import os
import sys


def exitNow(code: int) -> None:
    """
    Flush the standard streams and end the process with C{code}, now.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def exitAtInterpreterExit(code: int) -> None:
    """
    Leave the process with C{code} once twistd has stopped and logged its
    last lines, without tearing the interpreter down: freeing every object
    of a service that held thousands of connections is 100 ms and more of
    a takeover's total, and nothing is left to do.
    """
    atexit.register(exitNow, code)
