# -*- test-case-name: tests.test_manholeadapters -*-
"""
migrator's adapters for C{twisted.conch}'s telnet manhole (C{twistd
manhole --telnetPort}): a live session moves with its whole stack, past
its login, without C{connectionMade} and without a second login.

The stack of one telnet manhole connection, from the socket up::

    tcp.Server -> TelnetTransport -> TelnetBootstrapProtocol (the avatar)
               -> insults.ServerProtocol -> ColoredManhole -> ManholeInterpreter

Before login the L{TelnetTransport}'s protocol is an
L{AuthenticatingTelnetProtocol}; once the portal has answered, the
transport's protocol I{is} the avatar (the authenticating protocol is no
longer referenced at all).  So an authenticated session carries its
avatar, not credentials: the successor never logs anybody in again.  What
the incumbent's portal and realm configured is used only by
C{connectionMade} (which has run), so each restored object takes the
I{successor's} configuration instead, found from the port's factory (an
anchor: the successor's own factory): its portal, its realm's protocol
classes and the service's namespace.  The realm's C{logout} callable (a
no-op for C{twistd manhole}) cannot move; the restored session's is a
no-op.

What moves, per layer:

  - L{TelnetTransport}: its parse state (a command or subnegotiation half
    received), the option negotiation state (C{options}: which side has
    which option on, and which negotiations are in flight), its
    C{negotiationMap}/C{commandMap} as (object, method name) pairs.  A
    negotiation in flight gets a fresh L{Deferred}: the callbacks the
    stack had put on the old one only log a refusal.
  - L{AuthenticatingTelnetProtocol} (a session still at C{Username:} or
    C{Password:}): its state and the bytes it had not parsed; one whose
    password is being checked (C{"Discard"}) is I{busy} and stays for now.
  - L{TelnetBootstrapProtocol}, L{insults.ServerProtocol}: their links and
    the terminal state (parse state, last write, size, cursor, scroll
    region).  A terminal waiting for a cursor position report is busy.
  - L{Manhole}/L{ColoredManhole}: the line being typed and the cursor in
    it, insert/typeover mode, the history and the position in it, the
    terminal size, the prompt; the namespace through
    L{migrator.adapters.namespace._namespace} (values by value, modules by name, session
    definitions by their source text, re-run in the successor); the
    interpreter's pending block (a C{def} half entered) and its
    C{__future__} flags.  The interpreter itself is made new (its monkey
    patcher holds this process's C{sys}).

Nothing is redrawn after the move: the client's screen is intact (the
connection never dropped) and the restored terminal state matches it.
Only when something could not move (a name bound to a placeholder, a
definition that could not be re-run, a Deferred whose result will not be
shown) does the session print a notice, as the manhole prints a
Deferred's late result: the input line is erased, the notice written, and
the prompt and the half-typed line drawn again.  This happens after the
commit (L{migrator.interfaces.IRestoreContext.whenActive}), after the
incumbent's unsent bytes.

SSH manhole sessions (C{--sshPort}) cannot carry their encryption state:
L{migrator.state._plan.DrainingAdapter} makes them stay with the incumbent, and drain, with a
reason the operator sees in the takeover log.
"""

from __future__ import annotations

import types
from typing import Any

import attrs
from twisted.conch import manhole, telnet
from twisted.conch.insults import insults
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from migrator._twistedinternals import (
    TERMINAL_CURSOR_REPORTS,
    TERMINAL_SAVED_CURSOR,
    cursorReportsPending,
    forgetCursorReports,
    pendingDeferredNumbers,
)
from migrator.adapters.namespace._namespace import (
    captureNamespace,
    futureFlags,
    pendingLines,
    restoreNamespace,
    sessionFutures,
)
from migrator.interfaces import IAdapter, IBusyAware
from migrator.state._graph import GraphError, Unadaptable
from migrator.state._graph import typeName as _typeName
from migrator.state._plan import DrainingAdapter
from migrator.state._registry import AdapterRegistry


def _noLogout() -> None:
    """
    The restored session's C{logout}: the incumbent's realm gave a callable
    that cannot move (C{twistd manhole}'s is a no-op too).
    """


def _methodRef(method: Any, what: str) -> tuple[Any, str]:
    """
    A bound method as its object and its name, for a graph writer that may
    not carry methods itself (L{migrator.testing.roundTrip} does not).

    @raise Unadaptable: if C{method} is not a bound method its object has
        under its name.
    """
    if isinstance(method, types.MethodType):
        name = method.__func__.__name__
        try:
            same = getattr(method.__self__, name, None) == method
        except Exception:
            same = False
        if same:
            return method.__self__, name
    raise Unadaptable(method, "", f"{what} holds {method!r}, not a method of a moving object")


