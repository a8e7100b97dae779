# -*- test-case-name: tests.test_twistedinternals,tests.test_ports,tests.test_stream -*-
"""
Twisted's private API about the reactor itself and its scheduled calls
(C{LoopingCall}): the seam L{migrator._twistedinternals}'s sibling (it
would pass 600 lines with this), held to the same rule: each function
names what it relies on, and C{tests/test_twistedinternals.py} checks
that no other module uses the private names used here.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet, IReactorTime


def hookReactorMethod(reactor: object, name: str, replacement: Callable[..., Any]) -> Any:
    """
    Make C{reactor.<name>} (C{listenTCP}, say) call C{replacement}, on this
    reactor instance only.

    Relies on: reactors being plain instances (no C{__slots__}), and on
    endpoints, C{strports} and C{twisted.application.internet} looking the
    method up on the reactor when they listen, not earlier.

    @return: what C{reactor.<name>} was (to call it, and to give it back
        with L{unhookReactorMethod}), or C{None} if the reactor has no such
        method (then nothing is hooked).
    """
    original = getattr(reactor, name, None)
    if original is None:
        return None
    setattr(reactor, name, replacement)
    return original


def unhookReactorMethod(reactor: object, name: str, original: Callable[..., Any]) -> None:
    """
    Undo L{hookReactorMethod}.
    """
    try:
        delattr(reactor, name)
    except AttributeError:
        pass
    # The original may have been an attribute of the instance itself.
    if getattr(reactor, name, None) != original:
        setattr(reactor, name, original)


def readingTest(reactor: IReactorFDSet) -> Callable[[Any], bool]:
    """
    A test of whether a selectable is among C{reactor}'s readers, in
    constant time.  The public C{getReaders} builds a list of them all: once
    per batch of a stream, that made the capture of 20,000 connections
    quadratic.

    Relies on: the epoll and poll reactors keeping the readers' descriptors
    in C{_reads} (a set or a dictionary) and the selectables by descriptor
    in C{_selectables}; the select reactor keeping the readers themselves
    in C{_reads}.  Any other reactor (a test's fake) is asked
    C{getReaders()} once, here.

    @return: the test, valid until the reactor's readers change.
    """
    reads = getattr(reactor, "_reads", None)
    selectables = getattr(reactor, "_selectables", None)
    if isinstance(reads, (set, dict)) and isinstance(selectables, dict):

        def byDescriptor(t: Any) -> bool:
            fd = t.fileno()
            return fd in reads and selectables.get(fd) is t

        return byDescriptor
    if isinstance(reads, (set, dict)) and selectables is None:
        return lambda t: t in reads
    readers = set(map(id, reactor.getReaders()))
    return lambda t: id(t) in readers


def noteReads(reactor: object, note: Callable[[Any], object]) -> Callable[[], None] | None:
    """
    Make C{reactor} call C{note(selectable)} for every read it dispatches
    from now on (before the selectable's C{doRead}), until the function
    returned is called: one hook for every connection, where a watch set
    on each connection costs a class assignment each (tens of thousands at
    a stream's first look).

    Relies on: the epoll and poll reactors (those with C{_selectables}, a
    dictionary, and C{_POLL_IN}, a bit mask) dispatching each event of
    their poll through C{self._doReadOrWrite(selectable, fd, event)},
    looked up on the instance at each poll, and calling C{doRead} for an
    event with C{_POLL_IN} set.

    @return: the function that undoes the hook; or C{None} if C{reactor}
        is not such a reactor, or is hooked already (nothing is done: the
        caller watches each connection).
    """
    pollIn = getattr(reactor, "_POLL_IN", None)
    original = getattr(reactor, "_doReadOrWrite", None)
    if (
        not isinstance(getattr(reactor, "_selectables", None), dict)
        or not isinstance(pollIn, int)
        or original is None
        or "_doReadOrWrite" in vars(reactor)
    ):
        return None

    def _doReadOrWrite(selectable: Any, fd: int, event: int) -> Any:
        if event & pollIn:
            note(selectable)
        return original(selectable, fd, event)

    reactor._doReadOrWrite = _doReadOrWrite  # type: ignore[attr-defined]

    def undo() -> None:
        if vars(reactor).get("_doReadOrWrite") is _doReadOrWrite:
            delattr(reactor, "_doReadOrWrite")

    return undo


def stopReadingAll(reactor: object, transports: list[Any]) -> list[Any]:
    """
    Stop C{reactor} reading C{transports}, those it reads and does not
    write, all in one call: what C{stopReading} does for each, without its
    six calls (a stream's freeze, tens of thousands of connections).

    Relies on: the epoll reactor keeping the descriptors it reads in
    C{_reads} (a set) and those it writes in C{_writes}, the selectables by
    descriptor in C{_selectables}, its C{select.epoll} in C{_poller}, and
    removing a reader that it does not write by deleting it from
    C{_selectables} and C{_reads} and unregistering it (its
    C{_remove}); and on C{stopReading} being
    C{FileDescriptor.stopReading} (a transport whose class has its own is
    left to the caller).

    @return: the transports not stopped here (all of them, on any other
        reactor): the caller calls their C{stopReading} and
        C{stopWriting}.
    """
    reads = getattr(reactor, "_reads", None)
    writes = getattr(reactor, "_writes", None)
    selectables = getattr(reactor, "_selectables", None)
    poller = getattr(reactor, "_poller", None)
    epoll = getattr(select, "epoll", None)
    if (
        epoll is None
        or not isinstance(poller, epoll)
        or not isinstance(reads, set)
        or not isinstance(writes, set)
        or not isinstance(selectables, dict)
    ):
        return transports
    rest: list[Any] = []
    plain = FileDescriptor.stopReading
    unregister = poller.unregister
    for t in transports:
        fd = t.fileno()
        if (
            fd in writes
            or fd not in reads
            or selectables.get(fd) is not t
            or getattr(type(t), "stopReading", None) is not plain
        ):
            rest.append(t)
            continue
        del selectables[fd]
        reads.remove(fd)
        unregister(fd)
    return rest


def registeredTest(reactor: IReactorFDSet) -> Callable[[Any], bool]:
    """
    A test of whether a selectable is registered with C{reactor} at all
    (read or written), in constant time.

    Relies on: the epoll and poll reactors keeping every selectable they
    read or write by its descriptor in C{_selectables} (and dropping it
    when they do neither); the select reactor keeping the selectables
    themselves in C{_reads} and C{_writes}.  Any other reactor (a test's
    fake) is asked C{getReaders()} and C{getWriters()} once, here.

    @return: the test, valid until the reactor's readers or writers change.
    """
    selectables = getattr(reactor, "_selectables", None)
    if isinstance(selectables, dict):

        def byDescriptor(t: Any) -> bool:
            return selectables.get(t.fileno()) is t

        return byDescriptor
    reads = getattr(reactor, "_reads", None)
    writes = getattr(reactor, "_writes", None)
    if isinstance(reads, (set, dict)) and isinstance(writes, (set, dict)):
        return lambda t: t in reads or t in writes
    registered = {id(t) for t in [*reactor.getReaders(), *reactor.getWriters()]}
    return lambda t: id(t) in registered


# -- scheduled calls -----------------------------------------------------------


def blankLoopingCall() -> task.LoopingCall:
    """
    A L{task.LoopingCall} not initialised yet (L{initLoopingCall} does
    that): a graph reader remembers it before reading its function, which
    may refer back to it.  Its constructor is not used because it looks up
    the global reactor.
    """
    return task.LoopingCall.__new__(task.LoopingCall)


def initLoopingCall(
    loop: task.LoopingCall, clock: IReactorTime, f: Callable[..., object], a: tuple[Any, ...],
    kw: dict[str, Any], interval: float | None, starttime: float | None,
) -> None:
    """
    Initialise a L{blankLoopingCall}, stopped.

    Relies on: the attributes C{LoopingCall.__init__} and C{start} set.
    """
    loop.f, loop.a, loop.kw = f, a, kw
    loop.clock = clock
    loop.call = None
    loop.interval = interval
    loop.running = False
    if starttime is not None:
        loop.starttime = starttime


def resumeLoopingCall(loop: task.LoopingCall, delay: float, wrap: Callable[..., Any]) -> DelayedCall:
    """
    Make an initialised, stopped loop run again as if it had been started
    earlier: its next call in C{delay} seconds, then every C{interval}
    from its C{starttime}.  Nobody waits on the L{Deferred} C{start()}
    would have returned (the application's stayed with the incumbent).

    Relies on: C{LoopingCall._deferred} (what C{stop()} fires),
    C{_runAtStart}, and on a running loop being the callable it schedules
    (C{LoopingCall.__call__}).

    @param wrap: applied to the loop before it is scheduled.
    @return: the scheduled call (also the loop's C{call}).
    """
    loop.running = True
    loop._deferred = Deferred()
    loop._runAtStart = False
    loop.call = loop.clock.callLater(delay, wrap(loop))
    return loop.call  # type: ignore[return-value]


def abandonLoopingCall(loop: task.LoopingCall) -> None:
    """
    Stop a loop here without C{stop()}, which would fire the application's
    L{Deferred} (the loop goes on in the other process, or never moved).

    Relies on: C{running} and C{call} being all the state a stopped loop
    looks at.
    """
    loop.running = False
    if loop.call is not None and loop.call.active():
        loop.call.cancel()
    loop.call = None
