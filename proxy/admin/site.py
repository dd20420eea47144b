"""The admin application: its own aiohttp app on its own listener ([admin] listen, loopback by
default), showing the public app's state. It owns no resources: the public app's cleanup_ctx
opens and closes the spool and workers, so the admin app must be started after it.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from proxy.admin import api, views
from proxy.admin.auth import GATE, Gate, login, login_page, logout, require_auth
from proxy.admin.paths import PATH_CHECKS, PathChecks
from proxy.admin.stats import PUBLIC
from proxy.admin.throttle import Throttle
from proxy.keys import CLOCK
from proxy.logs import request_ids
from proxy.settings import Settings
from proxy.sqlite_files import make_folder

TOKEN_FILE = "admin-token"


def create_admin_app(public: web.Application, token: str) -> web.Application:
    if not token:
        raise ValueError("the admin app needs a token")
    app = web.Application(middlewares=[request_ids, require_auth], client_max_size=64 * 1024)
    app[PUBLIC] = public
    app[GATE] = Gate(token, Throttle(public[CLOCK]))
    app[PATH_CHECKS] = PathChecks()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("proxy.admin", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        filters={"age": _age, "percent": lambda value: f"{value * 100:.0f}%", "utc": _utc},
    )
    app.add_routes(
        [
            web.get("/login", login_page),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/", views.overview),
            web.get("/events", views.events_page),
            web.get("/events/{seq}", views.event_page),
            web.get("/destinations/{name}", views.destination_page),
            web.post("/destinations/{name}/replay", views.replay),
            web.post("/destinations/{name}/discard", views.discard),
            web.get("/ip", views.ip_page),
            web.get("/api/events", api.events),
            web.get("/api/destinations", api.destinations),
            web.get("/metrics", api.metrics),
            web.get("/openapi.json", api.openapi),
            web.get("/static/{name}", api.static),
        ]
    )
    return app


def admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The configured token, or a fresh random one written beside the spool (mode 0600).

    Returns the token and the file it was written to (None when configured), so the operator is
    told where to read it and it never appears in a log.
    """
    if settings.admin.token is not None:
        return settings.admin.token.value, None
    token = secrets.token_urlsafe(24)
    file = Path(settings.spool.path).resolve().parent / TOKEN_FILE
    make_folder(file.parent)
    # A fresh file, renamed over the old: an existing one kept its mode (0644 stayed readable
    # to every local user), and a symlink in its place would have been followed.
    fresh = file.with_name(f".{TOKEN_FILE}.{secrets.token_hex(8)}")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.replace(fresh, file)
    return token, file


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(secs: float | None) -> str:
    if secs is None:
        return "—"
    if secs < 120:
        return f"{secs:.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"
