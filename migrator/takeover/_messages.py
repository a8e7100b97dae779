# -*- test-case-name: tests.test_messages -*-
"""
The messages of a takeover, as typed records.

Perspective Broker carries them between the two sides as plain
dictionaries: the control socket's jelly allow-list admits basic types only
(L{migrator.takeover._control.controlSecurity}), so no class is ever
rebuilt from a peer's bytes.  Each record therefore converts itself at the
PB boundary: C{toWire()} gives the plain dictionary, and C{fromWire()}
checks one that arrived and builds the record, raising
L{MalformedMessage} (never a C{KeyError} or C{TypeError}) when a field is
missing or of the wrong type.  Fields a record does not know are ignored,
and optional ones have defaults, so that a later version may add some.

Step by step (successor -> incumbent, then the answer):

  - C{begin(BeginRequest) -> BeginAnswer}
  - C{received(ReceivedReport) -> None}
  - C{prepared(PreparedReport) -> None}
  - C{capture(CaptureRequest) -> CaptureReport}
  - C{restored(RestoredReport) -> None}
  - C{switch() -> SwitchAnswer}
  - C{commit() -> CommitAnswer}
  - C{abort(reason: str) -> None}

The ports travel on the frame channel, as JSON: L{PortsMessage}; so does
an incumbent's L{Farewell} when it abandons a takeover.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from migrator.state._nativeform import VERSION as NATIVE_FORM
from migrator.takeover._fields import MalformedMessage, _Fields

# (Where the other modules have always found them.)
__all__ = ["MalformedMessage", "_Fields"]


@attrs.frozen
class BeginRequest:
    """
    A successor asks to take over.

    @ivar pid: the successor's process id.
    @ivar python: its Python version.
    @ivar argv: its command line (the first 50 arguments), for the logs.
    @ivar unmovable: what the incumbent is to do with connections no
        adapter can move (C{refuse}, C{drain}, C{close}); a successor that
        sends none gets C{drain}, what older successors always got.
    @ivar types: the type names the successor can restore.
    @ivar versions: the version it reads of each, or C{None} (not sent).
    @ivar readable: what it reads of each (versions and the upgrades it
        has: L{migrator.state._versions.Readable}), or C{None}.
    @ivar select: the connection or component ids the operator selected to
        move this time (all if empty).
    """

    pid: int
    python: str = ""
    argv: tuple[str, ...] = ()
    unmovable: str = "drain"
    types: tuple[str, ...] = ()
    versions: dict[str, int] | None = None
    readable: dict[str, Any] | None = None
    select: tuple[str, ...] = ()

    def toWire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "pid": self.pid,
            "python": self.python,
            "argv": list(self.argv),
            "unmovable": self.unmovable,
            "types": list(self.types),
        }
        if self.versions is not None:
            wire["versions"] = dict(self.versions)
        if self.readable is not None:
            wire["readable"] = dict(self.readable)
        if self.select:
            wire["select"] = list(self.select)
        return wire

    @classmethod
    def fromWire(cls, wire: object) -> BeginRequest:
        """
        @raise MalformedMessage: if C{wire} is not a begin request.
        """
        f = _Fields(wire, "begin")
        versions = f.counts("versions") if isinstance(wire, Mapping) and "versions" in wire else None
        return cls(
            f.integer("pid"),
            f.text("python", ""),
            f.texts("argv"),
            f.text("unmovable", "drain"),
            f.texts("types"),
            versions,
            f.mapping("readable"),
            f.texts("select"),
        )


@attrs.frozen
class BeginAnswer:
    """
    The incumbent accepts: who it is, and how many listening ports it sends
    on the frame channel (whose descriptor rides with this answer).

    @ivar connections: how many connections it held when it answered (what
        a successor reports as lost if the incumbent dies before their
        state is sent).
    @ivar plan: what the takeover will move and leave behind, per class
        (L{migrator.state._plan.Plan.asDict}), or C{None}.
    @ivar command: how the incumbent was started (argv, cwd, executable:
        L{migrator.takeover._lineage.thisCommand}), or C{None}: what the
        successor's C{status} shows as C{previous_command}, and what
        C{python -m migrator rollback} runs again.
    @ivar lineage: the generations before the successor's (pid, Python,
        start, how each ended), for its C{status}.
    """

    pid: int
    generation: int
    python: str
    ports: int
    connections: int = 0
    plan: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    lineage: tuple[dict[str, Any], ...] = ()

    def toWire(self) -> dict[str, Any]:
        wire = {
            "pid": self.pid,
            "generation": self.generation,
            "python": self.python,
            "ports": self.ports,
            "connections": self.connections,
        }
        if self.plan is not None:
            wire["plan"] = self.plan
        if self.command is not None:
            wire["command"] = self.command
        if self.lineage:
            wire["lineage"] = [dict(g) for g in self.lineage]
        return wire

    @classmethod
    def fromWire(cls, wire: object) -> BeginAnswer:
        """
        @raise MalformedMessage: if C{wire} is not a begin answer.
        """
        f = _Fields(wire, "begin's answer")
        return cls(
            f.integer("pid"),
            f.integer("generation"),
            f.text("python", ""),
            f.integer("ports"),
            f.integer("connections", 0),
            f.mapping("plan"),
            f.mapping("command"),
            f.dicts("lineage"),
        )


@attrs.frozen
class PortsMessage:
    """
    The listening ports, on the frame channel (JSON), with their
    descriptors in the same message.

    @ivar ports: one record per port (L{migrator.takeover._ports}'s
        C{describe()}), in the order of the descriptors.
    """

    ports: tuple[dict[str, Any], ...]

    def toBytes(self) -> bytes:
        return json.dumps({"type": "ports", "ports": list(self.ports)}).encode("utf-8")

    @classmethod
    def fromBytes(cls, payload: bytes) -> PortsMessage:
        """
        @raise MalformedMessage: if C{payload} is not a ports message.
        """
        try:
            wire = json.loads(payload.decode("utf-8"))
        except ValueError as e:
            raise MalformedMessage(f"ports message: not JSON ({e})") from e
        f = _Fields(wire, "ports message")
        if f.text("type") != "ports":
            raise MalformedMessage(f"ports message: unexpected type {wire['type']!r}")
        return cls(f.records("ports"))


@attrs.frozen
class ReceivedReport:
    """
    The successor has the frame channel and the ports message: the
    handshake is over, and it starts its service.

    @ivar ports: how many port descriptors arrived.
    """

    ports: int

    def toWire(self) -> dict[str, Any]:
        return {"ports": self.ports}

    @classmethod
    def fromWire(cls, wire: object) -> ReceivedReport:
        """
        @raise MalformedMessage: if C{wire} is not such a report.
        """
        return cls(_Fields(wire, "received").integer("ports"))


@attrs.frozen
class PreparedReport:
    """
    The successor's service runs on the adopted ports (not accepting).

    @ivar received: how many port descriptors arrived.
    @ivar adopted: how many of them its service declared and adopted.
    @ivar unclaimed: the keys of the ports it did not declare (closed).
    @ivar closeUndeclared: whether the operator allowed the takeover to
        close those ports (C{--close-undeclared-ports}); without it, the
        incumbent refuses a takeover that would close any.
    """

    received: int
    adopted: int = 0
    unclaimed: tuple[str, ...] = ()
    closeUndeclared: bool = False

    def toWire(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "adopted": self.adopted,
            "unclaimed": list(self.unclaimed),
            "close_undeclared": self.closeUndeclared,
        }

    @classmethod
    def fromWire(cls, wire: object) -> PreparedReport:
        """
        @raise MalformedMessage: if C{wire} is not such a report.
        """
        f = _Fields(wire, "prepared")
        return cls(
            f.integer("received"),
            f.integer("adopted", 0),
            f.texts("unclaimed"),
            f.flag("close_undeclared", False),
        )


@attrs.frozen
class Streaming:
    """
    How the successor asks for the connections: in batches
    (L{migrator.state._stream}), and what becomes of busy ones.

    @ivar maxBatch: the most connections per batch (0: all in one
        message, in the turn accepting stops).
    @ivar busyDeadline: how long, in seconds, busy connections may take to
        turn idle and move; then what is still busy stays.
    @ivar closeBusy: whether what is still busy at the deadline is closed
        after the commit (as a shutdown would) instead of draining.
    @ivar acks: whether the successor says when it has restored each batch
        (C{batchRestored}): the last turn then waits for it to catch up,
        so that what is frozen last is not held behind its backlog.
    @ivar parts: whether the successor reads a connection too large for
        a batch from part messages (L{migrator.state._large}); if not, it
        goes in a batch whatever its size.
    @ivar native: the version of the native form of batches the
        successor reads (L{migrator.state._nativeform.VERSION}), or 0: if
        it is not the one the incumbent writes, the graph writer writes
        them all.
    """

    maxBatch: int = 512
    busyDeadline: float = 5.0
    closeBusy: bool = False
    acks: bool = True
    parts: bool = True
    native: int = NATIVE_FORM

    def toWire(self) -> dict[str, Any]:
        return {
            "max_batch": self.maxBatch,
            "busy_deadline": self.busyDeadline,
            "close_busy": self.closeBusy,
            "acks": self.acks,
            "parts": self.parts,
            "native_form": self.native,
        }

    @classmethod
    def fromWire(cls, wire: object) -> Streaming:
        """
        @raise MalformedMessage: if C{wire} is not such a record.
        """
        f = _Fields(wire, "capture's stream")
        maxBatch, deadline = f.integer("max_batch", 512), f.number("busy_deadline", 5.0)
        native = f.integer("native_form", 0)
        if maxBatch < 0 or deadline < 0 or native < 0:
            raise MalformedMessage(
                "capture's stream: max_batch, busy_deadline and native_form must be >= 0"
            )
        return cls(
            maxBatch,
            deadline,
            f.flag("close_busy", False),
            f.flag("acks", False),
            f.flag("parts", False),
            native,
        )


@attrs.frozen
class CaptureRequest:
    """
    The successor asks for the connections.

    @ivar types: the type names it has adapters for.
    @ivar versions: the version of each (C{None}: not said, any).
    @ivar readable: what it reads of each (versions and the upgrades it
        has: L{migrator.state._versions.Readable}), or C{None}.
    @ivar stream: how to stream them, or C{None} (a successor older than
        streaming: in one message, after a bounded wait for busy ones).
    """

    types: tuple[str, ...] = ()
    versions: dict[str, int] | None = None
    readable: dict[str, Any] | None = None
    stream: Streaming | None = None

    def toWire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"types": list(self.types)}
        if self.versions is not None:
            wire["versions"] = dict(self.versions)
        if self.readable is not None:
            wire["readable"] = dict(self.readable)
        if self.stream is not None:
            wire["stream"] = self.stream.toWire()
        return wire

    @classmethod
    def fromWire(cls, wire: object) -> CaptureRequest:
        """
        @raise MalformedMessage: if C{wire} is not such a request.
        """
        f = _Fields(wire, "capture")
        fields: Mapping[str, Any] = wire if isinstance(wire, Mapping) else {}
        versions = f.counts("versions") if "versions" in fields else None
        stream = Streaming.fromWire(fields["stream"]) if "stream" in fields else None
        return cls(f.texts("types"), versions, f.mapping("readable"), stream)


@attrs.frozen
class CaptureReport:
    """
    What the incumbent froze and sent on the frame channel.

    Every connection the incumbent held when it stopped accepting is
    either sent or staying: C{held == connections + sum(staying.values())}
    (unless the graph reached connections that no port accepted).

    @ivar connections: how many connections (and descriptors) it sent.
    @ivar bytes: the size of their state.
    @ivar moved: how many of each class move.
    @ivar staying: how many stay in the incumbent, by reason.
    @ivar frozenAt: when the freeze began (the incumbent's wall clock).
    @ivar held: how many connections the incumbent held when it stopped
        accepting, just before the capture.
    @ivar translations: per class, the versions seen and the steps the
        incumbent ran (L{migrator.state._translator.TranslationLog}).
    """

    connections: int
    bytes: int = 0
    moved: dict[str, int] = attrs.field(factory=dict)
    staying: dict[str, int] = attrs.field(factory=dict)
    frozenAt: float = 0.0
    held: int = 0
    translations: dict[str, Any] = attrs.field(factory=dict)

    def toWire(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "bytes": self.bytes,
            "moved": dict(self.moved),
            "staying": dict(self.staying),
            "frozen_at": self.frozenAt,
            "held": self.held,
            "translations": dict(self.translations),
        }

    @classmethod
    def fromWire(cls, wire: object) -> CaptureReport:
        """
        @raise MalformedMessage: if C{wire} is not such a report.
        """
        f = _Fields(wire, "capture's answer")
        return cls(
            f.integer("connections"),
            f.integer("bytes", 0),
            f.counts("moved"),
            f.counts("staying"),
            f.number("frozen_at", 0.0),
            f.integer("held", 0),
            f.mapping("translations") or {},
        )


@attrs.frozen
class RestoredReport:
    """
    The successor restored the connections (not reading yet).

    @ivar connections: how many.
    """

    connections: int

    def toWire(self) -> dict[str, Any]:
        return {"connections": self.connections}

    @classmethod
    def fromWire(cls, wire: object) -> RestoredReport:
        """
        @raise MalformedMessage: if C{wire} is not such a report.
        """
        return cls(_Fields(wire, "restored").integer("connections"))


@attrs.frozen
class SwitchAnswer:
    """
    The incumbent has stopped accepting; the successor accepts now.

    @ivar paused: how many ports are not accepting in the incumbent.
    """

    paused: int

    def toWire(self) -> dict[str, Any]:
        return {"paused": self.paused}

    @classmethod
    def fromWire(cls, wire: object) -> SwitchAnswer:
        """
        @raise MalformedMessage: if C{wire} is not such an answer.
        """
        return cls(_Fields(wire, "switch's answer").integer("paused", 0))


@attrs.frozen
class CommitAnswer:
    """
    The incumbent has let go of the ports and the moved connections.

    @ivar generation: the successor's generation.
    @ivar released: the keys of the ports the incumbent released.
    @ivar connections: how many connections it released.
    @ivar acceptPausedMs: how long no process accepted, as the incumbent
        measured it.
    @ivar unmovable: the policy applied to connections no adapter can move.
    @ivar classes: per class, how many connections moved, drained, were
        closed or refused.
    @ivar split: whether connections no adapter can move stay in the old
        process (C{--unmovable drain}): the service's state is split.
    @ivar splitClasses: those connections, by class.
    """

    generation: int
    released: tuple[str, ...] = ()
    connections: int = 0
    acceptPausedMs: float = 0.0
    unmovable: str = ""
    classes: dict[str, Any] = attrs.field(factory=dict)
    split: bool = False
    splitClasses: dict[str, int] = attrs.field(factory=dict)

    def toWire(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "released": list(self.released),
            "connections": self.connections,
            "accept_paused_ms": self.acceptPausedMs,
            "unmovable": self.unmovable,
            "classes": self.classes,
            "split": self.split,
            "split_classes": self.splitClasses,
        }

    @classmethod
    def fromWire(cls, wire: object) -> CommitAnswer:
        """
        @raise MalformedMessage: if C{wire} is not such an answer.
        """
        f = _Fields(wire, "commit's answer")
        return cls(
            f.integer("generation"),
            f.texts("released"),
            f.integer("connections", 0),
            f.number("accept_paused_ms", 0.0),
            f.text("unmovable", ""),
            f.mapping("classes") or {},
            f.flag("split", False),
            f.counts("split_classes"),
        )


@attrs.frozen
class Farewell:
    """
    The incumbent abandoned the takeover on purpose: its last message on the
    frame channel, sent before it closes the channel.

    It tells a successor that an incumbent which hung up (and may exit
    soon after, if it was stopping) gave up deliberately and owns its
    sockets again, so the successor rolls back rather than completing the
    takeover on its own.

    @ivar reason: why the incumbent gave up.
    @ivar stopping: whether the incumbent is about to exit (it was asked to
        stop): then nothing serves after it.
    """

    reason: str
    stopping: bool = False

    #: Marks the payload; no pickle (the state message) or JSON (the ports
    #: message) starts like this.
    PREFIX = b"migrator-farewell\n"

    def toBytes(self) -> bytes:
        return self.PREFIX + json.dumps({"reason": self.reason, "stopping": self.stopping}).encode()

    @classmethod
    def fromBytes(cls, payload: bytes) -> Farewell | None:
        """
        @return: the farewell in C{payload}, or C{None} if it is another
            message.
        @raise MalformedMessage: if it is a farewell with bad contents.
        """
        if not payload.startswith(cls.PREFIX):
            return None
        try:
            wire = json.loads(payload[len(cls.PREFIX) :].decode("utf-8"))
        except ValueError as e:
            raise MalformedMessage(f"farewell: not JSON ({e})") from e
        f = _Fields(wire, "farewell")
        stopping = wire.get("stopping") if isinstance(wire, Mapping) else None
        return cls(f.text("reason", ""), stopping is True)
