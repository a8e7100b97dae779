# -*- test-case-name: tests.test_connections -*-
"""
Waiting for busy connections to go idle before a capture (incumbent side,
for a successor that does not stream; a streaming capture moves a busy
connection later instead, see L{migrator.state._stream}).
"""

from __future__ import annotations

from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime

from migrator.interfaces import IBusyAware, IPortRegistry


@attrs.define(eq=False)
class Settling:
    """
    Before a capture, waits (at most C{timeout} seconds) for the connections
    that are I{busy} to go idle: those whose adapter, an L{IBusyAware},
    says so (work in progress that ends by itself, such as an
    HTTP request being answered).  A busy connection declines to move; one
    that finishes in time moves instead of draining here.

    While it waits, every connection that I{could} be busy (its adapter is
    L{IBusyAware}) and is idle stops reading, so that it starts no new work; the
    client's bytes wait in the kernel.  L{resume} makes them read again:
    call it in the same reactor turn as L{captureConnections}, which then
    sees them reading (and the successor starts them reading).

    @ivar claimed: if given, the port keys the successor declared: a
        connection accepted on another port cannot move, busy or not, and
        is not waited for.
    @ivar busy: how many connections were busy when the wait ended (0
        unless the bound expired).
    @ivar waited: how long the wait took, in seconds.
    """

    _reactor: IReactorTime
    _ports: IPortRegistry
    _adapters: Any
    timeout: float
    claimed: frozenset[str] | None = None
    interval: float = 0.005
    busy: int = 0
    waited: float = 0.0
    _started: float = 0.0
    _paused: list[Any] = attrs.field(factory=list)
    _call: IDelayedCall | None = None
    _done: Deferred[int] | None = None

    def start(self, connections: list[Any] | None = None) -> Deferred[int] | None:
        """
        @param connections: the open connections, if the caller has just
            listed them (the later checks list them again).
        @return: C{None} if no connection is busy (nothing to wait for, and
            nothing was paused), else a L{Deferred} that fires with how many
            are still busy when they are all idle or the time is up.
        """
        self._started = self._reactor.seconds()
        if not self._check(pause=False, connections=connections):
            return None
        done: Deferred[int] = Deferred()
        self._done = done
        # With no time to wait (a timeout of 0) the first check ends the
        # wait at once; the caller still gets the fired Deferred, so that
        # it calls resume() for the connections that check paused.
        self._tick()
        return done

    def _check(self, pause: bool, connections: list[Any] | None = None) -> int:
        readers = set(map(id, cast(IReactorFDSet, self._reactor).getReaders())) if pause else set()
        busyOf: dict[type, Any] = {}
        busy = 0
        for t in self._ports.openConnections() if connections is None else connections:
            protocol = t.protocol
            cls = type(protocol)
            if cls not in busyOf:
                adapter = self._adapters.adapterFor(cls)
                busyOf[cls] = adapter.busy if IBusyAware.providedBy(adapter) else None
            isBusy = busyOf[cls]
            if isBusy is None:
                continue
            if isBusy(protocol):
                if self._canMove(t):
                    busy += 1
            elif pause and id(t) in readers:
                t.stopReading()
                self._paused.append(t)
        self.busy = busy
        return busy

    def _canMove(self, t: Any) -> bool:
        server = getattr(t, "server", None)
        return self.claimed is None or server is None or self._ports.keyOf(server) in self.claimed

    def _tick(self) -> None:
        self._call = None
        busy = self._check(pause=True)
        now = self._reactor.seconds()
        if busy and now < self._started + self.timeout:
            self._call = self._reactor.callLater(self.interval, self._tick)
            return
        self.waited = now - self._started
        done, self._done = self._done, None
        if done is not None:
            done.callback(busy)

    def resume(self) -> None:
        """
        Stop waiting (fire the L{Deferred} now if it has not fired) and make
        the connections paused here read again.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        paused, self._paused = self._paused, []
        for t in paused:
            if t.connected and not t.disconnecting:
                t.startReading()
        done, self._done = self._done, None
        if done is not None:
            self.waited = self._reactor.seconds() - self._started
            done.callback(self.busy)
