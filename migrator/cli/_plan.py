# -*- test-case-name: tests.test_consoleweb -*-
"""
C{python -m migrator plan --control PATH [--policy P] [--select IDS]
[--json]}: what a takeover would do now, per port and per class of
connection (move, drain, close, or refuse the takeover, with the reasons),
computed by the running service without starting anything; and the last
dry run against it (C{status}'s C{last_dry_run}).
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python import usage

from migrator.cli._status import callControl, formatDryRun

POLICIES = ("refuse", "drain", "close")
OUTCOMES = (("move", "move"), ("drain", "drain"), ("close", "close"), ("refused", "refused"))


class PlanOptions(usage.Options):
    synopsis = "--control PATH [--policy refuse|drain|close] [--select IDS] [--json]"
    optFlags = [["json", "j", "Print one JSON object, for scripts."]]
    optParameters = [
        ["control", "c", None, "Path of the control socket."],
        [
            "policy",
            "p",
            "refuse",
            "The successor's --unmovable policy to plan with (refuse, drain or close).",
        ],
        [
            "select",
            "s",
            None,
            "Plan moving only these connections or components (comma-separated ids, "
            "as the console and --json show them).",
        ],
        ["timeout", None, 30.0, "Seconds to wait for an answer.", float],
    ]

    def postOptions(self) -> None:
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")
        if self["policy"] not in POLICIES:
            raise usage.UsageError(f"--policy must be one of {', '.join(POLICIES)}")
        if self["select"] is not None:
            self["select"] = [i.strip() for i in self["select"].split(",") if i.strip()]


def formatPlan(plan: dict[str, Any], status: dict[str, Any] | None = None) -> str:
    """
    The plan, for a terminal, with the last dry run of C{status}.
    """
    lines = []
    if status:
        lines.append(
            f"plan for {status.get('service')} (pid {status.get('pid')}, generation "
            f"{status.get('generation')}), --unmovable {plan['policy']}"
        )
    counts = ", ".join(f"{plan.get(key, 0)} {label}" for key, label in OUTCOMES)
    lines.append(f"{plan['total']} open connection(s): {counts}")
    if plan.get("takeover_refused"):
        lines.append(f"REFUSED: {plan.get('message')}")
    for port in plan["ports"]:
        lines.append(f"port {port['key']}  {port.get('address') or ''}".rstrip())
        if not port["classes"]:
            lines.append("  (no open connection)")
        for c in port["classes"]:
            what = ", ".join(f"{c[key]} {label}" for key, label in OUTCOMES if c.get(key))
            lines.append(f"  {c['class']:<52} {c['total']:>6} open: {what}")
            for reason, count in c.get("reasons") or ():
                lines.append(f"      {count} x {reason}")
    selection = plan.get("selection")
    if selection:
        lines.append(
            f"selection   {selection['selected']} connection(s) selected; "
            f"{selection['kept_back']} selected kept back"
        )
        if selection.get("unknown"):
            lines.append(f"  ids naming nothing open: {', '.join(selection['unknown'])}")
        if selection.get("blocked"):
            lines.append(f"  nothing would move: {selection['blocked']}")
        points = selection.get("split_points") or []
        if points:
            lines.append(f"  the state would split at {len(points)} object(s):")
        for point in points[:20]:
            held = f" {point['note']}" if point.get("note") else ""
            lines.append(f"    {point['class']}{held} ({point['kind']}, {point['id']})")
    if status is not None:
        lines.extend(formatDryRun(status.get("last_dry_run")))
    if plan.get("truncated"):
        lines.append("(the object graph was too large to walk completely)")
    return "\n".join(lines)


def runPlan(options: PlanOptions, out: TextIO, err: TextIO) -> int:
    from twisted.internet.task import react

    result: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        path, timeout = options["control"], options["timeout"]
        try:
            result["status"] = await callControl(reactor, path, "status", timeout=timeout)
            result["plan"] = await callControl(
                reactor, path, "plan", options["policy"], options["select"], timeout=timeout
            )
        except RuntimeError as e:
            result["error"] = str(e)

    try:
        react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    if "error" in result:
        err.write(f"migrator plan: {result['error']}\n")
        return 1
    if options["json"]:
        plan = {**result["plan"], "dry_run": result["status"].get("last_dry_run")}
        out.write(json.dumps(plan, sort_keys=True) + "\n")
    else:
        out.write(formatPlan(result["plan"], result["status"]) + "\n")
    return 0
