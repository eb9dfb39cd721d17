"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The real clips in ../shared/media (skips cleanly when the folder is absent)."""
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"real clips not found at {SHARED_MEDIA}")
    return SHARED_MEDIA
