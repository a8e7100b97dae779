# -*- test-case-name: tests.test_consoleweb -*-
"""
Tests for the console's web side (L{migrator.console._security},
L{migrator.console._web}) and for C{python -m migrator plan}'s text
(L{migrator.cli._plan}): every request needs the token, a request that
changes something refuses other origins, the events are framed as
server-sent events and stop when the page goes away.  Requests are real
L{twisted.web.server.Request}s on a L{DummyChannel} (no sockets); the
service is a fake C{call}.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from migrator.cli._plan import PlanOptions, formatPlan
from migrator.console._app import ConsoleOptions, consoleLine
from migrator.console._model import ConsoleModel
from migrator.console._security import Guard
from migrator.console._web import KEEPALIVE, MAX_STREAMS, consoleRoot, frame

TOKEN = "t0ken-of-the-test"
PORT = 8765
HOST = f"127.0.0.1:{PORT}"
STATUS = {
    "service": "web",
    "pid": 4242,
    "generation": 3,
    "state": "serving",
    "connections": {"open": 1},
    "lineage": [],
}
PLAN = {
    "policy": "refuse",
    "total": 1,
    "move": 1,
    "drain": 0,
    "close": 0,
    "refused": 0,
    "takeover_refused": False,
    "ports": [{"key": "tcp:80#0", "address": "0.0.0.0:80", "classes": []}],
    "connections": {},
}


class FakeService:
    """
    Answers the console's calls with canned records, recording them.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append((method, *args))
        if method == "status":
            return dict(STATUS)
        if method == "plan":
            return {**PLAN, "policy": args[0], "selection": (args + (None,))[1]}
        if method == "graph":
            return {"components": [], "nodes": [], "edges": [], "expand": args[0]}
        raise RuntimeError(f"no such method {method}")


