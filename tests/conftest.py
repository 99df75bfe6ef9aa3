"""Shared fixtures: where the real benchmark data lives, and skip rules for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the project root; DEPT_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("DEPT_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set DEPT_SHARED_DATA)")
    return SHARED_DATA