def _methods(mapping: dict[Any, Any], what: str) -> list[Any]:
    return [[key, *_methodRef(method, what)] for key, method in mapping.items()]


def _bind(pairs: list[Any]) -> dict[Any, Any]:
    return {key: getattr(obj, name) for key, obj, name in pairs}


@attrs.frozen
class _Setup:
    """
    What a telnet manhole service (C{twisted.conch.manhole_tap}) gives a new
    connection, found from the port's factory.

    @ivar transportArgs: the L{TelnetTransport}'s C{protocolFactory},
        C{protocolArgs}, C{protocolKwArgs} (the authenticating protocol
        and the portal).
    @ivar avatarArgs: the same for the avatar (a L{TelnetBootstrapProtocol}
        made by the realm), if the realm says.
    @ivar namespace: the namespace the service gives each session.
    """

    transportArgs: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None
    avatarArgs: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None
    namespace: dict[str, Any] | None = None

    @property
    def portal(self) -> Any:
        if self.transportArgs is None or not self.transportArgs[1]:
            return None
        return self.transportArgs[1][0]

    @classmethod
    def of(cls, factory: Any) -> _Setup:
        """
        Look at what C{factory} builds (without connecting it: a
        L{TelnetTransport}'s constructor has no side effects).
        """
        make = getattr(factory, "protocol", None)
        if make is None or not callable(make):
            return cls()
        try:
            template = make()
        except Exception:
            return cls()
        if not isinstance(template, telnet.TelnetTransport) or template.protocolFactory is None:
            return cls()
        transportArgs = (
            template.protocolFactory,
            tuple(getattr(template, "protocolArgs", ())),
            dict(getattr(template, "protocolKwArgs", {})),
        )
        portal = transportArgs[1][0] if transportArgs[1] else None
        realm = getattr(portal, "realm", None)
        avatarArgs = None
        namespace = None
        if realm is not None and hasattr(realm, "protocolFactory"):
            # twisted.conch.manhole_tap's realm: TelnetBootstrapProtocol,
            # ServerProtocol, ColoredManhole, namespace.
            avatarArgs = (
                realm.protocolFactory,
                tuple(getattr(realm, "protocolArgs", ())),
                dict(getattr(realm, "protocolKwArgs", {})),
            )
            if avatarArgs[1] and isinstance(avatarArgs[1][-1], dict):
                namespace = avatarArgs[1][-1]
        return cls(transportArgs, avatarArgs, namespace)


def _factoryAbove(obj: Any, limit: int = 8) -> Any:
    """
    The port's factory of the telnet connection C{obj} is part of, found
    by following C{transport} links up to the L{TelnetTransport}.
    """
    for _ in range(limit):
        if isinstance(obj, telnet.TelnetTransport):
            return getattr(obj, "factory", None)
        obj = getattr(obj, "transport", None) or getattr(obj, "terminal", None)
        if obj is None:
            return None
    return None


def _swallow(failure: Failure) -> None:
    """
    The errback of a restored negotiation's L{Deferred}: the incumbent's
    callbacks (which only logged a refusal) did not move.
    """
    return None


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class _Adapter:
    """
    Base of the adapters here: an instance dictionary minus C{special}
    keys, which the subclass carries its own way.
    """

    cls: type
    version: int = 1
    special: frozenset[str] = frozenset()

    @property
    def typeName(self) -> str:
        return _typeName(self.cls)

    def movable(self, obj: Any) -> str | None:
        return None

    def busy(self, obj: Any) -> bool:
        return False

    def _plain(self, obj: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(obj).items() if k not in self.special}

    def capture(self, obj: Any) -> dict[str, Any]:
        return {"attrs": self._plain(obj)}

    def create(self, context: Any) -> Any:
        cls: Any = self.cls
        return cls.__new__(cls)

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])


