"""
The client side of the connection-handoff test: C{--connections} sockets,
each sending numbered lines and checking every numbered reply (order,
content, no gap, no duplicate), reading slowly in bursts so that replies
pile up in the server.  Runs until C{--stop-file} exists (or C{--duration}
passes), then asks each connection for C{stats} and prints one JSON line.

With C{--counted}, each reply is C{N COUNT TAG payload-reversed PAD}: the
server's count of the connection's lines (checked: C{COUNT} is C{N + 1},
every line counted once, whichever process counted it) and a tag naming
the code that answered (counted per tag; the first line answered by each
tag is remembered, and a C{first=} field of the final C{stats} must be the
first line answered by the tag C{v2}).

Standard library only; loopback only; bounded in time and count.
"""

import argparse
import json
import os
import selectors
import socket
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="lines/s per connection")
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--pad", type=int, default=200)
    parser.add_argument("--counted", action="store_true")
    args = parser.parse_args()
    deadline = time.monotonic() + min(args.duration, 1800.0)
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(min(args.connections, 2000)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", args.port))
        s.setblocking(False)
        c = {"sock": s, "i": i, "sent": 0, "expect": 0, "buf": b"", "out": b"", "errors": [], "stats": None,
             "tags": {}, "first": {}}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    print("LINECLIENT READY", flush=True)
    start = time.monotonic()
    stopping = False
    finalSent = None

    def handle(c, line):
        if line.startswith(b"stats "):
            c["stats"] = dict(kv.split("=") for kv in line[6:].decode().split())
            if "first" in c["stats"] and c["stats"]["first"] != str(c["first"].get("v2", -1)):
                c["errors"].append(f"first={c['stats']['first']}, first v2 reply {c['first'].get('v2')}")
            return
        n, _, rest = line.partition(b" ")
        if args.counted:
            count, _, rest = rest.partition(b" ")
            tag, _, rest = rest.partition(b" ")
            tag = tag.decode("ascii", "replace")
            if count != b"%d" % (c["expect"] + 1):
                c["errors"].append(f"line {c['expect']} counted {count[:20]!r}")
            c["tags"][tag] = c["tags"].get(tag, 0) + 1
            c["first"].setdefault(tag, c["expect"])
        try:
            n = int(n)
        except ValueError:
            c["errors"].append(f"corrupt line {line[:60]!r}")
            return
        if n != c["expect"]:
            c["errors"].append(f"expected {c['expect']} got {n}")
        payload = b"line%d-%d" % (c["i"], n)
        if rest != payload[::-1] + b" " + b"." * args.pad:
            c["errors"].append(f"corrupt reply {n}: {rest[:60]!r}")
        c["expect"] = n + 1

    while True:
        now = time.monotonic()
        if now > deadline:
            break
        if not stopping and os.path.exists(args.stop_file):
            stopping = True
            finalSent = now
            for c in conns:
                c["out"] += b"stats\r\n"
        if stopping and all(c["stats"] is not None for c in conns):
            break
        if stopping and now - finalSent > 60:
            break
        if not stopping:
            due = int((now - start) * args.rate)
            for c in conns:
                while c["sent"] < due and len(c["out"]) < 65536:
                    c["out"] += b"%d line%d-%d\r\n" % (c["sent"], c["i"], c["sent"])
                    c["sent"] += 1
        for c in conns:
            if c["out"]:
                try:
                    n = c["sock"].send(c["out"])
                    c["out"] = c["out"][n:]
                except BlockingIOError:
                    pass
                except OSError as e:
                    c["errors"].append(f"send: {e}")
                    c["out"] = b""
        # Read in bursts: 200 ms reading, then 600 ms not reading.
        if (now - start) % 0.8 > 0.2 and not stopping:
            time.sleep(0.005)
            continue
        for key, _ in sel.select(0.005):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                c["errors"].append(f"recv: {e}")
                sel.unregister(c["sock"])
                continue
            if not data:
                c["errors"].append("connection closed by the server")
                sel.unregister(c["sock"])
                continue
            c["buf"] += data
            *lines, c["buf"] = c["buf"].split(b"\r\n")
            for line in lines:
                handle(c, line)
    result = {
        "connections": len(conns),
        "sent": sum(c["sent"] for c in conns),
        "received": sum(c["expect"] for c in conns),
        "errors": [e for c in conns for e in c["errors"]][:50],
        "error_count": sum(len(c["errors"]) for c in conns),
        "missing_stats": sum(1 for c in conns if c["stats"] is None),
        "stats": [c["stats"] for c in conns][:5],
        "made": max((int(c["stats"]["made"]) for c in conns if "made" in (c["stats"] or ())), default=None),
        "min_hops": min((int(c["stats"]["hops"]) for c in conns if "hops" in (c["stats"] or ())), default=None),
        "unanswered": sum(c["sent"] - c["expect"] for c in conns),
        "tags": {t: sum(c["tags"].get(t, 0) for c in conns) for t in {t for c in conns for t in c["tags"]}},
    }
    for c in conns:
        c["sock"].close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
