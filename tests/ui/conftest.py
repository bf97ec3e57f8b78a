"""Fixtures of the browser tests: Debian's chromium driven by Playwright, fresh pages, screenshots,
and migrated settings for the app each module serves (``live_helpers.serve_app``).

Every browser test skips with a message when /usr/bin/chromium or playwright is missing
(``apt-get update && apt-get install -y chromium`` installs the browser; ``make test`` tries);
a module's server fixture asks for ``playwright_api`` first, so nothing starts before the skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbot.config import Settings

CHROMIUM = Path("/usr/bin/chromium")  # never a browser downloaded by playwright
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

Shot = Callable[..., None]


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    if not CHROMIUM.exists():
        pytest.skip("browser tests skipped: /usr/bin/chromium is missing "
                    "(apt-get update && apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    with playwright_api() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_page(timeout=ms, **context_options)``: a page in a fresh browser context (1280×800
    unless ``viewport`` says otherwise; actions wait ``timeout`` ms, 20 s by default). Every
    context is closed after the test."""
    contexts: list[Any] = []

    def make(*, timeout: float = 20_000, **options: Any) -> Any:
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
        contexts.append(context)
        context.set_default_timeout(timeout)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def shot(screenshot_dir: Path) -> Shot:
    """Save a screenshot of ``page`` as ``name`` (see ``--screenshots`` in tests/conftest.py)."""

    def take(page: Any, name: str, **kwargs: Any) -> None:
        page.screenshot(path=str(screenshot_dir / name), **kwargs)

    return take


@pytest.fixture(scope="module")
def served_settings(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    """``served_settings(name, **overrides)``: settings over fresh temporary folders (an empty
    knowledge base: the stand-in pipelines bring their own FAQs) with the database migrated by
    Alembic."""
    from chatbot.conversations.engine import upgrade

    def make(name: str, **overrides: Any) -> Settings:
        root = tmp_path_factory.mktemp(name)
        settings = Settings(var_dir=root / "var", knowledge_base=root / "kb", _env_file=None,
                            **overrides)  # type: ignore[call-arg]
        upgrade(settings)
        return settings

    return make
