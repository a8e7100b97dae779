# -*- test-case-name: tests.test_pidfile -*-
"""
The pidfile and systemd's notification socket, as they must behave when the
main process of a service changes.

twistd's own pidfile handling refuses to start while the pidfile names a
live process, which is exactly the situation of a successor; C{migrate}
takes the pidfile over from twistd (see L{migrator.tap.Options}) and
handles it here: the pidfile always names the process that serves, it is
rewritten atomically by a successor once it has committed, and removed at
exit only by the process it names.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import attrs


@attrs.define
class Pidfile:
    """
    @ivar path: absolute path of the pidfile, or C{None} for none.
    """

    path: str | None

    def read(self) -> int | None:
        if not self.path:
            return None
        try:
            with open(self.path) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def write(self, pid: int | None = None) -> None:
        """
        Atomically make the pidfile name C{pid} (default: this process).
        """
        if not self.path:
            return
        pid = os.getpid() if pid is None else pid
        temp = f"{self.path}.{os.getpid()}.tmp"
        with open(temp, "w") as f:
            f.write(f"{pid}\n")
        os.rename(temp, self.path)

    def removeIfMine(self, pid: int | None = None) -> bool:
        """
        Remove the pidfile if it names C{pid} (default: this process).
        """
        pid = os.getpid() if pid is None else pid
        if self.path and self.read() == pid:
            try:
                os.unlink(self.path)
                return True
            except FileNotFoundError:
                pass
        return False


def sdNotify(
    message: str,
    environ: Mapping[str, str] = os.environ,
    socketFactory: type[socket.socket] = socket.socket,
) -> bool:
    """
    Send C{message} (e.g. C{"READY=1\\nMAINPID=1234"}) to systemd's
    notification socket, if this process was started with one.

    @return: whether a notification was sent.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    s = socketFactory(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(address)
        s.sendall(message.encode("utf-8"))
    except OSError:
        return False
    finally:
        s.close()
    return True
