"""The Measure, Compare and Share tabs, the page-load restore, and the named API endpoints."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
from html import escape

import gradio as gr
from gradio.components.plot import PlotData

from explorer.app import form as spec_form
from explorer.app.calibration import add_calibration
from explorer.app.compose import verify_in_helper
from explorer.app.context import (
    SPEED_SLOTS,
    VERIFY_SLOTS,
    AppContext,
    download_file,
    endpoint,
    read_uploaded_spec,
    show_initially,
    spec_download,
    user_error,
)
from explorer.core import catalog, share
from explorer.core.registry import show
from explorer.core.spec import ArchSpec, SpecError
from explorer.measure import compare as cmp
from explorer.measure import profile as prof
from explorer.measure import units
from explorer.measure.guard import Limits
from explorer.viz.diagram import network_svg
from explorer.viz.plots import accuracy_figure, bench_figure, diff_figure, empty_figure, export_config, scaling_figure

PRIVATE = dict(api_visibility='private')
DTYPES = ('fp32', 'bf16', 'fp16')
SCALING_SIZES = '128, 160, 192, 224, 256, 288, 320, 384'
# JS: turn '?spec=...' into a full link and keep the address bar on the current composition (reload-safe)
SHARE_JS = """(q) => {
  if (!q || !q.startsWith('?')) return q;
  const url = window.location.origin + window.location.pathname + q;
  try { window.history.replaceState(null, '', url); } catch (e) {}
  return url;
}"""


# ---- measure --------------------------------------------------------------------------------------------
HISTORY_COLUMNS = (
    '#',
    'model',
    'device',
    'dtype',
    'batch × image',
    'ch.-last',
    'compile',
    'images/s median (slowest–fastest round)',
    'latency ms per batch (one call) p50 (p10–p90)',
    'peak memory (what it is)',
    'of matmul peak',
    'stamp',
)
ROUNDS = 3  # the Measure tab's default number of timed rounds
UNSTEADY = 1.25  # fastest / slowest round above this: the rounds disagree, the machine was not steady


def plain(v: float) -> str:
    """A measured number as people write it: 1,084.3 or 3.42, never 1.08e+03."""
    return f'{v:,.1f}' if abs(v) >= 100 else f'{v:.3g}'


def unsteady_note(r: dict) -> str | None:
    """'rounds differ 1.8x' when the fastest round's images/s exceeds the slowest's by more than UNSTEADY."""
    rounds = r.get('round_throughputs') or []
    if len(rounds) > 1 and min(rounds) > 0 and max(rounds) / min(rounds) > UNSTEADY:
        return f'its {len(rounds)} rounds differ {max(rounds) / min(rounds):.1f}×, so the machine was not steady'
    return None


def rerun_note(r: dict, earlier: list[dict]) -> str | None:
    """'run #2 of this network and settings gave 22.7 images/s (1.3× apart)' when the latest earlier run of the same
    network, image size and settings disagrees by more than UNSTEADY: each run's own rounds may agree while the
    machine was slower or faster as a whole from one run to the next."""
    key = (r.get('network'), _settings(r), (r.get('stamp') or {}).get('img_size'))
    for j, e in reversed(list(enumerate(earlier))):
        if not isinstance(e, dict) or (e.get('network'), _settings(e), (e.get('stamp') or {}).get('img_size')) != key:
            continue
        a, b = r.get('throughput') or 0, e.get('throughput') or 0
        if key[0] and a > 0 and b > 0 and max(a, b) / min(a, b) > UNSTEADY:
            return (
                f'run #{j + 1} of this network and settings gave {plain(b)} images/s ({max(a, b) / min(a, b):.1f}× '
                'apart), so the machine was not steady between runs'
            )
        return None  # compared with the latest such run only
    return None


def throughput_cell(r: dict) -> str:
    """'1,084.3 (1,001.2–1,120.0, 3 rounds)': images/s over all timed calls, then the slowest and fastest round."""
    rounds = r.get('round_throughputs') or []
    if len(rounds) < 2:
        return plain(r['throughput'])
    return f'{plain(r["throughput"])} ({plain(min(rounds))}–{plain(max(rounds))}, {len(rounds)} rounds)'


def memory_cell(r: dict) -> str:
    """Peak memory with what it is: CUDA peak allocated (weights included) or the CPU process's RSS growth."""
    if not r.get('peak_mem_bytes'):
        return '—'
    cuda = str(r.get('stamp', {}).get('device', '')).startswith('cuda')
    return f'{units.fmt_bytes(r["peak_mem_bytes"])} {"CUDA peak allocated" if cuda else "CPU RSS growth"}'


def compile_cell(st: dict) -> str:
    """'no', or the compile time and where the compiled model came from (kept from an earlier run, inductor's
    on-disk cache, or compiled afresh)."""
    if not st.get('compile'):
        return 'no'
    cache = st.get('compile_cache') or ''
    if cache.startswith('compiled model reused'):
        return 'yes (reused)'
    secs = st.get('compile_s')
    return f'yes, {secs:.1f} s' + (' (cache hit)' if 'cache' in cache and 'hit' in cache else '') if secs else 'yes'


