"""The Compare tab in a real browser: presets labelled by family with a family filter, a log x axis, a click on a
preset point that loads it into the composer, and a diff of any two presets chosen from the lists. Screenshots go
to $MFX_SCREENSHOTS (default: pytest's tmp dir)."""

from __future__ import annotations

from explorer.core.catalog import get_preset, list_presets
from explorer.core.spec import ArchSpec
from explorer.measure.analytic import analytic_cost
from explorer.measure.compare import diff
from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)

PLOT = 'document.querySelector("#mfx-scatter .js-plotly-plot")'
FAMILIES = sorted({r['family'] for r in list_presets()})


def wait_macs(page, value: int, timeout: int = 60_000) -> None:
    page.wait_for_function(
        f'() => {{ const e = document.querySelector("#mfx-macs"); return e && e.dataset.value === "{value}"; }}',
        timeout=timeout,
    )


def open_compare(page, app_url: str) -> None:
    page.goto(app_url)
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset('caformer_s18'))).macs)
    page.get_by_role('tab', name='Compare').click()
    page.wait_for_function(f'() => {PLOT} && {PLOT}.data && {PLOT}.data.length > 5', timeout=30_000)
    page.wait_for_timeout(500)  # plotly's first draw settles


def legend(page) -> list[str]:
    return page.evaluate('() => [...document.querySelectorAll("#mfx-scatter .legendtext")].map(e => e.textContent)')


def choose_design(page, elem_id: str, preset: str) -> None:
    """Pick a preset in one of the diff lists as a user does: click, type its name, click the option."""
    box = page.locator(f'#{elem_id} input')
    box.click()
    box.fill(preset)
    page.locator('[role=option]', has_text=f'({preset})').first.click()


def test_the_chart_labels_families_and_filters_them(app_url, page, shots):
    open_compare(page, app_url)
    shown = legend(page)
    assert set(FAMILIES) <= set(shown) and 'your design' in shown  # every family and your design, labelled
    page.screenshot(path=str(shots / 'compare-families.png'), full_page=True)
    page.locator('#mfx-families label', has_text='CAFormer').first.click()  # untick a family
    page.wait_for_function(f'() => !{PLOT}.data.some(t => t.name === "CAFormer")', timeout=30_000)
    assert 'CAFormer' not in legend(page) and 'ConvFormer' in legend(page)
    keys = page.evaluate(f'() => {PLOT}.data.flatMap(t => (t.customdata || []).map(c => c[0]))')
    assert 'current' in keys and not any(k.startswith('preset:caformer') for k in keys)


def test_the_log_toggle_changes_the_axis_type(app_url, page, shots):
    open_compare(page, app_url)
    assert page.evaluate(f'() => {PLOT}.layout.xaxis.type') == 'linear'
    page.locator('#mfx-log input').check()
    page.wait_for_function(f'() => {PLOT}.layout.xaxis.type === "log"', timeout=30_000)
    page.screenshot(path=str(shots / 'compare-log.png'), full_page=True)
    page.locator('#mfx-log input').uncheck()
    page.wait_for_function(f'() => {PLOT}.layout.xaxis.type === "linear"', timeout=30_000)


def click_point(page, key: str) -> None:
    """Click the chart point whose customdata key is `key`, where plotly drew it."""
    k, j = page.evaluate(
        f'() => {{ const d = {PLOT}.data; for (let k = 0; k < d.length; k++) {{'
        f'  const j = (d[k].customdata || []).findIndex(c => c[0] === "{key}"); if (j >= 0) return [k, j]; }} }}'
    )
    page.wait_for_function(f'() => {PLOT}.__mfxCompareHooked', timeout=30_000)
    point = page.locator('#mfx-scatter g.trace.scatter').nth(k).locator('path.point').nth(j)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
    page.mouse.move(x, y)
    page.mouse.click(x, y)


def test_a_click_on_a_preset_loads_it_into_the_composer(app_url, page, shots):
    open_compare(page, app_url)
    click_point(page, 'preset:convformer_s18')
    # Compose opens with ConvFormer-S18: its MACs, its name
    wait_macs(page, analytic_cost(ArchSpec.from_dict(get_preset('convformer_s18'))).macs, timeout=30_000)
    assert page.locator('#mfx-name textarea, #mfx-name input').first.input_value().startswith('convformer_s18')
    page.screenshot(path=str(shots / 'compare-click-loaded.png'))


def test_two_chosen_presets_are_diffed_and_a_click_diffs_too(app_url, page, shots):
    open_compare(page, app_url)
    choose_design(page, 'mfx-diff-a', 'poolformer_s12')
    choose_design(page, 'mfx-diff-b', 'identityformer_s12')
    d = diff('poolformer_s12', 'identityformer_s12')
    page.wait_for_selector('#mfx-diff:has-text("A: poolformer_s12"):has-text("B: identityformer_s12")', timeout=30_000)
    total = page.locator('#mfx-diff tr').last.inner_text()
    assert f'{d["total"]["d_params"]:+,}' in total and f'{d["total"]["d_macs"]:+,}' in total
    page.locator('#mfx-diff-box').scroll_into_view_if_needed()
    page.screenshot(path=str(shots / 'compare-diff.png'), full_page=True)
    # 'diff it against your design': a click makes the point B, A your design
    page.locator('#mfx-click-mode label', has_text='diff it').click()
    click_point(page, 'preset:poolformerv2_s12')
    page.wait_for_selector('#mfx-diff:has-text("A: caformer_s18"):has-text("B: poolformerv2_s12")', timeout=30_000)
    assert page.locator('#mfx-macs').get_attribute('data-value') == str(
        analytic_cost(ArchSpec.from_dict(get_preset('caformer_s18'))).macs
    )  # the composer kept its design
