"""The Measure tab's Calibrate, in Chromium: on a CPU with no calibration the composer's latency card says so;
Calibrate times random designs (here 80 + 10 tiny ones: fewer designs than the model's 72 features are not
kept), says how well the model predicts unseen designs, turns itself off (a second calibration is the
operator's), and the composer's card shows a predicted latency at once."""

from __future__ import annotations

from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)
from tests.test_browser import choose, wait_macs

STATUS = 'document.querySelector("#mfx-search-status").innerText'
CALIBRATED = '() => /calibrated on/.test(document.querySelector("#mfx-latency")?.innerText || "")'


def test_calibrating_from_the_measure_tab_gives_the_composer_a_latency(app_url, page, shots, tmp_path, monkeypatch):
    from explorer.app import calibration as appcal
    from explorer.core.catalog import get_preset
    from explorer.core.spec import ArchSpec
    from explorer.measure import latency as lat
    from explorer.measure.analytic import analytic_cost

    monkeypatch.setenv(lat.ENV_DIR, str(tmp_path))  # this CPU uncalibrated: an empty folder (the server reads it)
    monkeypatch.delenv('EXPLORER_ALLOW_RECALIBRATE', raising=False)
    monkeypatch.setattr(appcal, 'OPTIONS', {'designs': 80, 'holdout': 10, 'rounds': 1, 'max_macs': 2e6})
    page.goto(app_url + '?preset=poolformer_s12')
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset('poolformer_s12'))).macs)
    page.wait_for_selector('body[data-mfx-ready]', state='attached')
    assert 'not calibrated for this device' in page.inner_text('#mfx-totals')
    # the shipped latency space cannot be shown yet, and says where this page makes what it needs
    page.get_by_role('tab', name='Search').first.click()
    choose(page, 'mfx-search-space', 'mobile_latency')
    page.wait_for_function(f'() => /Cannot show this space/.test({STATUS})')
    said = page.evaluate(f'() => {STATUS}')
    assert 'the Measure tab, "Calibrate this CPU"' in said and '`' not in said  # no raw Markdown backticks
    page.wait_for_selector('#mfx-search-plot:has-text("nothing to search here yet")')  # not "press Search"
    page.get_by_role('tab', name='Measure').first.click()
    page.get_by_text('Latency model for this CPU').click()
    page.wait_for_selector('#mfx-calibration-status:has-text("Not calibrated for this CPU")')
    button = page.locator('#mfx-calibrate')
    page.wait_for_function('(b) => !b.disabled', arg=button.element_handle())
    button.click()
    page.wait_for_selector('#mfx-calibration-status:has-text("Calibrated on")', timeout=240_000)
    status = page.inner_text('#mfx-calibration-status')
    assert 'On 10 designs it never saw' in status and 'explorer calibrate' in status, status
    page.wait_for_function('(b) => b.disabled', arg=button.element_handle())  # the next one is the operator's
    page.screenshot(path=str(shots / 'calibrated.png'), full_page=True)
    page.get_by_role('tab', name='Search').first.click()  # opening the tab again is enough: the space shows now
    try:
        page.wait_for_function(
            f'() => /mobile_latency/.test({STATUS}) && !/Cannot show/.test({STATUS})', timeout=20_000
        )
    except Exception:
        raise AssertionError(page.evaluate(f'() => {STATUS}')) from None
    page.get_by_role('tab', name='Compose').first.click()
    model = lat.load_model(lat.fingerprint('cpu', 'float32', 1))
    predicted = lat.predict_latency(get_preset('poolformer_s12'))
    assert model is not None and predicted.seconds > 0
    page.wait_for_function(CALIBRATED)
    assert page.get_attribute('#mfx-latency', 'data-value') == f'{predicted.ms:.4g}'
    # a new visitor: the first page's cards were rendered before the calibration, and follow it as it loads
    fresh = page.context.new_page()
    fresh.goto(app_url)
    wait_macs(fresh, analytic_cost(ArchSpec.from_dict(get_preset('caformer_s18'))).macs)
    fresh.wait_for_function(CALIBRATED)
    fresh_value = f'{lat.predict_latency(get_preset("caformer_s18")).ms:.4g}'
    assert fresh.get_attribute('#mfx-latency', 'data-value') == fresh_value
    fresh.close()
    # a link that cannot be read leaves the first design on the page, and its card follows the calibration too
    refused = page.context.new_page()
    refused.goto(app_url + '?preset=nope')
    refused.wait_for_selector('text=is not a preset')  # the refusal
    refused.wait_for_function(CALIBRATED)
    assert refused.get_attribute('#mfx-latency', 'data-value') == fresh_value
    refused.close()
