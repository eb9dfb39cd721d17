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


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic dataset for end-to-end tests: 16 videos of 1.5 s, 2 classes,
    12 train / 4 test, short side 40, 16 kHz audio; returns its manifest."""
    from avssl.data.synthetic import make_synthetic
    from avssl.preprocess import preprocess

    root = tmp_path_factory.mktemp("tiny_prepared")
    make_synthetic(root / "src", num_videos=16, classes=2, seed=1, duration=1.5, fps=16.0,
                   size=(48, 48), sample_rate=16000, test_fraction=0.25, progress=False)
    preprocess(root / "src", root / "prepared", fps=16.0, short_side=40, sample_rate=16000,
               gop=8, workers=1, progress=False)
    return root / "prepared" / "manifest.jsonl"
