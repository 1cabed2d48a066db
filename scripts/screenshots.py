"""Take the README's screenshots of the app's journeys in Debian's Chromium (Playwright).

    python scripts/screenshots.py [OUT_DIR]          (default: assets/screens)

Launches the app on 127.0.0.1 (a free port, the server's own default folders), walks the journeys the README
shows and writes one PNG per step at 1280x800. Nothing is trained; the Predict step uses the shipped
Fashion-MNIST model.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from explorer.app.context import launch_kwargs
    from explorer.app.main import build_demo

    out.mkdir(parents=True, exist_ok=True)
    demo = build_demo()
    port = free_port()
    demo.launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    url = f'http://127.0.0.1:{port}/'
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=ARGS)
            page = browser.new_page(viewport={'width': 1280, 'height': 800})
            page.set_default_timeout(120_000)

            def shot(name: str, settle_ms: int = 1500) -> None:
                page.wait_for_timeout(settle_ms)
                page.screenshot(path=str(out / f'{name}.png'))
                print(out / f'{name}.png')

            # 1. compose: a preset, its counts, diagram and chart
            page.goto(url + '?preset=caformer_s18')
            page.wait_for_selector('body[data-mfx-ready]', state='attached')  # the link restored and verified
            shot('compose')
            # 2. compare: every preset by family, your design among them
            page.get_by_role('tab', name='Compare').click()
            page.wait_for_selector('#mfx-scatter .js-plotly-plot')
            shot('compare', 3000)
            # 3. predict & explain: the shipped Fashion-MNIST model on one of its examples
            page.get_by_role('tab', name='Predict & explain').click()
            page.wait_for_timeout(1500)
            page.get_by_role('tab', name='Attribution').click()
            page.locator('#mfx-explain').click()
            page.get_by_text('beats chance', exact=False).first.wait_for()
            page.locator('#mfx-explain').scroll_into_view_if_needed()
            page.mouse.wheel(0, 520)
            shot('predict', 2500)
            # 4. train: the Fashion-MNIST form and the runs on this machine
            page.get_by_role('tab', name='Train').click()
            page.locator('#mfx-runs').wait_for()
            page.locator('#mfx-runs').scroll_into_view_if_needed()
            shot('train', 3000)
            # 5. search: the shipped spaces
            page.get_by_role('tab', name='Search').click()
            shot('search', 2500)
            browser.close()
    finally:
        demo.close()


if __name__ == '__main__':
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / 'assets' / 'screens')
