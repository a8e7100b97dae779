"""
Hold N idle HTTP/1.1 keep-alive connections (HTTPS with C{--tls}) to
127.0.0.1:PORT, each having made one request (stdlib only).  Prints
C{HOLDER READY} once all are connected and answered; on a line C{check}
from stdin, sends one more request on every connection and prints one
JSON line (answers, pids that answered, errors, TLS versions); on C{quit}
or EOF, exits.  The server answers each request with its pid
(C{tests.integration.apps.webpid.PidResource}).
"""

import http.client
import json
import ssl
import sys


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    tls = "--tls" in sys.argv[3:]
    context = None
    if tls:
        context = ssl.create_default_context()
        # The benchmark's certificate is a throwaway self-signed one.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    connections = []
    for _ in range(count):
        if tls:
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.auto_open = 0
        c.connect()
        c.request("GET", "/")
        c.getresponse().read()
        connections.append(c)
    print("HOLDER READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "check":
            break
        answers, pids, errors, versions = 0, {}, 0, {}
        for c in connections:
            try:
                sock = c.sock
                c.request("GET", "/")
                body = c.getresponse().read().decode().strip()
                if c.sock is not sock:
                    raise OSError("reconnected")
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            answers += 1
            pids[body] = pids.get(body, 0) + 1
            version = c.sock.version() if tls else "plain"
            versions[version] = versions.get(version, 0) + 1
        print(
            json.dumps({"answers": answers, "errors": errors, "pids": pids, "versions": versions}),
            flush=True,
        )
    for c in connections:
        c.close()


if __name__ == "__main__":
    main()