@attrs.frozen
class TelnetTransportAdapter(_Adapter):
    """
    A L{TelnetTransport}: parse and option negotiation state; its
    construction arguments are the successor's.
    """

    cls: type = telnet.TelnetTransport
    special: frozenset[str] = frozenset(
        {
            "options",
            "negotiationMap",
            "commandMap",
            "protocolFactory",
            "protocolArgs",
            "protocolKwArgs",
        }
    )

    def _wait(self, obj: Any) -> tuple[str, bool] | None:
        """
        Why the session cannot move now, if it cannot, and whether that
        passes by itself (I{busy}): C{captureConnections} asks only the
        connection's own protocol (this transport), so the layers above
        are looked at here.
        """
        protocol = getattr(obj, "protocol", None)
        if protocol is None:
            return "not connected to a telnet protocol", False
        if isinstance(protocol, telnet.AuthenticatingTelnetProtocol):
            if protocol.state == "Discard":
                return "logging in (the password is being checked)", True
            return None
        terminal = getattr(protocol, "protocol", None)
        if isinstance(terminal, insults.ServerProtocol) and cursorReportsPending(terminal):
            return "waiting for the terminal's cursor position report", True
        return None

    def movable(self, obj: Any) -> str | None:
        why = self._wait(obj)
        return None if why is None else why[0]

    def busy(self, obj: Any) -> bool:
        why = self._wait(obj)
        return why is not None and why[1]

    def capture(self, obj: Any) -> dict[str, Any]:
        options = []
        for option, st in obj.options.items():
            sides = []
            for side in (st.us, st.him):
                sides.append([side.state, bool(side.negotiating), side.onResult is not None])
            options.append([option, sides])
        return {
            "attrs": self._plain(obj),
            "options": options,
            "negotiationMap": _methods(obj.negotiationMap, "the negotiation map"),
            "commandMap": _methods(obj.commandMap, "the command map"),
        }

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])
        obj.options = {}
        for option, sides in state["options"]:
            st = obj.getOptionState(option)
            for side, (value, negotiating, waiting) in zip((st.us, st.him), sides, strict=True):
                if value != "no":
                    side.state = value
                if negotiating:
                    side.negotiating = True
                if waiting:
                    side.onResult = Deferred()
                    side.onResult.addErrback(_swallow)
        obj.negotiationMap = _bind(state["negotiationMap"])
        obj.commandMap = _bind(state["commandMap"])
        setup = _Setup.of(state["attrs"].get("factory"))
        if setup.transportArgs is not None:
            obj.protocolFactory, obj.protocolArgs, obj.protocolKwArgs = setup.transportArgs


@attrs.frozen
class AuthenticatingTelnetProtocolAdapter(_Adapter):
    """
    A session still logging in (C{Username:} or C{Password:}), with the
    bytes it has not parsed; it checks the password with the successor's
    portal.  One whose password is being checked is busy.
    """

    cls: type = telnet.AuthenticatingTelnetProtocol
    special: frozenset[str] = frozenset({"portal", "logout"})

    def movable(self, obj: Any) -> str | None:
        if obj.state == "Discard":
            return "logging in (the password is being checked)"
        return None

    def busy(self, obj: Any) -> bool:
        return bool(obj.state == "Discard")

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])
        obj.portal = _Setup.of(state["attrs"].get("factory")).portal
        if "protocol" in state["attrs"]:
            obj.logout = _noLogout


@attrs.frozen
class TelnetBootstrapProtocolAdapter(_Adapter):
    """
    The avatar of an authenticated telnet session.
    """

    cls: type = telnet.TelnetBootstrapProtocol
    special: frozenset[str] = frozenset({"protocolFactory", "protocolArgs", "protocolKwArgs"})

    def capture(self, obj: Any) -> dict[str, Any]:
        return {"attrs": self._plain(obj), "factory": _factoryAbove(obj)}

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])
        setup = _Setup.of(state["factory"])
        if setup.avatarArgs is not None:
            _, args, kwargs = setup.avatarArgs
            if args:
                obj.protocolFactory, obj.protocolArgs, obj.protocolKwArgs = (
                    args[0],
                    args[1:],
                    kwargs,
                )


def _vector(v: Any) -> Any:
    return None if v is None else [v.x, v.y]


@attrs.frozen
class ServerProtocolAdapter(_Adapter):
    """
    An L{insults.ServerProtocol}: the terminal state.
    """

    cls: type = insults.ServerProtocol
    special: frozenset[str] = frozenset(
        {
            "protocolFactory",
            "protocolArgs",
            "protocolKwArgs",
            TERMINAL_CURSOR_REPORTS,
            "termSize",
            "cursorPos",
            TERMINAL_SAVED_CURSOR,
        }
    )

    def movable(self, obj: Any) -> str | None:
        if cursorReportsPending(obj):
            return "waiting for the terminal's cursor position report"
        return None

    def busy(self, obj: Any) -> bool:
        return cursorReportsPending(obj)

    def capture(self, obj: Any) -> dict[str, Any]:
        why = self.movable(obj)
        if why:
            raise Unadaptable(obj, "", why)
        vectors = {
            name: _vector(vars(obj)[name])
            for name in ("termSize", "cursorPos", TERMINAL_SAVED_CURSOR)
            if name in vars(obj)
        }
        return {"attrs": self._plain(obj), "vectors": vectors, "factory": _factoryAbove(obj)}

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])
        forgetCursorReports(obj)
        for name, xy in state["vectors"].items():
            setattr(obj, name, None if xy is None else insults.Vector(*xy))
        setup = _Setup.of(state["factory"])
        if setup.avatarArgs is not None:
            _, args, kwargs = setup.avatarArgs
            if len(args) >= 2:
                obj.protocolFactory, obj.protocolArgs, obj.protocolKwArgs = (
                    args[1],
                    args[2:],
                    kwargs,
                )


