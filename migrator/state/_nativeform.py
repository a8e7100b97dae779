# -*- test-case-name: tests.test_native -*-
"""
The native form of a stream's batch: what its writer
(L{migrator.state._nativewrite}) and its reader
(L{migrator.state._nativeread}) agree on.

A batch in the native form is a sequence of pickles (protocol 5), one per
connection's protocol, sharing one memo, made by the C pickler: atoms and the plain
containers (C{dict}, C{list}, C{tuple}, C{set}, C{frozenset},
C{bytearray}, exact types only) are written and read at C speed, sharing
and cycles kept by pickle's own memo.  Everything else goes through the
writer's C{reducer_override} and becomes one of four calls, the only
names such a pickle holds (L{NAMES}, in this module; the form's first
four, and three more for scheduled calls):

  - C{obj(typeName, version)}: a new object of the reading side's class
    registered under C{typeName} (its adapter's C{create}); then
  - C{state(obj, (state,))}: C{obj}'s state, once read to the end (its
    adapter's C{populate}, after the whole batch is read, as the graph
    reader does);
  - C{anchor(name)}: an object of the reading side that stands for the
    incumbent's (a port's factory, the reactor);
  - C{transport(meta)}: the transport of a connection, on the descriptor
    C{meta["fd"]} of the batch's message; its protocol comes with
    C{state(transport, (protocol,))};
  - C{call(when, f, args, kw)}: a scheduled call on the reading side's
    reactor, held until the commit (C{when} C{None}: one that was
    cancelled or had run); C{method(obj, name)}: the bound method C{name}
    of an object the batch made (or an anchor, or a transport);
    C{function(name)}: a function the reading side allows under C{name}.

The functions below are never called: they are what the writer's pickle
names, and the reader's C{find_class} maps each name to its own.
"""

from __future__ import annotations

from typing import Any, NoReturn

#: The module named in a native pickle.
MODULE = __name__


def _never(*args: Any) -> NoReturn:
    raise RuntimeError("the native form's names are read by its reader only")


def obj(typeName: str, version: int) -> Any:
    _never()


def state(target: Any, box: tuple[Any]) -> Any:
    _never()


def anchor(name: str) -> Any:
    _never()


def transport(meta: dict[str, Any]) -> Any:
    _never()


def call(when: float | None, f: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    _never()


def method(target: Any, name: str) -> Any:
    _never()


def function(name: str) -> Any:
    _never()


#: Every name a native pickle may hold.
NAMES = frozenset({"obj", "state", "anchor", "transport", "call", "method", "function"})
