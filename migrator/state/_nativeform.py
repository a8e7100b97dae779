# -*- test-case-name: tests.test_native -*-
"""
The native form of a stream's batch: what its writer
(L{migrator.state._nativewrite}) and its reader
(L{migrator.state._nativeread}) agree on.

A batch in the native form is pickled (protocol 5) by the C pickler, one
pickle per connection (its protocol), sharing one memo, so sharing and
cycles are kept throughout the batch.  Plain data (atoms and exact
C{dict}, C{list}, C{tuple}, C{set}, C{frozenset}, C{bytearray}) is the
C pickler's own, wherever it sits; every other object is written as a
call of one of this module's I{markers}, and only of those: they are the
only globals the pickle names, and the reader's unpickler resolves them
to its own functions (and refuses any other global, and persistent ids):

  - C{OBJECT(typeName, version)} makes an adapted object (by the reading
    side's adapter for C{typeName}: its C{create}), and
    C{POPULATE(obj, state)} (pickle's I{state setter}, after the state
    is read) queues it for populating with C{state}, the state its
    adapter captured at C{version} (the default rule's: its instance
    dictionary), as the graph reader does; C{OBJECT(typeName, version,
    True)} makes one whose state is C{None}, queued at once;
  - C{ANCHOR(name)} is an anchor: a port's factory, the reactor (the
    reader checks that the batch changed none of its attributes);
  - C{TRANSPORT(meta)} builds a connection's transport on the descriptor
    C{meta["fd"]} of the batch's message, and C{ATTACH(transport,
    (protocol, producer))} gives it its protocol (an object of the batch)
    and its producer (registered at the commit) or C{None};
  - C{CALL(when, function, args, kw)} is a scheduled call on the reading
    side's reactor, held until the commit, of C{function}: C{(METHOD,
    obj, name)} the method C{name} of C{obj}, or C{(FUNCTION, name)} the
    function allowed under C{name}; C{when} C{None}: a call cancelled, or
    run, before the batch.

Objects are made as they are met and populated (queued) once their
state is read: after the objects their state refers to, in their
entries' order, as the graph reader queues them.
"""

from __future__ import annotations

from typing import Any, NoReturn

#: This form's version: a successor asks for batches in the version it
#: reads, and an incumbent writes them only if that is the version it
#: writes (else the graph writer writes every batch).  Version 1 (flat
#: records of plain data, references by index) is no longer read or
#: written.
VERSION = 2

#: The kinds of a call's function.
METHOD = "m"
FUNCTION = "f"


def _marker(name: str) -> Any:
    def marker(*args: object) -> NoReturn:
        raise TypeError(f"{name} is a name in a native batch, not a function to call")

    marker.__name__ = marker.__qualname__ = name
    marker.__module__ = __name__
    return marker


#: The markers (see the module docstring), by the names the pickle gives.
OBJECT = _marker("OBJECT")
POPULATE = _marker("POPULATE")
ANCHOR = _marker("ANCHOR")
TRANSPORT = _marker("TRANSPORT")
ATTACH = _marker("ATTACH")
CALL = _marker("CALL")
MARKERS = ("OBJECT", "POPULATE", "ANCHOR", "TRANSPORT", "ATTACH", "CALL")
