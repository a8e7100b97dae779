# -*- test-case-name: tests.test_consoleweb -*-
"""
The console's web resources (twisted.web), every one behind the
L{migrator.console._security.Guard}:

    /                 the page (static/index.html, with the token)
    /static/NAME      its script, style sheet and the vendored graph library
    /events           server-sent events: status, plan, graph, run, problem
    /api/state        the latest of each event, as one JSON object
    /api/plan         GET ?policy=P&select=IDS: the plan (read-only)
    /api/graph        GET ?expand=IDS: the object graph (read-only)
    /api/run          POST {"policy": P, "select": [IDS], "dry_run": B}: start
                      a takeover, or (C{dry_run} true) a dry run of it
    /api/abort        POST {}: stop the successor of the takeover (or the
                      staging process of the dry run) in flight

Answers are JSON; a refused request gets a short plain-text reason.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from migrator.console._model import ConsoleModel
from migrator.console._run import CommandError
from migrator.console._security import Guard

_log = Logger()

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: The files served under /static/, with their types.
FILES = {
    b"console.js": b"text/javascript; charset=utf-8",
    b"console.css": b"text/css; charset=utf-8",
    b"cytoscape.min.js": b"text/javascript; charset=utf-8",
}
#: The one style sheet cytoscape.js 3.35.0 adds to the page itself (for its
#: container's class), allowed by its hash: no other inline style is.
CYTOSCAPE_STYLE = b"'sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8='"
POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self' " + CYTOSCAPE_STYLE + b"; "
    b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)
#: The most event streams open at once, and how long one lasts (the
#: browser reconnects by itself).
MAX_STREAMS = 16
STREAM_LIFETIME = 600.0
KEEPALIVE = 15.0
#: The largest request body read (a selection of many ids).
MAX_BODY = 4 * 1024 * 1024


def frame(event: str, data: str) -> bytes:
    """
    One server-sent event: its name and its data, one C{data:} line per
    line of C{data}, and the blank line that ends it.
    """
    name = "".join(c for c in event if c.isalnum() or c in "-_")
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n".encode()


class Guarded(Resource):
    """
    A resource that answers only requests its guard allows, with headers
    that keep the page to itself.
    """

    def __init__(self, guard: Guard) -> None:
        Resource.__init__(self)
        self.guard = guard

    def render(self, request: Any) -> Any:
        for name, value in (
            (b"content-security-policy", POLICY),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ):
            request.setHeader(name, value)
        refusal = self.guard.check(request)
        if refusal is not None:
            code, reason = refusal
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"migrator console: {reason}\n".encode()
        return Resource.render(self, request)


def _json(request: Any, record: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(record, sort_keys=True).encode("utf-8")


def _ids(request: Any, name: bytes) -> list[str] | None:
    values = request.args.get(name)
    if not values:
        return None
    text = values[0].decode("utf-8", "replace")
    return [i for i in (part.strip() for part in text.split(",")) if i]


class Page(Guarded):
    """
    The page: static/index.html with the token, for the page's requests.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as f:
            text = f.read()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return text.replace("{{token}}", html.escape(self.guard.token, quote=True)).encode()


class Static(Guarded):
    """
    The files of L{FILES}, nothing else.
    """

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path in FILES:
            return _File(self.guard, path)
        return _Missing(self.guard)


class _File(Guarded):
    isLeaf = True

    def __init__(self, guard: Guard, name: bytes) -> None:
        Guarded.__init__(self, guard)
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", FILES[self.name])
        with open(os.path.join(STATIC, self.name.decode()), "rb") as f:
            return f.read()


class _Missing(Guarded):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"no such file\n"


@attrs.define(eq=False)
class _Stream:
    """
    One page's event stream: writes events until the page goes away, for
    L{STREAM_LIFETIME} at most, with a comment line every L{KEEPALIVE}
    seconds so that proxies and the browser keep it open.
    """

    request: Any
    reactor: Any
    closed: bool = False
    _ping: LoopingCall | None = None
    _end: Any = None

    def open(self) -> None:
        self._ping = LoopingCall(self._write, b": keep-alive\n\n")
        self._ping.clock = self.reactor
        self._ping.start(KEEPALIVE, now=False)
        self._end = self.reactor.callLater(STREAM_LIFETIME, self.finish)

    def send(self, event: str, data: str) -> None:
        self._write(frame(event, data))

    def _write(self, data: bytes) -> None:
        if not self.closed:
            self.request.write(data)

    def finish(self) -> None:
        if not self.closed:
            self.request.finish()
        self.stop()

    def stop(self) -> None:
        self.closed = True
        if self._ping is not None and self._ping.running:
            self._ping.stop()
        if self._end is not None and self._end.active():
            self._end.cancel()


