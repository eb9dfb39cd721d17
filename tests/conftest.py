"""Shared pytest fixtures, and a summary line for the real-media tests that could not run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: environment variable naming the folder of real clips used by the tests marked ``media``
MEDIA_ENV = "AVSSL_TEST_MEDIA"
#: where that folder is looked for when the variable is unset: ../shared/media from the repo root
DEFAULT_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
#: every skip issued by :func:`shared_media` starts with this, so the summary can count them
MEDIA_SKIP = "real-media folder not found"


def media_dir() -> Path:
    """The real-media folder: ``$AVSSL_TEST_MEDIA`` if set (relative to the working directory),
    else ../shared/media next to the repository."""
    env = os.environ.get(MEDIA_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else DEFAULT_MEDIA


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The folder of real clips; the test is skipped (and counted in the summary) when absent."""
    folder = media_dir()
    if not folder.is_dir():
        pytest.skip(f"{MEDIA_SKIP}: {folder} (set {MEDIA_ENV})")
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly how many real-media tests were skipped for want of the folder, and why."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and MEDIA_SKIP in str(r.longrepr[-1])]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} real-media test(s) skipped: folder {media_dir()} not found "
            f"(set {MEDIA_ENV} to the folder of real clips to run them)", yellow=True, bold=True)


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
