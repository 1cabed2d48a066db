"""The Predict & explain tab in a real browser: a baseline chosen and stated with IG's completeness gap, the
random-weights flag next to the map, a click on the image choosing the token-mixing query, and the 28x28 example
shown at a readable size. Screenshots go to $MFX_SCREENSHOTS (default: pytest's tmp dir)."""

from __future__ import annotations

import pytest

from tests.browser_kit import pytestmark  # noqa: F401  (the browser, page and shots fixtures come from conftest)

SLOW = 300_000  # ms: an explanation with its faithfulness curves on a loaded 2-core machine


def open_tab(page, app_url) -> None:
    page.goto(app_url)
    page.get_by_role('tab', name='Predict & explain').click()
    page.locator('#mfx-predict-image img').wait_for()


def choose(page, elem_id: str, option: str) -> None:
    box = page.locator(f'#{elem_id} input')
    box.click()
    box.fill(option)
    page.locator('[role=option]', has_text=option).first.click()


def test_the_noise_baseline_is_stated_with_the_completeness_gap(app_url, page, shots):
    open_tab(page, app_url)
    page.get_by_role('tab', name='Attribution').click()
    choose(page, 'mfx-baseline', 'noise')
    page.locator('#mfx-explain').click()
    trust = page.locator('#mfx-attr-trust')
    trust.filter(has_text='completeness gap').wait_for(timeout=SLOW)
    text = trust.inner_text()
    page.screenshot(path=str(shots / 'predict-noise-baseline.png'), full_page=True)
    assert 'baseline: noise' in text and 'seed 0' in text
    assert 'Integrated Gradients from the noise baseline' in text and 'converged' in text
    assert 'deletion AUC' in text and 'random orders' in text
    assert page.locator('#mfx-attr-warning').inner_text().strip() == ''  # a trained model: no flag


def test_random_weights_are_flagged_next_to_the_map(app_url, page, shots):
    open_tab(page, app_url)
    page.get_by_label('random').first.check()
    page.get_by_role('tab', name='Attribution').click()
    assert page.locator('#mfx-cam-stage input').is_disabled()  # IG: no GradCAM stage to choose
    choose(page, 'mfx-method', 'gradcam')
    page.wait_for_function('() => !document.querySelector("#mfx-cam-stage input").disabled')
    page.wait_for_function('() => document.querySelector("#mfx-baseline input").disabled')  # GradCAM: no baseline
    page.locator('#mfx-explain').click()
    warning = page.locator('#mfx-attr-warning .mfx-trust-warning')
    warning.wait_for(timeout=SLOW)
    page.locator('#mfx-attr-trust').filter(has_text='deletion AUC').wait_for(timeout=SLOW)
    page.screenshot(path=str(shots / 'predict-random-flag.png'), full_page=True)
    assert 'nothing to attribute' in warning.inner_text()
    assert 'baseline: none' in page.locator('#mfx-attr-trust').inner_text()  # GradCAM takes no baseline


