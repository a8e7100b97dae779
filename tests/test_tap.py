# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{migrator.tap}'s L{Options}: C{twistd migrate}'s help and usage
errors as an operator meets them.
"""

from __future__ import annotations

import io
import os
import platform
import sys
import tempfile

from twisted.copyright import version as twistedVersion
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from migrator import __version__
from migrator.tap import Options


def privateDirectory(case: SynchronousTestCase) -> str:
    """
    A new directory only this user may use (a safe control directory),
    removed after the test.
    """
    directory = tempfile.mkdtemp(prefix="migrator-tap-")
    case.addCleanup(os.rmdir, directory)
    os.chmod(directory, 0o700)
    return directory


def tacFile(case: SynchronousTestCase, directory: str) -> str:
    """
    An empty application's C{.tac} file in C{directory}.
    """
    path = os.path.join(directory, "empty.tac")
    with open(path, "w") as f:
        f.write("from twisted.application import service\n")
        f.write("application = service.Application('empty')\n")
    case.addCleanup(os.remove, path)
    return path


class HelpTests(SynchronousTestCase):
    """
    C{twistd migrate --help} and C{--version}.
    """

    def test_oneParagraphPerOption(self) -> None:
        """
        The help of C{--adapters}, written as a docstring, reads as one
        paragraph: no run of spaces after C{registerAdapters(registry)}.
        """
        options = Options()
        self.assertIn(
            "registerAdapters(registry) defines (repeatable;", options.getUsage(width=200)
        )
        for name, doc in options.docs.items():
            self.assertNotIn("  ", doc or "", name)

    def test_version(self) -> None:
        """
        C{twistd migrate --version} names migrator's version, then
        Twisted's and Python's.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit):
            Options().parseOptions(["--version"])
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                f"migrator {__version__}",
                f"Twisted {twistedVersion}",
                f"Python {platform.python_version()}",
            ],
        )


class UsageErrorTests(SynchronousTestCase):
    """
    A usage error, under C{twistd} and on its own.
    """

    def setUp(self) -> None:
        self.directory = privateDirectory(self)
        self.control = os.path.join(self.directory, "ctl")
        self.tac = tacFile(self, self.directory)

    def test_alone(self) -> None:
        """
        Used on its own (no C{twistd} above it), L{Options} raises
        L{usage.UsageError}, as any L{usage.Options}.
        """
        options = Options()
        with self.assertRaises(usage.UsageError) as raised:
            options.parseOptions(["--control", self.control, "--takeover", "--tac", self.tac])
        self.assertEqual(
            str(raised.exception),
            f"--takeover: no service answers at {self.control} (absent); "
            f"start one without --takeover",
        )

    def test_underTwistd(self) -> None:
        """
        As C{twistd}'s subcommand, a usage error (here C{--takeover} with
        nothing running) exits with two lines, the error and where the
        usage is, instead of C{twistd} printing its whole usage text
        first.
        """
        with self.assertRaises(SystemExit) as raised:
            ServerOptions().parseOptions(
                ["migrate", "--control", self.control, "--takeover", "--tac", self.tac]
            )
        self.assertEqual(
            raised.exception.code,
            f"twistd migrate: --takeover: no service answers at {self.control} "
            f"(absent); start one without --takeover\n"
            f"Run 'twistd migrate --help' for usage.",
        )
        self.assertFalse(os.path.lexists(self.control))

    def test_optionError(self) -> None:
        """
        An error in migrate's own options is said briefly too.
        """
        with self.assertRaises(SystemExit) as raised:
            ServerOptions().parseOptions(["migrate", "--drain-timeout", "0", "--tac", self.tac])
        self.assertEqual(
            raised.exception.code,
            "twistd migrate: Parameter type enforcement failed: must be greater than 0\n"
            "Run 'twistd migrate --help' for usage.",
        )

    def test_subcommandError(self) -> None:
        """
        An error in the wrapped service's options points to that
        service's usage.
        """
        with self.assertRaises(SystemExit) as raised:
            ServerOptions().parseOptions(
                ["migrate", "--control", self.control, "portforward", "--no-such-option"]
            )
        self.assertEqual(
            raised.exception.code,
            "twistd migrate portforward: option --no-such-option not recognized\n"
            "Run 'twistd migrate portforward --help' for usage.",
        )
