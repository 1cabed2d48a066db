"""The Search tab trains: a two-trial search of the shipped trained-accuracy space (Fashion-MNIST written by the
tests), its progress line while it trains, each trial's outcome with its accuracy, and the frontier drawn."""

from __future__ import annotations

import re

from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)
from tests.test_browser import choose

STATUS = 'document.querySelector("#mfx-search-status").innerText'


def test_a_trained_accuracy_search_runs_in_the_tab(app_url, page, shots, tmp_path, monkeypatch, fake_dir):
    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path))  # a fresh study in this test's folder
    monkeypatch.setenv('FASHION_MNIST_DIR', str(fake_dir))  # 320 training and 200 test images
    page.goto(app_url)
    page.get_by_role('tab', name='Search').click()
    page.locator('#mfx-search-start').wait_for()
    choose(page, 'mfx-search-space', 'fmnist_small_budget')
    page.wait_for_function(f'() => /fmnist_small_budget/.test({STATUS})')  # the space, its form and study shown
    trials = page.get_by_label('trials to add')
    # the last step of picking a space that trains: the trials box lowered from 200 to the cap (20)
    page.wait_for_function('(el) => el.value === "20"', arg=trials.element_handle())
    trials.fill('2')
    trials.press('Tab')
    page.locator('#mfx-search-start').click()
    seen_training = False
    try:
        for _ in range(600):  # up to 3 minutes
            text = page.evaluate(f'() => {STATUS}')
            seen_training |= bool(re.search(r'Training trial \d of 2', text))
            if 'Training search finished' in text or 'failed' in text.lower():
                break
            page.wait_for_timeout(300)
    finally:
        page.screenshot(path=str(shots / 'search-accuracy.png'), full_page=True)
    text = page.evaluate(f'() => {STATUS}')
    assert 'Training search finished: 2 of 2 trials' in text, text
    outcomes = re.findall(r'\d+: (complete, (\d+\.\d) %|pruned[^;.]*|outside the constraints[^;.]*)', text)
    assert len(outcomes) == 2, text
    for _outcome, acc in outcomes:
        if acc:
            assert 0.0 <= float(acc) <= 100.0
    assert seen_training or 'complete' in text  # the progress line showed while a trial trained
    plot = 'document.querySelector("#mfx-search-plot .js-plotly-plot")'
    page.wait_for_function(f'() => {plot} && {plot}.data && {plot}.data.length > 0')
