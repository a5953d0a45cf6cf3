"""Browser tests: Debian's Chromium, headless, driven by Playwright against a real `chatmq up`.

Playwright never downloads a browser here: it launches the system's ``chromium``
(scripts/ensure-deps installs it). Every ``browser.new_context()`` is a fresh, empty profile
(its own IndexedDB, its own SharedWorker), so two contexts are two browsers. Chromium stalls on a
closed network without the networking flags below.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.stack import Stack
from tests.web.app import ChatPage

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed: scripts/ensure-deps installs Debian's package (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: object) -> Iterator[Callable[..., object]]:
    """Fresh browser profiles for one test, closed after it."""
    contexts: list[object] = []

    def make(**options: object) -> object:
        context = browser.new_context(**options)  # type: ignore[attr-defined]
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def app(stack: Stack, new_context: Callable[..., object]) -> Callable[..., ChatPage]:
    """``app(user)``: a signed-in page of the web app in a new browser (or ``context=`` another tab)."""

    def open_app(
        user: str | None = None, *, context: object | None = None, query: str = "", **options: object
    ) -> ChatPage:
        page = ChatPage((context or new_context(**options)).new_page(), stack.base_url)  # type: ignore[attr-defined]
        page.open(query)
        if user is not None and page.signed_out():
            page.sign_in(user)
        return page

    return open_app


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session", autouse=True)
def web_build() -> None:
    """The app under test is web/dist: rebuild it when web/src changed (a few ms of copying)."""
    web = Path(__file__).resolve().parents[2] / "web"
    if not (web / "node_modules").is_dir():
        pytest.fail("web/node_modules is missing: run `make web` (npm ci and the build)")
    subprocess.run(["node", "build.js"], cwd=web, check=True, capture_output=True, timeout=60)
