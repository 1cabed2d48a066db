"""The app in a real browser: Playwright driving Debian's Chromium against a launched app on 127.0.0.1.

Few and end to end: load a preset, change a mixer and see the count `explorer profile` gives, an invalid
input with its message and the inputs kept, a share link that restores the composition. Screenshots of each
step go to $MFX_SCREENSHOTS (default: pytest's tmp dir) to look at.
"""

from __future__ import annotations

import json
import re

import pytest

from explorer.core.catalog import get_preset
from explorer.core.spec import ArchSpec
from explorer.measure.analytic import analytic_cost
from explorer.measure.fvcore_count import fvcore_cost
from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)


def macs_shown(page) -> int:
    return int(page.get_attribute('#mfx-macs', 'data-value'))


def wait_macs(page, value: int) -> None:
    page.wait_for_function(
        f'() => {{ const e = document.querySelector("#mfx-macs"); return e && e.dataset.value === "{value}"; }}'
    )


def choose(page, elem_id: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown with this elem_id, as a user does: click, type, click the option."""
    box = page.locator(f'#{elem_id} input')
    box.click()
    box.fill(option.split(' ')[-1] if '›' in option else option)
    page.locator('[role=option]', has_text=option).first.click()


def test_compose_count_error_and_share_link(app_url, page, shots):
    caf = get_preset('caformer_s18')
    pooled = json.loads(json.dumps(caf))
    pooled['stages'][2]['mixer'] = 'pooling'
    expect_caf = analytic_cost(ArchSpec.from_dict(caf)).macs
    expect_pooled = analytic_cost(ArchSpec.from_dict(pooled)).macs
    verified_pooled = fvcore_cost(ArchSpec.from_dict(pooled))
    assert verified_pooled.macs == expect_pooled  # what `explorer profile` prints, both ways

    # start elsewhere, then load caformer_s18 from the preset picker
    page.goto(app_url + '?preset=poolformer_s12')
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset('poolformer_s12'))).macs)
    choose(page, 'mfx-preset', 'CAFormer › CAFormer-S18')
    wait_macs(page, expect_caf)
    assert page.input_value('#mfx-s3-mixer input') == 'attention'

    # stage 3's mixer to pooling: the analytic count at once, the fvcore count right after
    choose(page, 'mfx-s3-mixer', 'pooling')
    wait_macs(page, expect_pooled)
    page.wait_for_selector(f'#mfx-verified:has-text("{verified_pooled.macs:,} MACs")')
    row3 = page.locator('#mfx-stage-3').inner_text()
    assert 'pool size' in row3 and 'head dim' not in row3  # a row shows its mixer's options only
    page.screenshot(path=str(shots / 'pooled.png'))
    share_url = page.url
    assert '?spec=' in share_url  # the address bar always holds the current composition

    # an invalid dim: the message names the field, the input stays, the numbers stay the last valid ones
    dim = page.locator('#mfx-s4-dim input')
    dim.fill('500')
    dim.press('Tab')
    page.wait_for_selector('#mfx-error:has-text("S4 dim")')  # the form's name for stages[3].dim
    assert 'not divisible by head_dim 32' in page.inner_text('#mfx-error')
    assert dim.input_value() == '500'
    assert macs_shown(page) == expect_pooled
    page.screenshot(path=str(shots / 'invalid.png'))

    # the share link restores the composition in a fresh page
    fresh = page.context.new_page()
    fresh.goto(share_url)
    wait_macs(fresh, expect_pooled)
    assert fresh.input_value('#mfx-s3-mixer input') == 'pooling'
    assert fresh.input_value('#mfx-s4-dim input') == '512'
    assert fresh.input_value('#mfx-name textarea, #mfx-name input') == 'caformer_s18-mod1'  # edited: renamed
    fresh.close()


def test_links_cannot_put_markup_on_the_page(app_url, page, shots):
    """A shared link is request text: ?preset= and a spec's name inside ?spec= show as written, never as HTML."""
    from urllib.parse import quote

    from explorer.core.share import encode_share

    attack = '<img src=x id=mfx-injected onerror="document.title=\'pwned\'">'
    page.goto(f'{app_url}?preset={quote(attack)}')
    page.wait_for_selector('#mfx-macs')
    page.wait_for_timeout(1500)  # the warning toast has arrived
    page.screenshot(path=str(shots / 'injection-preset.png'))
    assert page.locator('#mfx-injected').count() == 0 and page.title() != 'pwned'
    assert page.get_by_text('is not a preset', exact=False).count() >= 1  # the refusal is shown, as text
    # the page keeps the link it was given (a review: the share link of the default design replaced it, so a reload
    # showed the default without a word)
    page.wait_for_selector('body[data-mfx-ready]', state='attached')
    page.wait_for_timeout(500)
    assert 'preset=' in page.url and 'spec=' not in page.url
    spec = {**get_preset('poolformer_s12'), 'name': '<b id=mfx-bold>x</b>[link](http://evil.example)'}
    page.goto(f'{app_url}?spec={encode_share(spec)}')
    page.wait_for_selector('#mfx-macs')
    page.wait_for_timeout(1000)
    assert page.locator('#mfx-bold').count() == 0 and page.locator('a[href="http://evil.example"]').count() == 0
    assert page.locator('#mfx-name textarea, #mfx-name input').first.input_value() == spec['name']  # as written


def test_a_training_from_the_train_tab_finishes_with_curves_and_a_download(app_url, page, shots):
    """The journey a user makes: adapt the default design, train it briefly in the server's own runs folder, get
    the result, the curves and the checkpoint to download (Gradio used to refuse to serve it from the runs
    folder, so every run ended in red error badges)."""
    from explorer.train import checkpoints
    from explorer.train.data import DatasetNotFound, find_dataset

    try:
        find_dataset('fashion-mnist', split='train')
    except DatasetNotFound:
        pytest.skip('Fashion-MNIST is not installed here (apt install dataset-fashion-mnist)')
    runs = checkpoints.USER_DIR  # the server's default runs folder, as a user's server has it
    before = set(runs.glob('*.safetensors')) if runs.is_dir() else set()
    try:
        page.goto(app_url + '?preset=poolformer_s12')
        page.wait_for_selector('#mfx-macs')
        page.get_by_role('tab', name='Train').click()
        page.get_by_role('button', name='Adapt to Fashion-MNIST').click()
        page.wait_for_selector('text=Adapted for Fashion-MNIST')
        epochs = page.get_by_label('epochs')
        epochs.fill('0.05')
        epochs.press('Tab')
        page.get_by_label('training images').click()
        page.locator('[role=option]', has_text='2,000').first.click()
        page.get_by_role('button', name='Train', exact=True).click()
        # one step, then the 10,000 test images in fp32; a first bf16 step (the default on CPUs with bf16) adds
        # 10-20 s of oneDNN kernel creation in a fresh server. A refusal or an error ends the wait at once, and
        # every failure shows what the status line said (once in CI it waited 180 s for "Done:")
        status = 'document.querySelector("#mfx-train-status").innerText'
        toasts = '[...document.querySelectorAll(".toast-body")].map((t) => t.innerText).join(" | ")'
        seen = []
        for _ in range(360):  # up to 3 minutes
            text = page.evaluate(f'() => {status} + " || toasts: " + {toasts}')
            if not seen or seen[-1] != text:
                seen.append(text)
            if 'Done:' in text or re.search(r'error|another training|refused|failed|busy', text, re.I):
                break
            page.wait_for_timeout(500)
        assert 'Done:' in seen[-1], seen[-6:]
        page.screenshot(path=str(shots / 'trained.png'))
        assert 'Error' not in page.inner_text('body')  # no red badge on status, plot or file
        from explorer.measure.speed import cpu_native_bf16

        precision = 'bf16 autocast' if cpu_native_bf16() else 'fp32'  # the default: bf16 where the CPU has it
        assert f'threads, {precision}.' in page.inner_text('body')
        link = page.locator('a[download], a[href*=".safetensors"]').first
        assert '.safetensors' in (link.get_attribute('href') or '') + (link.inner_text() or '')
        assert page.locator('.js-plotly-plot').count() >= 1  # the curves
        made = set(runs.glob('*.safetensors')) - before
        assert len(made) == 1 and next(iter(made)).parent == runs
    finally:
        for path in set(runs.glob('*.safetensors')) - before:
            path.unlink(missing_ok=True)


def test_a_shared_links_name_stays_text_in_the_train_tabs_progress_line(app_url, page, fake_dir, monkeypatch):
    """A `?spec=` link's name is the link author's text: the progress line of a training showed it as Markdown (a
    backtick closed its code span), so the visitor's page got the author's link and remote image."""
    from explorer.core.share import encode_share
    from explorer.train import checkpoints

    from .conftest import TINY

    monkeypatch.setenv('FASHION_MNIST_DIR', str(fake_dir))  # 320 images: a few steps
    name = 'x` [CLICK ME](https://evil.example/login) ![t](https://evil.example/t.png) **B** `y'
    runs = checkpoints.USER_DIR
    before = set(runs.glob('*.safetensors')) if runs.is_dir() else set()
    # what the progress line ever showed is recorded, however briefly it stayed: a link or image to evil.example
    # (the checkpoint's download link names the file after the spec, so its href holds `_evil.example_`), and the
    # name as plain text
    page.add_init_script(
        'window.mfxEvil = 0; window.mfxSeen = false; new MutationObserver(() => {'
        ' if (document.querySelector(\'[href*="//evil.example"], [src*="//evil.example"]\')) window.mfxEvil += 1;'
        ' if (/Training x` \\[CLICK ME\\]\\(https:.* \\*\\*B\\*\\* `y: step/.test(document.body?.innerText))'
        ' window.mfxSeen = true;'
        '}).observe(document, {childList: true, subtree: true, characterData: true});'
    )
    try:
        page.goto(f'{app_url}?spec={encode_share({**TINY, "name": name})}')
        page.wait_for_selector('#mfx-macs')
        page.get_by_role('tab', name='Train').click()
        page.wait_for_function('() => document.body.innerText.includes("Ready: x` [CLICK ME]")')  # the link's spec
        page.get_by_role('button', name='Train', exact=True).click()
        page.wait_for_selector('text=Done:', timeout=180_000)
        assert page.evaluate('window.mfxEvil') == 0
        assert page.evaluate('window.mfxSeen')  # the progress line showed the name as text (server paths cut short)
    finally:
        for path in set(runs.glob('*.safetensors')) - before:
            path.unlink(missing_ok=True)


def test_presets_are_found_by_their_timm_name(app_url, page):
    page.goto(app_url + '?preset=poolformer_s12')
    page.wait_for_selector('#mfx-macs')
    box = page.locator('#mfx-preset input')
    box.click()
    box.fill('caformer_s18')
    option = page.locator('[role=option]', has_text='CAFormer-S18 (caformer_s18)').first
    option.click()
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset('caformer_s18'))).macs)