class ConsoleWebTests(SynchronousTestCase):
    """
    The resource tree behind its guard.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.service = FakeService()
        self.model = ConsoleModel(self.reactor, self.service, command=["twistd", "migrate", "web"])
        self.guard = Guard(TOKEN, PORT)
        self.site = server.Site(consoleRoot(self.guard, self.model, self.reactor))

    def request(
        self,
        uri: bytes,
        method: bytes = b"GET",
        headers: dict[bytes, bytes] | None = None,
        body: bytes = b"",
    ) -> tuple[server.Request, bytes]:
        """
        Send one request through the site.

        @return: the request and what was written (status line, headers,
            body).
        """
        channel = DummyChannel()
        channel.site = self.site  # type: ignore[attr-defined]
        request = server.Request(channel)
        for name, value in {b"host": HOST.encode(), **(headers or {})}.items():
            request.requestHeaders.setRawHeaders(name, [value])
        request.content = io.BytesIO(body)
        # As the channel does once the headers are in.
        request.parseCookies()
        request.requestReceived(method, uri, b"HTTP/1.1")
        return request, channel.transport.written.getvalue()

    def body(self, written: bytes) -> bytes:
        """
        The body of a response, decoded if it was sent in chunks.
        """
        head, body = written.split(b"\r\n\r\n", 1)
        if b"Transfer-Encoding: chunked" not in head:
            return body
        out = b""
        while body:
            size, rest = body.split(b"\r\n", 1)
            n = int(size, 16)
            out, body = out + rest[:n], rest[n + 2 :]
        return out

    def code(self, written: bytes) -> int:
        return int(written.split(b" ", 2)[1])

    def test_tokenRequired(self) -> None:
        """
        Without the token (or with a wrong one) every resource answers 403,
        the page, the static files, the API and the events alike.
        """
        for uri in (b"/", b"/static/console.js", b"/api/state", b"/events", b"/nothing"):
            _, written = self.request(uri)
            self.assertEqual(self.code(written), 403, uri)
            self.assertNotIn(b"<html", written)
            _, written = self.request(uri + b"?token=wrong")
            self.assertEqual(self.code(written), 403, uri)

    def test_tokenInQuerySetsCookie(self) -> None:
        """
        The printed URL's token opens the page (with the token for its
        scripts) and sets an HttpOnly, SameSite=Strict cookie, with which
        the page's other requests pass.
        """
        _, written = self.request(b"/?token=" + TOKEN.encode())
        self.assertEqual(self.code(written), 200)
        self.assertIn(f'<meta name="migrator-token" content="{TOKEN}">'.encode(), written)
        cookie = [line for line in written.split(b"\r\n") if line.startswith(b"Set-Cookie")]
        self.assertEqual(
            cookie,
            [
                b"Set-Cookie: migrator_token="
                + TOKEN.encode()
                + b"; Path=/; HttpOnly; SameSite=strict"
            ],
        )
        self.assertIn(b"Content-Security-Policy: default-src 'none'", written)
        _, written = self.request(
            b"/static/console.js", headers={b"cookie": b"migrator_token=" + TOKEN.encode()}
        )
        self.assertEqual(self.code(written), 200)
        self.assertIn(b"text/javascript", written)
        _, written = self.request(
            b"/static/cytoscape.min.js", headers={b"x-migrator-token": TOKEN.encode()}
        )
        self.assertIn(b"Cytoscape Consortium", written)

    def test_otherHost(self) -> None:
        """
        A request naming another host (a rebound DNS name) is refused even
        with the token.
        """
        _, written = self.request(
            b"/?token=" + TOKEN.encode(), headers={b"host": b"evil.example:8765"}
        )
        self.assertEqual(self.code(written), 421)

    def test_onlyListedFiles(self) -> None:
        """
        Only the listed static files are served: no path leads elsewhere.
        """
        for uri in (b"/static/index.html", b"/static/../_web.py", b"/static/README.md"):
            _, written = self.request(uri, headers={b"x-migrator-token": TOKEN.encode()})
            self.assertEqual(self.code(written), 404, uri)

    def post(self, uri: bytes, headers: dict[bytes, bytes], body: bytes = b"{}") -> bytes:
        _, written = self.request(
            uri, b"POST", {b"content-type": b"application/json", **headers}, body
        )
        return written

    def test_crossOriginPostRefused(self) -> None:
        """
        A POST is refused without the token header (the cookie or the URL
        are not enough), from another origin, from another site, or with a
        foreign referer; from the console's own origin it is done.
        """
        token = TOKEN.encode()
        refused = [
            {b"cookie": b"migrator_token=" + token},
            {b"x-migrator-token": token, b"origin": b"http://evil.example"},
            {b"x-migrator-token": token, b"origin": b"null"},
            {b"x-migrator-token": token, b"sec-fetch-site": b"cross-site"},
            {b"x-migrator-token": token, b"referer": b"http://evil.example/page"},
        ]
        for headers in refused:
            written = self.post(b"/api/abort", headers)
            self.assertEqual(self.code(written), 403, headers)
        written = self.post(b"/api/abort?token=" + token, {})
        self.assertEqual(self.code(written), 403)
        written = self.post(
            b"/api/abort",
            {
                b"x-migrator-token": token,
                b"origin": f"http://{HOST}".encode(),
                b"sec-fetch-site": b"same-origin",
                b"referer": f"http://{HOST}/?token=x".encode(),
            },
        )
        self.assertEqual(self.code(written), 200)
        self.assertEqual(
            json.loads(self.body(written)),
            {"message": "no takeover or dry run was started from this console"},
        )

    def test_postNeedsJSON(self) -> None:
        """
        A POST body must be a JSON object sent as such.
        """
        headers = {b"x-migrator-token": TOKEN.encode(), b"content-type": b"text/plain"}
        _, written = self.request(b"/api/abort", b"POST", headers, b"{}")
        self.assertEqual(self.code(written), 400)
        written = self.post(b"/api/run", {b"x-migrator-token": TOKEN.encode()}, b'{"select": "k1"}')
        self.assertEqual(self.code(written), 400)
        self.assertIn(b"select must be a list", written)
        written = self.post(b"/api/run", {b"x-migrator-token": TOKEN.encode()}, b'{"dry_run": 1}')
        self.assertEqual(self.code(written), 400)
        self.assertIn(b"dry_run must be true or false", written)

    def test_planAndGraph(self) -> None:
        """
        The page's questions go to the service as they are: the plan with
        the policy and selection asked for, the graph with the components
        to expand.
        """
        headers = {b"x-migrator-token": TOKEN.encode()}
        _, written = self.request(b"/api/plan?policy=drain&select=k1,c2.80", headers=headers)
        self.assertEqual(json.loads(self.body(written))["selection"], ["k1", "c2.80"])
        _, written = self.request(b"/api/graph?expand=k9", headers=headers)
        self.assertEqual(json.loads(self.body(written))["expand"], ["k9"])
        self.assertEqual(
            self.service.calls, [("plan", "drain", ["k1", "c2.80"]), ("graph", ["k9"], 400)]
        )

    def test_events(self) -> None:
        """
        C{/events} is a stream of server-sent events: the latest status,
        plan and graph at once, a keep-alive comment every
        L{KEEPALIVE} seconds; when the page goes away the stream is
        dropped and polling stops.
        """
        request, written = self.request(b"/events", headers={b"x-migrator-token": TOKEN.encode()})
        self.assertIn(b"Content-Type: text/event-stream", written)
        body = self.body(written)
        self.assertTrue(body.startswith(b"retry: 2000\n\n"), body[:40])
        self.assertIn(b"\nevent: status\ndata: {", body)
        self.assertIn(b"\nevent: plan\ndata: {", body)
        self.assertIn(b"\nevent: graph\ndata: {", body)
        self.assertEqual([c[0] for c in self.service.calls], ["status", "plan", "graph"])
        channel = request.channel
        channel.transport.written = io.BytesIO()
        self.reactor.advance(KEEPALIVE)
        self.assertIn(b": keep-alive\n\n", channel.transport.written.getvalue())
        request.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.model.sinks, [])
        self.assertIsNone(self.model._loop)
        calls = len(self.service.calls)
        self.reactor.advance(10)
        self.assertEqual(len(self.service.calls), calls)

    def test_eventsBounded(self) -> None:
        """
        At most L{MAX_STREAMS} pages watch at once.
        """
        for _ in range(MAX_STREAMS):
            self.request(b"/events", headers={b"x-migrator-token": TOKEN.encode()})
        _, written = self.request(b"/events", headers={b"x-migrator-token": TOKEN.encode()})
        self.assertEqual(self.code(written), 503)

    def test_frame(self) -> None:
        """
        An event's data is one C{data:} line per line, ended by a blank
        line; its name cannot break the framing.
        """
        self.assertEqual(frame("plan", '{"a": 1}'), b'event: plan\ndata: {"a": 1}\n\n')
        self.assertEqual(frame("x\ny", "one\ntwo"), b"event: xy\ndata: one\ndata: two\n\n")


class OptionsTests(SynchronousTestCase):
    """
    The command lines of C{plan} and C{console}.
    """

    def test_console(self) -> None:
        """
        C{--successor-command} is split as shell words; the log directory
        defaults to the control socket's.
        """
        options = ConsoleOptions()
        options.parseOptions(
            [
                "--control",
                "/run/x/ctl",
                "--successor-command",
                "twistd -n migrate --control '/run/x/ctl' web",
            ]
        )
        self.assertEqual(
            options["successor-command"],
            ["twistd", "-n", "migrate", "--control", "/run/x/ctl", "web"],
        )
        self.assertEqual(options["log-dir"], "/run/x")
        self.assertRaises(UsageError, ConsoleOptions().parseOptions, [])

    def test_consoleLine(self) -> None:
        """
        The console prints what it watches and its URL, on the loopback.
        """
        self.assertEqual(
            consoleLine(STATUS, 8765, "abc"),
            "console for web (pid 4242, generation 3) at http://127.0.0.1:8765/?token=abc",
        )

    def test_plan(self) -> None:
        """
        C{plan} takes a policy among the three and comma-separated ids.
        """
        options = PlanOptions()
        options.parseOptions(["--control", "c", "--policy", "drain", "--select", "k1, c2"])
        self.assertEqual((options["policy"], options["select"]), ("drain", ["k1", "c2"]))
        self.assertRaises(
            UsageError, PlanOptions().parseOptions, ["--control", "c", "--policy", "x"]
        )

    def test_formatPlan(self) -> None:
        """
        The plan as text: per port and class, counts and reasons, the
        refusal, the selection and the dry run.
        """
        plan = {
            **PLAN,
            "total": 3,
            "move": 1,
            "refused": 2,
            "takeover_refused": True,
            "message": "the takeover would be refused",
            "ports": [
                {
                    "key": "tcp:23#0",
                    "address": "127.0.0.1:23",
                    "classes": [
                        {
                            "class": "tac:Chat",
                            "total": 3,
                            "move": 1,
                            "drain": 0,
                            "close": 0,
                            "refused": 2,
                            "reasons": [["refused: not selected to move", 2]],
                        }
                    ],
                }
            ],
            "selection": {
                "selected": 1,
                "kept_back": 0,
                "unknown": ["c9"],
                "blocked": None,
                "split_points": [{"class": "dict", "kind": "shared", "id": "o1"}],
            },
        }
        text = formatPlan(plan, STATUS)
        self.assertIn("plan for web (pid 4242, generation 3), --unmovable refuse", text)
        self.assertIn("3 open connection(s): 1 move, 0 drain, 0 close, 2 refused", text)
        self.assertIn("REFUSED: the takeover would be refused", text)
        self.assertIn("port tcp:23#0  127.0.0.1:23", text)
        self.assertIn("2 x refused: not selected to move", text)
        self.assertIn("ids naming nothing open: c9", text)
        self.assertIn("the state would split at 1 object(s)", text)
        self.assertIn("dry run     none yet", text)
        self.assertNotIn("dry run", formatPlan(plan))
        dry = {
            "at": 0.0,
            "by": 77,
            "outcome": "ok",
            "connections": 2,
            "message": "every connection would move (2 restored here)",
            "classes": {"tac:Chat": {"restored": 2, "failed": 0, "staying": 0}},
        }
        text = formatPlan(plan, {**STATUS, "last_dry_run": dry})
        self.assertIn("dry run     ok at ", text)
        self.assertIn(", by pid 77: 2 connection(s) snapshotted; every connection would move", text)
        self.assertIn("tac:Chat" + " " * 41 + "restored 2, failed 0, staying 0", text)
