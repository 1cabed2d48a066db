"""What every browser test file shares: Debian's Chromium, its flags, and the browser/page/shots fixtures.

In a browser test file: `from tests.browser_kit import pytestmark  # noqa: F401` (marks it `browser` and skips
it without Chromium); the browser, page and shots fixtures and `app_url` come from conftest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = '/usr/bin/chromium'
ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f'Debian Chromium is not installed at {CHROMIUM} (apt-get install chromium)'
    ),
]
TIMEOUT = 60_000  # ms; first counts on a cold 2-core machine


@pytest.fixture(scope='module')
def browser():
    sync_api = pytest.importorskip('playwright.sync_api')
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={'width': 1280, 'height': 800})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    yield pg
    ctx.close()


@pytest.fixture(scope='module')
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get('MFX_SCREENSHOTS') or tmp_path_factory.mktemp('screens'))
    d.mkdir(parents=True, exist_ok=True)
    return d