def history_cells(i: int, r: dict, name: str | None = None, earlier: list[dict] | None = None) -> list[str]:
    """One history row from a bench result dict (explorer.measure.speed.BenchResult.to_dict() + name); `name`: as
    the table shows it (`prof.run_names`), else the row's own; `earlier`: the rows before it (`rerun_note`)."""
    from explorer.measure.speed import busy_note  # lazy: keeps app start-up light

    st = r.get('stamp', {})
    yes = lambda v: 'yes' if v else 'no'  # noqa: E731
    stamp = f'{st.get("device_name", "")}, {st.get("threads", "?")} threads, torch {st.get("torch", "?")}'
    warnings = [w for w in (busy_note(st), unsteady_note(r), rerun_note(r, earlier or [])) if w]
    if warnings:
        stamp = f'⚠ {"; ".join(warnings)}; {stamp}'
    return [
        str(i + 1),
        escape(r.get('name', '') if name is None else name),
        escape(str(st.get('device', ''))),
        escape(str(st.get('dtype', ''))),
        f'{st.get("batch_size", "")} × {st.get("img_size", "?")}²',
        yes(st.get('channels_last')),
        compile_cell(st),
        throughput_cell(r),
        f'{plain(r["latency_ms_median"])} ({plain(r["latency_ms_p10"])}–{plain(r["latency_ms_p90"])})',
        memory_cell(r),
        f'{100 * r["peak_fraction"]:.1f}%',
        f'<span title="{escape(json.dumps(st))}">{escape(stamp)}</span>',
    ]


def history_html(history: list[dict]) -> str:
    if not history:
        return '<div class="mfx-note">No measurement yet.</div>'
    head = ''.join(f'<th>{c}</th>' for c in HISTORY_COLUMNS)
    body = ''
    for i, (row, name) in enumerate(zip(history, prof.run_names(history))):
        cells = history_cells(i, row, name, history[:i])
        body += (
            '<tr>' + ''.join(f'<td{" class=l" if j in (1, 11) else ""}>{c}</td>' for j, c in enumerate(cells)) + '</tr>'
        )
    return (
        f'<table class="mfx-table" id="mfx-history"><tr>{head}</tr>{body}</table><div class="mfx-note">'
        'images/s = batch / median latency over all timed calls (random weights, inference mode); in brackets the '
        "slowest and the fastest round's own images/s: a wide bracket means the machine was not steady. "
        "Memory: on CUDA torch.cuda.max_memory_allocated (weights included); on CPU the growth of the process's "
        "peak resident set over the run (RSS: the model, its activations and the allocator's slack). Hover a "
        'stamp for the full '
        'record (threads, load, timer, versions).</div>'
    )


def measure_message(last: dict, earlier: list[dict] | None = None) -> str:
    """The line under the Measure button: the composer's figure, its spread, and why not to trust it when so; the
    design named as the table names it (`prof.run_names`)."""
    from explorer.measure.speed import busy_note  # lazy: keeps app start-up light

    shown = prof.run_names([*(earlier or []), last])[-1]
    warnings = [
        w for w in (busy_note(last.get('stamp', {})), unsteady_note(last), rerun_note(last, earlier or [])) if w
    ]
    return (
        f'<div class="mfx-note" id="mfx-measured">Measured: <b>{escape(shown)}</b> {throughput_cell(last)} '
        f"images/s, {100 * last['peak_fraction']:.1f}% of this device's measured matmul peak, "
        f'peak memory {memory_cell(last)}'
        + (f'. ⚠ {escape("; ".join(warnings))}: measure again when the machine is quieter.' if warnings else '.')
        + '</div>'
    )


def measure_target(spec: dict | None) -> str:
    """The line that says which design Measure will time (the tab said only "the composer's model")."""
    if not spec:
        return '<div class="mfx-note">Compose a valid network first: Measure times the design in Compose.</div>'
    size, chans = spec.get('img_size', 224), spec.get('in_chans', 3)
    return (
        f'<div class="mfx-note">Measure times <b>{escape(str(spec.get("name", "")))}</b> as composed: '
        f'{size}x{size} px, {chans} channel{"s" if chans != 1 else ""}.</div>'
    )


MAX_MEASURED_PRESETS = 8  # presets one Measure click may time beside the composer


