# -*- test-case-name: tests.test_native -*-
"""
The native form of a stream's batch: what its writer
(L{migrator.state._nativewrite}) and its reader
(L{migrator.state._nativeread}) agree on.

A batch in the native form is a flat list of I{records}, one per object
of the batch's graph, pickled (protocol 5) by the C pickler in one piece
per connection, sharing one memo: plain data only (atoms and exact
C{dict}, C{list}, C{tuple}, C{set}, C{frozenset}, C{bytearray}), so it is
decoded by the same unpickler as every other message, which names no
class and no function (L{migrator.state._nodes.loadsPlain}); sharing and
cycles among plain containers are kept by pickle's memo.  The objects
themselves are made by the reader from the records, and refer to one
another by I{reference}: a record's index in the batch (an C{int}), or
an anchor's name (a C{str}: a port's factory, the reactor).

Records:

  - C{("o", typeName, version, plain, refs)}: an adapted object, made by
    the reading side's adapter for C{typeName}; its state is C{plain}
    and, if C{refs} is not C{None} (then C{plain} is a C{dict}, holding
    C{None} at those keys, all strings), the references C{refs} maps
    keys to, put in their places (an instance dictionary, or a
    dictionary an adapter made for its capture; any other state of an
    adapter's own is plain throughout, with C{refs} C{None});
  - C{("t", meta, protocol, producer)}: a connection's transport on the
    descriptor C{meta["fd"]} of the batch's message, whose protocol is
    the reference C{protocol} (an object's record), and whose producer
    (registered at the commit) the reference C{producer}, or C{None};
  - C{("c", when, function, args, kw)}: a scheduled call on the reading
    side's reactor, held until the commit, of C{function}: C{("m", ref,
    name)} the method C{name} of the reference C{ref}, or C{("f", name)}
    the function allowed under C{name}; C{args} and C{kw} plain.  C{when}
    C{None}: a call cancelled, or run, before the batch.

An object's graph whose objects are not all reached through the
top-level entries of such dictionaries (an object inside a list, say) is
not for the native form: its batch is the graph writer's.
"""

from __future__ import annotations

#: This form's version: a successor asks for batches in the version it
#: reads, and an incumbent writes them only if that is the version it
#: writes (else the graph writer writes every batch).
VERSION = 1

#: The kinds of records.
OBJECT = "o"
TRANSPORT = "t"
CALL = "c"
#: The kinds of a call's function.
METHOD = "m"
FUNCTION = "f"
