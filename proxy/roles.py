"""Which part of the relay a process runs (`serve --role`): ingest, delivery, or both.

Nodes that only ingest scale with the site's traffic, delivery workers with the destinations'
pace; they meet in a shared spool. Only Redis is one: a SQLite spool is a file whose cursors one
process owns, so with SQLite a process must run both parts.
"""

from __future__ import annotations

from enum import StrEnum

from proxy.settings import Settings, SpoolBackend


class Role(StrEnum):
    INGEST = "ingest"  # the public ingest routes, no delivery workers
    DELIVER = "deliver"  # the delivery workers; the public listener answers /healthz only
    ALL = "all"

    @property
    def ingests(self) -> bool:
        return self is not Role.DELIVER

    @property
    def delivers(self) -> bool:
        return self is not Role.INGEST


def role_problem(settings: Settings, role: Role) -> str | None:
    """Why this config cannot run in this role, or None when it can."""
    if role is not Role.ALL and settings.spool.backend is SpoolBackend.SQLITE:
        return (
            f'--role {role} needs [spool] backend = "redis": a SQLite spool is one file that a '
            "single process both fills and delivers from (use --role all)"
        )
    return None