def add_measure_tab(ctx: AppContext) -> None:
    with gr.Tab('Measure', id='measure') as tab:
        gr.HTML(
            '<div class="mfx-note">Times the composer\'s model (random weights, eval mode, no gradients). '
            'One measurement runs at a time for everybody, so timings never overlap.</div>'
        )
        with gr.Row():
            # the GPUs are listed when the tab opens: asking torch at start-up would make the page wait for it
            device = gr.Dropdown(choices=['auto', 'cpu'], value='auto', label='device', min_width=120)
            batch = gr.Number(value=8, precision=0, label='batch size', min_width=100)
            dtype = gr.Dropdown(choices=list(DTYPES), value='fp32', label='dtype', min_width=100)
            rounds = gr.Number(value=ROUNDS, precision=0, minimum=1, maximum=10, label='rounds (spread)', min_width=100)
            channels_last = gr.Checkbox(label='channels_last', min_width=120)
            compile_ = gr.Checkbox(label='torch.compile (slow first run)', min_width=160)
            presets = gr.Dropdown(
                choices=catalog.preset_choices(), multiselect=True, label='also measure presets', scale=2, min_width=200
            )
        run = gr.Button('Measure', variant='primary', elem_id='mfx-bench')
        target = gr.HTML(measure_target(ctx.spec.value), elem_id='mfx-bench-target')  # the first page's design
        result = gr.HTML(
            '<div class="mfx-note">Press Measure: warm-up, then the timed runs in rounds (at least 2 s in all); '
            'the progress shows here.</div>',
            min_height=60,
        )
        with gr.Row():
            table = gr.HTML(history_html([]), elem_id='mfx-history-box')
        chart = gr.Plot(show_label=False, elem_id='mfx-bench-chart')
        add_calibration(ctx, tab)

    # every change of the design, edits included (it followed the state's change only: after an edit the line named
    # the design before it until the tab was opened again); a line of text, no queue slot
    ctx.on_design_change(measure_target, ctx.spec, target, show_progress='hidden', queue=False, **PRIVATE)
    tab.select(measure_target, ctx.spec, target, show_progress='hidden', **PRIVATE)  # the page's first design too

    def list_devices(current):
        return gr.Dropdown(choices=prof.available_devices(), value=current)

    tab.select(list_devices, device, device, show_progress='hidden', **PRIVATE)

    def measure(spec, device, batch, dtype, rounds, channels_last, compile_, presets, history, progress=gr.Progress()):
        if not spec:
            raise gr.Error('Compose a valid network first.')
        try:
            rounds = _int_arg('rounds', rounds, 1, 10)
        except ValueError as e:
            raise user_error(e) from None
        try:  # one range, the server's (the timer's own limit, 4096, came first for a larger batch: two ranges)
            batch = _int_arg('batch size', batch, 1, Limits.from_env().max_batch)
        except ValueError as e:
            raise user_error(f'{e} (EXPLORER_MAX_BATCH)') from None
        if not isinstance(presets, (list, type(None))) or len(set(map(str, presets or []))) > MAX_MEASURED_PRESETS:
            raise user_error(f'also measure presets: choose at most {MAX_MEASURED_PRESETS}', title='Bad request')
        # each once, and a few: a list holding one preset 1,000 times held the speed slot for hours (each run has
        # its own budget, EXPLORER_MAX_BENCH_S, so the event's time is bounded by their number)
        names = list(dict.fromkeys(map(str, presets or [])))
        try:
            # named as the user knows them: the composer's design by its name ('composer:' named neither it nor the tab)
            targets = [(str(spec.get('name') or 'the design'), spec)] + [(p, catalog.get_preset(p)) for p in names]
        except (SpecError, ValueError, KeyError) as e:
            raise user_error(f'also measure presets: {e}', title='Bad request') from None
        history = list(history or [])
        mine = len(history)  # the composer's run: the line under the button reports it, not the last preset
        for k, (label, s) in enumerate(targets):

            def report(frac, desc=None, k=k, label=label):
                progress((k + max(0.0, min(1.0, frac))) / len(targets), desc=f'{label}: {desc or "timing"}')

            try:
                row = prof.bench(
                    s,
                    device=device,
                    batch_size=batch,
                    dtype=dtype,
                    channels_last=channels_last,
                    compile=compile_,
                    progress=report,
                    repeats=rounds,
                )
            except (SpecError, ValueError, RuntimeError) as e:
                raise user_error(f'{label}: {e}') from None
            history.append(row)
        figure = exportable(bench_figure(history), 'speed')
        return history, measure_message(history[mine], history[:mine]), history_html(history), figure

    run.click(
        SPEED_SLOTS.held(measure),
        [ctx.spec, device, batch, dtype, rounds, channels_last, compile_, presets, ctx.history],
        [ctx.history, result, table, chart],
        concurrency_limit=1,
        concurrency_id='bench',
        show_progress_on=result,
        **PRIVATE,
    )


# ---- compare --------------------------------------------------------------------------------------------
AXES = {'MACs': 'gmacs', 'params': 'params_m', 'throughput': 'throughput'}
CLICK_MODES = [('load it into the composer', 'load'), ('diff it against your design', 'diff')]
IMAGE_FORMATS = [('PNG', 'png'), ('SVG', 'svg')]
CSV_COLUMNS = ('kind', 'key', 'name', 'family', 'x_measure', 'x', 'top1', 'params', 'macs', 'source')
CURRENT = 'current'  # the key of the composer's design in the chart and the diff lists


def exportable(fig, name: str, image_format: str = 'png') -> PlotData:
    """A plotly figure for gr.Plot with a modebar config: its camera button saves `name`.png or .svg."""
    data = json.loads(fig.to_json())
    data['config'] = export_config(name, image_format)
    return PlotData(type='plotly', plot=json.dumps(data))


def preset_families() -> list[str]:
    return sorted({r['family'] for r in catalog.list_presets()})


SETTINGS = ('device', 'batch_size', 'dtype', 'memory_format', 'compile')  # what a throughput depends on


def _settings(row: dict) -> tuple:
    stamp = row.get('stamp') if isinstance(row.get('stamp'), dict) else {}
    return tuple(stamp.get(k) for k in SETTINGS)


def comparable(history) -> list[dict]:
    """The measurements the throughput axis plots: those made with the settings of the latest one (device,
    batch, dtype, memory format, compile); images/s under other settings do not compare."""
    rows = [r for r in history or [] if isinstance(r, dict) and r.get('throughput')]
    latest = _settings(rows[-1]) if rows else None
    return [r for r in rows if _settings(r) == latest]


def settings_text(history) -> str:
    """'cpu, batch 8, fp32, contiguous (NCHW)' for the latest measurement ('' when there is none)."""
    rows = comparable(history)
    if not rows:
        return ''
    device, batch, dtype, layout, compiled = _settings(rows[-1])
    return f'{device}, batch {batch}, {dtype}, {layout}' + (', compiled' if compiled else '')


def _throughput_by_preset(history: list[dict]) -> dict[str, float]:
    out = {}
    for row in comparable(history):
        if row.get('preset'):
            out[row['preset']] = row['throughput']  # the latest measurement wins
    return out


def _pins(pins) -> list[dict]:
    """The pinned designs that are well formed: [{'name': str, 'spec': dict}, ...] (others are left out)."""
    return [p for p in pins or [] if isinstance(p, dict) and isinstance(p.get('spec'), dict)]


def _design_row(kind: str, key: str, spec: dict, axis: str, history, report: dict | None = None) -> dict | None:
    """A design (the composer's or a pinned one) as a chart point, or None when it has no x on this axis."""
    try:
        report = report or prof.profile(spec)
    except SpecError:
        return None
    name = str(spec.get('name', ''))
    x = {'MACs': report['macs'] / 1e9, 'params': report['params'] / 1e6}.get(axis)
    if axis == 'throughput':  # matched by network: a name may be a preset's or a restored pin's
        network = prof.network_id(spec)
        mine = [r for r in comparable(history) if r.get('network') == network]
        x = mine[-1]['throughput'] if mine else None
    if x is None:
        return None
    top1 = (spec.get('meta') or {}).get('top1')
    source = 'published for this architecture' if top1 is not None else 'not trained on ImageNet-1k here'
    family = {'current': 'your design', 'pin': 'pinned'}[kind]
    return dict(
        kind=kind,
        key=key,
        name=name,
        family=family,
        x=x,
        top1=top1,
        params=report['params'],
        macs=report['macs'],
        source=source,
    )


