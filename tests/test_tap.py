# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{migrator.tap}: where the operator's fault-injection setting is
read (once, here) and handed to the service.
"""

from __future__ import annotations

import os
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from migrator import tap
from migrator.takeover._steps import Faults


class FaultsOptionTests(SynchronousTestCase):
    """
    C{MIGRATOR_FAULT} is read by L{tap.Options} and handed to the service's
    configuration.
    """

    def options(self, environ: dict[str, str]) -> tap.Options:
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        os.chmod(directory, 0o700)
        tac = os.path.join(directory, "app.tac")
        with open(tac, "w") as f:
            f.write("")
        self.addCleanup(os.unlink, tac)
        self.patch(os, "environ", environ)
        options = tap.Options()
        options.parseOptions(["--control", os.path.join(directory, "ctl"), "--tac", tac])
        return options

    def test_faultsRead(self) -> None:
        """
        The faults named in C{MIGRATOR_FAULT} are parsed into
        C{options["faults"]}; none without it.
        """
        self.assertEqual(
            self.options({"MIGRATOR_FAULT": "hang:after-switch"})["faults"],
            Faults((("hang", "after-switch"),)),
        )
        self.assertEqual(self.options({})["faults"], Faults())

    def test_badFaultsAreAUsageError(self) -> None:
        """
        An unknown action or point in C{MIGRATOR_FAULT} is a usage error,
        not silently ignored.
        """
        e = self.assertRaises(
            usage.UsageError, self.options, {"MIGRATOR_FAULT": "kill:nowhere"}
        )
        self.assertTrue(str(e).startswith("MIGRATOR_FAULT: 'kill:nowhere'"), str(e))
