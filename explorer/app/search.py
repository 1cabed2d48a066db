"""The "Search" tab: a design space (a shipped one, edited as JSON, with the constraints and objectives as form
fields), a search that runs as a background job with progress and stop, and the trials as a scatter with the
Pareto frontier and the published presets. Clicking a point (or a frontier row) opens that design in Compose.

Layout and wiring only: the search is explorer.search.study.run_search (the same as `explorer search`), the
figure explorer.viz.search. Studies live in the default storage (a SQLite file in the runs folder), named after
their space: a page reload or a server restart shows the study again, and the next search continues it. On a
shared server, visitors searching the same space share its study (designs only; nothing personal is stored).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import gradio as gr

from explorer.app.context import download_file, md_text, user_error
from explorer.core.spec import SpecError
from explorer.search.space import SpaceError, design, load_space, parse_space, space_names
from explorer.train.runner import background

PRIVATE = dict(api_visibility='private')
DEFAULT_SPACE = 'metaformer_hybrid'
_SLOT = threading.Lock()  # one search at a time on this server (they share the CPU with everything else)
_STOP: dict[str, threading.Event] = {}  # run id -> its stop flag (gr.State holds the id: plain data)
FORM_LIMITS = (('params_m', 'max params (M)'), ('gmacs', 'max GMACs'), ('latency_ms', 'max predicted latency (ms)'))
METRIC_CHOICES = ['gmacs', 'params_m', 'latency_ms', 'act_mib', 'accuracy']


def max_trials() -> int:
    """Trials one app request may run: EXPLORER_MAX_SEARCH_TRIALS, default 2,000."""
    raw = os.environ.get('EXPLORER_MAX_SEARCH_TRIALS', '2000')
    if not raw.isdigit() or int(raw) <= 0:
        raise SpecError([('', f'EXPLORER_MAX_SEARCH_TRIALS={raw!r} must be a positive integer')])
    return int(raw)


def space_text(name: str) -> str:
    if name not in space_names():
        raise gr.Error(f'{md_text(name, 80)} is not a shipped space', print_exception=False)
    return json.dumps(load_space(name).source, indent=2)


def form_values(text: str) -> list:
    """The form fields (three limits, x objective + direction, y objective + direction) from a space's JSON."""
    try:
        sp = parse_space(text)
    except SpaceError:
        return [gr.skip()] * 7
    limits = [sp.constraints.get(k, {}).get('max') for k, _ in FORM_LIMITS]
    objs = list(sp.objectives.items()) + [(None, 'minimize')] * (2 - len(sp.objectives))
    return [*limits, objs[0][0], objs[0][1], objs[1][0] or 'none', objs[1][1]]


def merged_space(text: str, p_max, g_max, l_max, x_obj, x_dir, y_obj, y_dir):
    """The space JSON with the form's constraints and objectives written into it (form wins)."""
    try:
        data = json.loads(text) if isinstance(text, str) and len(text) <= 100_000 else None
    except json.JSONDecodeError as e:
        raise user_error(f'the space is not valid JSON: {e}', title='Bad space') from None
    if not isinstance(data, dict):
        raise user_error('the space must be a JSON object (a shipped space is a good start)', title='Bad space')
    cons = dict(data.get('constraints') or {})
    for (key, _), value in zip(FORM_LIMITS, (p_max, g_max, l_max)):
        bounds = dict(cons.get(key) or {})
        if value:
            if bounds.get('max') != value:  # unchanged: the space (and its study) stays the shipped one
                bounds['max'] = float(value)
        else:
            bounds.pop('max', None)
        cons[key] = bounds
    data['constraints'] = {k: v for k, v in cons.items() if v}
    objectives = {x_obj: x_dir}
    if y_obj and y_obj not in ('none', x_obj):
        objectives[y_obj] = y_dir
    if objectives != data.get('objectives'):
        data['objectives'] = objectives
    try:
        return parse_space(data)
    except SpaceError as e:
        raise user_error(e, title='Bad space') from None


def preset_points(space, scorer) -> list[dict]:
    """The published presets the space's axes can show: those with the base's input size and channels (the
    figure keeps those near the trials)."""
    from explorer.core.catalog import get_preset, preset_names
    from explorer.core.spec import ArchSpec

    out = []
    for name in preset_names():
        spec = ArchSpec.from_dict(get_preset(name))
        if (spec.img_size, spec.in_chans) == (space.base['img_size'], space.base['in_chans']):
            out.append({'name': name, 'metrics': scorer.metrics(spec)})
    return out