def compare_rows(
    spec: dict | None, report: dict | None, axis: str, history=None, pins=None, families=None
) -> tuple[list[dict], list[str]]:
    """The Compare chart's points and the keys of the presets on its top-1 Pareto frontier.

    Presets of `families` (None: all) with their published top-1 (None where the source has none) against the
    counted x of `axis` ('MACs': GMACs at each model's own size, 'params': millions, 'throughput': images/s
    measured in this session, presets unmeasured are left out); then the composer's design (`spec`, `report`)
    and the pins.
    Each row: kind, key ('preset:<name>', 'current', 'pin:<index>'), name, family, x, top1, params, macs, source."""
    if axis not in AXES:
        raise ValueError(f'axis {axis!r}: choose one of {", ".join(AXES)}')
    x = f'x_{AXES[axis]}'
    points = [p for p in cmp.preset_points(_throughput_by_preset(history)) if p.get(x) is not None]
    if families is not None:
        points = [p for p in points if p['family'] in families]
    rows = [
        dict(
            kind='preset',
            key=f'preset:{p["name"]}',
            name=p['display_name'],
            family=p['family'],
            x=p[x],
            top1=p['top1'],
            params=p['params'],
            macs=p['macs'],
            source=p['source'],
        )
        for p in points
    ]
    front = [rows[i]['key'] for i in cmp.pareto_front(points, x, lower_x_better=axis != 'throughput')]
    designs = [_design_row('current', CURRENT, spec, axis, history, report)] if spec and report else []
    designs += [_design_row('pin', f'pin:{i}', p['spec'], axis, history) for i, p in enumerate(_pins(pins))]
    return rows + [d for d in designs if d], front


def accuracy_plot(spec, report, axis: str, history, pins=None, families=None, log_x: bool = False):
    """Top-1 of every preset against the chosen axis, the frontier, the composer's model and the pinned ones."""
    rows, front = compare_rows(spec, report, axis, history, pins, families)
    if axis == 'throughput' and not rows:
        return empty_figure('Nothing measured yet: measure your design or presets in the Measure tab.')
    title = cmp.X_AXES[AXES[axis]]
    if axis == 'throughput':
        title = title.replace('this session', f'this session: {settings_text(history)}')
    fig = accuracy_figure(rows, title, front, log_x=bool(log_x), higher_x_better=axis == 'throughput')
    if axis == 'throughput':  # the caption promises a star and diamonds: say why they are not there
        drawn = {r['key'] for r in rows}
        unmeasured_pins = sum(f'pin:{i}' not in drawn for i in range(len(_pins(pins))))
        # presets are drawn once measured (the Measure tab's "also measure presets"): a chart of one star read as
        # a bug (a review)
        absent = [] if any(r['kind'] == 'preset' for r in rows) else ['the presets']
        absent += ['your design'] if spec and report and CURRENT not in drawn else []
        if unmeasured_pins:
            absent.append(f'{unmeasured_pins} pinned design{"s" if unmeasured_pins > 1 else ""}')
        if absent:  # under the axis title, not over the slowest presets in the top-left corner
            how = 'Measure tab, "also measure presets"' if absent[0] == 'the presets' else 'Measure tab'
            fig.add_annotation(
                text=f'Not drawn: {", ".join(absent[:-1])}{" and " if len(absent) > 1 else ""}{absent[-1]}, '
                f'not measured with these settings ({how}).',
                showarrow=False,
                x=0,
                y=-0.2,
                xref='paper',
                yref='paper',
                xanchor='left',
                yanchor='top',
                font=dict(size=12, color='#475569'),
            )
            fig.update_layout(margin_b=max(fig.layout.margin.b or 0, 90))
    return fig


def _csv_cell(v) -> str:
    """A CSV cell; text a spreadsheet would read as a formula (=, +, -, @ first) gets a leading apostrophe."""
    if v is None:
        return ''
    text = str(v)
    return "'" + text if isinstance(v, str) and text[:1] in ('=', '+', '-', '@', '\t', '\r') else text


def rows_csv(rows: list[dict], axis: str) -> str:
    """The plotted points as CSV (CSV_COLUMNS; x in the unit of the chart's axis, params and MACs counted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [_csv_cell(r.get(c, cmp.X_AXES[AXES[axis]] if c == 'x_measure' else None)) for c in CSV_COLUMNS]
        )
    return out.getvalue()


def compare_view(spec, report, axis, history, pins, families, log_x, image_format='png'):
    """(the chart with its export config, the path of a CSV of exactly the plotted points)."""
    rows, _ = compare_rows(spec, report, axis, history, pins, families)
    fig = accuracy_plot(spec, report, axis, history, pins, families, log_x)
    text = rows_csv(rows, axis)
    stem = f'compare-{axis}-{hashlib.sha1(text.encode()).hexdigest()[:8]}'
    path = download_file(stem, '.csv', lambda p: p.write_text(text, encoding='utf-8'))
    return exportable(fig, f'compare-{axis}', image_format), path


def design_choices(spec, pins, uploaded=None) -> list[tuple[str, str]]:
    """(label, key) of every design the diff can take: the composer's, the pins, an uploaded one, the presets."""
    out = [(f'Your design › {str(spec["name"])[:60]}', CURRENT)] if spec else []
    out += [(f'Pinned › {str(p["name"])[:60]}', f'pin:{i}') for i, p in enumerate(_pins(pins))]
    if uploaded:
        out.append((f'Uploaded › {str(uploaded.get("name", ""))[:60]}', 'upload'))
    return out + [(f'{r["display_name"]} ({r["name"]})', f'preset:{r["name"]}') for r in catalog.list_presets()]


