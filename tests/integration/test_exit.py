# -*- test-case-name: tests.integration.test_exit -*-
"""
How a C{twistd migrate} process ends and starts, in real child
interpreters: L{migrator._exit.exitAtInterpreterExit} leaves without the
interpreter's teardown but after every exit handler, with the right code;
and a successor's start does not import the dry run's machinery.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from twisted.trial.unittest import TestCase

from migrator.testing import ServiceProcess, childEnvironment

#: The longest a child interpreter here may take (it does almost nothing).
TIMEOUT = 60

_EXITING = textwrap.dedent(
    """
    import atexit, gc, sys, tempfile
    from migrator._exit import exitAtInterpreterExit

    gc.enable()
    atexit.register(print, "handler registered before", flush=True)
    scratch = tempfile.TemporaryDirectory()
    print("scratch", scratch.name, flush=True)

    class Teardown:
        def __del__(self):
            print("teardown ran", flush=True)

    kept = Teardown()
    exitAtInterpreterExit(0)
    atexit.register(print, "handler registered after", flush=True)
    if sys.argv[1:] == ["raise"]:
        raise RuntimeError("an error that reached the top")
    """
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", *args],
        env=childEnvironment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


class ExitTests(TestCase):
    """
    L{migrator._exit.exitAtInterpreterExit} in a real interpreter.
    """

    def test_handlersRunTeardownSkipped(self) -> None:
        """
        Every exit handler runs (the newest first, as the interpreter runs
        them; a temporary directory's clean-up among them), the process
        ends with the code given, and the objects still alive are never
        torn down.
        """
        done = _run(_EXITING)
        lines = done.stdout.splitlines()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(
            [line for line in lines if not line.startswith("scratch ")],
            ["handler registered after", "handler registered before"],
        )
        [scratch] = [line.split(" ", 1)[1] for line in lines if line.startswith("scratch ")]
        self.assertFalse(os.path.exists(scratch), "the temporary directory was left behind")

    def test_errorKeepsItsCode(self) -> None:
        """
        An exception that reached the top still ends the process with 1
        (its traceback printed), after the handlers.
        """
        done = _run(_EXITING, "raise")
        self.assertEqual(done.returncode, 1)
        self.assertIn("RuntimeError: an error that reached the top", done.stderr)
        self.assertIn("handler registered before", done.stdout)
        self.assertNotIn("teardown ran", done.stdout)


class StartTests(TestCase):
    """
    What a C{twistd migrate} process imports before it serves.
    """

    def test_noDryRunMachinery(self) -> None:
        """
        The plugin's module and everything it imports leave out the dry
        run's modules, and C{twisted.trial} with them: milliseconds of
        every successor's start that only a dry run needs.
        """
        done = _run(
            "import sys, migrator.tap; "
            "print(sorted(m for m in sys.modules if m in ("
            "'migrator.takeover._dryrun', 'migrator.takeover._staging', "
            "'migrator.state._detached', 'twisted.trial', 'twisted.internet.testing')))"
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "[]")


class WatchExitTests(TestCase):
    """
    L{ServiceProcess.watchExit}: the moment a child exits, noted by a
    thread of its own (the benchmarks' totals end there).
    """

    def test_exitNoted(self) -> None:
        """
        A watched process's exit is noted, between its start and the end
        of L{ServiceProcess.waitForExit}; one not watched notes none.
        """
        before = time.monotonic()
        watched = ServiceProcess([sys.executable, "-c", "print('up', flush=True)"], name="watched")
        watched.watchExit()
        other = ServiceProcess([sys.executable, "-c", "print('up', flush=True)"], name="other")
        self.assertEqual((watched.waitForExit(30), other.waitForExit(30)), (0, 0))
        after = time.monotonic()
        assert watched.exitedAt is not None
        self.assertTrue(before <= watched.exitedAt <= after, (before, watched.exitedAt, after))
        self.assertIsNone(other.exitedAt)
