"""
Hold N idle connections to 127.0.0.1:PORT (stdlib only).  Prints
C{HOLDER READY} once all are connected; on a line C{check} from stdin,
pings every connection and prints one JSON line (answers, pids, errors);
on C{quit} or EOF, exits.
"""

import json
import selectors
import socket
import sys
import time


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setblocking(False)
        socks.append(s)
    print("HOLDER READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "check":
            break
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            try:
                s.send(b"ping\r\n")
                sel.register(s, selectors.EVENT_READ, [i, b""])
            except OSError:
                pass
        answers, pids, errors = 0, {}, 0
        deadline = time.monotonic() + 60
        pending = len(sel.get_map())
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    errors += 1
                    data = b""
                if not data:
                    errors += 1
                    sel.unregister(key.fileobj)
                    pending -= 1
                    continue
                key.data[1] += data
                if key.data[1].endswith(b"\r\n"):
                    parts = key.data[1].split()
                    pids[parts[1].decode()] = pids.get(parts[1].decode(), 0) + 1
                    answers += 1
                    sel.unregister(key.fileobj)
                    pending -= 1
        print(json.dumps({"answers": answers, "errors": errors, "pids": pids}), flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