def study_view(space) -> tuple:
    """(figure, frontier rows, CSV file, spec files, status) for what the space's study holds now."""
    from explorer.search.space import Scorer
    from explorer.search.study import frontier, frontier_csv, open_study
    from explorer.viz.search import search_figure

    scorer = Scorer(space)
    front = frontier(open_study(space), space, scorer.calibrated_on)
    fig = search_figure(front.trials, front.frontier, space.objectives, preset_points(space, scorer))
    keys = list(space.objectives)
    rows = [
        [t['number'], t['pattern'], *(round(t['metrics'][k], 4) for k in keys), t['design']] for t in front.frontier
    ]
    csv_path = download_file(f'{front.study}-{len(front.trials)}', '.csv', lambda p: p.write_text(frontier_csv(front)))
    zip_path = download_file(f'{front.study}-{len(front.trials)}-specs', '.zip', lambda p: _zip_specs(front, p))
    lat = f' Latency predicted for batch {space.latency["batch_size"]}, calibrated on {scorer.calibrated_on}.'
    status = (
        f'Study **{md_text(front.study)}**: {len(front.trials)} trials, '
        f'{sum(t["feasible"] for t in front.trials)} within the constraints, {len(front.frontier)} on the frontier.'
        + (lat if scorer.calibrated_on else '')
    )
    table = gr.update(value=rows, headers=['trial', 'pattern', *keys, 'design'])
    return fig, table, csv_path, zip_path, status


def _zip_specs(front, path) -> None:
    import zipfile

    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for t in front.frontier:
            z.writestr(f'{front.study}_t{t["number"]}.json', json.dumps(t['spec'], indent=2) + '\n')


def search_events(space, trials: int, stop: threading.Event):
    """Run the search in a worker thread; yield {'kind': 'trial', ...} events, then 'done' or 'error'."""
    from explorer.search.study import run_search

    if not _SLOT.acquire(blocking=False):
        yield {'kind': 'error', 'message': 'another search is running on this server (one at a time); try again soon'}
        return

    def work(emit):
        run_search(space, trials=trials, progress=emit, should_stop=stop.is_set)

    yield from background(work, stop, 'search', (SpaceError, SpecError, ValueError), _SLOT.release)


def api_search(space: dict | str, trials: int = 100) -> dict:
    """Add `trials` trials to a space's study and return its frontier, as `explorer search SPACE --json` prints
    it: {'study', 'objectives', 'trials', 'feasible', 'frontier': [{'number', 'pattern', 'design', 'params',
    'macs', 'latency_ms', 'metrics', 'spec'}, ...]}. space: a shipped space's name, or a space as a JSON object
    or text. Analytic objectives only (trained accuracy runs from the command line); one search at a time."""
    from explorer.search.study import run_search

    try:
        if isinstance(space, str) and space in space_names():
            sp = load_space(space)
        else:
            sp = parse_space(space)
        if sp.needs_training:
            raise SpaceError('trained accuracy trains every trial: run it with `explorer search` on a machine of yours')
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= max_trials():
            raise SpaceError(f'trials {str(trials)[:20]!r} must be an integer from 1 to {max_trials():,}')
    except SpaceError as e:
        raise user_error(e, title='Bad space') from None
    if not _SLOT.acquire(blocking=False):
        raise user_error('another search is running on this server (one at a time); try again soon', title='Busy')
    try:
        front = run_search(sp, trials=trials)
    except (SpaceError, SpecError) as e:
        raise user_error(e, title='Search failed') from None
    finally:
        _SLOT.release()
    d = front.to_dict()
    d.pop('files', None)  # paths on the server are not the caller's business
    return d


