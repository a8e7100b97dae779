# -*- test-case-name: tests.test_service -*-
"""
What L{migrator._service.MigrateService} imports only when, or after, it
needs it: the modules that answer dry runs, and migrator's TLS adapters,
off a successor's way to its takeover.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

if TYPE_CHECKING:
    from migrator.takeover._dryrun import DryRuns
    from migrator.takeover._incumbent import Incumbent

_log = Logger()

#: Seconds after a process starts serving at which it registers the
#: adapters put off, then imports the modules that answer dry runs and an
#: operator's questions (L{importDryRuns}): off a successor's way, each in
#: a turn of its own (and after a takeover then under way).
IMPORT_LATER = (0.1, 1.0)


def importDryRuns() -> None:
    """
    What a first dry run, or an operator's plan or graph (or a successor's
    selection), would otherwise import on its way, when newer code may be
    on disk.
    """
    try:
        import migrator.state._report  # noqa: F401
        import migrator.takeover._dryrun  # noqa: F401
    except Exception:
        _log.failure("importing the modules that answer dry runs failed")


def makeDryRuns(reactor: IReactorTime, incumbent: Incumbent, timeout: float) -> DryRuns:
    """
    What answers dry runs, made (its modules imported) at the first one.
    """
    from migrator.takeover._dryrun import DryRuns

    return DryRuns(reactor, incumbent, timeout=timeout)


def followTLS(port: Any) -> None:
    """
    Follow a port's TLS sessions (L{migrator.adapters.tls.followPort}),
    importing migrator's TLS adapters (and cryptography's AEAD, X.509...)
    only for a port that serves TLS: about 10 ms of a successor's start.
    """
    tls = sys.modules.get("twisted.protocols.tls")
    factory = getattr(port, "factory", None)
    if tls is not None and isinstance(factory, tls.TLSMemoryBIOFactory):
        from migrator.adapters.tls import followPort

        followPort(port)
