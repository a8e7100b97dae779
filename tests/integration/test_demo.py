# -*- test-case-name: tests.integration.test_demo -*-
"""
The README's first command, C{python -m migrator demo}, runs as a newcomer
would run it, and its transcript says what the talk shows: the telnet
session's names intact and its pid changed after the takeover.  The older
demo (C{demo --load}) still runs, briefly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from twisted.trial.unittest import TestCase

from migrator.testing import childEnvironment

#: Bound of one demo run.
TIMEOUT = 120


def runDemo(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """
    Run C{python -m migrator demo ARGS} and return its exit code and
    output (stdout and stderr together).
    """
    result = subprocess.run(
        [sys.executable, "-m", "migrator", "demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=childEnvironment(env),
        timeout=TIMEOUT,
    )
    return result.returncode, result.stdout


class DemoTests(TestCase):
    """
    C{python -m migrator demo}, non-interactive, in a subprocess.
    """

    def assertManholeTranscript(self, code: int, out: str) -> None:
        self.assertEqual(code, 0, out)
        result = re.search(
            r"^RESULT: ok: telnet session moved from pid (\d+) \(Python ([0-9.]+)\) "
            r"to pid (\d+) \(Python ([0-9.]+)\)",
            out,
            re.M,
        )
        self.assertIsNotNone(result, out)
        assert result is not None
        self.assertNotEqual(result[1], result[3])
        # The session's screen after the move, as the transcript shows it.
        after = out.split("finishing the line", 1)[1]
        self.assertIn("'hello you'", after)
        self.assertIn("([1, 2, {'a': 3}], 'hello me', 1, True)", after)
        self.assertIn(f"({result[3]}, '{result[4]}", after)
        self.assertNotIn("[FAILED]", out)
        # The takeover's log lines from both processes.
        self.assertRegex(out, r"gen 0 \| .*handed off to pid " + result[3])
        self.assertRegex(out, r"gen 1 \| .*serving manhole as generation 1")

    def test_manhole(self) -> None:
        """
        The default demo drives a telnet session through a takeover and
        prints a transcript: the half line finished after the move, every
        name intact, the pid changed, log lines of both processes, and a
        C{RESULT: ok} line; it exits 0.  It says which telnet client and
        which successor interpreter it used.
        """
        code, out = runDemo()
        self.assertManholeTranscript(code, out)
        self.assertRegex(out, r"telnet client: (the real telnet program|FALLBACK)")
        self.assertRegex(
            out, r"(second interpreter from|second interpreter found|NO second Python)"
        )

    def test_freshMachine(self) -> None:
        """
        Where there is no C{telnet} program and no second Python (C{PATH}
        holding only this interpreter's directory), the demo uses the
        Python telnet fallback and a second process of this Python, says
        both, and still passes.
        """
        env = {
            "PATH": os.path.dirname(sys.executable),
            "MIGRATOR_DEMO_PYTHON": "",
            "MIGRATOR_TEST_OTHER_PYTHON": "",
        }
        code, out = runDemo(env=env)
        self.assertManholeTranscript(code, out)
        self.assertIn("telnet client: FALLBACK", out)
        self.assertIn("NO second Python interpreter found", out)
        self.assertIn("(same Python, second process)", out)

    def test_unusablePython(self) -> None:
        """
        An interpreter given with C{--python} that cannot run the successor
        is checked before anything is announced or started: the demo exits
        2, saying why and how to make one that can.
        """
        code, out = runDemo("--python", "/bin/false")
        self.assertEqual(code, 2, out)
        self.assertTrue(
            out.startswith(
                "python -m migrator demo: --python /bin/false cannot run the demo's "
                "successor: it exited with status 1 and said nothing.\n"
            ),
            out,
        )
        self.assertIn("pip install .", out)
        self.assertNotIn("Work directory", out)
        self.assertNotIn("generation 0", out)

    def test_load(self) -> None:
        """
        C{demo --load}, with one takeover, still narrates a web server's
        port takeover under load and ends with C{RESULT: ok}.
        """
        code, out = runDemo("--load", "--takeovers", "1", "--interval", "0.5", "--rate", "100")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"(?m)^RESULT: ok: 1 takeover\(s\), 0 failed request\(s\)")
