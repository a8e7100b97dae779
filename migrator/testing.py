# -*- test-case-name: tests.integration.test_takeover -*-
"""
Test helpers for people who run their services under migrator.

  - L{startMigrate}, L{ServiceProcess}: run C{twistd migrate} for real in a
    child process and wait for lines of its output (never sleep).
  - L{READY}, L{HANDED_OFF}, L{FAILED}: the log lines to wait for.
  - In-memory doubles of the takeover protocol's collaborators, for unit
    tests: L{FakeRegistry} (an L{IPortRegistry}), L{FakeSession},
    L{FakeRemoteRoot} and L{FakeBroker}, L{FakePeerPolicy},
    L{FakeControlSocket}, L{FakeConnection}, and L{connectControl} (a
    control connection over L{twisted.test.iosim}, with descriptor passing).
"""

from ._fakes import (
    FakeBroker,
    FakeCall,
    FakeConnection,
    FakeControlSocket,
    FakePeerPolicy,
    FakePort,
    FakeRegistry,
    FakeRemoteRoot,
    FakeSession,
    FDPassingTransport,
    connectControl,
)
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
    "FakeBroker",
    "FakeCall",
    "FakeConnection",
    "FakeControlSocket",
    "FakePeerPolicy",
    "FakePort",
    "FakeRegistry",
    "FakeRemoteRoot",
    "FakeSession",
    "FDPassingTransport",
    "connectControl",
    "FAILED",
    "HANDED_OFF",
    "READY",
    "OutputTimeout",
    "ServiceProcess",
    "childEnvironment",
    "startMigrate",
    "twistdCommand",
]

# Adapter authors: an object graph through capture and restore in-process.
from ._roundtrip import roundTrip  # noqa: E402

__all__ += ["roundTrip"]