def design_spec(key, spec, pins, uploaded=None) -> dict:
    """The spec dict a chart or list key names (see design_choices); ValueError when it names nothing."""
    key = _str_arg('design', key).split('#', 1)[0]  # a click carries '#<count>' so that each click is news
    if key == CURRENT and spec:
        return spec
    if key == 'upload' and uploaded:
        return uploaded
    if key.startswith('pin:') and key[4:].isdigit() and int(key[4:]) < len(_pins(pins)):
        return _pins(pins)[int(key[4:])]['spec']
    if key.startswith('preset:'):
        return catalog.get_preset(key[7:])
    raise ValueError(f'design {key[:80]!r} is not in the list (your design, a pin, an upload or a preset)')


# a click on a chart point writes its key into a hidden textbox (re-attached whenever plotly redraws the chart)
COMPARE_JS = """
() => {
  let clicks = 0;
  const hook = () => {
    const plot = document.querySelector('#mfx-scatter .js-plotly-plot');
    if (!plot || plot.__mfxCompareHooked || !plot.on) return;
    plot.__mfxCompareHooked = true;
    plot.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p || !p.customdata) return;
      const box = document.querySelector('#mfx-compare-pick textarea, #mfx-compare-pick input');
      if (!box) return;
      clicks += 1;
      box.value = String(p.customdata[0]) + '#' + clicks;
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
  hook();
}
"""


def add_compare_tab(ctx: AppContext) -> None:
    families_all = preset_families()
    with gr.Tab('Compare', id='compare') as tab:
        with gr.Row(elem_classes='mfx-compare-bar'):
            axis = gr.Radio(list(AXES), value='MACs', label='top-1 against', scale=0, min_width=340, elem_id='mfx-axis')
            log_x = gr.Checkbox(label='log x axis', value=False, scale=0, min_width=120, elem_id='mfx-log')
            mode = gr.Radio(
                CLICK_MODES, value='load', label='a click on a point', scale=0, min_width=420, elem_id='mfx-click-mode'
            )
            image_format = gr.Radio(
                IMAGE_FORMATS,
                value='png',
                label='camera button saves',
                scale=0,
                min_width=180,
                elem_id='mfx-image-format',
            )
        with gr.Row(elem_classes='mfx-compare-bar'):
            families = gr.CheckboxGroup(
                families_all, value=families_all, label='preset families shown', elem_id='mfx-families', scale=1
            )
            csv_file = gr.DownloadButton(
                'Plotted data (CSV)', size='sm', scale=0, min_width=150, elem_id='mfx-compare-csv'
            )
        gr.HTML(
            '<div class="mfx-note">Presets with their published ImageNet-1k top-1 (open circles on the '
            '"unknown" row: none published), cost counted by this package at each preset\'s resolution; the star '
            'is your design, diamonds are your pinned designs (their top-1 is unknown unless they are a preset '
            'unchanged). Hover a point for its details, click it to load or diff it.</div>'
        )
        scatter = gr.Plot(show_label=False, elem_id='mfx-scatter')
        pick = gr.Textbox(visible='hidden', elem_id='mfx-compare-pick')  # the clicked point's key, by COMPARE_JS
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown('**Scaling with input resolution** (your model first)')
                with gr.Row():
                    sizes = gr.Textbox(value=SCALING_SIZES, label='resolutions (px)', scale=2)
                    others = gr.Dropdown(
                        choices=catalog.preset_choices(),
                        multiselect=True,
                        label='presets',
                        value=['poolformerv2_s12', 'convformer_s18'],
                        scale=3,
                    )
                scale_plot = gr.Plot(show_label=False)
            with gr.Column(scale=1):
                gr.Markdown('**Diff: per-stage Δ, B − A** (any two of your design, your pins and the presets)')
                with gr.Row():
                    diff_a = gr.Dropdown(label='A', scale=3, elem_id='mfx-diff-a')
                    diff_b = gr.Dropdown(label='B', scale=3, elem_id='mfx-diff-b')
                    upload = gr.UploadButton('B: upload JSON', file_types=['.json'], scale=1, size='md', min_width=150)
                diff_box = gr.HTML(elem_id='mfx-diff-box')
                diff_plot = gr.Plot(show_label=False)
        uploaded = gr.State(None)
        load_pick, diff_pick = gr.State(None), gr.State(None)  # a clicked point's key, by the action chosen
        pins = ctx.pins if ctx.pins is not None else gr.State([])
    tabs = ctx.extras.get('tabs')

    def scaling_plot(spec, sizes_text, names, image_format):
        if not spec:
            return gr.skip()
        if not isinstance(sizes_text, str) or len(sizes_text) > 2000:  # 64 sizes of four digits fit easily
            raise user_error(f'resolutions: {show(sizes_text)} must be whole numbers separated by commas')
        try:
            sizes = [int(v) for v in sizes_text.replace(';', ',').split(',') if v.strip()]
        except ValueError:
            raise user_error(f'resolutions: {show(sizes_text)} must be whole numbers separated by commas') from None
        if not 1 <= len(sizes) <= 64 or any(not 8 <= v <= 1536 for v in sizes):  # as /scaling
            raise gr.Error('resolutions: give 1 to 64 sizes in [8, 1536]', print_exception=False)
        if not isinstance(names, (list, type(None))) or len(names or []) > len(catalog.preset_names()):
            raise user_error('presets: a list of preset names', title='Bad request')
        try:
            presets = {n: catalog.get_preset(n) for n in dict.fromkeys(map(str, names or []))}
        except SpecError as e:
            raise user_error(e, title='Bad request') from None
        yours = f'yours: {spec["name"]}'
        curves = cmp.scaling({yours: spec, **presets}, sizes)
        return exportable(scaling_figure(curves, highlight=yours), 'scaling', image_format)

    def diff_view(a, b, spec, pins, uploaded, image_format):
        if not a or not b:
            return gr.skip(), gr.skip()
        try:
            d = cmp.diff(design_spec(a, spec, pins, uploaded), design_spec(b, spec, pins, uploaded))
        except (SpecError, ValueError) as e:
            raise user_error(e) from None
        return diff_html(d), exportable(diff_figure(d), 'diff', image_format)

    def diff_lists(spec, pins, uploaded, a, b):
        """Both lists with the current designs; A stays (your design first), B stays (ConvFormer-S18 first)."""
        choices = design_choices(spec, pins, uploaded)
        keys = {k for _, k in choices}
        a = a if a in keys else (CURRENT if spec else 'preset:poolformer_s12')
        b = b if b in keys else 'preset:convformer_s18'
        return gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=choices, value=b)

    def route(key, mode):
        """A click goes to the chosen action: 'load' puts the design in the composer, 'diff' makes it B."""
        if not key:
            return gr.skip(), gr.skip()
        return (gr.skip(), key) if mode == 'diff' else (key, gr.skip())

    def load_clicked(key, spec, pins, uploaded):
        try:
            chosen = copy.deepcopy(design_spec(key, spec, pins, uploaded))
        except (SpecError, ValueError) as e:
            raise user_error(e) from None
        return (chosen, gr.Tabs(selected='compose')) if tabs is not None else chosen

    def diff_clicked(key, spec, pins, uploaded):
        choices = design_choices(spec, pins, uploaded)
        b = str(key).split('#', 1)[0]
        if b not in {k for _, k in choices}:
            raise user_error(f'design {b[:80]!r} is not in the list', title='Cannot diff')
        return gr.Dropdown(choices=choices, value=CURRENT if spec else b), gr.Dropdown(choices=choices, value=b)

    plot_in = [ctx.spec, ctx.report, axis, ctx.history, pins, families, log_x, image_format]
    diff_in = [diff_a, diff_b, ctx.spec, pins, uploaded, image_format]
    lists = dict(fn=diff_lists, inputs=[ctx.spec, pins, uploaded, diff_a, diff_b], outputs=[diff_a, diff_b])
    tab.select(compare_view, plot_in, [scatter, csv_file], **PRIVATE).then(
        scaling_plot, [ctx.spec, sizes, others, image_format], scale_plot, **PRIVATE
    ).then(**lists, **PRIVATE).then(diff_view, diff_in, [diff_box, diff_plot], **PRIVATE)
    gr.on(
        [axis.input, families.input, log_x.input, image_format.input, pins.change],
        compare_view,
        plot_in,
        [scatter, csv_file],
        **PRIVATE,
    )
    pins.change(**lists, **PRIVATE)
    gr.on(
        [sizes.submit, others.input, image_format.input],
        scaling_plot,
        [ctx.spec, sizes, others, image_format],
        scale_plot,
        **PRIVATE,
    )
    gr.on([diff_a.input, diff_b.input, image_format.input], diff_view, diff_in, [diff_box, diff_plot], **PRIVATE)

    def take_upload(file, spec, pins):
        spec_b = read_uploaded_spec(file)
        choices = design_choices(spec, pins, spec_b)
        return spec_b, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices, value='upload')

    upload.upload(take_upload, [upload, ctx.spec, pins], [uploaded, diff_a, diff_b], **PRIVATE).success(
        diff_view, diff_in, [diff_box, diff_plot], **PRIVATE
    )

    # a click: its key goes to the chosen action's state, whose change loads the design or diffs it
    pick.change(route, [pick, mode], [load_pick, diff_pick], **PRIVATE)
    diff_pick.change(diff_clicked, [diff_pick, ctx.spec, pins, uploaded], [diff_a, diff_b], **PRIVATE).success(
        diff_view, diff_in, [diff_box, diff_plot], **PRIVATE
    )
    if ctx.load_spec is not None:
        ctx.load_spec(load_pick.change, load_clicked, [load_pick, ctx.spec, pins, uploaded], [tabs] if tabs else [])
    ctx.demo.load(None, None, None, js=COMPARE_JS, **PRIVATE)


