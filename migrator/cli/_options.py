# -*- test-case-name: tests.test_commands -*-
"""
What every C{python -m migrator} command line shares: the program's name
in its usage, option help on one line each, a C{--version} that names
migrator's version, and usage errors said in two lines.
"""

from __future__ import annotations

import platform
import sys
from typing import TextIO

from twisted.copyright import version as twistedVersion
from twisted.python import usage

from migrator._version import __version__

#: How the commands are run, as their usage shows it.
PROGRAM = "python -m migrator"


def versions() -> str:
    """
    @return: migrator's, Twisted's and Python's versions, one a line, with
        the path of this interpreter.
    """
    return (
        f"migrator {__version__}\n"
        f"Twisted {twistedVersion}\n"
        f"Python {platform.python_version()} ({sys.executable})"
    )


def briefUsageError(command: str, error: usage.UsageError, out: TextIO) -> None:
    """
    Say a usage error in two lines, the error and where the usage is,
    instead of the whole usage text.

    @param command: the command line that was given, as far as it names a
        command (C{"python -m migrator status"}), for the hint.
    @param error: the error.
    @param out: where to write.
    """
    out.write(f"{command}: {error}\nRun '{command} --help' for usage.\n")


class CommandOptions(usage.Options):
    """
    L{usage.Options} for C{python -m migrator} and its commands.
    """

    def __init__(self) -> None:
        usage.Options.__init__(self)
        # A method's docstring is its option's help: make it one paragraph.
        for name, doc in list(self.docs.items()):
            if doc:
                self.docs[name] = " ".join(doc.split())

    def opt_version(self) -> None:
        """
        Display migrator's, Twisted's and Python's versions and exit.
        """
        print(versions())
        sys.exit(0)
