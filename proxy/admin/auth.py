"""Admin authentication: nothing but the login form is served without the token.

Two ways in: `Authorization: Bearer <token>` (scripts, curl), or the login form, which sets an
HttpOnly, SameSite=Strict session cookie. Every POST also needs the CSRF token of its session
(a form field or X-CSRF-Token header), so a page on another site cannot make the browser act.
Wrong tokens, by either way, are throttled (throttle.py): a locked-out client gets 429 unchecked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from proxy.admin.throttle import Throttle, client_key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "relay_admin_session"
SESSION_SECS = 12 * 3600
MAX_SESSIONS = 1000
# The login form and its stylesheet (generic CSS): all that is served without the token.
OPEN_PATHS = frozenset({"/login", "/static/admin.css"})
BEARER = "bearer"  # the session name CSRF tokens of Bearer-authenticated requests derive from
SECURITY_HEADERS = {
    # The pages use only their own script and styles; no other site may frame them.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass(slots=True)
class Gate:
    """The admin token, live sessions (id -> expiry, monotonic), the key CSRF tokens use and
    the throttle on wrong tokens."""

    token: str
    throttle: Throttle
    sessions: dict[str, float] = field(default_factory=dict)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def token_ok(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def open_session(self) -> str:
        now = time.monotonic()
        for sid, expires in list(self.sessions.items()):
            if expires < now:
                del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = now + SESSION_SECS
        return sid

    def session_ok(self, sid: str) -> bool:
        expires = self.sessions.get(sid)
        return expires is not None and expires > time.monotonic()

    def csrf(self, session: str) -> str:
        return hmac.new(self.key, session.encode(), hashlib.sha256).hexdigest()

    def who(self, request: web.Request) -> str | None:
        """The session a request belongs to (BEARER for the header), or None: not signed in.

        A Bearer token is a guess like a login: refused with 429 while its client is locked out.
        A session cookie is not (a session id is 256 random bits), so it works during a lockout.
        """
        header = request.headers.get("Authorization", "")
        scheme, _, offered = header.partition(" ")
        if scheme.lower() == "bearer" and offered.strip():
            client = client_key(request)
            if wait := self.throttle.wait_secs(client):
                raise web.HTTPTooManyRequests(
                    text=f'{{"error":"too_many_wrong_tokens","retry_after_secs":{wait}}}',
                    content_type="application/json",
                    headers={"Retry-After": str(wait)},
                )
            if self.token_ok(offered.strip()):
                self.throttle.succeeded(client)
                return BEARER
            self.throttle.failed(client)
        sid = request.cookies.get(COOKIE, "")
        return sid if sid and self.session_ok(sid) else None


GATE = web.AppKey("gate", Gate)
SESSION = web.RequestKey("admin_session", str)  # who the request is signed in as


@web.middleware
async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    gate = request.app[GATE]
    try:
        response = await _checked(request, handler, gate)
    except web.HTTPException as error:
        error.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


async def _checked(request: web.Request, handler: Handler, gate: Gate) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    session = gate.who(request)
    if session is None:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        raise web.HTTPUnauthorized(
            text='{"error":"unauthorized"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="relay admin"'},
        )
    request[SESSION] = session
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        offered = request.headers.get("X-CSRF-Token")
        if offered is None:
            form = await request.post()
            value = form.get("csrf")
            offered = value if isinstance(value, str) else ""
        if not hmac.compare_digest(offered.encode(), gate.csrf(session).encode()):
            raise web.HTTPForbidden(
                text='{"error":"csrf_token_invalid"}', content_type="application/json"
            )
    return await handler(request)


def csrf_token(request: web.Request) -> str:
    return request.app[GATE].csrf(request[SESSION])


def safe_next(target: str) -> str:
    """Where to go after login: a path on this listener only (no open redirect). No whitespace
    or control characters either: URL parsers drop tabs and line breaks, so "/<tab>/evil.example"
    would become "//evil.example", another site."""
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
        and not any(ch.isspace() for ch in target)
    ):
        return target
    return "/"


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, "", 200, request.query.get("next", "/"))


async def login(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE]
    form = await request.post()
    offered = form.get("token")
    target = safe_next(str(form.get("next") or "/"))
    if not isinstance(offered, str) or not offered.strip():
        return _login_form(request, "That token is not right.", 401, target)
    # No await from here to the count: concurrent guesses cannot all pass one unlocked check.
    client = client_key(request)
    if wait := gate.throttle.wait_secs(client):
        return _locked_form(request, wait, target)
    if not gate.token_ok(offered.strip()):
        wait = gate.throttle.failed(client)
        error = "That token is not right."
        if wait:
            error += f" Too many wrong tokens: the next try is possible in {_secs(wait)}."
        return _login_form(request, error, 401, target)
    gate.throttle.succeeded(client)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE,
        gate.open_session(),
        max_age=SESSION_SECS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,  # the admin listener is often plain HTTP on loopback
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[GATE].sessions.pop(request.cookies.get(COOKIE, ""), None)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _locked_form(request: web.Request, wait: int, target: str) -> web.Response:
    error = f"Too many wrong tokens. Try again in {_secs(wait)} (the token was not checked)."
    response = _login_form(request, error, 429, target)
    response.headers["Retry-After"] = str(wait)
    return response


def _secs(wait: int) -> str:
    return "1 second" if wait == 1 else f"{wait} seconds"


def _login_form(request: web.Request, error: str, status: int, target: str) -> web.Response:
    target = safe_next(target)
    return aiohttp_jinja2.render_template(
        "login.html", request, {"error": error, "next": target}, status=status
    )
