# -*- test-case-name: tests.test_lineage -*-
"""
The command lines of a lineage's generations, so that going back to the
previous generation is one command (C{python -m migrator rollback}).

Each process records how it was started (L{thisCommand}: its arguments
as the interpreter got them, its working directory and its interpreter);
an incumbent tells its successor its own in C{begin}'s answer, and
C{status} shows both (C{command}, C{previous_command}).  L{successorArgv}
turns a recorded command line into the one that takes over from the
service running now.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from typing import Any

#: At most this many arguments are recorded (and sent).
MAX_ARGS = 200

#: The options of C{twistd migrate} that a rollback drops: a dry run never
#: takes over, and the recorded command line of the first generation has
#: no C{--takeover} (it is added).
_DROPPED = ("--dry-run",)
_TAKEOVER = ("--takeover", "-t")


def _stdoutFile() -> str | None:
    """
    The regular file this process's standard output goes to, if it does.
    """
    try:
        if not stat.S_ISREG(os.fstat(1).st_mode):
            return None
        return os.readlink("/proc/self/fd/1")
    except OSError:
        return None


def thisCommand(cwd: str | None = None) -> dict[str, Any]:
    """
    How this process was started: C{argv} (as the interpreter got them,
    C{sys.orig_argv}: C{python -c ...}, C{python -m twisted ...} or the
    path of the C{twistd} script), C{cwd} (where it started), C{executable}
    (C{sys.executable}), and C{stdout}, the file its output went to, if it
    was a regular file.
    """
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return {
        "argv": argv[:MAX_ARGS],
        "cwd": cwd if cwd is not None else os.getcwd(),
        "executable": sys.executable,
        "stdout": _stdoutFile(),
    }


class NoCommand(ValueError):
    """
    A recorded command line cannot be run again.
    """


def checkCommand(record: object) -> dict[str, Any]:
    """
    Check that C{record} is a command line L{thisCommand} recorded.

    @return: it.
    @raise NoCommand: if it is not.
    """
    if not isinstance(record, Mapping):
        raise NoCommand("no command line was recorded")
    argv, cwd, executable = record.get("argv"), record.get("cwd"), record.get("executable")
    if (
        not isinstance(argv, (list, tuple))
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or not isinstance(cwd, str)
        or not isinstance(executable, str)
    ):
        raise NoCommand(f"the recorded command line is incomplete: {dict(record)!r}")
    return dict(record)


def successorArgv(record: Mapping[str, Any]) -> list[str]:
    """
    The command line that runs C{record}'s command again as a successor:
    its interpreter and arguments, with C{--takeover} added after
    C{migrate} (if it is not there) and C{--dry-run} left out.
    Daemonization options (C{-n}, C{--logfile}, C{--pidfile}...) stay as
    they were.

    @raise NoCommand: if C{record} is incomplete or is not a C{twistd
        migrate} command line.
    """
    checked = checkCommand(record)
    argv: Sequence[str] = checked["argv"]
    if "migrate" not in argv:
        raise NoCommand(f"the recorded command line is not a twistd migrate one: {argv!r}")
    at = list(argv).index("migrate")
    head = [checked["executable"], *argv[1 : at + 1]]
    rest = [a for a in argv[at + 1 :] if a not in _DROPPED]
    if not any(a in _TAKEOVER for a in rest):
        rest.insert(0, "--takeover")
    return head + rest
