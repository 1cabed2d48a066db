"""The Measure tab's latency calibration: what the composer's "latency (predicted)" card and the Search tab's
latency objectives need, run from the page instead of a shell.

Layout and wiring only: the calibration is explorer.measure.latency.calibrate (the same as `explorer calibrate`),
for what the composer shows (this CPU, float32, batch 1, the server's torch threads), with the CLI's defaults.

A calibration changes every visitor's predictions, and a search study records the calibration its latencies came
from (a study refuses trials predicted by another), so the page only makes the first one: once this CPU has one,
replacing it is the operator's (`explorer calibrate`, or EXPLORER_ALLOW_RECALIBRATE=1 to allow it here). It holds
the server's speed-run slot (nothing else is timed meanwhile) and the training slot (it does not start while a
training runs, and none starts before it ends), runs to its end once started, and is kept only if it can be
trusted (`calibration_problem`: better than latency in proportion to MACs on the designs it never saw).
"""

from __future__ import annotations

import os
import time
from html import escape

import gradio as gr

from explorer.app.context import SPEED_SLOTS, user_error

PRIVATE = dict(api_visibility='private')
BATCH, DTYPE, DEVICE = 1, 'float32', 'cpu'  # what the composer's latency card predicts
OPTIONS: dict = {'designs': 400, 'holdout': 30}  # arguments to calibrate(): the CLI's defaults
# after a calibration that was not kept (timed beside other work), the page's next one waits this long: each takes
# minutes of every core and cannot be stopped, so a visitor could otherwise start one after another
RETRY_S = 600.0
_LAST_REFUSED = [float('-inf')]  # time.monotonic() of the last calibration that was not kept


def recalibration_allowed() -> bool:
    return os.environ.get('EXPLORER_ALLOW_RECALIBRATE', '').strip().lower() in ('1', 'true', 'yes')


def current_model():
    """This CPU's saved latency model for the composer's settings, or None."""
    from explorer.measure.latency import fingerprint, load_model

    return load_model(fingerprint(DEVICE, DTYPE, BATCH))


def status_html(model=None) -> str:
    """What the latency model of this CPU is: its device, when, and its accuracy on unseen designs; or none."""
    from explorer.measure.latency import fingerprint

    model = model if model is not None else current_model()
    if model is None:
        return (
            '<div class="mfx-note" id="mfx-calibration-status">Not calibrated for this CPU '
            f"({escape(fingerprint(DEVICE, DTYPE, BATCH).label())}): the composer's predicted latency and the "
            "Search tab's latency objectives need a calibration. <b>Calibrate</b> times "
            f'{OPTIONS.get("designs", 400) + OPTIONS.get("holdout", 30)} small random designs here, once (about 2 '
            'minutes of every core of an idle 2-core CPU; much longer while other work runs, which also makes the '
            'fit worse), and fits the latency model; <code>explorer calibrate</code> does the same from a shell.'
            '</div>'
        )
    ev, when = model.evaluation, escape(str(model.created)[:16].replace('T', ' '))
    acc = ''
    if ev:
        m, b = ev['model'], ev['baseline']
        acc = (
            f' On {m["n"]} designs it never saw: {100 * m["within"]:.0f}% within ±10% of the measured latency, '
            f'Spearman {m["spearman"]:.3f}, median error {m["median_abs_pct"]:.1f}% (latency ∝ MACs: '
            f'{100 * b["within"]:.0f}%, {b["spearman"]:.3f}, {b["median_abs_pct"]:.1f}%).'
        )
    again = (
        ' Calibrating again replaces it.'
        if recalibration_allowed()
        else ' Replacing it is for whoever runs this server (<code>explorer calibrate</code>): it changes every '
        "visitor's predictions and the searches that used them."
    )
    return (
        f'<div class="mfx-note" id="mfx-calibration-status">Calibrated on {escape(model.label())}, {when} UTC, '
        f'{model.n_designs} designs.{acc}{again}</div>'
    )


