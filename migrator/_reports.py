# -*- test-case-name: tests.test_service -*-
"""
What a L{migrator._service.MigrateService} tells operators about its
lineage and its last takeover: the generations it knows of, and the
per-class outcome of a takeover (never two: whether the service's state is
now split).  A mixin of the service, kept apart to keep each module to one
idea.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.logger import Logger

from migrator._version import __version__
from migrator.takeover._liveness import processAlive

_log = Logger()

#: The most generations C{status}'s lineage lists (the newest).
MAX_LINEAGE = 100
_LINEAGE_KEYS = ("generation", "pid", "python", "migrator", "started", "ended", "alive")


class ServiceReports:
    """
    The service's lineage and takeover reports; the service provides the
    attributes used here (C{successor}, C{incumbent}, C{generation},
    C{startedAt}, C{_startedSeconds}, C{_tookOverAt}).
    """

    successor: Any
    incumbent: Any
    generation: int
    startedAt: float
    _startedSeconds: float
    _tookOverAt: float | None

    def _logClasses(self, result: dict[str, Any]) -> None:
        """
        Never two: what happened to each class of connection, and whether
        the service's state is now split between two processes.
        """
        classes = result.get("classes") or {}
        if classes:
            _log.info(
                "connections by class: {classes}",
                classes="; ".join(
                    f"{name}: " + ", ".join(f"{k} {n}" for k, n in counts.items())
                    for name, counts in classes.items()
                ),
            )
        split = result.get("split_classes") or {}
        if result.get("split"):
            predecessor = self.successor.predecessor if self.successor else None
            _log.warn(
                "the service's state is now split: {count} connection(s) no adapter "
                "can move stay in pid {pid} (the old process) until they close, and do "
                "not see this process's state (--unmovable {policy}): {classes}",
                count=sum(split.values()),
                classes=", ".join(f"{name}: {n}" for name, n in split.items()),
                pid=predecessor.pid if predecessor is not None else "?",
                policy=result.get("unmovable"),
            )

    def _wall(self, seconds: Any) -> float | None:
        """
        A time of the reactor's clock on the wall clock (for operators).
        """
        if not isinstance(seconds, (int, float)):
            return None
        return round(self.startedAt + seconds - self._startedSeconds, 3)

    def lineage(self) -> list[dict[str, Any]]:
        """
        Every generation this service has had, as far as it was handed on
        (at most L{MAX_LINEAGE}, the newest last): pid, Python, migrator's
        version, when it started and how it ended.  The predecessor gave
        this process its own lineage in its answer to C{begin}.
        """
        entries: list[dict[str, Any]] = []
        begun = self.successor.predecessor if self.successor is not None else None
        predecessor = begun.toWire() if begun is not None else {}
        if predecessor:
            carried = predecessor.get("lineage")
            for entry in carried if isinstance(carried, list) else ():
                if isinstance(entry, dict):
                    # Whether an older generation still runs is not known here.
                    entries.append({k: entry.get(k) for k in _LINEAGE_KEYS if k in entry})
                    entries[-1]["alive"] = None
            pid = predecessor.get("pid")
            if not entries or entries[-1].get("pid") != pid:
                entries.append({k: predecessor.get(k) for k in ("generation", "pid", "python")})
            entries[-1]["ended"] = {"how": "handed off", "to": os.getpid(), "at": self._tookOverAt}
            entries[-1]["alive"] = processAlive(int(pid)) if isinstance(pid, int) else False
        me: dict[str, Any] = {
            "generation": self.generation,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "migrator": __version__,
            "started": self.startedAt,
            "ended": None,
            "alive": True,
        }
        incumbent = self.incumbent
        if incumbent is not None and incumbent.handedOffTo is not None:
            last = incumbent.lastAttempt or {}
            me["ended"] = {
                "how": "handed off",
                "to": incumbent.handedOffTo.get("pid"),
                "at": self._wall(last.get("at")),
            }
        return [*entries, me][-MAX_LINEAGE:]
