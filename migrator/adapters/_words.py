# -*- test-case-name: tests.test_wordsadapters -*-
"""
migrator's adapters for C{twisted.words}: the stock IRC server (C{twistd
words}, or any service built the same way) moves to the successor with
its whole chat, so that users connected before a takeover and users who
join after it are in one chat: the same channels and members, nicknames
taken stay taken, topics kept, messages flowing both ways.

The graph of an IRC server with an in-memory realm, from a connection::

    tcp.Server -> IRCUser --avatar--> User --groups--> [Group, ...]
                    |   \\              \\--mind--> IRCUser (this one)
                    |    \\--realm       Group --users--> {name: IRCUser}
                    |                         \\--meta--> {"topic": ...}
                    \\--factory--> IRCFactory (the port's factory: an anchor)
                                     |--realm--> InMemoryWordsRealm
                                     |             |--users--> {name: User}
                                     |             \\--groups--> {name: Group}
                                     \\--portal--> Portal --> checkers

Every connection of a chat reaches every other one (through its groups'
members and the realm's users), so they move together or not at all: one
member that cannot move keeps the whole chat in the incumbent.

What is re-created by the successor, and what moves:

  - the L{IRCFactory} is the port's factory, so it is never re-created: the
    successor's new code built it, with its own realm, portal and checkers
    (passwords stay where they are configured; they never travel).  The
    incumbent's realm is not re-created either: only its I{state}, the
    C{users} and C{groups} dictionaries, travels, and is merged into the
    successor's realm (L{IRCFactoryAdapter}).  Everything that holds a
    reference to a realm (a session, a logged-in user) is given the
    successor's realm, found through the port's factory, so the successor
    has one realm, its own, holding everybody;
  - L{IRCUser} (a connection): what it has parsed and not yet handled, its
    nickname, name, real name and a password sent with C{PASS} and not
    used yet, its host name, its avatar; whether it has logged in (its
    C{logout} callable is made anew by the successor's realm, as
    C{requestAvatar} would have made it) or is still talking to NickServ;
  - L{User}: name, groups, last message and sign-on times, and its mind
    (the session it is logged in through);
  - L{Group}: name, members and metadata (the topic, its author and date).

Deferreds: with an in-memory realm and IRC sessions every call of the chat
(joining, leaving, sending, setting a topic) has completed by the time it
returns, so none is in flight at a capture.  The one exception is a
login whose checker answers later (a checker that asks a database, say):
that session declines, saying so, and is I{busy}, so the incumbent waits
a bounded time for the answer; if it still has none, the session stays
and its login completes in the old process, against the old realm (the
split the operator is told about: see C{--unmovable}).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.words import service
from zope.interface import implementer

from migrator.interfaces import IAdapter, IAnchorOnly, IBusyAware
from migrator.state._graph import GraphError, Unadaptable
from migrator.state._graph import typeName as _typeName
from migrator.state._registry import AdapterRegistry, InstanceAdapter

#: Why a session whose portal has not answered yet cannot move.
LOGGING_IN = "logging in (the portal has not answered yet)"


def _loginInFlight(session: Any) -> bool:
    """
    Whether C{session} (an L{service.IRCUser}) has asked the portal to log
    it in and has had no answer yet.

    Neither path keeps the portal's L{Deferred}; each leaves a mark:
    C{irc_NICKSERV_PRIVMSG} sets C{nickname} to C{None} before logging in,
    and C{irc_NICK} (after a C{PASS}) sets C{password} to C{None}.  A
    session that is still to send its password has neither: its nickname
    is set, and its C{password} attribute either unset or a password.
    """
    state = vars(session)
    if state.get("avatar") is not None or "name" not in state:
        return False
    if "nickname" in state and state["nickname"] is None:
        return True
    return "password" in state and state["password"] is None


def _closing(session: Any) -> bool:
    transport = getattr(session, "transport", None)
    return transport is None or bool(getattr(transport, "disconnecting", False))


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class IRCUserAdapter:
    """
    An IRC session (L{service.IRCUser}), logged in or not.
    """

    cls: type = service.IRCUser
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1
    #: Carried their own way (see L{capture}).
    special: frozenset[str] = frozenset({"realm", "logout", "irc_PRIVMSG"})

    def _why(self, session: Any) -> tuple[str, bool] | None:
        """
        Why C{session} cannot move now, if it cannot, and whether that
        passes by itself (I{busy}).
        """
        if _closing(session):
            return "a connection that is closing", True
        if _loginInFlight(session):
            return LOGGING_IN, True
        realm = vars(session).get("realm")
        factory = getattr(session, "factory", None)
        if realm is not None and realm is not getattr(factory, "realm", None):
            return "logged in to another realm than its port's factory's", False
        return None

    def movable(self, session: Any) -> str | None:
        why = self._why(session)
        return None if why is None else why[0]

    def busy(self, session: Any) -> bool:
        why = self._why(session)
        return why is not None and why[1]

    def capture(self, session: Any) -> dict[str, Any]:
        why = self.movable(session)
        if why:
            raise Unadaptable(session, "", why)
        state = vars(session)
        nickserv = "irc_PRIVMSG" in state
        if nickserv and state["irc_PRIVMSG"] != session.irc_NICKSERV_PRIVMSG:
            raise Unadaptable(session, "", "its irc_PRIVMSG is not the NickServ handler")
        return {
            "attrs": {k: v for k, v in state.items() if k not in self.special},
            "nickserv": nickserv,
            "loggedIn": state.get("logout") is not None,
        }

    def create(self, context: Any) -> Any:
        cls: Any = self.cls
        return cls.__new__(cls)

    def populate(self, session: Any, state: dict[str, Any], context: Any) -> None:
        session.__dict__.update(state["attrs"])
        # What connectionMade and the realm's requestAvatar give a session,
        # from the successor's own factory (an anchor: fully built).
        realm = session.factory.realm
        session.realm = realm
        if state["nickserv"]:
            session.irc_PRIVMSG = session.irc_NICKSERV_PRIVMSG
        if state["loggedIn"]:
            avatar = session.avatar
            session.logout = realm.logoutFactory(avatar, avatar)


@implementer(IAdapter)
@attrs.frozen
class UserAdapter:
    """
    A chat user (L{service.User}): a logged-in user's realm is the
    successor's, found through the port's factory of the session it is
    logged in through (its mind).
    """

    cls: type = service.User
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1

    def movable(self, user: Any) -> str | None:
        return None

    def capture(self, user: Any) -> dict[str, Any]:
        state = {k: v for k, v in vars(user).items() if k != "realm"}
        realmOf = None
        if user.realm is not None:
            realmOf = getattr(user.mind, "factory", None)
            if realmOf is None or getattr(realmOf, "realm", None) is not user.realm:
                raise Unadaptable(
                    user,
                    "",
                    f"logged in through a {_typeName(type(user.mind))}, "
                    f"not an IRC session of its realm's port",
                )
        return {"attrs": state, "realmOf": realmOf}

    def create(self, context: Any) -> Any:
        cls: Any = self.cls
        return cls.__new__(cls)

    def populate(self, user: Any, state: dict[str, Any], context: Any) -> None:
        user.__dict__.update(state["attrs"])
        if state["realmOf"] is not None:
            user.realm = state["realmOf"].realm


@implementer(IAdapter, IAnchorOnly)
@attrs.frozen
class IRCFactoryAdapter:
    """
    The state of an L{IRCFactory}'s in-memory realm (its users and groups),
    merged into the realm of the successor's own factory for the same port
    (L{IAnchorOnly}: the factory is never re-created, and neither is the
    realm, the portal or its checkers).  A name the successor's realm
    already has (a group its new code created at start-up) takes the
    incumbent's object, which has the members and the topic.
    """

    cls: type = service.IRCFactory
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True)
    )
    version: int = 1

    def movable(self, factory: Any) -> str | None:
        return None

    def capture(self, factory: Any) -> dict[str, Any]:
        realm = factory.realm
        if type(realm) is not service.InMemoryWordsRealm:
            raise Unadaptable(
                factory,
                "",
                f"its realm is a {_typeName(type(realm))}: only an "
                f"InMemoryWordsRealm's users and groups can move",
            )
        portal = getattr(factory, "portal", None)
        if getattr(portal, "realm", realm) is not realm:
            raise Unadaptable(factory, "", "its portal logs users in to another realm")
        return {"users": realm.users, "groups": realm.groups}

    def create(self, context: Any) -> Any:
        raise GraphError(f"a {self.typeName} is only restored onto the successor's own")

    def populate(self, factory: Any, state: dict[str, Any], context: Any) -> None:
        realm = getattr(factory, "realm", None)
        for name in ("users", "groups"):
            mine = vars(realm).get(name) if realm is not None else None
            if not isinstance(mine, dict):
                raise GraphError(
                    f"the successor's IRC realm (a {_typeName(type(realm))}) keeps "
                    f"no {name} in memory: the incumbent's cannot move into it"
                )
            mine.update(state[name])


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register the C{twisted.words} adapters in C{registry}.
    """
    registry.register(IRCUserAdapter())
    registry.register(UserAdapter())
    registry.register(InstanceAdapter(service.Group))
    registry.register(IRCFactoryAdapter())
