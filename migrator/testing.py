# -*- test-case-name: tests.integration.test_takeover -*-
"""
Test helpers for people who run their services under migrator.

  - L{startMigrate}, L{ServiceProcess}: run C{twistd migrate} for real in a
    child process and wait for lines of its output (never sleep).
  - L{READY}, L{HANDED_OFF}, L{FAILED}: the log lines to wait for.
"""

from ._processes import (
    FAILED,
    HANDED_OFF,
    READY,
    OutputTimeout,
    ServiceProcess,
    childEnvironment,
    startMigrate,
    twistdCommand,
)

__all__ = [
    "FAILED",
    "HANDED_OFF",
    "READY",
    "OutputTimeout",
    "ServiceProcess",
    "childEnvironment",
    "startMigrate",
    "twistdCommand",
]