def diff_html(d: dict) -> str:
    head = ['stage', f'A: {d["a"]}', f'B: {d["b"]}', 'Δ params', 'Δ MACs']
    body = ''

    def desc(r, side):
        cost = f'{units.fmt_count(r[f"params_{side}"])} / {units.fmt_count(r[f"macs_{side}"])}'
        if r.get(f'depth_{side}'):
            return f'{r[f"mixer_{side}"]} ×{r[f"depth_{side}"]} @ {r[f"dim_{side}"]} · {cost}'
        return '—' if r.get(f'mixer_{side}') == '—' else cost

    for r in d['rows'] + [{**d['total'], 'stage': 'total', 'mixer_a': '', 'mixer_b': ''}]:
        body += (
            f'<tr><td>{escape(str(r["stage"]))}</td><td class="l">{escape(desc(r, "a"))}</td>'
            f'<td class="l">{escape(desc(r, "b"))}</td><td>{r["d_params"]:+,}</td><td>{r["d_macs"]:+,}</td></tr>'
        )
    return (
        f'<table class="mfx-table" id="mfx-diff"><tr>{"".join(f"<th>{escape(c)}</th>" for c in head)}</tr>{body}'
        f'</table><div class="mfx-note">params / MACs per side; MACs: one multiply-accumulate = 1, one image '
        f"at each spec's own size.</div>"
    )