def add_search_tab(ctx) -> None:
    with gr.Tab('Search', id='search'):
        gr.Markdown(
            'Search a design space for the best trade-offs: which mixer in which stage, at which depth and width. '
            'Optuna (NSGA-II) proposes designs; each is counted in closed form (and its latency predicted from '
            "this device's calibration, `explorer calibrate`), constraints are kept, and the Pareto frontier "
            'is drawn. Click a point or a frontier row to open that design in Compose.'
        )
        with gr.Row():
            space_name = gr.Dropdown(space_names(), value=DEFAULT_SPACE, label='space', scale=2)
            trials = gr.Number(value=200, minimum=1, maximum=max_trials(), precision=0, label='trials to add')
            start = gr.Button('Search', variant='primary', elem_id='mfx-search-start')
            stop_btn = gr.Button('Stop')
        first = space_text(DEFAULT_SPACE)
        p_max, g_max, l_max, x0, xd, y0, yd = form_values(first)  # the form starts filled: no race with load
        with gr.Row():
            limits = [
                gr.Number(value=v, minimum=0, label=label) for v, (_, label) in zip((p_max, g_max, l_max), FORM_LIMITS)
            ]
        with gr.Row():
            x_obj = gr.Dropdown(METRIC_CHOICES, value=x0, label='objective 1 (x axis)')
            x_dir = gr.Radio(['minimize', 'maximize'], value=xd, label='direction')
            y_obj = gr.Dropdown(['none', *METRIC_CHOICES], value=y0 or 'none', label='objective 2 (y axis)')
            y_dir = gr.Radio(['minimize', 'maximize'], value=yd, label='direction')
        with gr.Accordion('Space (JSON): stages, choices, base spec', open=False):
            text = gr.Code(value=first, language='json', label='space', interactive=True)
        status = gr.Markdown(elem_id='mfx-search-status')
        plot = gr.Plot(label='trials', elem_id='mfx-search-plot')
        pick = gr.Textbox(visible='hidden', elem_id='mfx-search-pick')  # the clicked trial, set by SEARCH_JS
        table = gr.Dataframe(label='Pareto frontier (select a row to open it in Compose)', interactive=False)
        with gr.Row():
            csv_file = gr.DownloadButton('Frontier as CSV', size='sm')
            zip_file = gr.DownloadButton('Frontier as spec files (.zip)', size='sm')
        stop_flag = gr.State(None)
        gr.api(api_search, api_name='search', concurrency_id='search', concurrency_limit=1)

    form = [*limits, x_obj, x_dir, y_obj, y_dir]
    view = [plot, table, csv_file, zip_file, status]

    def show(text_value, *form_value):
        try:
            return study_view(merged_space(text_value, *form_value))
        except SpaceError as e:  # latency objective without a calibration
            return [gr.skip()] * 4 + [f'**Cannot show this space:** {md_text(e)}']

    space_name.input(space_text, space_name, text, **PRIVATE).then(form_values, text, form, **PRIVATE).then(
        show, [text, *form], view, **PRIVATE
    )
    ctx.demo.load(show, [text, *form], view, **PRIVATE)
    ctx.demo.load(None, None, None, js=SEARCH_JS, **PRIVATE)

    def run(text_value, n, *form_value):
        space = merged_space(text_value, *form_value)
        if space.needs_training:
            raise user_error(
                'trained accuracy trains every trial (minutes each): run it from the command line, '
                f'`explorer search {space.name if space.name in space_names() else "SPACE.json"}`',
                title='Not in the app',
            )
        if not isinstance(n, (int, float)) or not 1 <= n <= max_trials():
            raise user_error(f'trials must be 1 to {max_trials():,}', title='Bad request')
        rid = uuid.uuid4().hex
        stop = _STOP.setdefault(rid, threading.Event())
        yield rid, *([gr.skip()] * 4), 'Starting...'
        last = 0.0
        try:
            for ev in search_events(space, int(n), stop):
                if ev['kind'] == 'error':
                    raise user_error(ev['message'], title='Search failed')
                if ev['kind'] == 'done' or time.monotonic() - last > 2.0:  # redraw at most every 2 s
                    last = time.monotonic()
                    fig, rows, csv_path, zip_path, text = study_view(space)
                    if ev['kind'] == 'trial':
                        text = f'Searching: trial {ev["done"]}/{ev["total"]}. ' + text
                    yield rid, fig, rows, csv_path, zip_path, text
        finally:
            _STOP.pop(rid, None)

    start.click(run, [text, trials, *form], [stop_flag, *view], concurrency_id='search', concurrency_limit=1, **PRIVATE)

    def request_stop(rid):
        if isinstance(rid, str) and rid in _STOP:
            _STOP[rid].set()

    stop_btn.click(request_stop, stop_flag, None, **PRIVATE)

    def open_trial(number, text_value, *form_value):
        from explorer.search.study import open_study

        space = merged_space(text_value, *form_value)
        try:
            trial = open_study(space).trials[int(number)]
            spec = design(space, trial.params, name=f'{space.name}_t{trial.number}').to_dict()
        except (ValueError, IndexError, KeyError, SpaceError):
            raise user_error(f'trial {str(number)[:20]} is not in this study', title='Cannot open') from None
        return spec, gr.Tabs(selected='compose')

    tabs = ctx.extras.get('tabs')
    outs = [ctx.spec, tabs] if tabs is not None else [ctx.spec]

    def from_click(number, *rest):
        return open_trial(number, *rest)[: len(outs)]

    def from_row(evt: gr.SelectData, text_value, *form_value):
        row = evt.row_value if evt is not None else None
        return open_trial(row[0] if row else -1, text_value, *form_value)[: len(outs)]

    if getattr(ctx, 'load_spec', None):
        ctx.load_spec(pick.change(from_click, [pick, text, *form], outs, **PRIVATE))
        ctx.load_spec(table.select(from_row, [text, *form], outs, **PRIVATE))


# attaches a click listener to the trials plot (re-attached whenever plotly redraws it): the clicked point's trial
# number goes into the hidden textbox, whose input event opens the design
SEARCH_JS = """
() => {
  const hook = () => {
    const plot = document.querySelector('#mfx-search-plot .js-plotly-plot');
    if (!plot || plot.__mfxHooked || !plot.on) return;
    plot.__mfxHooked = true;
    plot.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p || !p.customdata) return;
      const box = document.querySelector('#mfx-search-pick textarea, #mfx-search-pick input');
      if (!box) return;
      box.value = String(p.customdata[0]);
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
  hook();
}
"""