def click_first_point(page, trace: int) -> None:
    """Click where the Search plot draws the first point of its trace number `trace`."""
    point = page.locator('#mfx-search-plot g.trace.scatter').nth(trace).locator('path.point').first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
    page.mouse.click(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)


def test_a_search_draws_its_frontier_and_a_click_opens_the_design(app_url, page, shots, tmp_path, monkeypatch):
    """The Search tab end to end: a small search of the shipped hybrid space, its frontier plotted, a click on a
    frontier point, and the composer showing that design (its MACs equal the trial's)."""
    import explorer.search.study as study

    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path))  # the default storage, in a folder of this test
    page.goto(app_url)
    page.get_by_role('tab', name='Search').click()
    page.locator('#mfx-search-start').wait_for()
    trials = page.get_by_label('trials to add')
    trials.fill('30')
    trials.press('Tab')
    page.locator('#mfx-search-start').click()
    try:
        page.wait_for_function(
            '() => /Study .*: 30 trials/.test(document.querySelector("#mfx-search-status").innerText) && '
            '!/Searching/.test(document.querySelector("#mfx-search-status").innerText)',
            timeout=120_000,
        )
    finally:
        page.screenshot(path=str(shots / 'search-frontier.png'), full_page=True)
    status = page.locator('#mfx-search-status').inner_text()
    assert 'on the frontier' in status
    # click the first point of the frontier trace (the one whose legend says "Pareto frontier") where it is drawn
    plot = 'document.querySelector("#mfx-search-plot .js-plotly-plot")'
    page.wait_for_function(f'() => {plot} && {plot}.__mfxHooked && {plot}.data.some(t => /^Pareto/.test(t.name))')
    page.wait_for_timeout(1000)  # plotly's redraw settles
    names = page.evaluate(f'() => {plot}.data.map(t => t.name)')
    k = next(i for i, n in enumerate(names) if n.startswith('Pareto frontier'))
    on_front = set(page.evaluate(f'() => {plot}.data[{k}].customdata.map(c => c[0])'))
    click_first_point(page, k)
    # the composer opens with that design: its name says the trial, its MACs are the trial's
    page.wait_for_function(
        '() => /^metaformer_hybrid_t\\d+$/.test(document.querySelector("#mfx-name textarea, #mfx-name input")?.value)'
    )
    number = int(page.locator('#mfx-name textarea, #mfx-name input').first.input_value().rsplit('_t', 1)[1])
    assert number in on_front
    from explorer.search.space import design, load_space

    sp = load_space('metaformer_hybrid')
    trial = study.open_study(sp).trials[number]
    wait_macs(page, analytic_cost(design(sp, trial.params)).macs)
    page.screenshot(path=str(shots / 'search-opened.png'), full_page=True)

    # a published preset's diamond opens that preset (the tab says a click on a point opens it; it did nothing)
    page.get_by_role('tab', name='Search').click()
    page.wait_for_function(f'() => {plot} && {plot}.data.some(t => t.name === "published presets")')
    page.wait_for_timeout(1000)
    names = page.evaluate(f'() => {plot}.data.map(t => t.name)')
    k = names.index('published presets')
    preset = page.evaluate(f'() => {plot}.data[{k}].hovertext[0]')
    click_first_point(page, k)
    page.wait_for_function(
        '(n) => document.querySelector("#mfx-name textarea, #mfx-name input")?.value === n', arg=preset
    )
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset(preset))).macs)
