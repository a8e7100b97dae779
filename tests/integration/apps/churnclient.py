"""
A client that keeps opening connections to the numbered line app
(L{tests.integration.apps.numbered}), one every C{--interval} seconds, each
sending one numbered line and checking its reply, and keeps them all open.
Once C{--stop-file} exists it stops opening, asks every connection which
process serves it (C{pid}), and prints one JSON line: how many it opened,
how many were refused or reset or closed, how many were answered, and how
many connections each process serves.

Standard library only; loopback only; bounded in count (C{--max}) and time
(C{--duration}).
"""

import argparse
import errno
import json
import os
import selectors
import socket
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--max", type=int, default=2500)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--stop-file", required=True)
    args = parser.parse_args()
    deadline = time.monotonic() + min(args.duration, 600.0)
    maximum = min(args.max, 5000)
    sel = selectors.DefaultSelector()
    conns = []
    counts = {"refused": 0, "reset": 0, "closed": 0, "other": 0}
    errors = []
    nextOpen = time.monotonic()
    ready = False
    stopping = None

    def fail(c, kind, what):
        counts[kind] += 1
        c["dead"] = True
        # The first 30, and every unexpected one (up to 30 of those too):
        # an unexpected error is the one a failing test must show.
        if len(errors) < 30 or (kind == "other" and counts["other"] <= 30):
            errors.append(f"connection {c['i']}: {kind}: {what}")
        try:
            sel.unregister(c["sock"])
        except (KeyError, ValueError):
            pass
        c["sock"].close()

    def handle(c, line):
        if line.startswith(b"stats "):
            c["stats"] = dict(kv.split("=") for kv in line[6:].decode().split())
            return
        if c["state"] == "greeting":
            if not line.startswith(b"%d " % c["i"]):
                fail(c, "other", f"unexpected reply {line[:40]!r}")
                return
            c["state"] = "served"
        elif c["state"] == "asking" and line.startswith(b"pid "):
            c["pid"] = int(line[4:])
            c["state"] = "answered"

    while time.monotonic() < deadline:
        now = time.monotonic()
        if stopping is None and os.path.exists(args.stop_file):
            stopping = now
            for c in conns:
                if not c["dead"]:
                    c["out"] += b"pid\r\n"
                    c["state"] = "asking"
            live = [c for c in conns if not c["dead"]]
            if live:
                live[0]["out"] += b"stats\r\n"
        if stopping is not None:
            live = [c for c in conns if not c["dead"]]
            if all(c["state"] == "answered" for c in live) and (
                not live or live[0].get("stats")
            ):
                break
            if now - stopping > 60:
                break
        elif len(conns) < maximum and now >= nextOpen:
            nextOpen = now + args.interval
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            i = len(conns)
            c = {"sock": s, "i": i, "state": "connecting", "out": b"", "buf": b"", "dead": False}
            conns.append(c)
            code = s.connect_ex(("127.0.0.1", args.port))
            if code == errno.ECONNREFUSED:
                fail(c, "refused", "refused")
                continue
            if code not in (0, errno.EINPROGRESS):
                fail(c, "other", errno.errorcode.get(code, str(code)))
                continue
            c["out"] = b"%d hello\r\n" % i
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        timeout = max(0.0, min(nextOpen - time.monotonic(), 0.005)) if stopping is None else 0.005
        for key, events in sel.select(timeout):
            c = key.data
            if c["dead"]:
                continue
            if events & selectors.EVENT_WRITE:
                if c["state"] == "connecting":
                    code = c["sock"].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        # (Reset: the listener died with it in its queue.)
                        kind = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}.get(
                            code, "other"
                        )
                        fail(c, kind, errno.errorcode.get(code, str(code)))
                        continue
                    c["state"] = "greeting"
                if c["out"]:
                    try:
                        n = c["sock"].send(c["out"])
                        c["out"] = c["out"][n:]
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        fail(c, "reset", f"send: {e}")
                        continue
                if not c["out"]:
                    sel.modify(c["sock"], selectors.EVENT_READ, c)
            if events & selectors.EVENT_READ:
                try:
                    data = c["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, "reset", f"recv: {e}")
                    continue
                if not data:
                    fail(c, "closed", "closed by the server")
                    continue
                c["buf"] += data
                *lines, c["buf"] = c["buf"].split(b"\r\n")
                for line in lines:
                    handle(c, line)
        if not ready and any(c["state"] == "served" for c in conns):
            ready = True
            print("CHURN READY", flush=True)
        if stopping is not None:
            for c in conns:
                if c["out"] and not c["dead"]:
                    sel.modify(c["sock"], selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    pids = {}
    for c in conns:
        if c.get("pid") is not None:
            pids[str(c["pid"])] = pids.get(str(c["pid"]), 0) + 1
    stats = next((c["stats"] for c in conns if c.get("stats")), None)
    result = {
        "opened": len(conns),
        "served": sum(1 for c in conns if c["state"] in ("served", "asking", "answered")),
        "answered": sum(1 for c in conns if c["state"] == "answered"),
        "unanswered": sum(1 for c in conns if not c["dead"] and c["state"] != "answered"),
        "pids": pids,
        "stats": stats,
        "errors": errors,
        **counts,
    }
    for c in conns:
        if not c["dead"]:
            c["sock"].close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
