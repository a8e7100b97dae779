# -*- test-case-name: tests.test_service -*-
"""
How a C{twistd migrate} process ends: at once after a failed takeover, and
without the interpreter's teardown after a drain.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any


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
    last lines, and the exit handlers (the application's, C{logging}'s)
    have run, without tearing the interpreter down: freeing every object
    of a service that held thousands of connections is 100 ms and more of
    a takeover's total, and nothing is left to do.  An exception that
    reached the top meanwhile still ends the process with 1.

    Relies on: CPython collecting garbage once more (if the collector is
    enabled), with C{gc.callbacks} called, after the exit handlers and
    before it frees the modules; C{sys.is_finalizing()} true from then on.
    Where that collection does not happen (the collector disabled), the
    interpreter's teardown runs as usual.
    """
    failed: list[object] = []
    previous = sys.excepthook

    def excepthook(*info: Any) -> None:
        failed.append(info[0])
        previous(*info)

    def atFinalCollection(phase: str, info: object) -> None:
        if phase == "start" and sys.is_finalizing():
            exitNow(1 if failed else code)

    sys.excepthook = excepthook
    gc.callbacks.append(atFinalCollection)
