"""`serve --role`: what each role wires up, and the SQLite spool refused for a split role.

Real processes on Redis are in tests/e2e/test_roles.py; these build the app without starting it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.cli import main
from proxy.deliver.workers import workers_ctx
from proxy.ingest.http_errors import UNROUTED_NAME
from proxy.ingest.stitch import identity_ctx
from proxy.roles import Role, role_problem
from proxy.settings import Settings, SpoolBackend, SpoolSettings

REDIS = Settings(spool=SpoolSettings(backend=SpoolBackend.REDIS))
SQLITE = Settings()


def paths(app: web.Application) -> set[str]:
    """The paths served (not the catch-all that answers the rest with a JSON 404 or 405)."""
    resources = app.router.resources()
    return {resource.canonical for resource in resources if resource.name != UNROUTED_NAME}


def test_deliver_role_has_workers_and_only_healthz() -> None:
    app = create_app(REDIS, role=Role.DELIVER)
    assert paths(app) == {"/healthz"}
    assert workers_ctx in app.cleanup_ctx
    assert identity_ctx not in app.cleanup_ctx


def test_ingest_role_has_the_routes_and_no_workers() -> None:
    app = create_app(REDIS, role=Role.INGEST)
    assert {"/v1/batch", "/healthz", "/readyz"} <= paths(app)
    assert workers_ctx not in app.cleanup_ctx
    assert identity_ctx in app.cleanup_ctx


def test_all_role_is_both() -> None:
    app = create_app(SQLITE)
    assert {"/v1/batch", "/healthz", "/readyz"} <= paths(app)
    assert workers_ctx in app.cleanup_ctx


@pytest.mark.parametrize("role", [Role.INGEST, Role.DELIVER])
def test_a_split_role_needs_redis(role: Role) -> None:
    assert role_problem(REDIS, role) is None
    assert role_problem(SQLITE, Role.ALL) is None
    problem = role_problem(SQLITE, role)
    assert problem is not None
    assert 'backend = "redis"' in problem
    with pytest.raises(ValueError, match="SQLite"):
        create_app(SQLITE, role=role)


def test_serve_refuses_sqlite_with_a_split_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f'[spool]\npath = "{tmp_path / "spool.sqlite3"}"\n')
    assert main(["serve", "--config", str(config), "--role", "deliver"]) == 2
    assert "--role deliver needs [spool] backend" in capsys.readouterr().err
    assert not (tmp_path / "spool.sqlite3").exists()  # refused before anything was opened


def test_serve_rejects_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--role", "both"])
    assert exit_.value.code == 2
    assert "invalid choice: 'both'" in capsys.readouterr().err