# ---- share ----------------------------------------------------------------------------------------------
def add_share_tab(ctx: AppContext) -> None:
    with gr.Tab('Share', id='share'):
        url = gr.Textbox(
            label='link that restores this composition', buttons=['copy'], elem_id='mfx-share-url', interactive=False
        )
        with gr.Row():
            download = gr.DownloadButton(
                'Download spec JSON', elem_id='mfx-download', scale=0, min_width=220, size='md'
            )
            upload = gr.UploadButton(
                'Upload spec JSON', file_types=['.json'], elem_id='mfx-upload', scale=0, min_width=220, size='md'
            )
            gr.HTML(
                '<div class="mfx-note">The link holds the whole composition (URL-safe base64 of its compact '
                'JSON); the address bar follows every valid change, so a reload keeps your design. Pins are kept '
                'in this browser until the server restarts, the undo history only as long as the page: keep a '
                'design that matters as its link or spec file.</div>'
            )
        with gr.Row():
            snippet = gr.Code(language='python', label='Python: rebuild this model', elem_id='mfx-snippet')
            as_json = gr.Code(language='json', label='spec JSON', max_lines=30)

    def share_values(spec):
        if not spec:
            return [gr.skip()] * 4
        link = '?spec=' + share.encode_share(spec)
        return link, spec_download(spec), share.python_snippet(spec), share.spec_json(spec)

    show_initially([url, download, snippet, as_json], share_values(ctx.spec.value))  # the default design's
    outs = [url, download, snippet, as_json]
    ctx.follow_design(
        lambda trigger: trigger(share_values, ctx.spec, outs, show_progress='hidden', **PRIVATE).then(
            None, url, url, js=SHARE_JS, **PRIVATE
        )
    )
    ctx.load_spec(upload.upload, read_uploaded_spec, [upload])

    def initial(request: gr.Request):
        """The design of the link the page was opened with: ?spec=<token> (a shared composition) or ?preset=<name>;
        None without one (the page already shows the default: its values were set at build time); a SpecError
        says why one cannot be read."""
        params = dict(request.query_params) if request is not None else {}
        if params.get('spec'):
            return share.decode_share(params['spec'])
        if params.get('preset'):
            return catalog.get_preset(params['preset'])
        return None

    ctx.extras['restore_link'](initial)  # the Compose tab shows and counts it


# ---- API ------------------------------------------------------------------------------------------------
def _int_arg(name: str, value, low: int, high: int) -> int:
    """An integer argument from a client (JSON numbers may arrive as 3.0), or a ValueError naming it."""
    value = units.whole_number(value)  # 1e308 stays 1e+308 in the message
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f'{name}: {show(value)} must be an integer in [{low}, {high}]')
    return value


def _str_arg(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f'{name}: {show(value)} must be a non-empty string')
    return value


def api_list_presets() -> list[dict]:
    """Every preset with its published top-1 (%), params (M), GMACs and source."""
    return catalog.list_presets()


def api_get_preset(name: str) -> dict:
    """The spec dict of a preset."""
    return catalog.get_preset(_str_arg('name', name))


def api_profile(spec: dict | str, img_size: int | None = None) -> dict:
    """Analytic params and MACs (instant, no model build), per stage and per component. `spec`: a spec dict,
    its JSON text or a preset name. MACs: one multiply-accumulate = 1, batch 1."""
    return prof.profile(spec, img_size)


def api_verify(spec: dict | str, img_size: int | None = None) -> dict:
    """fvcore's count of the built model (slower; cached per spec)."""
    return verify_in_helper(spec, img_size)  # stopped past EXPLORER_MAX_VERIFY_S


def api_validate(spec: dict | str) -> list[list[str]]:
    """[[field path, message], ...]; [] when valid."""
    return catalog.validate(spec)


def api_memory(spec: dict | str, batch_size: int = 1, dtype: str = 'fp32', img_size: int | None = None) -> dict:
    """Activation memory (bytes) per stage and in total."""
    return prof.memory(spec, batch_size, dtype, img_size)


def api_bench(
    spec: dict | str,
    device: str = 'auto',
    batch_size: int = 8,
    dtype: str = 'fp32',
    channels_last: bool = False,
    compile: bool = False,
    repeats: int = 1,
) -> dict:
    """Throughput and latency of the built model; one measurement at a time server-wide. `repeats` (1 to 10):
    rounds of timed runs; `round_throughputs` gives each round's images/s (the spread)."""
    repeats = _int_arg('repeats', repeats, 1, 10)
    for name, flag in (('channels_last', channels_last), ('compile', compile)):
        if not isinstance(flag, bool):  # 'false' is truthy: it must not turn a layout or a compile on
            raise ValueError(f'{name}: {str(flag)[:40]!r} must be true or false')
    return prof.bench(spec, device, batch_size, dtype, channels_last, compile, repeats=repeats)


def api_diff(spec_a: dict | str, spec_b: dict | str, img_size: int | None = None) -> dict:
    """Per-stage Δparams and ΔMACs, B − A."""
    return cmp.diff(spec_a, spec_b, img_size)


def api_scaling(spec: dict | str, sizes: list[int]) -> list[dict]:
    """params, MACs and activation bytes at each input size the spec accepts."""
    if not isinstance(sizes, list) or not 1 <= len(sizes) <= 64:
        raise ValueError(f'sizes: {sizes!r} must be a list of 1 to 64 input sizes')
    sizes = [_int_arg(f'sizes[{i}]', v, 8, 1536) for i, v in enumerate(sizes)]
    return cmp.scaling({'spec': spec}, sizes)['spec']


def api_compare(axis: str = 'gmacs') -> dict:
    """All presets as points (published figures + counted cost) and the names on the top-1 Pareto frontier
    against `axis` ('gmacs' or 'params_m', counted)."""
    if axis not in ('gmacs', 'params_m'):
        raise ValueError(f'axis {axis!r}: choose gmacs or params_m')
    points = cmp.preset_points()
    return {'points': points, 'frontier': [points[i]['name'] for i in cmp.pareto_front(points, f'x_{axis}')]}


MAX_API_DESIGNS = 32


