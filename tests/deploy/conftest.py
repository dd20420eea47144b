"""Reuses the admin relay fixtures: a public and an admin listener on real 127.0.0.1 ports."""

from tests.admin.conftest import admin, admin_factory

__all__ = ["admin", "admin_factory"]