def test_a_click_on_the_image_sets_the_query_token(app_url, page, shots):
    from explorer.app.predict import _trained_path, default_choice
    from explorer.explain.weights import checkpoint_spec

    choice = default_choice()
    assert choice.startswith('trained: ')  # a shipped Fashion-MNIST model: 28x28 images padded to a 32x32 input
    grids = checkpoint_spec(_trained_path(choice)).grid_sizes()
    # pixel (21.5, 7.5) of the 28x28 image is input pixel (23.5, 9.5): the token under it on an h x w grid
    expect = [(int(9.5 // (32 / h)), int(23.5 // (32 / w))) for h, w in grids]
    open_tab(page, app_url)
    page.get_by_role('tab', name='Token mixing').click()
    ranges = page.locator('#mfx-mix-ranges')
    h, w = grids[0]
    ranges.filter(has_text='query row').wait_for()  # filled when the page loads
    assert f'query row 0 to {h - 1}, col 0 to {w - 1}' in ranges.inner_text()
    # one numbering for people: the fields and the ranges count stages from S1 and blocks from 1
    assert f'stage 1 to {len(grids)} (S1 to S{len(grids)}); block 1 to' in ranges.inner_text()
    assert page.input_value('#mfx-mix-stage input') == '1' and page.input_value('#mfx-mix-block input') == '1'
    img = page.locator('#mfx-predict-image img')
    box = img.bounding_box()
    assert min(box['width'], box['height']) >= 200  # the 28x28 example is shown upscaled, not at 28 pixels
    assert img.evaluate('e => [e.naturalWidth, e.naturalHeight]') == [28, 28]
    assert img.evaluate('e => getComputedStyle(e).imageRendering') == 'pixelated'

    def click_pixel(x: float, y: float) -> None:
        img.scroll_into_view_if_needed()
        box = img.bounding_box()  # the picture is drawn centred in its box (object-fit: contain)
        side = min(box['width'], box['height'])
        left, top = box['x'] + (box['width'] - side) / 2, box['y'] + (box['height'] - side) / 2
        page.mouse.click(left + side * x / 28, top + side * y / 28)

    click_pixel(21.5, 7.5)
    page.locator('#mfx-mix-click').filter(has_text='Query token').wait_for(timeout=SLOW)
    page.screenshot(path=str(shots / 'predict-click-query.png'), full_page=True)
    assert (int(page.input_value('#mfx-mix-row input')), int(page.input_value('#mfx-mix-col input'))) == expect[0]
    # on S2 the same click is another token of a coarser grid, and the ranges follow the stage
    stage = page.locator('#mfx-mix-stage input')
    stage.fill('2')  # the field counts from 1: S2
    stage.press('Tab')
    h, w = grids[1]
    ranges.filter(has_text=f'col 0 to {w - 1} on S2').wait_for()
    click_pixel(21.5, 7.5)
    page.locator('#mfx-mix-click').filter(has_text='of S2').wait_for(timeout=SLOW)
    assert (int(page.input_value('#mfx-mix-row input')), int(page.input_value('#mfx-mix-col input'))) == expect[1]
    # another image: the note about a pixel of the old one goes (the query's row and col stay in their fields)
    page.locator('#mfx-predict-examples button').nth(1).click()
    page.wait_for_function("() => !document.querySelector('#mfx-mix-click').innerText.includes('Query token')")
    assert (int(page.input_value('#mfx-mix-row input')), int(page.input_value('#mfx-mix-col input'))) == expect[1]


def test_results_of_another_image_are_taken_down_and_the_status_sits_under_the_results(app_url, page, shots):
    """The top-k of the ankle boot stayed under the pullover until Predict was pressed again, and what an action
    said (the ERF table, a map's grid) appeared under the checkpoint upload, about 700 px above its button."""
    open_tab(page, app_url)
    page.get_by_role('button', name='Predict', exact=True).click()
    page.locator('#mfx-predict-status').filter(has_text='weights').wait_for(timeout=SLOW)
    page.wait_for_function('() => document.querySelectorAll(".js-plotly-plot").length >= 1')
    status_y = page.locator('#mfx-predict-status').bounding_box()['y']
    button_y = page.get_by_role('button', name='Predict', exact=True).bounding_box()['y']
    upload_y = page.get_by_text('checkpoint (.safetensors').first.bounding_box()['y']
    assert status_y > button_y > upload_y  # under the results, not under the upload
    page.locator('#mfx-predict-examples button').nth(1).click()  # another example image
    page.locator('#mfx-predict-status').filter(has_text='The image or the model changed').wait_for(timeout=30_000)
    page.wait_for_function('() => document.querySelectorAll(".js-plotly-plot").length === 0')
    page.screenshot(path=str(shots / 'predict-stale.png'), full_page=True)


def test_a_run_on_the_old_image_is_cancelled_and_cannot_put_its_result_back(app_url, page, shots):
    """The results of an image are taken down when the image changes; a run still working on the old image must
    not put its map back when it ends (its event is cancelled with the change). Occlusion of poolformer_s12 with
    random weights takes seconds, so the image changes while it runs; the test waits until the server's model
    slots are all free again (the cancelled run's thread has ended) before looking."""
    from explorer.app.context import MODEL_SLOTS

    open_tab(page, app_url)
    choose(page, 'mfx-model', 'poolformer_s12')
    page.locator('#mfx-model-weights').get_by_label('random').check()
    page.get_by_role('tab', name='Attribution').click()
    choose(page, 'mfx-method', 'occlusion')
    page.locator('#mfx-explain').click()
    for _ in range(600):  # the run holds a model slot once its work starts
        if MODEL_SLOTS._sem._value < MODEL_SLOTS.n:
            break
        page.wait_for_timeout(50)
    assert MODEL_SLOTS._sem._value < MODEL_SLOTS.n, 'the explanation never started'
    page.locator('#mfx-predict-examples button').nth(1).click()  # another image while it runs
    if MODEL_SLOTS._sem._value == MODEL_SLOTS.n:  # seconds of work on any 2-core machine; a fast one could finish
        pytest.skip('the explanation ended before the image changed: there was nothing to cancel')
    page.locator('#mfx-predict-status').filter(has_text='The image or the model changed').wait_for(timeout=30_000)
    for _ in range(1200):
        if MODEL_SLOTS._sem._value == MODEL_SLOTS.n:
            break
        page.wait_for_timeout(100)
    assert MODEL_SLOTS._sem._value == MODEL_SLOTS.n, 'the old run did not end within 2 minutes'
    page.wait_for_timeout(2_000)  # what the ended run would send has arrived by now
    page.screenshot(path=str(shots / 'predict-cancelled.png'), full_page=True)
    assert page.locator('#mfx-attr-plot .js-plotly-plot').count() == 0
    assert 'The image or the model changed' in page.locator('#mfx-predict-status').inner_text()


def test_a_composer_edit_takes_down_the_composer_models_results(app_url, page, shots):
    """Session 18 took the composer's results down when its design changed, listening to the design's state; but
    composer edits answer outside the queue, where Gradio fires no state change, so after an edit the old
    design's top-k stayed up under the new design's name."""
    page.goto(app_url + '?preset=poolformer_s12')
    page.wait_for_selector('body[data-mfx-ready]', state='attached')
    page.get_by_role('tab', name='Predict & explain').click()
    choose(page, 'mfx-model', '(composer spec)')
    page.locator('#mfx-model-weights').get_by_label('random').check()
    page.get_by_role('button', name='Predict', exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=SLOW)
    page.get_by_role('tab', name='Compose').click()
    depth = page.locator('#mfx-s1-depth input')
    # the field entered and left, Enter pressed, without a change: the design is the same, its results stay (every
    # edit event took them down)
    depth.click()
    depth.press('Enter')
    depth.press('Tab')
    page.wait_for_timeout(2000)  # the tabs that follow the design would have run by now
    page.get_by_role('tab', name='Predict & explain').click()
    page.wait_for_timeout(500)
    assert page.evaluate('() => document.querySelectorAll(".js-plotly-plot").length') >= 1
    assert 'The image or the model changed' not in page.locator('#mfx-predict-status').inner_text()
    page.get_by_role('tab', name='Compose').click()
    depth.fill('3')
    depth.press('Tab')
    page.wait_for_function("document.querySelector('#mfx-name textarea, #mfx-name input').value.includes('-mod')")
    page.get_by_role('tab', name='Predict & explain').click()
    page.locator('#mfx-predict-status').filter(has_text='The image or the model changed').wait_for(timeout=30_000)
    page.wait_for_function('() => document.querySelectorAll(".js-plotly-plot").length === 0')
    page.screenshot(path=str(shots / 'predict-composer-edit.png'), full_page=True)
