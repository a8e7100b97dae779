# -*- test-case-name: tests.integration.test_takeover -*-
"""
Helpers for adapter authors and for operators who run their services under
migrator.

  - L{roundTrip}: an object graph through capture and restore in-process,
    for adapter authors' unit tests.
  - L{startMigrate}, L{ServiceProcess}: run C{twistd migrate} for real in a
    child process and wait for lines of its output (never sleep);
    L{twistdCommand} and L{childEnvironment} build its command line and
    environment.
  - L{READY}, L{HANDED_OFF}, L{FAILED}: the log lines to wait for;
    L{OutputTimeout} is raised when one does not come in time.
"""

from migrator.demo._processes import (
    FAILED,
    HANDED_OFF,
    READY,
    OutputTimeout,
    ServiceProcess,
    childEnvironment,
    startMigrate,
    twistdCommand,
)
from migrator.state._roundtrip import roundTrip

__all__ = [
    "FAILED",
    "HANDED_OFF",
    "READY",
    "OutputTimeout",
    "ServiceProcess",
    "childEnvironment",
    "roundTrip",
    "startMigrate",
    "twistdCommand",
]