def api_compare_points(axis: str = 'MACs', designs: list | None = None, families: list | None = None) -> dict:
    """The Compare chart's data: every preset point (published top-1, counted x), `designs` as pinned points, the
    keys on the presets' top-1 Pareto frontier, and the same points as CSV text. axis: 'MACs' (GMACs, own input size),
    'params' (millions) or 'throughput' (images/s measured in this server session: none through the API).
    designs: up to 32 of {'name': str, 'spec': spec} or spec dicts (JSON text, preset names). families: preset
    families to keep (None: all). Each row: kind, key, name, family, x, top1, params, macs, source."""
    if not isinstance(axis, str) or axis not in AXES:
        raise ValueError(f'axis {axis!r}: choose one of {", ".join(AXES)}')
    if designs is not None and (not isinstance(designs, list) or len(designs) > MAX_API_DESIGNS):
        raise ValueError(f'designs: must be a list of at most {MAX_API_DESIGNS} specs')
    if families is not None and (not isinstance(families, list) or not all(isinstance(f, str) for f in families)):
        raise ValueError(
            f'families: {str(families)[:80]!r} must be a list of family names ({", ".join(preset_families())})'
        )
    known = preset_families()
    families = None if families is None else list(dict.fromkeys(families))  # each once: the list is a set
    unknown = [f for f in families or [] if f not in known]
    if unknown:  # a misspelt family would silently leave the chart without presets
        named = ', '.join(repr(f[:40]) for f in unknown[:5])
        raise ValueError(f'families: {named} not known; choose from {", ".join(known)}')
    pins = []
    for i, d in enumerate(designs or []):
        name = d.get('name') if isinstance(d, dict) and 'spec' in d else None  # {'name', 'spec'}: drawn by name
        d = d['spec'] if isinstance(d, dict) and 'spec' in d else d
        if not isinstance(d, (dict, str)):
            raise ValueError(f'designs[{i}]: {str(d)[:40]!r} must be a spec dict, its JSON text or a preset name')
        try:
            spec = catalog.with_published_meta(catalog.parse_spec(d)).to_dict()  # no top-1 a client made up
        except SpecError as e:
            raise SpecError([(f'designs[{i}].{p}'.rstrip('.'), m) for p, m in e.named], e.omitted) from None
        if name is not None:
            try:
                spec = catalog.parse_spec({**spec, 'name': name}).to_dict()
            except SpecError as e:
                raise ValueError(f'designs[{i}].name: {e.named[0][1]}') from None
        pins.append({'name': spec['name'], 'spec': spec})
    rows, front = compare_rows(None, None, axis, [], pins, families)
    return {'rows': rows, 'frontier': front, 'csv': rows_csv(rows, axis)}


def api_share(spec: dict | str) -> str:
    """The value of the app's ?spec= query parameter for this spec."""
    return share.encode_share(spec)


def api_unshare(token: str) -> dict:
    """The spec dict behind a ?spec= value."""
    return share.decode_share(_str_arg('token', token))


def api_snippet(spec: dict | str) -> str:
    """Python code that rebuilds the model."""
    return share.python_snippet(spec)


def _published(d: dict) -> dict:
    """`d` with the published figures of the preset it matches, else none: a changed design is not that preset
    (and `meta`, checked by no rule, would echo what a client sent: 2**64 is more than the response can carry)."""
    name = catalog.matching_preset(d)
    return {**d, 'meta': catalog.get_preset(name)['meta'] if name else {}}


def _valid_edit(d: dict, what: str) -> dict:
    """`d` if it is a valid spec; else a SpecError naming each field the edit left invalid (the composer shows the
    same fields marked; an endpoint answering a spec the package refuses would fail at the client's next call)."""
    try:
        ArchSpec.from_dict(d)
    except SpecError as e:
        raise SpecError([(path, f'{what} leaves {message}') for path, message in e.named], e.omitted) from None
    return d


def api_add_stage(spec: dict | str) -> dict:
    """The spec with one more stage (the last one's mixer, depth 2, twice its width), as the composer does."""
    return _published(_valid_edit(spec_form.add_stage(catalog.parse_spec(spec).to_dict()), 'adding a stage'))


def api_remove_stage(spec: dict | str, index: int) -> dict:
    """The spec without stage `index` (0-based), per-stage lists kept consistent; refused when what is left is
    not a valid network (a stage left without downsampling beside a stage of another width), naming the field."""
    i = _int_arg('index', index, 0, 5)
    removed = spec_form.remove_stage(catalog.parse_spec(spec).to_dict(), i)
    return _published(_valid_edit(removed, f'removing stage {i} (S{i + 1})'))


def api_diagram(spec: dict | str) -> str:
    """SVG picture of the network."""
    return network_svg(catalog.parse_spec(spec))


API = {
    'list_presets': api_list_presets,
    'get_preset': api_get_preset,
    'profile': api_profile,
    'verify': api_verify,
    'validate': api_validate,
    'memory': api_memory,
    'bench': api_bench,
    'diff': api_diff,
    'scaling': api_scaling,
    'compare': api_compare,
    'compare_points': api_compare_points,
    'share': api_share,
    'unshare': api_unshare,
    'snippet': api_snippet,
    'diagram': api_diagram,
    'add_stage': api_add_stage,
    'remove_stage': api_remove_stage,
}


def register_api() -> None:
    for name, fn in API.items():
        extra = dict(concurrency_limit=1, concurrency_id='bench') if name == 'bench' else {}
        if name == 'verify':
            extra = dict(concurrency_limit=1, concurrency_id='verify')
        slots = {'bench': SPEED_SLOTS, 'verify': VERIFY_SLOTS}.get(name)  # held by the work, cancelled or not
        gr.api(endpoint(slots.held(fn) if slots else fn), api_name=name, **extra)


__all__ = ['add_measure_tab', 'add_compare_tab', 'add_share_tab', 'register_api', 'API']