@attrs.frozen
class ManholeAdapter(_Adapter):
    """
    A L{manhole.Manhole} (or L{manhole.ColoredManhole}) session: the line
    being typed, the history, the namespace and the interpreter's pending
    block.

    @ivar registry: this process's registry (the allow-list for objects of
        importable classes in the namespace).
    """

    cls: type = manhole.ColoredManhole
    registry: AdapterRegistry | None = None
    special: frozenset[str] = frozenset({"namespace", "interpreter", "keyHandlers"})

    def capture(self, obj: Any) -> dict[str, Any]:
        if self.registry is None:
            raise Unadaptable(obj, "", "the manhole adapter has no registry")
        interpreter = obj.interpreter
        factory = _factoryAbove(obj)
        setup = _Setup.of(factory)
        buffer = list(interpreter.buffer)
        namespace = captureNamespace(
            obj.namespace,
            list(getattr(obj, "historyLines", ())),
            self.registry,
            pending=buffer,
            provided=setup.namespace,
            filename=interpreter.filename,
        )
        return {
            "attrs": self._plain(obj),
            "keyHandlers": _methods(obj.keyHandlers, "the key handlers"),
            "namespace": namespace,
            "buffer": buffer,
            "filename": interpreter.filename,
            "numDeferreds": interpreter.numDeferreds,
            "deferreds": pendingDeferredNumbers(interpreter),
            "factory": factory,
        }

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        obj.__dict__.update(state["attrs"])
        obj.keyHandlers = _bind(state["keyHandlers"])
        setup = _Setup.of(state["factory"])
        registry = self.registry if self.registry is not None else AdapterRegistry()
        try:
            namespace, notices = restoreNamespace(
                state["namespace"], registry, provided=setup.namespace
            )
        except GraphError as e:
            namespace = dict(setup.namespace or {})
            notices = [f"not moved: the namespace ({e})"]
        if pendingLines(state["namespace"]):
            # The block being typed is not lost here: it is the restored
            # interpreter's buffer, and runs when the user finishes it.
            notices = [n for n in notices if not n.startswith("not run yet: the block being typed")]
        obj.namespace = namespace
        interpreter = manhole.ManholeInterpreter(obj, namespace, state["filename"])
        interpreter.buffer = list(state["buffer"])
        interpreter.numDeferreds = state["numDeferreds"]
        compiler = getattr(interpreter.compile, "compiler", None)
        if compiler is not None:
            compiler.flags |= futureFlags(sessionFutures(state["namespace"]))
        obj.interpreter = interpreter
        for k in state["deferreds"]:
            notices.append(f"not moved: the result of Deferred #{k} (it will not be shown)")
        if notices:
            whenActive = getattr(context, "whenActive", None)
            show = lambda: _show(obj, notices)  # noqa: E731
            if whenActive is not None:
                whenActive(show)
            else:
                show()


def _show(session: Any, notices: list[str]) -> None:
    """
    Tell the session what did not move, as a Deferred's late result is
    shown: above the prompt and the half-typed line, which are redrawn
    (uncoloured, the cursor where it was).
    """
    text = "".join(f"[migrator] {n}\n" for n in notices).encode("utf-8", "replace")
    # What Manhole.addOutput(data, isAsync=True) means to do (its own
    # redraw passes a list where bytes are expected, with a half line).
    terminal = session.terminal
    terminal.eraseLine()
    terminal.cursorBackward(len(session.lineBuffer) + len(session.ps[session.pn]))
    terminal.write(text)
    session.drawInputLine()
    behind = len(session.lineBuffer) - session.lineBufferIndex
    if behind:
        terminal.cursorBackward(behind)


SSH_STAYS = (
    "an SSH session cannot carry its encryption state to another process: "
    "it stays with the old process until the client disconnects"
)


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register the telnet manhole adapters (and the SSH transport's refusal)
    in C{registry}.
    """
    registry.register(TelnetTransportAdapter())
    registry.register(AuthenticatingTelnetProtocolAdapter())
    registry.register(TelnetBootstrapProtocolAdapter())
    registry.register(ServerProtocolAdapter())
    registry.register(ManholeAdapter(cls=manhole.ColoredManhole, registry=registry))
    registry.register(ManholeAdapter(cls=manhole.Manhole, registry=registry))
    try:
        from twisted.conch.ssh.transport import SSHServerTransport
    except ImportError:  # pragma: no cover (cryptography is missing)
        return
    # An SSH session is a session of its own: staying is harmless.
    registry.register(
        DrainingAdapter(SSHServerTransport, SSH_STAYS)
    )
