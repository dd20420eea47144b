"""Where the shared test data lives: `$RELAY_SHARED_DIR`, else the `shared/` folder beside the repo.

Tests that need a part of it call `shared_dir(...)`, which skips them with a hint when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    configured = os.environ.get("RELAY_SHARED_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


def shared_dir(*parts: str) -> Path:
    """`shared/<parts>`, or a skip of the calling test when that folder is not there."""
    path = shared_root().joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"{path} not found: set RELAY_SHARED_DIR to the shared/ folder")
    return path
