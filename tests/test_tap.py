# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{migrator.tap}'s L{Options}: C{twistd migrate}'s help and usage
errors as an operator meets them, and where the operator's fault-injection
setting is read (once, here) and handed to the service.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import sys
import tempfile
import uuid

from twisted.copyright import version as twistedVersion
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from migrator import __version__, tap
from migrator.takeover._steps import Faults
from migrator.tap import Options, importAdapterModule


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


#: An adapter module: registers the default rule for its own class.
ADAPTERS = """\
from migrator import InstanceAdapter


class Thing:
    pass


def registerAdapters(registry):
    registry.register(InstanceAdapter(Thing, typeName="cwd.Thing"))
"""


class AdapterModuleTests(SynchronousTestCase):
    """
    C{--adapters MODULE} finds C{MODULE} on the Python path, else in the
    current directory (as C{--tac} finds its file), which C{twistd} does
    not put on the path.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="migrator-adapters-")
        self.addCleanup(shutil.rmtree, self.directory)
        os.chmod(self.directory, 0o700)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        self.addCleanup(sys.path.__setitem__, slice(None), list(sys.path))
        # twistd's own path: without the current directory.
        sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
        self.name = f"cwdadapters_{uuid.uuid4().hex}"
        self.addCleanup(self.forget, self.name)

    def forget(self, name: str) -> None:
        """
        Drop the modules named C{name} (and below) that a test imported.
        """
        for loaded in list(sys.modules):
            if loaded == name or loaded.startswith(name + "."):
                del sys.modules[loaded]

    def write(self, path: str, text: str) -> None:
        """
        Write C{text} to C{path}, relative to the current directory.
        """
        os.makedirs(os.path.dirname(os.path.join(self.directory, path)), exist_ok=True)
        with open(os.path.join(self.directory, path), "w") as f:
            f.write(text)

    def test_currentDirectory(self) -> None:
        """
        A module in the current directory is imported from there; the
        directory joins the end of the path, where it shadows nothing.
        """
        self.write(f"{self.name}.py", ADAPTERS)
        importAdapterModule(self.name)
        self.assertEqual(
            os.path.dirname(sys.modules[self.name].__file__ or ""),
            os.path.realpath(self.directory),
        )
        self.assertEqual(sys.path[-1], os.getcwd())

    def test_package(self) -> None:
        """
        A dotted name finds a package in the current directory.
        """
        self.write(f"{self.name}/__init__.py", "")
        self.write(f"{self.name}/adapters.py", ADAPTERS)
        importAdapterModule(f"{self.name}.adapters")
        self.assertIn(f"{self.name}.adapters", sys.modules)

    def test_pathFirst(self) -> None:
        """
        A module found on the path is imported from there, and the path
        is left as it was.
        """
        path = list(sys.path)
        importAdapterModule("tests.integration.apps.numbered")
        self.assertEqual(sys.path, path)

    def test_notFound(self) -> None:
        """
        A module found in neither place: an error naming both, and the
        path left as it was.
        """
        path = list(sys.path)
        with self.assertRaises(ImportError) as raised:
            importAdapterModule(self.name)
        self.assertEqual(
            str(raised.exception),
            f"no module named {self.name} on the Python path or in the current "
            f"directory ({os.getcwd()})",
        )
        self.assertEqual(sys.path, path)

    def test_itsOwnImportFails(self) -> None:
        """
        A module that is found but fails to import something of its own is
        reported with that module's error, not as missing.
        """
        self.write(f"{self.name}.py", "import no_such_module_for_migrator_tests\n")
        with self.assertRaises(ModuleNotFoundError) as raised:
            importAdapterModule(self.name)
        self.assertEqual(raised.exception.name, "no_such_module_for_migrator_tests")

    def test_options(self) -> None:
        """
        C{twistd migrate --adapters MODULE} accepts a module of the
        current directory, and refuses one that is nowhere with a usage
        error saying where it looked.
        """
        self.write(f"{self.name}.py", ADAPTERS)
        tac = tacFile(self, self.directory)
        control = os.path.join(self.directory, "ctl")
        options = Options()
        options.parseOptions(["--control", control, "--adapters", self.name, "--tac", tac])
        self.assertEqual(options["adapters"], [self.name])
        with self.assertRaises(usage.UsageError) as raised:
            Options().parseOptions(["--control", control, "--adapters", "nowhere_x", "--tac", tac])
        self.assertEqual(
            str(raised.exception),
            f"--adapters: no module named nowhere_x on the Python path or in the "
            f"current directory ({os.getcwd()})",
        )


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
