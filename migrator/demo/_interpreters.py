# -*- test-case-name: tests.test_interpreters -*-
"""
The second Python interpreter of C{python -m migrator demo}: found, and
checked before the demo announces it.

An interpreter is used only if it can run the demo's successor: import
migrator and everything C{twistd migrate manhole} needs (Twisted with
conch, cryptography and its C backend, pyOpenSSL, attrs, zope.interface,
the C{migrate} plugin) and build migrator's default adapter registry.  A
bare interpreter of another Python version cannot; neither can a pyenv
shim for a version pyenv does not have active.  The way to get one is a
virtualenv of that Python with migrator installed (L{ADVICE}).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import attrs

#: What the successor imports and builds, run by the interpreter checked;
#: it prints that interpreter's version.
PROBE = """\
import sys
import attrs, zope.interface, cryptography, OpenSSL
import twisted.conch.manhole_tap
from twisted.plugins import migrator_plugin
import migrator.tap
from migrator.adapters import defaultRegistry
defaultRegistry()
print(sys.version.split()[0])
"""

#: How long one interpreter may take to answer the probe.
PROBE_TIMEOUT = 60.0

#: Environment variables naming a second interpreter, in the order tried.
VARIABLES = ("MIGRATOR_DEMO_PYTHON", "MIGRATOR_TEST_OTHER_PYTHON")


def advice(python: str = "python3.13") -> str:
    """
    How to get a second interpreter that can run the successor.

    @param python: the interpreter of another Python version to make it
        with.
    """
    name = os.path.basename(python)
    minor = name[len("python") :] if name.startswith("python3.") else "other"
    venv = f"/tmp/migrator-{minor}"
    return (
        "For the cross-Python demo, give --python the python of a virtualenv of\n"
        "another Python version with migrator installed, e.g. from migrator's\n"
        "source directory:\n"
        f"    {python} -m venv {venv}\n"
        f"    {venv}/bin/pip install .\n"
        f"    python -m migrator demo --python {venv}/bin/python"
    )


#: Runs an interpreter: C{(argv, env)} to its completed process, raising
#: C{OSError} if it cannot start or L{subprocess.TimeoutExpired}.
Runner = Callable[[Sequence[str], Mapping[str, str]], "subprocess.CompletedProcess[str]"]


def runProbe(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """
    The real L{Runner}: run C{argv} with C{env}, collecting its output, for
    at most L{PROBE_TIMEOUT} seconds.
    """
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        timeout=PROBE_TIMEOUT,
    )


class UnusablePython(Exception):
    """
    The interpreter given with C{--python} cannot run the successor; the
    message says why and what to do.
    """


@attrs.frozen
class SecondPython:
    """
    The interpreter the demo's successor runs on.

    @ivar path: its path, or C{None} for this interpreter (no second one
        could be used).
    @ivar version: its version (C{"3.13.0"}).
    @ivar found: how it was (not) found, for the transcript.
    """

    path: str | None
    version: str
    found: str


def _why(result: subprocess.CompletedProcess[str]) -> str:
    """
    The one line of a failed probe's output that says why it failed: a
    traceback's last line (C{ModuleNotFoundError: No module named
    '_cffi_backend'}), else the first line (a pyenv shim's C{pyenv:
    python3.13: command not found}).
    """
    lines = [line.strip() for line in (result.stderr or "").splitlines() if line.strip()]
    if not lines:
        return f"it exited with status {result.returncode} and said nothing"
    if lines[0].startswith("Traceback"):
        return f"it cannot import what the successor needs: {lines[-1]}"
    return f"it failed: {lines[0]}"


@attrs.frozen
class Check:
    """
    What running L{PROBE} with an interpreter showed.

    @ivar version: its version, if it can run the successor, else C{None}.
    @ivar why: why it cannot (one line), or C{""}.
    @ivar base: the interpreter to make a virtualenv with, to get one that
        can (the interpreter itself, or the one behind a pyenv shim), if
        known.
    """

    version: str | None
    why: str = ""
    base: str | None = None


def _behindShim(path: str, stderr: str) -> str | None:
    """
    The interpreter a pyenv shim stands for, from what the shim says when
    its version is not active (C{The `python3.13' command exists in these
    Python versions:} followed by the versions).
    """
    lines = stderr.splitlines()
    for n, line in enumerate(lines):
        if "command exists in these Python versions" in line:
            versions = [v.strip() for v in lines[n + 1 :] if v.strip()[:1].isdigit()]
            if versions:
                root = os.path.dirname(os.path.dirname(path))
                return os.path.join(root, "versions", versions[-1], "bin", os.path.basename(path))
    return None


def checkPython(path: str, env: Mapping[str, str], run: Runner = runProbe) -> Check:
    """
    Can interpreter C{path} run the demo's successor?  Run L{PROBE} with it.

    @param path: the interpreter.
    @param env: the environment the successor will have (its
        C{PYTHONPATH} names the checkout, when run from one).
    @param run: how to run it.
    @return: what the probe showed.
    """
    try:
        result = run([path, "-c", PROBE], env)
    except subprocess.TimeoutExpired:
        return Check(None, f"it did not answer within {PROBE_TIMEOUT:g} s", path)
    except OSError as e:
        return Check(None, f"it cannot be run: {e.strerror or e}")
    if result.returncode != 0:
        stderr = result.stderr or ""
        why = _why(result)
        if os.sep + "shims" + os.sep in path and "pyenv" in stderr:
            real = _behindShim(path, stderr)
            why += " (a pyenv shim runs only the versions pyenv has active)"
            return Check(None, why, real)
        return Check(None, why, path)
    version = (result.stdout or "").strip().splitlines()
    if not version:
        return Check(None, "it printed no version", path)
    return Check(version[-1])


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def findSecondPython(
    given: str | None,
    env: Mapping[str, str],
    run: Runner = runProbe,
    which: Callable[[str], str | None] = shutil.which,
    mine: str | None = None,
) -> SecondPython:
    """
    Find another Python interpreter able to run the demo's successor:
    C{given} (C{--python}), else one named by an environment variable of
    L{VARIABLES}, else the first C{python3.N} on C{PATH} of another minor
    version than this one.  Each is checked (L{checkPython}) before it is
    chosen.

    @param given: the interpreter given with C{--python}, if any.
    @param env: the environment (the variables are read from it, and the
        probe runs with it).
    @param run: how to run an interpreter.
    @param which: how to look a command up on C{PATH}.
    @param mine: this interpreter's version (default: the running one's).
    @return: the interpreter to use; one with no C{path} if none could be
        used (the demo then runs its successor on this interpreter).
    @raise UnusablePython: if C{given} cannot run the successor.
    """
    if mine is None:
        mine = sys.version.split()[0]
    if given:
        check = checkPython(given, env, run)
        if check.version is None:
            raise UnusablePython(
                f"--python {given} cannot run the demo's successor: {check.why}.\n"
                + advice(check.base or "python3.13")
            )
        return SecondPython(
            given,
            check.version,
            f"second interpreter from --python: {given} (Python {check.version})",
        )
    tried: list[str] = []
    base: str | None = None
    for variable in VARIABLES:
        path = env.get(variable)
        if not path:
            continue
        check = checkPython(path, env, run)
        if check.version is not None:
            return SecondPython(
                path,
                check.version,
                f"second interpreter from {variable}: {path} (Python {check.version})",
            )
        tried.append(f"{variable}={path}: {check.why}")
    for minor in range(9, 20):
        name = f"python3.{minor}"
        if f"3.{minor}" == _minor(mine):
            continue
        path = which(name)
        if not path:
            continue
        check = checkPython(path, env, run)
        if check.version is None:
            tried.append(f"{path}: {check.why}")
            # The newest one met, to suggest making a virtualenv with.
            base = check.base or base
        elif _minor(check.version) == _minor(mine):
            tried.append(f"{path}: it is Python {check.version}, this same version")
        else:
            return SecondPython(
                path,
                check.version,
                f"second interpreter found on PATH: {path} (Python {check.version})",
            )
    why = "".join(f"\n          ({t})" for t in tried) or " (none on PATH, no MIGRATOR_DEMO_PYTHON)"
    how = "\n".join("        " + line for line in advice(base or "python3.13").splitlines())
    return SecondPython(
        None,
        mine,
        f"NO second Python interpreter found{why}\n"
        f"        so the successor will be a second process of this same Python "
        f"{mine} ({sys.executable}).\n{how}",
    )