def may_calibrate(model=None) -> bool:
    model = model if model is not None else current_model()
    return model is None or recalibration_allowed()


def run_calibration(progress=None) -> str:
    """Calibrate this CPU for the composer's latency card (explorer.measure.latency.calibrate); the new status.
    Raises gr.Error when a calibration exists and replacing it is not allowed here, or when it fails."""
    from explorer.measure.latency import LatencyError, calibrate, calibration_problem, save_model
    from explorer.measure.speed import BenchError
    from explorer.train.runner import TRAINING_SLOT

    if not may_calibrate():  # asked again holding the slot: a calibration that finished meanwhile counts
        raise _calibrated_already()
    wait = _LAST_REFUSED[0] + RETRY_S - time.monotonic()
    if wait > 0 and not recalibration_allowed():
        raise user_error(
            f'the last calibration on this server was not kept (timed beside other work); the next one can start '
            f'in {wait / 60:.0f} min',
            title='Not yet',
        )

    def report(frac, desc=''):
        if progress is not None:
            progress(max(0.0, min(1.0, frac)), desc=f'calibrating: {desc}' if desc else 'calibrating')

    if not TRAINING_SLOT.acquire(blocking=False, holder='a latency calibration (the Measure tab)'):
        raise user_error(  # a training would be timed as much as the designs
            f'{TRAINING_SLOT.holder_name()} is running on this server: it would be timed as much as the designs; '
            'calibrate when it has finished',
            title='Busy',
        )
    try:  # no training starts meanwhile: one asked for is refused, naming this calibration
        cal = calibrate(device=DEVICE, batch_size=BATCH, dtype=DTYPE, progress=report, save=False, **OPTIONS)
    except (LatencyError, BenchError, RuntimeError) as e:
        raise user_error(f'calibration failed: {e}') from None
    finally:
        TRAINING_SLOT.release()
    problem = calibration_problem(cal.model)
    if problem:  # kept, it would be every visitor's, and the page could not replace it
        _LAST_REFUSED[0] = time.monotonic()
        raise user_error(
            f'this calibration was not kept: {problem}. Try again when the server is idle (in '
            f'{RETRY_S / 60:.0f} min at the earliest).',
            title='Not kept',
        )
    if not may_calibrate():  # the operator calibrated (explorer calibrate) during these minutes: theirs stays
        raise _calibrated_already()
    save_model(cal.model)
    return status_html(cal.model)


def _calibrated_already():
    return user_error(
        "this CPU is calibrated already; replacing its latency model changes every visitor's predictions, so "
        'it is for whoever runs this server (`explorer calibrate`, or EXPLORER_ALLOW_RECALIBRATE=1)',
        title='Calibrated already',
    )


def add_calibration(ctx, tab) -> None:
    """The calibration box of the Measure tab; the composer's latency card follows a calibration at once."""
    with gr.Accordion('Latency model for this CPU (the predicted latency in Compose and Search)', open=False):
        status = gr.HTML(elem_id='mfx-calibration-box')
        run = gr.Button('Calibrate this CPU', elem_id='mfx-calibrate', interactive=False)

    def look():
        model = current_model()
        return status_html(model), gr.update(interactive=may_calibrate(model))

    def calibrate_clicked(progress=gr.Progress()):
        if not may_calibrate():  # another page's calibration finished while this one waited: show it
            gr.Warning('This CPU was calibrated meanwhile (from another page); its latency model is shown.')
            return status_html(), gr.update(interactive=False)
        html = run_calibration(progress)
        return html, gr.update(interactive=may_calibrate())

    tab.select(look, None, [status, run], show_progress='hidden', **PRIVATE)
    event = run.click(
        SPEED_SLOTS.held(calibrate_clicked),
        None,
        [status, run],
        concurrency_limit=1,
        concurrency_id='bench',
        show_progress_on=status,
        **PRIVATE,
    )
    totals, recount = ctx.extras['totals']
    event.success(recount, [ctx.spec, ctx.report], totals, show_progress='hidden', **PRIVATE)
