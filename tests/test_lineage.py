# -*- test-case-name: tests.test_lineage -*-
"""
Tests for L{migrator.takeover._lineage}: the command line a process records,
and the successor command line made from a recorded one.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover import _lineage
from migrator.takeover._lineage import NoCommand, checkCommand, successorArgv, thisCommand

PY = "/opt/venv-v1/bin/python3"


def record(*argv: str, cwd: str = "/srv/site") -> dict[str, object]:
    return {"argv": list(argv), "cwd": cwd, "executable": PY, "stdout": None}


class ThisCommandTests(SynchronousTestCase):
    """
    L{thisCommand} records how this process was started.
    """

    def test_record(self) -> None:
        """
        The interpreter's own arguments, the working directory and the
        interpreter.
        """
        command = thisCommand()
        self.assertEqual(command["argv"], list(sys.orig_argv))
        self.assertEqual(command["cwd"], os.getcwd())
        self.assertEqual(command["executable"], sys.executable)
        self.assertEqual(thisCommand(cwd="/x")["cwd"], "/x")

    def test_bounded(self) -> None:
        """
        At most L{_lineage.MAX_ARGS} arguments are kept.
        """
        self.patch(sys, "orig_argv", ["python"] + ["x"] * 1000)
        self.assertEqual(len(thisCommand()["argv"]), _lineage.MAX_ARGS)

    def test_stdout(self) -> None:
        """
        C{stdout} is the regular file standard output goes to, or C{None}
        (a pipe, a terminal).
        """
        path = self.mktemp()
        saved = os.dup(1)
        self.addCleanup(os.close, saved)
        with open(path, "w") as f:
            os.dup2(f.fileno(), 1)
            try:
                found = _lineage._stdoutFile()
            finally:
                os.dup2(saved, 1)
        self.assertEqual(found, os.path.abspath(path))
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.dup2(w, 1)
        try:
            found = _lineage._stdoutFile()
        finally:
            os.dup2(saved, 1)
        self.assertIsNone(found)


class SuccessorArgvTests(SynchronousTestCase):
    """
    L{successorArgv} runs a recorded command line again as a successor.
    """

    def test_takeoverAdded(self) -> None:
        """
        The first generation's command line gets C{--takeover} right after
        C{migrate}; the recorded interpreter runs it; twistd's own options
        (daemonizing or not) stay.
        """
        argv = successorArgv(
            record("python3", "-m", "twisted", "-n", "--pidfile=", "migrate", "--control", "/c",
                   "--tac", "app.tac")
        )
        self.assertEqual(
            argv,
            [PY, "-m", "twisted", "-n", "--pidfile=", "migrate", "--takeover", "--control", "/c",
             "--tac", "app.tac"],
        )

    def test_takeoverKept(self) -> None:
        """
        A successor's command line keeps its C{--takeover} (or C{-t}); a
        dry run's C{--dry-run} is dropped.
        """
        argv = successorArgv(
            record("/v/bin/twistd", "migrate", "--control", "/c", "-t", "--dry-run", "web")
        )
        self.assertEqual(argv, [PY, "migrate", "--control", "/c", "-t", "web"])

    def test_notMigrate(self) -> None:
        """
        A command line without C{migrate}, or an incomplete record, cannot
        be run again.
        """
        self.assertRaises(NoCommand, successorArgv, record("python3", "-c", "pass"))
        self.assertRaises(NoCommand, successorArgv, {"argv": ["x"]})
        self.assertRaises(NoCommand, checkCommand, None)
        self.assertRaises(NoCommand, checkCommand, {"argv": [], "cwd": "/", "executable": "p"})
        self.assertRaises(NoCommand, checkCommand, {"argv": [1], "cwd": "/", "executable": "p"})
