# -*- test-case-name: tests.integration.test_operator -*-
"""
C{python -m migrator status --control PATH [--json]}: what runs at a
control socket, for people or (with C{--json}) for scripts.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python import usage

from migrator.cli._options import CommandOptions
from migrator.takeover._control import ControlClientFactory, ControlRefused, PeerPolicy, probe


class StatusOptions(CommandOptions):
    synopsis = "--control PATH [--json]"
    longdesc = (
        "Ask the service at a control socket what it is: its process, "
        "generation, ports, connections, and the takeover in progress or "
        "the last one.  It talks only to a service of the same user (or root)."
    )
    optFlags = [["json", "j", "Print one JSON object, for scripts."]]
    optParameters = [
        ["control", "c", None, "Path of the control socket."],
        ["timeout", None, 10.0, "Seconds to wait for an answer.", float],
    ]

    def postOptions(self) -> None:
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")


async def fetchStatus(reactor: Any, path: str, timeout: float = 10.0) -> dict[str, Any]:
    """
    Ask the service at control socket C{path} for its status.

    @raise RuntimeError: with a message for the operator, if nothing (or
        somebody else's process) answers.
    """
    return await callControl(reactor, path, "status", timeout=timeout)


async def callControl(
    reactor: Any, path: str, method: str, *args: Any, timeout: float = 10.0
) -> Any:
    """
    Call C{method} of the service at control socket C{path} (a connection
    of its own, closed after the answer).

    @raise RuntimeError: with a message for the operator, if nothing (or
        somebody else's process) answers, or the method fails.
    """
    state = probe(path, timeout)
    if state != "live":
        raise RuntimeError(f"no service answers at {path} ({state})")
    factory = ControlClientFactory(PeerPolicy())
    reactor.connectUNIX(path, factory, timeout=timeout)
    rootD = factory.getRootObject()
    rootD.addTimeout(timeout, reactor)
    try:
        root = await rootD
    except Exception as e:
        if factory.refused:
            raise RuntimeError(
                f"{path} is served by another user ({factory.refused}); not talking to it"
            ) from e
        if isinstance(e, ControlRefused):
            # The service told us why (another user's socket, opened to us).
            raise RuntimeError(f"{path}: {e}") from e
        raise RuntimeError(f"could not talk to {path}: {e}") from e
    try:
        d: Deferred[Any] = root.callRemote(method, *args)
        d.addTimeout(timeout, reactor)
        try:
            return await d
        except Exception as e:
            message = e.getErrorMessage() if hasattr(e, "getErrorMessage") else str(e)
            raise RuntimeError(f"{path}: {method}: {message or e.__class__.__name__}") from e
    finally:
        root.broker.transport.loseConnection()


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def formatStatus(status: dict[str, Any]) -> str:
    """
    The status record, for humans.
    """
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["started"]))
    lines = [
        f"service     {status.get('service')}  ({status.get('state')})",
        f"process     pid {status['pid']}, Python {status['python']} ({status.get('executable')})",
        f"started     {started} (up {_ago(status.get('uptime', 0))})",
        f"generation  {status['generation']}",
        f"control     {status.get('control')}",
        f"connections {status['connections']['open']} open",
    ]
    ports = status.get("ports") or []
    lines.append(f"ports       {len(ports)}")
    for port in ports:
        origin = "adopted" if port.get("adopted") else "bound"
        lines.append(f"  {port['key']:<36} {port.get('address')}  ({origin})")
    takeover = status.get("takeover")
    if takeover:
        lines.append(
            f"takeover    IN PROGRESS: successor pid {takeover['successor_pid']}, "
            f"step {takeover['step']}, {takeover['elapsed']:.1f}s"
        )
    else:
        lines.append("takeover    none in progress")
    last = status.get("last_takeover")
    if last:
        if last.get("outcome") == "committed":
            lines.append(
                f"last        committed to pid {last['successor_pid']}: "
                f"{last.get('ports_moved')} port(s), accepting paused "
                f"{last.get('accept_paused_ms')} ms"
            )
        else:
            outcome = last.get("outcome") or "abandoned"
            lines.append(f"last        {outcome} at step {last.get('step')}: {last.get('reason')}")
    took = status.get("took_over")
    if took:
        moved = took.get("connections", 0)
        staying = sum((took.get("staying") or {}).values())
        freeze = took.get("freeze_ms") or {}
        line = f"took over   {moved} connection(s) moved, {staying} left to drain"
        if freeze:
            line += f"; frozen p50 {freeze.get('p50')} ms, max {freeze.get('max')} ms"
        lines.append(line)
        for reason, count in sorted((took.get("staying") or {}).items()):
            lines.append(f"  stayed: {count} x {reason}")
    adapters = status.get("adapters")
    if adapters is not None:
        lines.append(f"adapters    {len(adapters)} type(s) can move")
    handed = status.get("handed_off_to")
    if handed:
        lines.append(f"handed off  to pid {handed.get('pid')} (draining)")
    predecessor = status.get("predecessor")
    if predecessor:
        state = "still draining" if predecessor.get("draining") else "exited"
        lines.append(
            f"predecessor pid {predecessor.get('pid')} "
            f"(Python {predecessor.get('python')}), {state}"
        )
    lines.extend(_formatNeverTwo(status))
    lines.extend(_formatOperator(status))
    return "\n".join(lines)


def _command(record: Any) -> str:
    if not isinstance(record, dict) or not isinstance(record.get("argv"), list):
        return "not recorded"
    argv = [str(a) for a in record["argv"]]
    return f"{shlex.join(argv)}  (in {record.get('cwd')})"


def _formatOperator(status: dict[str, Any]) -> list[str]:
    """
    The command lines of this generation and the previous one (what
    C{rollback} runs), and the last dry run.
    """
    lines = []
    if "command" in status:
        lines.append(f"command     {_command(status.get('command'))}")
    if status.get("previous_command"):
        lines.append(f"previous    {_command(status['previous_command'])}")
        lines.append(f"            (python -m migrator rollback --control {status.get('control')})")
    if status.get("last_dry_run"):
        lines.extend(formatDryRun(status["last_dry_run"]))
    return lines


def formatDryRun(dry: Any) -> list[str]:
    """
    The last dry run (C{status}'s C{last_dry_run}): when, by which pid,
    its outcome and its counts per class; C{none yet} if there was none.
    """
    if not isinstance(dry, dict):
        return ["dry run     none yet"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(dry.get("at") or 0))
    lines = [
        f"dry run     {dry.get('outcome')} at {when}, by pid {dry.get('by')}: "
        f"{dry.get('connections')} connection(s) snapshotted"
        + (f"; {dry['message']}" if dry.get("message") else "")
    ]
    for name, counts in sorted((dry.get("classes") or {}).items()):
        kinds = ("restored", "failed", "staying")
        lines.append(f"  {name:<48} " + ", ".join(f"{k} {counts.get(k, 0)}" for k in kinds))
    return lines


def _formatNeverTwo(status: dict[str, Any]) -> list[str]:
    """
    Whether the service's state is split between two processes, and what
    the last takeover did with each class of connections.
    """
    lines = []
    if status.get("split"):
        split = ", ".join(f"{n} {c}" for n, c in (status.get("split_classes") or {}).items())
        lines.append(
            f"split       YES: connections no adapter can move live on in pid "
            f"{status.get('split_with')} with its own copy of the state: {split}"
        )
    labels = (("last_takeover", "last takeover"), ("took_over", "takeover by this process"))
    for key, label in labels:
        record = status.get(key) or {}
        classes = record.get("classes") or {}
        if classes:
            lines.append(f"connections of the {label}, by class:")
        for name, counts in sorted(classes.items()):
            outcomes = ("moved", "drained", "closed", "refused")
            lines.append(f"  {name:<48} " + ", ".join(f"{k} {counts.get(k, 0)}" for k in outcomes))
    return lines


def runStatus(options: StatusOptions, out: TextIO, err: TextIO) -> int:
    from twisted.internet import reactor
    from twisted.internet.task import react

    result: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        try:
            result["status"] = await fetchStatus(reactor, options["control"], options["timeout"])
        except RuntimeError as e:
            result["error"] = str(e)

    try:
        react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    del reactor
    if "error" in result:
        err.write(f"migrator status: {result['error']}\n")
        return 1
    if options["json"]:
        out.write(json.dumps(result["status"], sort_keys=True) + "\n")
    else:
        out.write(formatStatus(result["status"]) + "\n")
    return 0
