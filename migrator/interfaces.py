# -*- test-case-name: tests.test_interfaces -*-
"""
The seams of migrator, as zope interfaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import Attribute, Interface


class IPeerPolicy(Interface):
    """
    Decides who may talk to a control socket.
    """

    def check(transport: Any) -> tuple[bool, str]:
        """
        Decide about the peer at the other end of C{transport}.

        @param transport: a connected UNIX transport (C{getHandle()} gives
            its socket).
        @return: C{(allowed, description)}: whether the peer may be served,
            and who it is, for the logs (e.g. C{"pid 12 uid 1000 gid 1000"}).
        """

    def refusal() -> str:
        """
        What a refused peer is told, one line of printable ASCII without its
        end of line (e.g. C{"this control socket serves uid 1000 and root
        only"}).
        """


class IPortRegistry(Interface):
    """
    The listening ports of a wrapped service, as the takeover protocol sees
    them.  Implemented by L{migrator.takeover._ports.ListenerRegistry}; a
    fake is in C{tests/_fakes.py}.
    """

    def listening() -> list[Any]:
        """
        @return: the open ports (L{migrator.takeover._ports.TrackedPort}),
            oldest first.
        """

    def handoffRecords() -> tuple[list[dict[str, Any]], list[int]]:
        """
        Describe every open port for a successor.

        @return: one plain record per port (with its declared C{"key"}) and
            its file descriptor, in the same order.  The descriptors stay
            owned by the ports.
        @raise migrator.UnsupportedPort: if an open port cannot be handed
            over (a UDP port connected to one peer).
        """

    def offer(records: list[dict[str, Any]], fds: list[int]) -> None:
        """
        Make an incumbent's ports available for adoption by declared key.
        The registry owns C{fds} from then on.

        @raise ValueError: if the two lists differ in length (all C{fds} are
            closed).
        """

    def closeUnclaimed() -> list[str]:
        """
        Close the offered descriptors that the service did not declare.

        @return: their keys.
        """

    def adoptedCount() -> int:
        """
        @return: how many open ports were adopted from an incumbent.
        """

    def pauseAccepting() -> int:
        """
        Stop accepting on every stream port and reading on every datagram
        port; connections wait in the kernel's backlog, datagrams in the
        socket's receive buffer.

        @return: how many ports were paused.
        """

    def resumeAccepting() -> int:
        """
        Accept (read) on every port (again).

        @return: how many ports accept.
        """

    def releaseAll() -> list[str]:
        """
        Close this process's copy of every port, without C{shutdown()}, so
        that another process holding it is unaffected.

        @return: the keys released.
        """

    def takeLocks() -> list[str]:
        """
        After a commit, take the lock files of adopted UNIX ports that were
        declared with one (the incumbent released them).

        @return: the keys whose lock could not be taken.
        """

    def connectionCount() -> int:
        """
        @return: how many connections accepted through the ports are open.
        """

    def openConnections() -> Any:
        """
        @return: an iterable of the open connections (transports) accepted
            through the ports or given to L{trackConnection}, as the
            capture of connections and the drain after a handoff see them.
        """

    def openConnectionsBesides(leaving: Any, counted: int = -1) -> list[Any]:
        """
        The open connections but C{leaving}'s, cheaply when there are no
        others (a commit's moved connections, tens of thousands).

        @param leaving: the ids of connections, which the caller holds
            (alive) while it asks.
        @param counted: how many of them, at least, this registry counts
            (accepted through its ports, or given to L{trackConnection});
            -1 if not known.
        @return: a list of the open connections whose ids are not in
            C{leaving}.
        """

    def noteArrivals() -> Any:
        """
        Start noting the connections added from now on (accepted, or given
        to L{trackConnection}), until the note is closed or dropped.

        @return: the note: its C{take()} returns the connections added
            since its last call, and forgets them; its C{close()} stops it.
        """

    def keyOf(port: Any) -> str | None:
        """
        @return: the declared key of C{port} (a listening port, as
            C{transport.server} names it), or C{None} if it is not one of
            these ports.
        """

    def portForKey(key: str) -> Any:
        """
        @return: the open listening port declared as C{key}, or C{None}:
            the server of a connection restored from that port.
        """

    def trackConnection(transport: Any) -> None:
        """
        Count C{transport} among the open connections (one restored from
        an incumbent, which no port of this process accepted).
        """


class IMigrationNode(Interface):
    """
    A process under C{twistd migrate}, as its control socket presents it.
    """

    generation = Attribute("How many takeovers this lineage has seen (int).")
    state = Attribute('"starting", "serving", "draining" or "failed".')

    def status() -> dict[str, Any]:
        """
        @return: a plain record of the process (pid, Python, generation,
            ports, connections, takeover in progress...), as shown by
            C{python -m migrator status --json}.
        """


class IRestoreContext(Interface):
    """
    What an adapter's C{create} and C{populate} get as their C{context} in
    the successor: the restore they are part of.  Implemented by
    L{migrator.state._restore.RestoreContext} in a takeover, and by
    L{migrator.testing.roundTrip} in tests.
    """

    def whenActive(f: Callable[[], object]) -> None:
        """
        Call C{f} once, after the commit, when the restored connections
        have written the incumbent's unsent bytes and read again; never if
        the takeover is rolled back.  For output an adapter adds to a
        connection (a notice to a session's user): written from
        C{populate}, it would come before the incumbent's unsent bytes,
        and before the commit.

        @param f: what to call, without arguments.
        """


class IAdapter(Interface):
    """
    Turns objects of one class into plain state in the incumbent, and back
    into instances of the successor's class.  See
    L{migrator.InstanceAdapter} for the default rule and
    C{docs/adapters.md} for worked examples.

    An adapter may also provide L{IBusyAware} (its objects may be busy for
    a while) or L{IAnchorOnly} (its objects are never created from state).
    """

    typeName = Attribute("The stable name written with the state (str).")
    version = Attribute("The version of the state's format (int).")

    def capture(obj: Any) -> Any:
        """
        Capture C{obj}'s state, in the incumbent.  Must not change C{obj}.

        @param obj: an object of the adapter's class.
        @return: the state of C{obj}: any value the object graph can carry
            (plain data, other adapted objects, transports, scheduled calls,
            bound methods of adapted objects).
        @raise migrator.Unadaptable: if C{obj} cannot be written (its
            connection then stays with the incumbent).
        """

    def create(context: IRestoreContext) -> Any:
        """
        Make a new, empty object, in the successor, without running
        C{__init__}; L{populate} gives it its state.

        @param context: the restore this object is part of.
        @return: a new instance of this process's class.
        """

    def populate(obj: Any, state: Any, context: IRestoreContext) -> None:
        """
        Give C{obj} the captured C{state}, in the successor.  Objects
        referenced by C{state} may not be populated yet (cycles are
        allowed): do not rely on their state here.

        @param obj: an object from L{create}, or an anchored object of this
            process, such as a port's factory.
        @param state: what L{capture} returned in the incumbent, read back.
        @param context: the restore this object is part of; output for the
            object's connection goes through its C{whenActive}.
        """

    def movable(obj: Any) -> str | None:
        """
        Can C{obj}, the protocol of a connection or an object reached from
        one, move now?

        @return: C{None} if C{obj} can move now, or why not (its connection
            then stays with the incumbent and drains).
        """


class IDrainable(Interface):
    """
    Optional, for an L{IAdapter}: connections of its class that stay with
    the old process (it declines them, or they cannot move for another
    reason: a TLS layer around them, no adapter in the successor) may stay
    there until they close without harm to the service, because they share
    no state with the others that a split would break: an HTTP request
    being answered, an SSH or FTP session.  They drain whatever the
    operator's C{--unmovable} policy, which is about the connections that
    would split the service's state.

    An adapter may instead have a C{drainsHarmlessly} attribute that is
    simply C{True} (L{migrator.InstanceAdapter} takes it as an argument).
    """

    def drainsHarmlessly(obj: Any) -> bool:
        """
        @param obj: the protocol of a connection that stays.
        @return: whether it may drain in the old process without harm.
        """


class IBusyAware(Interface):
    """
    An L{IAdapter} whose objects can be I{busy}: declining to move only
    for now, with work in progress that ends by itself (an HTTP request
    being answered).  Before capturing, the incumbent waits a bounded time
    for the busy connections to go idle, and keeps the idle ones that could
    become busy from reading meanwhile (see
    L{migrator.state._settling.Settling}).
    """

    def busy(obj: Any) -> bool:
        """
        Is C{obj}, the protocol of a connection, busy?

        @param obj: the connection's protocol (the only object asked).
        @return: whether it declines now but will not for long; C{False}
            also when it can move, or can never move.
        """


class IAnchorOnly(Interface):
    """
    A marker for an L{IAdapter} whose objects are only ever matched onto
    the successor's own (a port's factory, such as a C{twisted.web} Site),
    never created from state: one reached any other way cannot move.  Its
    C{capture} and C{populate} carry the runtime state merged into the
    successor's object.
    """


class IVersionedAdapter(IAdapter):
    """
    Optional, for an L{IAdapter} whose state's format changed between
    versions of the application: steps that translate a state from one
    C{version} to the next and back (L{migrator.InstanceAdapter} takes them
    as arguments; see C{docs/adapters.md}, "Changing your state between
    versions").

    Steps compose along the chain: from version 1 to 3 C{upgrades[1]} then
    C{upgrades[2]} run; from 3 to 1, C{downgrades[2]} then C{downgrades[1]}.
    The newer side of a takeover translates: an incumbent newer than its
    successor downgrades before sending, a successor newer than its
    incumbent upgrades after receiving.  An object no chain of steps
    reaches cannot move (its connection falls under the operator's
    C{--unmovable} policy).

    A step gets a shallow copy of the state (a dictionary, for the default
    rule: change it freely) and returns the translated state.  It must be
    pure: it must not change the objects the state refers to (the
    incumbent serves on with them if the takeover is abandoned), nor rely
    on their state (in the successor they may not be populated yet).
    Fields a downgrade drops are kept aside and come back with the next
    upgrade to their version, for states that are dictionaries.
    """

    upgrades = Attribute(
        "A mapping from int to a callable: upgrades[n] turns a version-n "
        "state into version n + 1 (keys below version)."
    )
    downgrades = Attribute(
        "A mapping from int to a callable: downgrades[n] turns a "
        "version-n + 1 state into version n (keys below version)."
    )
