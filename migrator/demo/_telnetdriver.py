# -*- test-case-name: tests.integration.test_telnet -*-
"""
Drive an interactive telnet session the way a person would: the real
C{telnet} program under a pseudo-terminal, keystrokes in, the screen out.

L{PtyTelnet} spawns C{telnet 127.0.0.1 PORT} (found with C{shutil.which})
on the slave side of a pty and talks to it through the master side: what
is written there is typed, what is read there is what the terminal
shows.  L{SocketTelnet} is the fallback for machines without a C{telnet}
program: a few lines of Python speaking just enough of the telnet
protocol over a socket (it answers option negotiation: it will do NAWS
and SGA and lets the server echo).  Both offer the same methods
(L{TelnetDriver}) and say which they are in L{TelnetDriver.label}.

What was shown is kept twice: L{TelnetDriver.screen}, the stream with
terminal escape sequences removed (for matching with L{TelnetDriver.expect}),
and L{TelnetDriver.screenLines}, the lines as a terminal would leave them
(the manhole redraws the line being typed with colours and cursor moves;
a tiny emulator replays those), for transcripts.

Nothing here sleeps: every read waits on the file descriptor with the time
left before a deadline.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import termios
import time

#: Enter as a terminal sends it (the telnet program turns it into CR NUL
#: or CR LF on the wire, as the mode asks).
ENTER = "\r"
#: The up-arrow key, as a VT100 terminal sends it.
UP = "\x1b[A"
#: A terminal escape sequence (CSI ... final byte, or ESC + one character).
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-Z\\-_=>c78])")
#: Default bound of every wait, in seconds.
TIMEOUT = 30.0
#: The talk's session (slides "Migration - a demonstration"): each line and
#: the prompt that follows it.  C{x}, C{greet}, C{Point} and C{p} are what a
#: takeover must keep.
TALK_LINES: tuple[tuple[str, str], ...] = (
    ("import sys, os", ">>> "),
    ('x = [1, 2, {"a": 3}]', ">>> "),
    ('def greet(name): return "hello " + name', "... "),
    ("", ">>> "),
    ("class Point:", "... "),
    ("    def __init__(self, x, y): self.x, self.y = x, y", "... "),
    ("", ">>> "),
    ("p = Point(1, 2)", ">>> "),
)
COLUMNS, ROWS = 100, 30

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA, NAWS = 1, 3, 31


class SessionClosed(AssertionError):
    """
    The session ended while something was expected.
    """


class ExpectTimeout(AssertionError):
    """
    What was expected was not shown in time.
    """


def stripEscapes(text: str) -> str:
    """
    C{text} without terminal escape sequences (and without NULs and bells).
    """
    return ESCAPES.sub("", text).replace("\0", "").replace("\a", "")


class _Screen:
    """
    Just enough of a VT100 to replay a line editor: printable characters
    overwrite at the cursor; CR, LF, BS; cursor left/right/up/down
    (C{ESC [ n D/C/A/B}); erase in line (C{ESC [ n K}).  Colours and
    everything else are ignored.  Lines never scroll away: a reset or an
    erased display goes on below what was shown, as a transcript should.
    """

    _CSI = re.compile(r"\x1b\[([0-9;?]*)([ -/]*[@-~])")

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0

    def _line(self) -> list[str]:
        while self.row >= len(self.lines):
            self.lines.append([])
        return self.lines[self.row]

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                match = self._CSI.match(text, i)
                if match:
                    self._csi(match.group(1), match.group(2))
                    i = match.end()
                    continue
                other = ESCAPES.match(text, i)
                if other and other.group(0) == "\x1bc" and any(self._line()):
                    # A full reset clears a real screen; a transcript keeps
                    # what was there and goes on below it.
                    self.row = len(self.lines)
                    self.col = 0
                    self._line()
                i = other.end() if other else i + 1
                continue
            i += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self._line()
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch == "\t":
                self.col = (self.col // 8 + 1) * 8
            elif ch >= " ":
                line = self._line()
                while len(line) < self.col:
                    line.append(" ")
                if self.col < len(line):
                    line[self.col] = ch
                else:
                    line.append(ch)
                self.col += 1

    def _csi(self, params: str, final: str) -> None:
        numbers = [int(p) for p in params.lstrip("?").split(";") if p.isdigit()]
        n = numbers[0] if numbers else 0
        if final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "C":
            self.col += max(n, 1)
        elif final == "A":
            self.row = max(0, self.row - max(n, 1))
        elif final == "B":
            self.row += max(n, 1)
            self._line()
        elif final == "K":
            line = self._line()
            if n == 0:
                del line[self.col :]
            elif n == 1:
                line[: self.col] = [" "] * min(self.col, len(line))
            else:
                line.clear()
        elif final == "J" and n == 2:
            # Erase the display: a transcript keeps the lines above and
            # only clears the one the cursor is on.
            self._line().clear()
            self.col = 0
        elif final in "Hf" and not numbers:
            self.col = 0
        elif final == "G":
            self.col = max(0, max(n, 1) - 1)

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


class TelnetDriver:
    """
    What both clients share: the screen, L{expect}, typing.

    @ivar label: which client this is, for people reading a transcript.
    @ivar screen: everything shown so far, escape sequences removed.
    """

    label = ""

    def __init__(self) -> None:
        self._raw = ""
        self.screen = ""
        self._mark = 0
        self._emulator = _Screen()
        self._decoder_pending = b""

    # Subclasses provide these three.
    def _fileno(self) -> int:
        raise NotImplementedError()

    def _receive(self) -> bytes:
        """
        Read what is available (the descriptor is readable); C{b""} at the end.
        """
        raise NotImplementedError()

    def _send(self, data: bytes) -> None:
        raise NotImplementedError()

    def close(self) -> None:
        raise NotImplementedError()

    def _show(self, data: bytes) -> None:
        data = self._decoder_pending + data
        # Keep a UTF-8 sequence cut in two for the next read.
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 == 0xC0:
                need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                if need > back:
                    cut = len(data) - back
                break
            if byte & 0x80 == 0:
                break
        self._decoder_pending = data[cut:]
        text = data[:cut].decode("utf-8", "replace")
        self._raw += text
        self._emulator.feed(text)
        self.screen = stripEscapes(self._raw)

    def screenLines(self) -> list[str]:
        """
        The lines of the screen as a terminal would show them now.
        """
        return self._emulator.text()

    def _pump(self, timeout: float) -> bool:
        """
        Wait up to C{timeout} seconds for output and take it in.

        @return: whether anything arrived.
        @raise SessionClosed: at the end of the session.
        """
        readable, _, _ = select.select([self._fileno()], [], [], max(0.0, timeout))
        if not readable:
            return False
        data = self._receive()
        if not data:
            raise SessionClosed(f"{self.label}: the session ended; shown:\n{self.screen[-3000:]}")
        self._show(data)
        return True

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """
        Wait until what was shown since the last match matches C{pattern}
        (a regular expression, against the screen without escape codes).

        @raise ExpectTimeout: if it is not shown within C{timeout} seconds.
        @raise SessionClosed: if the session ends first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.screen, self._mark)
            if match:
                self._mark = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExpectTimeout(
                    f"{self.label}: no {pattern!r} within {timeout:g}s; shown since "
                    f"the last match:\n{self.screen[self._mark :][-3000:]!r}"
                )
            self._pump(remaining)

    def since(self) -> str:
        """
        What was shown after the last match.
        """
        return self.screen[self._mark :]

    def type(self, text: str) -> None:
        """
        Type C{text} (no Enter unless it holds one).
        """
        self._send(text.encode("utf-8"))

    def enter(self) -> None:
        self.type(ENTER)

    def line(self, text: str, prompt: str = ">>> ", timeout: float = TIMEOUT) -> str:
        """
        Type C{text} and Enter, and wait for the prompt C{prompt} that
        follows its output.

        @return: what was shown between the Enter and that prompt.
        """
        self.type(text)
        if text:
            self.expect(re.escape(text[-8:]), timeout)
        self.enter()
        start = self._mark
        match = self.expect(r"\n" + re.escape(prompt), timeout)
        return self.screen[start : match.start()].strip("\r\n")

    def typeTalk(self) -> None:
        """
        Type L{TALK_LINES}, waiting for each prompt.
        """
        for text, prompt in TALK_LINES:
            self.line(text, prompt)

    def login(self, user: str, password: str, timeout: float = TIMEOUT) -> None:
        """
        Answer C{Username:} and C{Password:} and wait for the first prompt.
        """
        self.expect("Username: ", timeout)
        self.type(user + ENTER)
        self.expect("Password: ", timeout)
        self.type(password + ENTER)
        self.expect(">>> ", timeout)


class PtyTelnet(TelnetDriver):
    """
    The real C{telnet} program on a pseudo-terminal of L{COLUMNS} x
    L{ROWS}.  The escape character is disabled (C{-E}) so no keystroke
    reaches telnet's own command mode.

    This object owns the pty's master descriptor and the child process;
    L{close} ends the one and closes the other, once.
    """

    label = "telnet client: the real telnet program"

    def __init__(self, program: str, host: str, port: int) -> None:
        super().__init__()
        self.program = program
        self.argv = [program, "-E", host, str(port)]
        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            env = dict(os.environ, TERM="xterm", LANG=os.environ.get("LANG", "C.UTF-8"))
            self.process = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # The child has its copy; ours would keep the pty open after it exits.
        os.close(slave)
        self._master: int | None = master
        self.label = f"telnet client: the real telnet program ({program}) on a pty"

    def _fileno(self) -> int:
        if self._master is None:
            raise SessionClosed(f"{self.label}: closed")
        return self._master

    def _receive(self) -> bytes:
        try:
            return os.read(self._fileno(), 65536)
        except OSError as e:
            # Linux reports the other side's end of a pty as EIO.
            if e.errno == errno.EIO:
                return b""
            raise

    def _send(self, data: bytes) -> None:
        fd = self._fileno()
        while data:
            written = os.write(fd, data)
            data = data[written:]

    def close(self) -> None:
        """
        End telnet (SIGTERM, then SIGKILL) and close the master; idempotent.
        """
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        if self._master is not None:
            os.close(self._master)
            self._master = None


class SocketTelnet(TelnetDriver):
    """
    FALLBACK, for machines without a C{telnet} program: telnet spoken from
    Python over a socket.  It asks for what a terminal would (NAWS with
    L{COLUMNS} x L{ROWS}, SGA, server echo) and sends Enter as CR NUL.

    This object owns the socket; L{close} closes it, once.
    """

    def __init__(self, host: str, port: int, timeout: float = TIMEOUT) -> None:
        super().__init__()
        self._sock: socket.socket | None = socket.create_connection((host, port), timeout=timeout)
        self._sock.setblocking(False)
        self._pending = b""
        self._lineMode = True
        self._serverEchoes = False
        self.label = (
            "telnet client: FALLBACK, telnet spoken by Python over a socket (no telnet program)"
        )

    def _fileno(self) -> int:
        if self._sock is None:
            raise SessionClosed(f"{self.label}: closed")
        return self._sock.fileno()

    def _reply(self, command: int, option: int) -> None:
        if command == DO:
            answer = WILL if option in (NAWS, SGA) else WONT
        elif command == WILL:
            answer = DO if option in (ECHO, SGA) else DONT
            if option == ECHO:
                self._serverEchoes = True
        elif command == WONT:
            answer = DONT
            if option == ECHO:
                self._serverEchoes = False
        else:
            answer = WONT
        self._sendRaw(bytes([IAC, answer, option]))
        if command == DO and option == NAWS:
            self._sendRaw(bytes([IAC, SB, NAWS, 0, COLUMNS, 0, ROWS, IAC, SE]))

    def _receive(self) -> bytes:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return b"\0"  # spurious wake-up; a NUL shows nothing
        data = self._pending + data if data else data
        self._pending = b""
        text = bytearray()
        i = 0
        while i < len(data):
            b = data[i]
            if b != IAC:
                text.append(b)
                i += 1
                continue
            if i + 1 >= len(data):
                self._pending = data[i:]
                break
            command = data[i + 1]
            if command in (DO, DONT, WILL, WONT):
                if i + 2 >= len(data):
                    self._pending = data[i:]
                    break
                self._reply(command, data[i + 2])
                i += 3
            elif command == SB:
                end = data.find(bytes([IAC, SE]), i)
                if end < 0:
                    self._pending = data[i:]
                    break
                i = end + 2
            elif command == IAC:
                text.append(IAC)
                i += 2
            else:
                i += 2
        if not data:
            return b""
        return bytes(text) or b"\0"

    def _sendRaw(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.setblocking(True)
        try:
            self._sock.sendall(data)
        finally:
            self._sock.setblocking(False)

    def _send(self, data: bytes) -> None:
        # The login prompts read lines ending in CR LF; the manhole reads
        # keystrokes, where Enter is CR NUL.
        if not self._serverEchoes:
            # As a telnet program does: echo locally what the server will not.
            self._show(data.replace(b"\r", b"\r\n"))
        data = data.replace(b"\xff", b"\xff\xff")
        data = data.replace(b"\r", b"\r\n" if self._lineMode else b"\r\0")
        self._sendRaw(data)

    def login(self, user: str, password: str, timeout: float = TIMEOUT) -> None:
        self._lineMode = True
        super().login(user, password, timeout)
        self._lineMode = False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def telnetProgram() -> str | None:
    """
    The C{telnet} program on C{PATH}, if any.
    """
    return shutil.which("telnet")


def connect(port: int, host: str = "127.0.0.1", fallback: bool = True) -> TelnetDriver:
    """
    A session with the telnet server at C{host}:C{port}: the real C{telnet}
    program on a pty when there is one, else (if C{fallback}) L{SocketTelnet}.

    @raise FileNotFoundError: if there is no C{telnet} program and not
        C{fallback}.
    """
    program = telnetProgram()
    if program:
        return PtyTelnet(program, host, port)
    if not fallback:
        raise FileNotFoundError("no telnet program on PATH")
    return SocketTelnet(host, port)
