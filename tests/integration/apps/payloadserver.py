"""
An upstream server for the portforward test: every connection gets the
same large, deterministic, pseudo-random payload (L{payload}), streamed,
and is then closed.

    python payloadserver.py --size BYTES

Prints C{PAYLOADSERVER READY port=N size=N sha256=HEX} once it listens on
127.0.0.1 (an ephemeral port), and C{PAYLOADSERVER CONNECTION n} for every
connection it accepts (and C{PAYLOADSERVER SENT n} once it has handed the
whole payload to its kernel), so a test can tell how many upstream
connections the forwarder made.
"""

import argparse
import asyncio
import hashlib
import socket
import sys

CHUNK = 64 * 1024


def payload(size: int, seed: bytes = b"migrator portforward") -> bytes:
    """
    C{size} deterministic pseudo-random bytes (the same in every process
    and Python version).
    """
    return hashlib.shake_256(seed).digest(size)


async def main(size: int) -> None:
    data = payload(size)
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        # A small send buffer keeps the bytes in flight in the forwarder.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        print(f"PAYLOADSERVER CONNECTION {accepted}", flush=True)
        try:
            view = memoryview(data)
            for offset in range(0, len(data), CHUNK):
                writer.write(view[offset : offset + CHUNK])
                await writer.drain()
            print(f"PAYLOADSERVER SENT {accepted}", flush=True)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError) as e:
            print(f"PAYLOADSERVER ERROR {e!r}", flush=True)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(
        f"PAYLOADSERVER READY port={port} size={size} sha256={hashlib.sha256(data).hexdigest()}",
        flush=True,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32 * 1024 * 1024)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.size))
    except KeyboardInterrupt:
        sys.exit(0)
