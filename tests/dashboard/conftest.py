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


def _find(component, key: str):
    if getattr(component, "id", None) == key:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            found = _find(child, key)
            if found is not None:
                return found
    return None


@pytest.fixture
def find_component():
    """``find(layout, id)``: the component with that id in a Dash layout tree (or None)."""
    return _find
