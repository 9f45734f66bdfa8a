"""Fixtures shared by the dashboard's browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``$TWINSIM_SCREENSHOTS``, else a pytest temporary folder."""
    folder = os.environ.get("TWINSIM_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def chromium() -> None:
    """Skip the test unless Playwright and a Chromium to drive are installed."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from twinsim.dashboard._browser import chromium_path

    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium (install Debian's chromium)")
