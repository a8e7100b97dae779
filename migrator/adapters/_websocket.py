# -*- test-case-name: tests.test_websocketadapters -*-
"""
migrator's adapters for Autobahn|Python's Twisted WebSocket server: an open
WebSocket connection moves with its framing state, without a new opening
handshake (C{docs/adapters.md}, "WebSockets (Autobahn)", says what moves
and what declines, and why).

Autobahn is optional: these adapters are registered only where it can be
imported (L{migrator.adapters._twisted.registerAdapters}); this module
imports it inside functions, never at module level, and what it relies on
of autobahn's private API is in L{migrator.adapters._autobahninternals}.
An application registers its own subclasses with
L{registerWebSocketServer}.

What moves, for an OPEN connection: the handshake's outcome (subprotocol,
extensions, request, peer, and over TLS the channel binding); inbound, the
bytes of a frame not received whole, the frame being received and the
message being reassembled (its UTF-8 validation replayed from the bytes
kept: the validator is C code); outbound, a message being streamed
(C{beginMessage}...); automatic pings (the pending ping and both timers,
at their deadlines); the application's attributes; its factory, always the
successor's own (the port's, the one it wraps, or the one a
C{WebSocketResource} of the port's C{Site} serves), with the incumbent's
application state merged in.  Configuration is the successor factory's
unless the application set it on the connection.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs
from zope.interface import implementer

from migrator.adapters._autobahninternals import (
    autobahnModules,
    batchedDeadline,
    batchedNow,
    deflateContexts,
    deflateIsServer,
    marshalDetails,
    parseDetails,
    resourceFactory,
    waitedOn,
)
from migrator.interfaces import IAdapter, IAnchorOnly, IBusyAware
from migrator.state._graph import GraphError, Unadaptable
from migrator.state._graph import typeName as _typeName
from migrator.state._registry import AdapterRegistry, InstanceAdapter

#: WebSocketProtocol's timers, and the method each one calls.
_TIMERS = {
    "autoPingPendingCall": "_sendAutoPing",
    "autoPingTimeoutCall": "onAutoPingTimeout",
    "openHandshakeTimeoutCall": "onOpenHandshakeTimeout",
    "closeHandshakeTimeoutCall": "onCloseHandshakeTimeout",
}

#: Attributes carried their own way (or made anew) by the protocol adapter.
_PROTOCOL_OWN = frozenset(
    {
        "factory", "is_open", "is_closed", "_transport_details", "utf8validator",
        "current_frame", "current_frame_masker", "send_message_frame_masker",
        "send_queue", "triggered", "trackedTimings", *_TIMERS,
    }
)  # fmt: skip

#: What autobahn's factory sets itself (configuration and bookkeeping): the
#: successor's own values stay; the rest of a factory's attributes is the
#: application's state, and moves.
_FACTORY_OWN = frozenset(
    {
        "url", "isSecure", "host", "port", "resource", "path", "params",
        "protocols", "server", "headers", "externalPort",
        "logOctets", "logFrames", "trackTimings",
        "reactor", "protocol", "countConnections", "numPorts",
        "_batched_timer",
    }
)  # fmt: skip

#: How much of a masker to advance at once when restoring its position.
_CHUNK = 1 << 20


def _masker(mask: bytes | None, length: int, pointer: int, applyMask: bool) -> Any:
    """
    A frame masker as autobahn makes it, advanced to C{pointer}.
    """
    xor = autobahnModules().xor
    if mask and length > 0 and applyMask:
        masker = xor.create_xor_masker(mask, length)
    else:
        masker = xor.XorMaskerNull()
    while pointer > 0:
        step = min(pointer, _CHUNK)
        masker.process(bytes(step))
        pointer -= step
    return masker


def _receivedText(protocol: Any) -> bytes:
    """
    The payload of the message being received, as autobahn's default
    handlers keep it.
    """
    vs = vars(protocol)
    parts = list(vs.get("message_data") or ()) + list(vs.get("frame_data") or ())
    return b"".join(parts)


def _textKept(protocol: Any) -> bool:
    """
    Whether the UTF-8 validation of a text message in progress can be
    replayed from the payload the protocol kept (not when the application
    streams messages with its own C{onMessageFrameData}).
    """
    vs = vars(protocol)
    if not (vs.get("inside_message") and vs.get("utf8validateIncomingCurrentMessage")):
        return True
    last = vs.get("utf8validateLast")
    return last is not None and len(_receivedText(protocol)) == last[3]


def _why(protocol: Any) -> tuple[str, bool] | None:
    """
    Why C{protocol} cannot move now, if it cannot, and whether that passes
    by itself (I{busy}).
    """
    P = autobahnModules().protocol.WebSocketProtocol
    vs = vars(protocol)
    state = vs.get("state")
    if state == P.STATE_CONNECTING:
        return "the opening handshake is in progress", True
    if state == P.STATE_CLOSING:
        return "the closing handshake is in progress", True
    if state != P.STATE_OPEN:
        return "the WebSocket connection is closed", False
    if vs.get("triggered") or vs.get("send_queue"):
        return "chopped or synchronous writes are being sent", True
    for name in ("openHandshakeTimeoutCall", "closeHandshakeTimeoutCall"):
        if vs.get(name) is not None:
            return f"a handshake timer ({name}) is pending", True
    pmce = vs.get("_perMessageCompress")
    if pmce is not None:
        why = _deflateWhy(pmce)
        if why is not None:
            return why, False
        if vs.get("inside_message") and vs.get("_isMessageCompressed"):
            return "a compressed message is half received", True
        if vs.get("send_state", 0) != P.SEND_STATE_GROUND and vs.get("send_compressed"):
            return "a compressed message is half sent", True
    if not _textKept(protocol):
        return "a text message is half received and the protocol does not keep it", True
    closed = vs.get("is_closed")
    if closed is not None and waitedOn(closed):
        return "something waits on its is_closed Deferred", False
    return None


def _deflateWhy(pmce: Any) -> str | None:
    """
    Why a compression extension's state cannot move, if it cannot: zlib
    objects cannot be serialized, so a direction whose context carries
    over from one message to the next (no C{no_context_takeover}) may only
    move before its first message.
    """
    deflate = autobahnModules().deflate.PerMessageDeflate
    if type(pmce) is not deflate:
        return f"{getattr(pmce, 'EXTENSION_NAME', type(pmce).__name__)} context cannot move"
    compressor, decompressor = deflateContexts(pmce)
    server = deflateIsServer(pmce)
    # Ours (what we compress) and the peer's (what we decompress).
    sending = pmce.server_no_context_takeover if server else pmce.client_no_context_takeover
    receiving = pmce.client_no_context_takeover if server else pmce.server_no_context_takeover
    if (compressor is not None and not sending) or (decompressor is not None and not receiving):
        return "permessage-deflate context cannot move"
    return None


def _portFactory(protocol: Any) -> Any:
    """
    The factory of the port C{protocol}'s connection came from (through
    wrapping transports, such as TLS), or C{None}.
    """
    transport = vars(protocol).get("transport")
    for _ in range(4):
        if transport is None:
            return None
        server = getattr(transport, "server", None)
        if server is not None:
            return getattr(server, "factory", None)
        transport = getattr(transport, "transport", None)
    return None


def _resourcePath(root: Any, factory: Any, limit: int = 2000) -> list[bytes] | None:
    """
    The child names leading from C{root} (a Site's resource) to the
    C{WebSocketResource} that serves C{factory}, through C{putChild}
    children; C{None} if there is none within C{limit} resources.
    """
    queue: deque[tuple[Any, list[bytes]]] = deque([(root, [])])
    seen = 0
    while queue and seen < limit:
        resource, path = queue.popleft()
        seen += 1
        if resourceFactory(resource) is factory:
            return path
        children = getattr(resource, "children", None)
        if isinstance(children, dict):
            queue.extend((child, [*path, name]) for name, child in children.items())
    return None


def _locate(root: Any, steps: list[Any]) -> Any:
    """
    In the successor: the WebSocket factory C{steps} (how many
    C{wrappedFactory} links, then a Site's resource path or C{None}) away
    from the port's factory C{root}.

    @raise GraphError: if the successor's new code serves none there.
    """
    wraps, path = steps
    factory = root
    for _ in range(wraps):
        factory = getattr(factory, "wrappedFactory", None)
    if path is not None:
        resource = getattr(factory, "resource", None)
        for name in path:
            resource = (getattr(resource, "children", None) or {}).get(name)
        factory = resourceFactory(resource) if resource is not None else None
    if not isinstance(factory, autobahnModules().websocket.WebSocketServerFactory):
        raise GraphError(f"the successor serves no WebSocket factory at {steps!r}")
    return factory


@implementer(IAdapter, IAnchorOnly)
@attrs.frozen
class WebSocketServerFactoryAdapter:
    """
    A C{WebSocketServerFactory} (or a subclass): never re-created, only
    matched onto the successor's own (the port's factory, or the one its
    Site serves at the same path), into which the application's attributes
    are merged: everything but what autobahn's factory sets itself
    (C{_FACTORY_OWN}, its C{CONFIG_ATTRS}) and C{keep}.

    @ivar keep: more attribute names whose successor's value wins
        (configuration the application sets on its factory).
    """

    cls: type
    keep: frozenset[str] = frozenset()
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1

    def _own(self, factory: Any) -> set[str]:
        P = autobahnModules().protocol.WebSocketProtocol
        return {*_FACTORY_OWN, *P.CONFIG_ATTRS_COMMON, *P.CONFIG_ATTRS_SERVER, *self.keep}

    def movable(self, factory: Any) -> str | None:
        return None

    def capture(self, factory: Any) -> dict[str, Any]:
        own = self._own(factory)
        return {k: v for k, v in vars(factory).items() if k not in own}

    def create(self, context: Any) -> Any:
        raise GraphError(f"a {self.typeName} is only restored onto the successor's own")

    def populate(self, factory: Any, state: dict[str, Any], context: Any) -> None:
        own = self._own(factory)
        for name, value in state.items():
            if name not in own:
                setattr(factory, name, value)


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class WebSocketServerProtocolAdapter:
    """
    An open C{WebSocketServerProtocol} (or subclass; see the module
    docstring): its instance dictionary, minus C{_PROTOCOL_OWN} (made anew
    or carried their own way) and the configuration from its factory.

    @ivar registry: this process's registry (to merge the state of a
        factory that is not the port's).
    """

    cls: type
    registry: AdapterRegistry | None = None
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1

    def movable(self, protocol: Any) -> str | None:
        why = _why(protocol)
        return None if why is None else why[0]

    def busy(self, protocol: Any) -> bool:
        why = _why(protocol)
        return why is not None and why[1]

    def _factoryState(self, protocol: Any) -> dict[str, Any]:
        factory = protocol.factory
        root = _portFactory(protocol)
        if root is None or root is factory:
            # The port's factory (an anchor), or a test's.
            return {"factory": factory}
        # Through wrapping factories (TLS), then a Site's resource tree.
        wraps, inner, path = 0, root, None
        while inner is not factory and wraps < 4 and hasattr(inner, "wrappedFactory"):
            wraps, inner = wraps + 1, inner.wrappedFactory
        if inner is not factory:
            path = _resourcePath(getattr(inner, "resource", None), factory)
            if path is None:
                raise Unadaptable(
                    factory, ".factory", "its WebSocket factory is not the port's "
                    "and no WebSocketResource of the port's Site serves it",
                )  # fmt: skip
        steps = [wraps, path]
        adapter = self.registry.adapterFor(type(factory)) if self.registry else None
        merge = adapter.capture(factory) if adapter is not None else None
        return {"root": root, "steps": steps, "merge": merge}

    def _timers(self, protocol: Any) -> dict[str, Any]:
        """
        The timers, as reactor calls to the protocol's own methods, which
        the capture freezes and the successor restores.  Autobahn makes
        them with txaio's batched timer, whose calls are invisible to the
        freeze (and would fire here after the commit); a call restored by
        an earlier takeover calls the successor's gate, which cannot move.
        So each pending one is swapped, in the incumbent, for a reactor
        call at the same deadline to the same method: the one change a
        capture makes, harmless if the takeover is abandoned.
        """
        from twisted.internet.base import DelayedCall

        timers = {}
        for name, method in _TIMERS.items():
            call, target = vars(protocol).get(name), getattr(protocol, method)
            when, now = None, 0.0
            if isinstance(call, DelayedCall):
                if call.active():
                    when, now = call.getTime(), call.seconds()
            elif call is not None:
                when, now = batchedDeadline(call), batchedNow(call)
            if when is None:
                call = None
            elif getattr(call, "func", None) != target:
                call.cancel()
                call = autobahnModules().txaio.call_later(max(0.0, when - now), target)
                setattr(protocol, name, call)
            timers[name] = call
        return timers

    def capture(self, protocol: Any) -> dict[str, Any]:
        why = _why(protocol)
        if why is not None:
            raise Unadaptable(protocol, "", why[0])
        vs = vars(protocol)
        factory, own = protocol.factory, protocol.CONFIG_ATTRS
        config: dict[str, Any] = {}
        for name in protocol.CONFIG_ATTRS:
            if name in vs:
                value = vs[name]
                theirs = getattr(factory, name, config)
                if value is not theirs and value != theirs:
                    config[name] = value
        text = None
        if vs.get("inside_message") and vs.get("utf8validateIncomingCurrentMessage"):
            replay = autobahnModules().utf8.Utf8Validator().validate(_receivedText(protocol))
            last = vs["utf8validateLast"]
            if (replay[0], replay[1], replay[3]) != (last[0], last[1], last[3]):
                raise Unadaptable(protocol, "", "its UTF-8 validation cannot be replayed")
            text = True
        frame, details = vs.get("current_frame"), vs.get("_transport_details")
        inbound, outbound = vs.get("current_frame_masker"), vs.get("send_message_frame_masker")
        return {
            "attrs": {k: v for k, v in vs.items() if k not in _PROTOCOL_OWN and k not in own},
            "config": config,
            "factory": self._factoryState(protocol),
            "timers": self._timers(protocol),
            "frame": frame and [frame.opcode, frame.fin, frame.rsv, frame.length, frame.mask],
            "inbound": None if inbound is None else inbound.pointer(),
            "outbound": None if outbound is None else outbound.pointer(),
            "details": None if details is None else marshalDetails(details),
            "opened": bool(getattr(vs.get("is_open"), "called", False)),
            "replayText": text,
        }

    def create(self, context: Any) -> Any:
        return object.__new__(self.cls)

    def populate(self, protocol: Any, state: dict[str, Any], context: Any) -> None:
        ab = autobahnModules()
        txaio = ab.txaio
        protocol.__dict__.update(state["attrs"])
        protocol.__dict__.update(state["config"])
        where = state["factory"]
        if "factory" in where:
            factory = where["factory"]
        else:
            factory = _locate(where["root"], where["steps"])
            adapter = self.registry.adapterFor(type(factory)) if self.registry else None
            if where["merge"] is not None and adapter is not None:
                # Every connection of that factory merges the same
                # (shared) objects: doing it again changes nothing.
                adapter.populate(factory, where["merge"], context)
        protocol.factory = factory
        for name in protocol.CONFIG_ATTRS:
            # As _connectionMade: the rest comes from the factory.
            if not hasattr(protocol, name):
                setattr(protocol, name, getattr(factory, name))
        factory.countConnections = getattr(factory, "countConnections", 0) + 1
        opened = txaio.create_future_success(None) if state["opened"] else txaio.create_future()
        protocol.is_open, protocol.is_closed = opened, txaio.create_future()
        if state["details"] is not None:
            details = parseDetails(dict(state["details"]))
            details.own_pid = os.getpid()
            details.own_tid = threading.get_native_id()
            protocol._transport_details = details
        protocol.utf8validator = ab.utf8.Utf8Validator()
        if state["replayText"]:
            protocol.utf8validateLast = protocol.utf8validator.validate(_receivedText(protocol))
        frame, applyMask = state["frame"], bool(getattr(protocol, "applyMask", True))
        protocol.current_frame = ab.protocol.FrameHeader(*frame) if frame else None
        if state["inbound"] is not None:
            mask, length, at = (frame[4], frame[3], state["inbound"]) if frame else (None, 0, 0)
            protocol.current_frame_masker = _masker(mask, length, at, applyMask)
        if state["outbound"] is not None:
            protocol.send_message_frame_masker = _masker(
                getattr(protocol, "send_message_frame_mask", None),
                getattr(protocol, "send_message_frame_length", 0),
                state["outbound"],
                applyMask,
            )
        protocol.send_queue = deque()
        protocol.triggered = False
        protocol.trackedTimings = ab.protocol.Timings() if protocol.trackTimings else None
        for name, call in state["timers"].items():
            setattr(protocol, name, call)


@implementer(IAdapter)
@attrs.frozen
class PerMessageDeflateAdapter:
    """
    A C{PerMessageDeflate} extension in use, by its negotiated parameters
    (it keeps them in slots); its zlib contexts never move (see
    L{_deflateWhy}): the successor's start with the next message.
    """

    cls: type
    typeName: str = "autobahn.websocket.compress_deflate.PerMessageDeflate"
    version: int = 1

    def movable(self, pmce: Any) -> str | None:
        return _deflateWhy(pmce)

    def capture(self, pmce: Any) -> list[Any]:
        why = _deflateWhy(pmce)
        if why is not None:
            raise Unadaptable(pmce, "", why)
        return [deflateIsServer(pmce)] + [
            getattr(pmce, name)
            for name in (
                "server_no_context_takeover", "client_no_context_takeover",
                "server_max_window_bits", "client_max_window_bits", "mem_level",
                "max_message_size",
            )
        ]  # fmt: skip

    def create(self, context: Any) -> Any:
        return object.__new__(self.cls)

    def populate(self, pmce: Any, state: list[Any], context: Any) -> None:
        # Its constructor has no side effects: the life cycle's start.
        type(pmce).__init__(pmce, *state)


def registerWebSocketServer(
    registry: AdapterRegistry,
    protocols: Iterable[type] = (),
    factories: Iterable[type] = (),
    keep: Iterable[str] = (),
) -> None:
    """
    Register the adapters of an application's autobahn classes: its
    C{WebSocketServerProtocol} and C{WebSocketServerFactory} subclasses
    (adapters cover exact classes).  A C{.tac}'s or an adapters module's
    C{registerAdapters(registry)} calls this.

    @param keep: attribute names of the factories whose successor's value
        wins (their configuration); the rest of their instance dictionary
        is the application's state, and is merged into the successor's.
    """
    for cls in protocols:
        registry.register(WebSocketServerProtocolAdapter(cls, registry))
    for cls in factories:
        registry.register(WebSocketServerFactoryAdapter(cls, frozenset(keep)))


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register the adapters for autobahn's own classes in C{registry} (the
    caller checked that autobahn can be imported).
    """
    ab = autobahnModules()
    registerWebSocketServer(
        registry, [ab.websocket.WebSocketServerProtocol], [ab.websocket.WebSocketServerFactory]
    )
    registry.register(PerMessageDeflateAdapter(ab.deflate.PerMessageDeflate))
    registry.register(InstanceAdapter(ab.protocol.TrafficStats))
