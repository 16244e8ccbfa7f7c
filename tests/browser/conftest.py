"""Pages in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright, offline.

`make test` installs Chromium and a Japanese font (Debian packages chromium,
fonts-ipaexfont-gothic) when they are missing and it runs as root; elsewhere the tests skip
with a clear message, except under CI=true, where they fail. Every request that leaves the
machine is aborted and recorded: a page must render with what it carries or what our own
server on 127.0.0.1 serves. Screenshots go to var/test-artifacts/screenshots in the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from visitshare.settings import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "var" / "test-artifacts" / "screenshots"
# Only the page's own file and our own loopback servers may be asked for.
LOCAL = re.compile(r"^(file:|data:|blob:|about:|https?://(127\.0\.0\.1|localhost)(:\d+)?/)")
# The flags that keep Chromium from calling home (this machine refuses those connections).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


def _missing() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append("chromium (/usr/bin/chromium)")
    fc = shutil.which("fc-list")
    fonts = subprocess.run([fc, ":lang=ja"], capture_output=True, text=True).stdout if fc else ""
    if not fonts.strip():
        missing.append("a Japanese font (fonts-ipaexfont-gothic or fonts-noto-cjk)")
    return missing


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, or a skip saying what is missing (a failure under CI=true)."""
    missing = _missing()
    if missing:
        message = (
            f"missing Debian package(s): {', '.join(missing)}; `make test` as root installs them"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI requires them")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class OfflinePage:
    """A browser page that may not reach anything outside this machine."""

    page: object  # playwright.sync_api.Page
    blocked: list[str] = field(default_factory=list)  # URLs it tried to fetch from outside
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # local requests that failed

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path

    def assert_clean(self) -> None:
        """No outside request, no failed local request, no console error."""
        assert not self.blocked, f"the page asked the network for {self.blocked[:5]}"
        assert not self.failed, f"requests failed: {self.failed[:5]}"
        assert not self.console_errors, f"console errors: {self.console_errors[:5]}"


@pytest.fixture
def offline_page(browser) -> Iterator[OfflinePage]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
    page = context.new_page()
    out = OfflinePage(page)

    def route(r) -> None:
        url = r.request.url
        if LOCAL.match(url):
            r.continue_()
        else:
            out.blocked.append(url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: out.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: out.console_errors.append(str(e)))
    page.on(
        "requestfailed",
        lambda r: None if not LOCAL.match(r.url) else out.failed.append(f"{r.url}: {r.failure}"),
    )
    page.on(
        "response",
        lambda r: out.failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None,
    )
    try:
        yield out
    finally:
        context.close()
