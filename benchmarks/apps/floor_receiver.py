"""
The floor: receive N connected sockets with raw socket.recv_fds (253 per
batch) and their pickled state on a UNIX socket, unpickle it, and adopt
every socket into the reactor (adoptStreamConnection), then print
C{FLOOR DONE <wall time>}.
"""

import os
import pickle
import socket
import struct
import sys
import time

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol


def main():
    path = sys.argv[1]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print("FLOOR READY", flush=True)
    conn, _ = server.accept()
    count = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))[0]
    fds = []
    while len(fds) < count:
        _, got, flags, _ = socket.recv_fds(conn, 1, 253)
        if flags & socket.MSG_CTRUNC:
            raise SystemExit("truncated")
        fds.extend(got)
    size = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))[0]
    payload = b""
    while len(payload) < size:
        payload += conn.recv(size - len(payload))
    states = pickle.loads(payload)
    factory = Factory.forProtocol(Protocol)
    adopted = []
    for fd, state in zip(fds, states, strict=True):
        t = reactor.adoptStreamConnection(fd, socket.AF_INET, factory)
        os.close(fd)  # adoptStreamConnection took a duplicate
        adopted.append((t, state))
    # Nothing else to do: the "floor" ends once every socket is adopted.
    print(f"FLOOR DONE {time.time()!r} {len(adopted)}", flush=True)


if __name__ == "__main__":
    main()
