# -*- test-case-name: tests.test_websocketadapters -*-
"""
Every use of autobahn's private API, in one place (the sibling, for
autobahn, of L{migrator._twistedinternals}): autobahn has no public API to
look into a connection's framing state, its timers or its compression
contexts, and its L{TransportDetails} do not read back what they write.
Each function here says what it relies on.

The attribute names of C{WebSocketProtocol}'s state (C{state}, C{data},
C{current_frame}, C{send_state}...) are read by name in
L{migrator.adapters._websocket} and listed in its C{_PROTOCOL_OWN};
C{tests/test_websocketadapters.py} runs real autobahn protocols through a
move, so an autobahn upgrade that renames them fails there.  Tested: the
range pinned in setup.cfg's websocket extra.

Autobahn is optional: it is imported inside functions only
(L{autobahnModules}), never at module level.
"""

from __future__ import annotations

import functools
import warnings
from types import SimpleNamespace
from typing import Any


@functools.cache
def autobahnModules() -> Any:
    """Autobahn's modules, imported on first use (never at module level)."""
    import txaio
    from autobahn.twisted import websocket
    from autobahn.wamp import types
    from autobahn.websocket import compress_deflate, protocol, utf8validator, xormasker

    return SimpleNamespace(
        txaio=txaio, websocket=websocket, types=types, deflate=compress_deflate,
        protocol=protocol, utf8=utf8validator, xor=xormasker,
    )  # fmt: skip


def batchedDeadline(call: Any) -> float | None:
    """
    When a txaio C{_BatchedCall} (autobahn's timers: C{factory._batched_timer
    .call_later}) fires, in its clock's seconds; C{None} if it was cancelled
    or has fired.  Relies on: C{_BatchedCall._timer} (C{None} once
    cancelled), C{_index} (its bucket's time in milliseconds) and the
    timer's C{_buckets}.
    """
    timer = getattr(call, "_timer", None)
    if timer is None:
        return None
    bucket = timer._buckets.get(call._index)
    if bucket is None or call not in bucket[1]:
        return None
    return float(call._index) / 1000.0


def batchedNow(call: Any) -> float:
    """
    The time now on the clock of a txaio C{_BatchedCall} (txaio's loop).
    Relies on: C{_BatchedTimer._get_seconds}.
    """
    return float(call._timer._get_seconds())


def deflateContexts(pmce: Any) -> tuple[Any, Any]:
    """
    The zlib C{(compressor, decompressor)} of a C{PerMessageDeflate}, C{None}
    before its first message either way.  Relies on: C{_compressor},
    C{_decompressor}.
    """
    return pmce._compressor, pmce._decompressor


def deflateIsServer(pmce: Any) -> bool:
    """Whether a C{PerMessageDeflate} is a server's.  Relies on: C{_is_server}."""
    return bool(pmce._is_server)


def resourceFactory(resource: Any) -> Any:
    """
    The C{WebSocketServerFactory} a C{WebSocketResource} serves (autobahn
    keeps it in a private attribute: found by type, not by name), or
    C{None}.
    """
    factoryClass = autobahnModules().websocket.WebSocketServerFactory
    for value in vars(resource).values():
        if isinstance(value, factoryClass):
            return value
    return None


def waitedOn(deferred: Any) -> bool:
    """
    Whether callbacks wait on C{deferred}.  Twisted's public, deprecated
    (25.5.0) C{Deferred.callbacks}: once it is gone, this says C{False}.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(getattr(deferred, "callbacks", None))


def marshalDetails(details: Any) -> dict[str, Any]:
    """
    A connection's C{TransportDetails} as plain data, which
    L{parseDetails} reads back.  Autobahn's own C{marshal} and C{parse} do
    not agree: C{marshal} gives the channel bindings (C{channel_id}, set
    over TLS) as bytes, which C{parse} refuses unless they are hex
    strings; C{parse} drops the peer certificate (C{peer_cert}).
    """
    data: dict[str, Any] = details.marshal()
    bindings = data.get("channel_id")
    if bindings:
        data["channel_id"] = {
            kind: binding.hex() for kind, binding in bindings.items() if binding is not None
        }
    return data


def parseDetails(data: dict[str, Any]) -> Any:
    """
    The C{TransportDetails} L{marshalDetails} made C{data} of.
    """
    details = autobahnModules().types.TransportDetails.parse(
        {k: v for k, v in data.items() if k != "peer_cert"}
    )
    details.peer_cert = data.get("peer_cert")
    return details
