# -*- test-case-name: tests.test_stream -*-
"""
Watches on a stream's transports (L{migrator.state._stream}): which read
after the stream began, and which were written to (or closed) while
frozen.  A transport is watched by setting its C{__class__} to a cached
subclass of its own (one assignment: a stream watches tens of thousands
at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def readWatch(cls: Any, active: set[int]) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{active} the
    first time one of its instances reads, then gives it its class back.
    An instance is watched by setting its C{__class__} (one assignment: the
    stream watches tens of thousands at once).  Relies on the reactor
    calling C{doRead} through the instance, as every Twisted reactor does.
    """

    read = cls.doRead

    def doRead(self: Any) -> Any:
        active.add(id(self))
        self.__class__ = cls
        return read(self)

    return type(f"ReadWatched{cls.__name__}", (cls,), {"doRead": doRead, "__module__": __name__})


#: What L{writeWatch} watches on a frozen transport.
_WATCHED = ("write", "writeSequence", "loseConnection", "abortConnection")


def writeWatch(cls: type, dirty: set[int]) -> type:
    """
    A subclass of the transport class C{cls} that notes in C{dirty} any
    write to a frozen instance (or its close), and keeps it from writing
    here: the bytes stay queued, and the batch is captured again (a
    connection that is closing then stays, and closes here).
    """

    def watching(name: str) -> Callable[..., Any]:
        method = getattr(cls, name)

        def watched(self: Any, *args: Any) -> Any:
            dirty.add(id(self))
            result = method(self, *args)
            if self.connected:
                self.stopWriting()
            return result

        return watched

    namespace: dict[str, Any] = {name: watching(name) for name in _WATCHED}
    namespace["__module__"] = __name__
    return type(f"WriteWatched{cls.__name__}", (cls,), namespace)
