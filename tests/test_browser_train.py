"""The Train tab's runs table in Chromium: runs in plain units, curves overlaid, the run in progress drawn live, the
table refreshed when a run ends, and "Use in Predict"."""

from __future__ import annotations

import json
import time
import uuid

from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)
from tests.test_train_runs_view import HISTORY_A, HISTORY_B, write_run

PLOT = 'document.querySelector("#mfx-runs-plot .js-plotly-plot")'


def cell(page, row: int, col: int):
    return page.locator(f'#mfx-runs [data-testid=cell-{row}-{col}]')


def traces(page) -> list[dict]:
    return page.evaluate(f'() => {PLOT} ? {PLOT}.data.map(t => ({{name: t.name, meta: t.meta, x: t.x, y: t.y}})) : []')


def wait_traces(page, names: set[str]) -> None:
    """Until the figure's legend names are exactly `names`."""
    js = f'(names) => {PLOT} && JSON.stringify([...new Set({PLOT}.data.map(t => t.name))].sort()) === names'
    page.wait_for_function(js, arg=json.dumps(sorted(names), separators=(',', ':')))


def test_runs_table_overlays_curves_draws_the_live_run_and_opens_a_run_in_predict(app_url, page, shots):
    from explorer.train import checkpoints

    runs = checkpoints.USER_DIR  # the server's default runs folder, as a user's server has it
    runs.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    a, b, c = f'mfx_test_a_{tag}', f'mfx_test_b_{tag}', f'mfx_test_c_{tag}'
    now = time.time()
    made = [write_run(runs, a, HISTORY_A, 1_080_738, now - 1), write_run(runs, b, HISTORY_B, 2_458, now)]
    live = None
    try:
        page.goto(app_url)
        page.get_by_role('tab', name='Train').click()
        # the newest runs first, names only, plain units; the newest is ticked
        page.wait_for_function(
            '([a, b]) => /mfx_test_b_/.test(document.querySelector("#mfx-runs [data-testid=cell-0-1]")?.innerText)'
            ' && document.querySelector("#mfx-runs [data-testid=cell-1-1]")?.innerText.trim() === a',
            arg=[a, b],
        )
        assert cell(page, 0, 1).inner_text().strip() == b
        assert [cell(page, 0, k).inner_text().strip() for k in (3, 4, 5)] == ['36.00 %', '2.46 k', '2']
        assert [cell(page, 1, k).inner_text().strip() for k in (3, 4, 5)] == ['47.00 %', '1.08 M', '3']
        assert cell(page, 1, 2).inner_text().strip() == 'pooling ×1 (8) → sepconv ×1 (16), 32 px'
        table = page.locator('#mfx-runs').inner_text()
        assert '1080738' not in table and str(runs) not in table and '.safetensors' not in table
        wait_traces(page, {b})
        # tick the second run: both curves overlaid, each equal to what its checkpoint recorded
        cell(page, 1, 0).locator('input[type=checkbox]').click()
        wait_traces(page, {a, b})
        data = traces(page)
        assert len(data) == 6
        for name, history in ((a, HISTORY_A), (b, HISTORY_B)):
            acc = next(t for t in data if t['name'] == name and t['meta'] == 'test_accuracy')
            assert acc['x'] == [r['epoch'] for r in history]
            assert [round(v, 6) for v in acc['y']] == [round(100 * r['test_accuracy'], 6) for r in history]
        page.locator('#mfx-runs-plot').scroll_into_view_if_needed()
        page.screenshot(path=str(shots / 'train-runs.png'))
        # a run in progress (as the Train tab's and the API's trainings record it) is drawn live, and the table
        # reads the runs folder again when it ends
        from explorer.app.train import LIVE

        live = f'live_{tag}'
        LIVE.event('browser-test-run', live, {'kind': 'step', 'step': 1})
        LIVE.event('browser-test-run', live, {'kind': 'epoch', 'epoch': 1.0, 'train_loss': 2.0, 'test_accuracy': 0.3})
        wait_traces(page, {a, b, f'{live} (training)'})
        LIVE.event('browser-test-run', live, {'kind': 'epoch', 'epoch': 2.0, 'train_loss': 1.8, 'test_accuracy': 0.4})
        page.wait_for_function(
            f'() => {PLOT}.data.some(t => t.name === "{live} (training)" && t.meta === "test_accuracy" && '
            't.y.length === 2)'
        )
        page.screenshot(path=str(shots / 'train-runs-live.png'))
        made.append(write_run(runs, c, HISTORY_B, 5_000, time.time() + 1))
        LIVE.end('browser-test-run')
        page.wait_for_function(
            '(c) => document.querySelector("#mfx-runs [data-testid=cell-0-1]")?.innerText.trim() === c', arg=c
        )
        wait_traces(page, {a, b})  # the run in progress is gone; the ticks are kept
        # pick run a by its row, then use it in Predict & explain
        cell(page, 2, 1).click()
        page.wait_for_function('(a) => document.querySelector("#mfx-runs-pick input")?.value === a', arg=a)
        page.locator('#mfx-runs-use').click()
        page.wait_for_selector('[role=tab][aria-selected=true]:has-text("Predict & explain")')
        model = page.get_by_label('model', exact=True).first
        page.wait_for_function(
            '(v) => [...document.querySelectorAll("input")].some(i => i.value === v && i.offsetParent)',
            arg=f'trained: {a}',
        )
        assert model.input_value() == f'trained: {a}'
        page.screenshot(path=str(shots / 'train-use-in-predict.png'))
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        if live:
            from explorer.app.train import LIVE

            LIVE.end('browser-test-run')


def test_the_train_at_scale_commands_follow_a_composer_edit(app_url, page, shots):
    """The Train tab's readiness line, torchrun commands and spec download followed the design's state change,
    which composer edits (answered outside the queue) never fire: after an edit the download was the design
    before it."""
    page.goto(app_url + '?preset=poolformer_s12')
    page.wait_for_selector('body[data-mfx-ready]', state='attached')
    depth = page.locator('#mfx-s1-depth input')
    depth.fill('3')
    depth.press('Tab')
    page.wait_for_function("document.querySelector('#mfx-name textarea, #mfx-name input').value.includes('-mod1')")
    page.get_by_role('tab', name='Train').click()
    page.get_by_text('Train at scale').click()
    page.locator('#mfx-scale-cmd').filter(has_text='poolformer_s12-mod1').wait_for(timeout=30_000)
    page.screenshot(path=str(shots / 'train-at-scale-after-edit.png'), full_page=True)
