# -*- test-case-name: tests.integration.test_crosspython -*-
"""
A service moves between two Python versions with its connections: from
this interpreter to another one and back, connection state intact.

The other interpreter comes from C{MIGRATOR_TEST_OTHER_PYTHON}, or is the
first C{python3.N} on C{PATH} (of another minor version) that can import
twisted, attrs and zope.interface; without one, the test is skipped and
says why.  C{.ci/run} prepares one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

from ._support import NUMBERED_ADAPTERS, NUMBERED_TAC, finishLineClient, startLineClient

ADAPTERS = NUMBERED_ADAPTERS
_PROBE = "import sys, twisted, attrs, zope.interface; print(sys.version.split()[0])"


def _version(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def otherPython() -> tuple[str, str]:
    """
    Find another Python interpreter able to run migrator.

    @return: its path and version.
    @raise SkipTest: if there is none.
    """
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    given = os.environ.get("MIGRATOR_TEST_OTHER_PYTHON")
    if given:
        version = _version(given)
        if version is None:
            raise SkipTest(
                f"MIGRATOR_TEST_OTHER_PYTHON={given} cannot import twisted, attrs "
                f"and zope.interface"
            )
        return given, version
    for minor in range(9, 20):
        name = f"python3.{minor}"
        if name == f"python{mine}":
            continue
        path = shutil.which(name)
        if path:
            version = _version(path)
            if version and not version.startswith(mine + "."):
                return path, version
    raise SkipTest(
        "no second Python interpreter with twisted, attrs and zope.interface: "
        "set MIGRATOR_TEST_OTHER_PYTHON (.ci/run prepares one)"
    )


class CrossPythonTests(TestCase):
    """
    Takeovers between two interpreters, in both directions.
    """

    def test_thereAndBack(self) -> None:
        """
        Connections with unparsed and unsent bytes move from this Python to
        the other one and back: every numbered reply arrives once and in
        order, C{connectionMade} ran once per connection, and status names
        the interpreter of each generation.
        """
        other, otherVersion = otherPython()
        work = tempfile.mkdtemp(prefix="migrator-xpy-")
        self.addCleanup(shutil.rmtree, work, True)
        os.chmod(work, 0o700)
        control = os.path.join(work, "ctl")
        options = ["--adapters", ADAPTERS, "--drain-timeout", "30"]
        env = {"NUMBERED_PAD": "1000"}

        def start(python: str | None, takeover: bool) -> ServiceProcess:
            process = startMigrate(
                control,
                ["--tac", NUMBERED_TAC],
                takeover=takeover,
                python=python,
                migrateOptions=options,
                cwd=work,
                env=env,
            )
            self.addCleanup(process.stop)
            return process

        incumbent = start(None, False)
        first = incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"NumberedFactory starting on (\d+)", 10).group(1))
        stop = os.path.join(work, "stop")
        client = startLineClient(self, port, 5, stop, pad=1000)
        versions = [first["python"]]
        for generation, python in [(1, other), (2, None)]:
            successor = start(python, True)
            ready = successor.waitFor(READY, 90)
            self.assertEqual(int(ready["generation"]), generation)
            versions.append(ready["python"])
            incumbent.waitFor(r"froze and sent 5 connection\(s\)", 30)
            incumbent.waitFor(HANDED_OFF, 30)
            self.assertEqual(incumbent.waitForExit(60), 0)
            incumbent = successor
        self.assertEqual(versions, [sys.version.split()[0], otherVersion, sys.version.split()[0]])
        result = finishLineClient(self, client, stop)
        self.assertEqual(result["made"], 5)
        self.assertEqual(result["min_hops"], 2)
