# -*- test-case-name: tests.test_consoleweb -*-
"""
Who may use the console: whoever holds its token, from the console's own
origin.

  - The console listens on 127.0.0.1 only.
  - Every request carries the random token: in the URL the console
    printed (C{?token=...}), in the C{X-Migrator-Token} header, or in the
    cookie set on the first visit (C{HttpOnly}, C{SameSite=Strict}).
  - The C{Host} header must name the console (C{127.0.0.1:PORT} or
    C{localhost:PORT}): a page of another site that a DNS name rebinds to
    127.0.0.1 is refused even before the token is looked at.
  - A request that changes anything (C{POST}) must carry the token in the
    C{X-Migrator-Token} header (a custom header: another origin cannot send
    one without the console's consent, which it never gives), and, when the
    browser says where it comes from (C{Origin}, C{Sec-Fetch-Site},
    C{Referer}), come from the console's own origin.

The same-uid rule is the control socket's: the console can only talk to a
service of its own user.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

import attrs

TOKEN_HEADER = b"x-migrator-token"
COOKIE = b"migrator_token"


def newToken() -> str:
    """
    A fresh random token (256 bits).
    """
    return secrets.token_urlsafe(32)


@attrs.define
class Guard:
    """
    Checks requests against the token and the console's origin.

    @ivar token: the secret every request must carry.
    @ivar port: the console's TCP port (set once it listens).
    """

    token: str
    port: int = 0

    def origins(self) -> set[str]:
        return {f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}"}

    def _hostAllowed(self, request: Any) -> bool:
        host = (request.getHeader(b"host") or b"").decode("latin-1").lower()
        return f"http://{host}" in self.origins()

    def _matches(self, value: bytes | str | None) -> bool:
        if value is None:
            return False
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        return hmac.compare_digest(value, self.token.encode("ascii"))

    def presented(self, request: Any) -> str | None:
        """
        Where the request carries the right token (C{"query"},
        C{"header"} or C{"cookie"}), or C{None}.
        """
        args = getattr(request, "args", {}) or {}
        if any(self._matches(v) for v in args.get(b"token", [])[:1]):
            return "query"
        if self._matches(request.getHeader(TOKEN_HEADER)):
            return "header"
        if self._matches(request.getCookie(COOKIE)):
            return "cookie"
        return None

    def check(self, request: Any) -> tuple[int, str] | None:
        """
        Check a request; on the first visit with the token in the URL, set
        the cookie.

        @return: C{None} if allowed, else the HTTP code and a reason.
        """
        if not self._hostAllowed(request):
            return 421, "this console answers only at its own address"
        where = self.presented(request)
        if where is None:
            return 403, "the console's token is missing or wrong: open the URL it printed"
        if request.method not in (b"GET", b"HEAD"):
            refusal = self.checkSameOrigin(request, where)
            if refusal is not None:
                return refusal
        if where == "query":
            request.addCookie(
                COOKIE,
                self.token.encode("ascii"),
                path=b"/",
                httpOnly=True,
                sameSite="strict",
            )
        return None

    def checkSameOrigin(self, request: Any, where: str) -> tuple[int, str] | None:
        """
        A request that changes something: the token in the header, and
        nothing saying it comes from another origin.
        """
        if where != "header":
            return 403, "a request that changes something must carry the token in X-Migrator-Token"
        origin = request.getHeader(b"origin")
        if origin is not None and origin.decode("latin-1") not in self.origins():
            return 403, "cross-origin request refused"
        site = request.getHeader(b"sec-fetch-site")
        if site is not None and site.decode("latin-1") not in ("same-origin", "none"):
            return 403, "cross-site request refused"
        referer = request.getHeader(b"referer")
        if origin is None and referer is not None:
            parts = urlsplit(referer.decode("latin-1"))
            if f"{parts.scheme}://{parts.netloc}" not in self.origins():
                return 403, "cross-origin request refused"
        return None
