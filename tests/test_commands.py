# -*- test-case-name: tests.test_commands -*-
"""
Tests for L{migrator._commands} and L{migrator.cli._options}: what a
newcomer meets first at C{python -m migrator}: a usage with the program's
name and no markup, migrator's version, and usage errors in two lines.
"""

from __future__ import annotations

import io
import platform
import sys

from twisted.copyright import version as twistedVersion
from twisted.trial.unittest import SynchronousTestCase

from migrator import __version__
from migrator._commands import DemoOptions, MainOptions, main
from migrator.cli._status import StatusOptions


class HelpTests(SynchronousTestCase):
    """
    C{--help}, at the top and for each command.
    """

    def help(self, *argv: str) -> str:
        """
        Run C{python -m migrator ARGV... --help} in-process.

        @return: what it printed.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as raised:
            main([*argv, "--help"])
        self.assertIn(raised.exception.code, (None, 0))
        return out.getvalue()

    def test_programName(self) -> None:
        """
        The usage starts with the program's name as it is run, and lists
        the commands.
        """
        text = self.help()
        self.assertTrue(text.startswith("Usage: python -m migrator COMMAND [options]\n"), text)
        self.assertIn("    demo ", text)
        self.assertIn("    status ", text)

    def test_noMarkup(self) -> None:
        """
        No epytext markup (C{C{...}}, C{L{...}}) shows, at the top or in a
        command's usage.
        """
        for argv in ((), ("status",), ("demo",)):
            text = self.help(*argv)
            self.assertNotRegex(text, r"[CLIB]\{", argv)

    def test_commandUsage(self) -> None:
        """
        A command's usage names the program and the command once, then the
        command's own synopsis.
        """
        text = self.help("status")
        self.assertTrue(
            text.startswith("Usage: python -m migrator status --control PATH [--json]\n"), text
        )

    def test_oneParagraphPerOption(self) -> None:
        """
        An option's help is wrapped as one paragraph: no run of spaces from
        a docstring's indentation.
        """
        for options in (MainOptions(), StatusOptions(), DemoOptions()):
            for name, doc in options.docs.items():
                self.assertNotIn("  ", doc or "", name)


class VersionTests(SynchronousTestCase):
    """
    C{--version}.
    """

    def test_versions(self) -> None:
        """
        C{--version} names migrator's version, then Twisted's and Python's.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit):
            main(["--version"])
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], f"migrator {__version__}")
        self.assertEqual(lines[1], f"Twisted {twistedVersion}")
        self.assertTrue(lines[2].startswith(f"Python {platform.python_version()} ("), lines)


class UsageErrorTests(SynchronousTestCase):
    """
    A usage error is said in two lines, with exit code 2.
    """

    def error(self, *argv: str) -> list[str]:
        """
        Run C{python -m migrator ARGV...}, which must fail as a usage error.

        @return: the lines written to standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(list(argv), out, err), 2)
        self.assertEqual(out.getvalue(), "")
        return err.getvalue().splitlines()

    def test_unknownCommand(self) -> None:
        """
        An unknown command: the error, and where the usage is.
        """
        self.assertEqual(
            self.error("bogus"),
            [
                "python -m migrator: Unknown command: bogus",
                "Run 'python -m migrator --help' for usage.",
            ],
        )

    def test_noCommand(self) -> None:
        """
        No command at all: say which there are.
        """
        self.assertEqual(
            self.error()[0],
            "python -m migrator: give a command: status, plan, console, rollback or demo",
        )

    def test_commandOption(self) -> None:
        """
        An error in a command's options points to that command's usage.
        """
        self.assertEqual(
            self.error("demo", "--bogus"),
            [
                "python -m migrator demo: option --bogus not recognized",
                "Run 'python -m migrator demo --help' for usage.",
            ],
        )
        self.assertEqual(
            self.error("status"),
            [
                "python -m migrator status: --control PATH is required",
                "Run 'python -m migrator status --help' for usage.",
            ],
        )
        self.assertEqual(
            self.error("demo", "--load", "--interactive")[0],
            "python -m migrator demo: --interactive is for the manhole demo, not --load",
        )


class MainOptionsTests(SynchronousTestCase):
    """
    L{MainOptions} parses into a command and its options.
    """

    def test_demoOptions(self) -> None:
        """
        The demo's options arrive parsed, with their defaults.
        """
        options = MainOptions()
        options.parseOptions(["demo", "--python", "/opt/py/bin/python"])
        self.assertEqual(options.subCommand, "demo")
        self.assertEqual(options.subOptions["python"], "/opt/py/bin/python")
        self.assertFalse(options.subOptions["load"])
