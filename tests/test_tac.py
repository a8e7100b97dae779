# -*- test-case-name: tests.test_tac -*-
"""
Tests for L{migrator._tac} (a C{.tac} file is loaded as twistd loads it,
and may be its own adapters module) and for how L{migrator.tap} wires it,
with the C{--unmovable} option, into the service.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from twisted.application import service
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from migrator import tap
from migrator._config import MigrateConfig
from migrator._service import MigrateService
from migrator._tac import TacError, loadTac

CHAT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration", "apps", "chat.tac")

REGISTER = """

def registerAdapters(registry):
    registry.registerInstance(Chat)
    registry.registerFactory(ChatFactory)
"""


class LoadTacTests(SynchronousTestCase):
    """
    L{loadTac}.
    """

    def write(self, text: str) -> str:
        # Not self.mktemp(): under pytest that is a directory in the
        # current one, which is the checkout.
        directory = tempfile.mkdtemp(prefix="migrator-tac-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "temp.tac")
        with open(path, "w") as f:
            f.write(text)
        return path

    def chat(self, extra: str = "") -> str:
        with open(CHAT) as f:
            return self.write(f.read() + extra)

    def test_application(self) -> None:
        """
        A C{.tac} file runs as twistd runs it (its classes say their module
        is C{builtins}); its C{application} is taken, and it has no
        C{registerAdapters} unless it defines one.
        """
        tac = loadTac(self.chat())
        self.assertIsInstance(service.IService(tac.application), service.MultiService)
        self.assertIsNone(tac.registerAdapters)

    def test_registerAdapters(self) -> None:
        """
        A C{.tac} that defines C{registerAdapters} is its own adapters
        module: its classes are registered under C{tac:qualname}, the same
        names every time the file is loaded.
        """
        path = self.chat(REGISTER)
        names = []
        classes = []
        for _ in range(2):
            tac = loadTac(path)
            assert tac.registerAdapters is not None
            svc = MigrateService(
                service.IService(tac.application),
                MigrateConfig(control="/nonexistent/ctl"),
                MemoryReactorClock(),
                registerAdapters=tac.registerAdapters,
            )
            names.append([n for n in svc.adapters.typeNames() if n.startswith("tac:")])
            classes.append(svc.adapters.adapterNamed("tac:Chat").cls)
        self.assertEqual(names, [["tac:Chat", "tac:ChatFactory"]] * 2)
        # Each load (each generation) restores by that name into its own
        # class.
        self.assertIsNot(classes[0], classes[1])
        self.assertEqual([c.__qualname__ for c in classes], ["Chat", "Chat"])

    def test_errors(self) -> None:
        """
        A C{.tac} without C{application}, or whose C{registerAdapters} is
        not callable, is refused with a message naming the file.
        """
        path = self.write("x = 1\n")
        self.assertIn(path, str(self.assertRaises(TacError, loadTac, path)))
        path = self.chat("\nregisterAdapters = 3\n")
        self.assertIn("registerAdapters", str(self.assertRaises(TacError, loadTac, path)))


class UnmovableOptionTests(SynchronousTestCase):
    """
    C{--unmovable}.
    """

    def parse(self, *args: str) -> tap.Options:
        work = tempfile.mkdtemp(prefix="migrator-tac-")
        self.addCleanup(shutil.rmtree, work)
        os.chmod(work, 0o700)
        options = tap.Options()
        options.parseOptions(["--control", os.path.join(work, "ctl"), *args, "--tac", CHAT])
        return options

    def test_default(self) -> None:
        """
        The default is C{refuse}; C{drain} and C{close} are accepted.
        """
        self.assertEqual(self.parse()["unmovable"], "refuse")
        self.assertEqual(self.parse("--unmovable", "drain")["unmovable"], "drain")
        self.assertEqual(self.parse("--unmovable", "close")["unmovable"], "close")

    def test_other(self) -> None:
        """
        Anything else is a usage error naming the choices.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--unmovable", "keep")
        self.assertIn("refuse, drain, close", str(e))


class CheckRestoredTests(SynchronousTestCase):
    """
    A C{.tac}'s C{checkRestored} (a dry run's check), and how
    L{tap.makeService} gathers it with the C{--adapters} modules' ones.
    """

    def write(self, text: str) -> str:
        directory = tempfile.mkdtemp(prefix="migrator-tac-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "temp.tac")
        with open(CHAT) as f:
            source = f.read()
        with open(path, "w") as f:
            f.write(source + text)
        return path

    def test_loaded(self) -> None:
        """
        A C{.tac} may define C{checkRestored}; one that is not callable is
        refused.
        """
        self.assertIsNone(loadTac(self.write("")).checkRestored)
        tac = loadTac(self.write("\ndef checkRestored(protocol):\n    pass\n"))
        self.assertTrue(callable(tac.checkRestored))
        e = self.assertRaises(TacError, loadTac, self.write("\ncheckRestored = 1\n"))
        self.assertIn("checkRestored", str(e))

    def test_makeService(self) -> None:
        """
        L{tap.makeService} gives the service one check that runs the
        C{.tac}'s and every adapters module's C{checkRestored}, and the
        command line this process was started with, and the dry run's
        and health check's options.
        """
        seen: list[str] = []
        module = type(os)("checkmodule")
        module.checkRestored = lambda protocol: seen.append(f"module {protocol}")  # type: ignore[attr-defined]
        module.registerAdapters = lambda registry: None  # type: ignore[attr-defined]
        sys.modules["checkmodule"] = module
        self.addCleanup(sys.modules.pop, "checkmodule", None)
        work = self.mktemp()
        os.mkdir(work, 0o700)
        path = self.write("\ndef checkRestored(protocol):\n    SEEN.append(protocol)\nSEEN = []\n")
        options = tap.Options()
        options.parseOptions(
            [
                "--control", os.path.join(work, "ctl"),
                "--adapters", "checkmodule",
                "--check", "curl -f http://$MIGRATOR_PORTS/",
                "--check-timeout", "4",
                "--close-undeclared-ports",
                "--tac", path,
            ]
        )
        svc = tap.makeService(options)
        self.addCleanup(svc.registry.uninstall)
        assert svc._checkRestored is not None
        svc._checkRestored("p")
        self.assertEqual(seen, ["module p"])
        config = svc.config
        self.assertEqual(
            (config.check, config.checkTimeout, config.closeUndeclared, config.dryRun),
            ("curl -f http://$MIGRATOR_PORTS/", 4.0, True, False),
        )
        assert config.command is not None
        self.assertEqual(config.command["cwd"], os.getcwd())
        self.assertEqual(config.command["executable"], sys.executable)


class SelectOptionTests(UnmovableOptionTests):
    """
    C{--select}: the connections a takeover moves this time.
    """

    def test_default(self) -> None:
        """
        By default nothing is selected (everything moves).
        """
        self.assertEqual(self.parse()["select"], ())

    def test_other(self) -> None:
        """
        Without C{--takeover}, C{--select} is a usage error.
        """
        e = self.assertRaises(usage.UsageError, self.parse, "--select", "c7.4000,k9")
        self.assertIn("--select is for a takeover", str(e))

    def test_parsed(self) -> None:
        """
        The ids are comma-separated (blanks dropped).
        """
        options = tap.Options()
        options.opt_select("c7.4000, k9,,")
        self.assertEqual(options["select"], ("c7.4000", "k9"))