class Events(Guarded):
    """
    The server-sent events of L{ConsoleModel}.
    """

    isLeaf = True

    def __init__(self, guard: Guard, model: ConsoleModel, reactor: Any) -> None:
        Guarded.__init__(self, guard)
        self.model = model
        self.reactor = reactor
        self.streams: list[_Stream] = []

    def render_GET(self, request: Any) -> Any:
        if len(self.streams) >= MAX_STREAMS:
            request.setResponseCode(503)
            return b"too many pages are watching\n"
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        stream = _Stream(request, self.reactor)
        self.streams.append(stream)
        request.write(b"retry: 2000\n\n")
        stream.open()

        def gone(_: Any) -> None:
            stream.stop()
            if stream in self.streams:
                self.streams.remove(stream)
            self.model.unsubscribe(stream)

        request.notifyFinish().addBoth(gone)
        self.model.subscribe(stream)
        return NOT_DONE_YET


class _Answer(Guarded):
    """
    A resource answering with what a coroutine returns (as JSON).
    """

    isLeaf = True

    def answer(self, request: Any, work: Callable[[], Awaitable[Any]]) -> Any:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        async def run() -> None:
            try:
                body, code = await work(), 200
            except (CommandError, ValueError, RuntimeError) as e:
                body, code = {"error": str(e)}, 400
            if not finished:
                request.write(_json(request, body, code))
                request.finish()

        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: _log.failure("console request failed", f))
        return NOT_DONE_YET


class Api(Guarded):
    """
    /api/...: the page's questions and orders.
    """

    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        Guarded.__init__(self, guard)
        self.model = model
        self.putChild(b"state", _State(guard, model))
        self.putChild(b"plan", _Plan(guard, model))
        self.putChild(b"graph", _Graph(guard, model))
        self.putChild(b"run", _Run(guard, model))
        self.putChild(b"abort", _Abort(guard, model))


class _State(Guarded):
    isLeaf = True

    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        Guarded.__init__(self, guard)
        self.model = model

    def render_GET(self, request: Any) -> bytes:
        state = {k: json.loads(v) for k, v in self.model.latest.items()}
        if self.model.run is not None:
            state["run"] = self.model.run.asDict(0)
        return _json(request, state)


class _Plan(_Answer):
    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        _Answer.__init__(self, guard)
        self.model = model

    def render_GET(self, request: Any) -> Any:
        values = request.args.get(b"policy") or [self.model.defaultPolicy().encode()]
        policy = values[0].decode("utf-8", "replace")
        select = _ids(request, b"select")
        return self.answer(request, lambda: self.model.call("plan", policy, select))


class _Graph(_Answer):
    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        _Answer.__init__(self, guard)
        self.model = model

    def render_GET(self, request: Any) -> Any:
        expand = _ids(request, b"expand")
        return self.answer(request, lambda: self.model.call("graph", expand, 400))


def _body(request: Any) -> dict[str, Any]:
    if (request.getHeader(b"content-type") or b"").split(b";")[0].strip() != b"application/json":
        raise ValueError("send application/json")
    request.content.seek(0)
    raw = request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ValueError("the request is too large")
    body = json.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise ValueError("send a JSON object")
    return body


class _Run(_Answer):
    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        _Answer.__init__(self, guard)
        self.model = model

    def render_POST(self, request: Any) -> Any:
        async def start() -> Any:
            body = _body(request)
            select = body.get("select") or []
            policy = body.get("policy")
            dryRun = body.get("dry_run", False)
            if not isinstance(dryRun, bool):
                raise ValueError("dry_run must be true or false")
            if not isinstance(select, list) or not all(isinstance(i, str) for i in select):
                raise ValueError("select must be a list of ids")
            if policy is not None and not isinstance(policy, str):
                raise ValueError("policy must be a string")
            return self.model.startRun(policy, select, dryRun).asDict()

        return self.answer(request, start)


class _Abort(_Answer):
    def __init__(self, guard: Guard, model: ConsoleModel) -> None:
        _Answer.__init__(self, guard)
        self.model = model

    def render_POST(self, request: Any) -> Any:
        async def abort() -> Any:
            _body(request)
            if self.model.run is None:
                return {"message": "no takeover or dry run was started from this console"}
            return {"message": self.model.run.abort()}

        return self.answer(request, abort)


def consoleRoot(guard: Guard, model: ConsoleModel, reactor: Any) -> Resource:
    """
    The console's resource tree.
    """
    root = Page(guard)
    tree = _Tree(guard, root)
    tree.putChild(b"static", Static(guard))
    tree.putChild(b"events", Events(guard, model, reactor))
    tree.putChild(b"api", Api(guard, model))
    return tree


class _Tree(Guarded):
    """
    The root: the page at C{/}, the other resources below it.
    """

    def __init__(self, guard: Guard, page: Page) -> None:
        Guarded.__init__(self, guard)
        self.page = page

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self.page
        return _Missing(self.guard)
