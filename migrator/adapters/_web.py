# -*- test-case-name: tests.test_webadapters -*-
"""
migrator's adapters for C{twisted.web}: an idle HTTP/1.1 keep-alive
connection moves to the successor; one with a request in progress stays.

A connection accepted by a L{twisted.web.server.Site} has a
C{_GenericHTTPChannelProtocol} as its protocol, wrapping the
L{twisted.web.http.HTTPChannel} that parses requests.  What moves is
deliberately little, because an idle channel has little state:

  - its transport (with the bytes it had not sent yet, see
    L{migrator.state._capture} and L{migrator.state._restore}), and the channel's registration as that
    transport's producer (re-registered by the successor after the
    commit, once; the adapters here never register it themselves);
  - its idle timeout, as the scheduled call it is: it fires at the
    original deadline, in the successor only (the successor's own timeout
    setting applies from the next request on);
  - whether it was waiting for the transport to drain (its pause state);
  - its factory, which is the port's factory: an I{anchor}, so the
    channel belongs to the successor's own L{Site} after the move, with
    the successor's request factory, timeout and reactor.

The L{Site} itself is never re-created: the successor's new code builds it,
with its own resource tree and configuration.  Only its runtime state
travels (L{SiteAdapter.carry}: the sessions and the session counter), and
only onto the successor's Site (L{IAnchorOnly}).  Sessions move with their
expiry call and components (which need adapters of their own, as anything
in the graph does).

A channel that is not idle (a request being received, handled or
answered, pipelined requests queued, a response producer registered)
declines with a reason and stays with the incumbent, which drains it.
Such a channel is I{busy} (L{IBusyAware}; see
L{GenericHTTPChannelProtocolAdapter.busy}): the incumbent waits a bounded
time for busy connections to finish before it captures (see
L{migrator.state._capture.Settling}).  A channel that can never move
(upgraded to WebSocket, HTTP/2, closing) is not busy.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web import http, server
from zope.interface import implementer

from migrator._twistedinternals import (
    attachHTTPChannel,
    genericHTTPChannelProtocol,
    httpChannelActivity,
    proxyState,
    restoreProxy,
    setTimeoutCall,
    timeoutCall,
    waitingForTransport,
)
from migrator.interfaces import IAdapter, IAnchorOnly, IBusyAware
from migrator.state._graph import GraphError
from migrator.state._graph import typeName as _typeName
from migrator.state._registry import AdapterRegistry, InstanceAdapter


def _notIdle(channel: Any) -> tuple[str, bool] | None:
    """
    Why C{channel} (an L{http.HTTPChannel}) cannot move now, if it cannot.

    @return: C{None} if it is idle, else the reason and whether the
        condition passes by itself (a request in progress: C{True}) or
        not (C{False}).
    """
    if "dataReceived" in vars(channel):
        return "upgraded to another protocol (WebSocket)", False
    activity = httpChannelActivity(channel)
    if activity.aborting:
        return "timed out and closing", False
    if activity.handling:
        return "a request is in progress", True
    if activity.partial:
        return "part of a request has arrived", True
    if activity.pipelined:
        return "pipelined requests are queued", True
    if activity.producing:
        return "a response is being produced", True
    return None


def _config(factory: Any, site: Any) -> dict[str, Any]:
    """
    What C{Site.buildProtocol} would give a new channel of C{factory}
    (the successor's own factory, after the move), by attribute name.
    """
    config: dict[str, Any] = {"factory": factory}
    reactor = getattr(factory, "reactor", None)
    if reactor is not None:
        config["callLater"] = reactor.callLater
    if hasattr(factory, "timeOut"):
        config["timeOut"] = factory.timeOut
    if site is not None:
        config["site"] = site
        config["requestFactory"] = site.requestFactory
    return config


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class HTTPChannelAdapter:
    """
    An idle L{http.HTTPChannel}: its transport, factory, idle-timeout call
    and pause state; everything else is the successor's fresh channel's
    (made by its own constructor, which has no side effects).
    """

    cls: type = http.HTTPChannel
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1
    #: A channel that stays (busy, or inside TLS) finishes its requests in
    #: the old process: HTTP keeps no per-connection state that a split
    #: would break (sessions live in the Site, which moves).
    drainsHarmlessly: bool = True

    def movable(self, channel: Any) -> str | None:
        why = _notIdle(channel)
        return None if why is None else why[0]

    def busy(self, channel: Any) -> bool:
        why = _notIdle(channel)
        return why is not None and why[1]

    def capture(self, channel: Any) -> dict[str, Any]:
        call = timeoutCall(channel)
        if call is not None and not call.active():
            call = None
        return {
            "transport": channel.transport,
            "factory": getattr(channel, "factory", None),
            "site": getattr(channel, "site", None),
            "timeout": call,
            "waitingForTransport": waitingForTransport(channel),
        }

    def create(self, context: Any) -> Any:
        return self.cls()

    def populate(self, channel: Any, state: dict[str, Any], context: Any) -> None:
        transport = state["transport"]
        for name, value in _config(state["factory"], state["site"]).items():
            setattr(channel, name, value)
        # What connectionMade would have set, minus the registration as
        # the transport's producer: Restored.activate does that, once.
        attachHTTPChannel(channel, transport, state["waitingForTransport"])
        call = state["timeout"]
        if call is not None and channel.timeOut is None:
            # The successor's site has no idle timeout.
            call.cancel()
            call = None
        setTimeoutCall(channel, call)


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class GenericHTTPChannelProtocolAdapter:
    """
    The protocol a L{Site}'s transport knows: a proxy in front of the
    channel (which it would swap for HTTP/2 after TLS negotiation).  Moves
    when its channel is an idle HTTP/1.1 channel.
    """

    cls: type = attrs.field(factory=genericHTTPChannelProtocol)
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1
    #: As for L{HTTPChannelAdapter}: also a TLS web connection, or one
    #: speaking HTTP/2, which cannot move.
    drainsHarmlessly: bool = True

    def movable(self, proxy: Any) -> str | None:
        parts = proxyState(proxy)
        if parts["negotiated"] not in (None, b"http/1.1"):
            return f"speaks {parts['negotiated']!r}"
        channel = parts["channel"]
        if not isinstance(channel, http.HTTPChannel):
            return f"its channel is a {_typeName(type(channel))}"
        why = _notIdle(channel)
        return None if why is None else why[0]

    def busy(self, proxy: Any) -> bool:
        channel = proxyState(proxy)["channel"]
        if not isinstance(channel, http.HTTPChannel):
            return False
        why = _notIdle(channel)
        return why is not None and why[1]

    def capture(self, proxy: Any) -> dict[str, Any]:
        return proxyState(proxy)

    def create(self, context: Any) -> Any:
        return object.__new__(self.cls)

    def populate(self, proxy: Any, state: dict[str, Any], context: Any) -> None:
        restoreProxy(proxy, state, _config(state["factory"], state["site"]))


@implementer(IAdapter, IAnchorOnly)
@attrs.frozen
class SiteAdapter:
    """
    A L{Site}'s runtime state, merged into the successor's own Site: the
    attributes named in C{carry}, nothing else (not the resource tree, the
    log, the timeout or any other configuration: the successor's new code
    set those).  A Site is only ever matched onto the successor's Site for
    the same port, never re-created (L{IAnchorOnly}): one reached any other
    way cannot move.

    @ivar carry: the attribute names carried (an allow-list, so that a
        subclass's or a later Twisted's new attributes stay behind unless
        named).
    """

    cls: type = server.Site
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1
    carry: tuple[str, ...] = ("sessions", "counter")

    def movable(self, site: Any) -> str | None:
        return None

    def capture(self, site: Any) -> dict[str, Any]:
        return {name: getattr(site, name) for name in self.carry if hasattr(site, name)}

    def create(self, context: Any) -> Any:
        raise GraphError(f"a {self.typeName} is only restored onto the successor's own")

    def populate(self, site: Any, state: dict[str, Any], context: Any) -> None:
        state = dict(state)
        sessions = state.pop("sessions", None)
        if sessions is not None:
            # Sessions the successor made itself (none, normally: it has
            # not served yet) are kept too.
            sessions.update(vars(site).get("sessions") or {})
            site.sessions = sessions
        counter = state.pop("counter", None)
        if counter is not None:
            site.counter = max(counter, getattr(site, "counter", 0))
        for name, value in state.items():
            setattr(site, name, value)


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register the C{twisted.web} adapters in C{registry}.
    """
    registry.register(GenericHTTPChannelProtocolAdapter())
    registry.register(HTTPChannelAdapter())
    registry.register(SiteAdapter())
    registry.register(InstanceAdapter(server.Session))
