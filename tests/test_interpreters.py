# -*- test-case-name: tests.test_interpreters -*-
"""
Tests for L{migrator.demo._interpreters}: the demo's second interpreter is
checked before it is announced, and an unusable one is explained.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from twisted.trial.unittest import SynchronousTestCase

from migrator.demo._interpreters import (
    PROBE,
    UnusablePython,
    checkPython,
    findSecondPython,
)

#: What a bare interpreter of another version says, run with the first
#: one's site-packages on its path.
CFFI = """\
Traceback (most recent call last):
  File "<string>", line 4, in <module>
  File "/venv/lib/python3.11/site-packages/cryptography/x509/base.py", line 18, in <module>
    from cryptography.hazmat.bindings._rust import x509 as rust_x509
ModuleNotFoundError: No module named '_cffi_backend'
"""

#: What a pyenv shim says for a version pyenv does not have active.
SHIM = """\
pyenv: python3.13: command not found

The `python3.13' command exists in these Python versions:
  3.13.0

Note: See 'pyenv help global' for tips on allowing multiple
      Python versions to be found at the same time.
"""


class FakeRunner:
    """
    Runs no interpreter: answers the probe as told, by interpreter path.

    @ivar answers: by path, the completed process to return or the
        exception to raise.
    @ivar calls: the argv and environment of every run.
    """

    def __init__(self, answers: dict[str, subprocess.CompletedProcess[str] | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], Mapping[str, str]]] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), env))
        answer = self.answers[argv[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def probed(self) -> list[str]:
        """
        @return: the interpreters run, in order.
        """
        return [argv[0] for argv, _ in self.calls]


def works(version: str) -> subprocess.CompletedProcess[str]:
    """
    An interpreter of C{version} that passes the probe.
    """
    return subprocess.CompletedProcess([], 0, f"{version}\n", "")


def fails(stderr: str, code: int = 1) -> subprocess.CompletedProcess[str]:
    """
    An interpreter that fails the probe, saying C{stderr}.
    """
    return subprocess.CompletedProcess([], code, "", stderr)


def noneOnPath(name: str) -> str | None:
    """
    A C{PATH} with no C{python3.N} on it.
    """
    return None


class CheckPythonTests(SynchronousTestCase):
    """
    L{checkPython} runs the probe and explains a failure in one line.
    """

    def test_works(self) -> None:
        """
        An interpreter that passes the probe gives its version; the probe
        runs as C{python -c PROBE} in the environment given (the one the
        successor will have).
        """
        run = FakeRunner({"/venv313/bin/python": works("3.13.0")})
        env = {"PYTHONPATH": "/src/migrator"}
        check = checkPython("/venv313/bin/python", env, run)
        self.assertEqual((check.version, check.why), ("3.13.0", ""))
        self.assertEqual(run.calls, [(["/venv313/bin/python", "-c", PROBE], env)])

    def test_probeImportsWhatTheSuccessorNeeds(self) -> None:
        """
        The probe imports what C{twistd migrate manhole} needs, including
        the C backends a bare interpreter lacks, and builds the default
        registry (which imports the manhole adapters).
        """
        for needed in (
            "cryptography",
            "OpenSSL",
            "attrs",
            "zope.interface",
            "twisted.conch.manhole_tap",
            "migrator_plugin",
            "migrator.tap",
            "defaultRegistry()",
        ):
            self.assertIn(needed, PROBE)

    def test_traceback(self) -> None:
        """
        A probe that raises: the traceback's last line says why, and the
        interpreter itself is the one to make a virtualenv with.
        """
        run = FakeRunner({"/opt/py313/bin/python3.13": fails(CFFI)})
        check = checkPython("/opt/py313/bin/python3.13", {}, run)
        self.assertIsNone(check.version)
        self.assertEqual(
            check.why,
            "it cannot import what the successor needs: "
            "ModuleNotFoundError: No module named '_cffi_backend'",
        )
        self.assertEqual(check.base, "/opt/py313/bin/python3.13")

    def test_pyenvShim(self) -> None:
        """
        A pyenv shim for a version that is not active: its first line says
        why, the transcript says it is a shim, and the interpreter behind
        it is the one to make a virtualenv with.
        """
        run = FakeRunner({"/home/u/.pyenv/shims/python3.13": fails(SHIM, 127)})
        check = checkPython("/home/u/.pyenv/shims/python3.13", {}, run)
        self.assertIsNone(check.version)
        self.assertEqual(
            check.why,
            "it failed: pyenv: python3.13: command not found "
            "(a pyenv shim runs only the versions pyenv has active)",
        )
        self.assertEqual(check.base, "/home/u/.pyenv/versions/3.13.0/bin/python3.13")

    def test_cannotRun(self) -> None:
        """
        An interpreter that cannot be started: the system's reason.
        """
        run = FakeRunner({"/nowhere": FileNotFoundError(2, "No such file or directory")})
        check = checkPython("/nowhere", {}, run)
        self.assertEqual(
            (check.version, check.why, check.base),
            (None, "it cannot be run: No such file or directory", None),
        )

    def test_timeout(self) -> None:
        """
        An interpreter that does not answer in time.
        """
        run = FakeRunner({"/slow": subprocess.TimeoutExpired(["/slow"], 60)})
        check = checkPython("/slow", {}, run)
        self.assertEqual((check.version, check.why), (None, "it did not answer within 60 s"))

    def test_silent(self) -> None:
        """
        An interpreter that fails without a word, or succeeds without
        printing its version.
        """
        run = FakeRunner({"/a": fails("", 3), "/b": works("")})
        self.assertEqual(checkPython("/a", {}, run).why, "it exited with status 3 and said nothing")
        self.assertEqual(checkPython("/b", {}, run).why, "it printed no version")


class FindSecondPythonTests(SynchronousTestCase):
    """
    L{findSecondPython}: C{--python}, then the environment, then C{PATH};
    each checked before it is chosen.
    """

    def test_given(self) -> None:
        """
        An interpreter given with C{--python} that works is used, and
        nothing else is looked at.
        """
        run = FakeRunner({"/venv313/bin/python": works("3.13.0")})
        env = {"MIGRATOR_DEMO_PYTHON": "/other"}
        second = findSecondPython("/venv313/bin/python", env, run, noneOnPath, "3.11.7")
        self.assertEqual(second.path, "/venv313/bin/python")
        self.assertEqual(second.version, "3.13.0")
        self.assertEqual(
            second.found, "second interpreter from --python: /venv313/bin/python (Python 3.13.0)"
        )
        self.assertEqual(run.probed(), ["/venv313/bin/python"])

    def test_givenUnusable(self) -> None:
        """
        An interpreter given with C{--python} that cannot run the
        successor is not replaced by another: L{UnusablePython} says why,
        and how to make one that can (a virtualenv of it with migrator
        installed, passed as C{--python}).
        """
        run = FakeRunner({"/opt/py313/bin/python3.13": fails(CFFI)})
        with self.assertRaises(UnusablePython) as raised:
            findSecondPython("/opt/py313/bin/python3.13", {}, run, noneOnPath, "3.11.7")
        message = str(raised.exception)
        self.assertEqual(
            message.splitlines()[0],
            "--python /opt/py313/bin/python3.13 cannot run the demo's successor: it cannot "
            "import what the successor needs: ModuleNotFoundError: No module named "
            "'_cffi_backend'.",
        )
        self.assertIn("    /opt/py313/bin/python3.13 -m venv /tmp/migrator-3.13\n", message)
        self.assertIn("    /tmp/migrator-3.13/bin/pip install .\n", message)
        self.assertIn("python -m migrator demo --python /tmp/migrator-3.13/bin/python", message)

    def test_givenShim(self) -> None:
        """
        For a pyenv shim given with C{--python}, the advice names the
        interpreter behind it.
        """
        run = FakeRunner({"/r/shims/python3.13": fails(SHIM, 127)})
        with self.assertRaises(UnusablePython) as raised:
            findSecondPython("/r/shims/python3.13", {}, run, noneOnPath, "3.11.7")
        self.assertIn("a pyenv shim", str(raised.exception))
        self.assertIn("    /r/versions/3.13.0/bin/python3.13 -m venv ", str(raised.exception))

    def test_environment(self) -> None:
        """
        Without C{--python}, the environment variables are tried in order;
        one that fails is reported, not used.
        """
        run = FakeRunner({"/bad": fails(CFFI), "/good": works("3.12.1")})
        env = {"MIGRATOR_DEMO_PYTHON": "/bad", "MIGRATOR_TEST_OTHER_PYTHON": "/good"}
        second = findSecondPython(None, env, run, noneOnPath, "3.11.7")
        self.assertEqual((second.path, second.version), ("/good", "3.12.1"))
        self.assertEqual(
            second.found,
            "second interpreter from MIGRATOR_TEST_OTHER_PYTHON: /good (Python 3.12.1)",
        )
        self.assertEqual(run.probed(), ["/bad", "/good"])

    def test_path(self) -> None:
        """
        Then C{python3.N} on C{PATH}: this interpreter's own minor version
        is not even tried, one that fails is passed over, the first that
        works is used.
        """
        onPath = {
            "python3.10": "/usr/bin/python3.10",
            "python3.11": "/usr/bin/python3.11",
            "python3.12": "/usr/bin/python3.12",
            "python3.13": "/usr/bin/python3.13",
        }
        run = FakeRunner(
            {
                "/usr/bin/python3.10": fails(CFFI),
                "/usr/bin/python3.12": works("3.12.1"),
                "/usr/bin/python3.13": works("3.13.0"),
            }
        )
        second = findSecondPython(None, {}, run, onPath.get, "3.11.7")
        self.assertEqual((second.path, second.version), ("/usr/bin/python3.12", "3.12.1"))
        self.assertEqual(run.probed(), ["/usr/bin/python3.10", "/usr/bin/python3.12"])

    def test_none(self) -> None:
        """
        When nothing works, the successor is this interpreter, and the
        transcript says what was tried, why each failed, and how to get a
        second interpreter (with the newest one met).
        """
        onPath = {
            "python3.12": "/usr/bin/python3.12",
            "python3.13": "/r/shims/python3.13",
        }
        run = FakeRunner(
            {
                "/usr/bin/python3.12": works("3.11.7"),
                "/r/shims/python3.13": fails(SHIM, 127),
            }
        )
        second = findSecondPython(None, {}, run, onPath.get, "3.11.7")
        self.assertIsNone(second.path)
        self.assertEqual(second.version, "3.11.7")
        lines = second.found.splitlines()
        self.assertEqual(lines[0], "NO second Python interpreter found")
        self.assertEqual(
            lines[1].strip(), "(/usr/bin/python3.12: it is Python 3.11.7, this same version)"
        )
        self.assertIn("/r/shims/python3.13: it failed: pyenv: python3.13", lines[2])
        self.assertIn("so the successor will be a second process of this same Python", lines[3])
        self.assertIn("/r/versions/3.13.0/bin/python3.13 -m venv /tmp/migrator-3.13", second.found)

    def test_nothingOnPath(self) -> None:
        """
        With no candidate at all, the transcript says so.
        """
        second = findSecondPython(None, {}, FakeRunner({}), noneOnPath, "3.11.7")
        self.assertIsNone(second.path)
        self.assertIn(
            "NO second Python interpreter found (none on PATH, no MIGRATOR_DEMO_PYTHON)",
            second.found,
        )
        self.assertIn("    python3.13 -m venv /tmp/migrator-3.13", second.found)
