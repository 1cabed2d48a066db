"""The Measure, Compare and Share tabs, the page-load restore, and the named API endpoints."""

from __future__ import annotations

import functools
import json
import logging
from html import escape

import gradio as gr

from explorer.app import form as spec_form
from explorer.app.context import (
    AppContext,
    api_error,
    html_text,
    load_model_code,
    read_uploaded_spec,
    spec_download,
    user_error,
)
from explorer.core import catalog, share
from explorer.core.spec import SpecError
from explorer.measure import compare as cmp
from explorer.measure import profile as prof
from explorer.measure import units
from explorer.viz.diagram import network_svg
from explorer.viz.plots import accuracy_figure, bench_figure, diff_figure, empty_figure, scaling_figure

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
    'batch',
    'ch.-last',
    'compile',
    'images/s',
    'latency ms p50 (p10–p90)',
    'memory',
    'of matmul peak',
    'stamp',
)


def plain(v: float) -> str:
    """A measured number as people write it: 1,084.3 or 3.42, never 1.08e+03."""
    return f'{v:,.1f}' if abs(v) >= 100 else f'{v:.3g}'


def busy_note(stamp: dict) -> str | None:
    """'busy CPU: load 3.1 on 2 cores' when the load average around a measurement exceeded the core count (other
    work shared the CPU: the figure is low and noisy), else None."""
    cores = stamp.get('cpu_count') or 0
    loads = [v[0] for v in (stamp.get('loadavg_before'), stamp.get('loadavg_after')) if v]
    if cores and loads and max(loads) > cores:
        return f'busy CPU: load {max(loads):.1f} on {cores} cores, so this figure is low and noisy'
    return None


def history_cells(i: int, r: dict) -> list[str]:
    """One history row from a bench result dict (explorer.measure.speed.BenchResult.to_dict() + name)."""
    st = r.get('stamp', {})
    yes = lambda v: 'yes' if v else 'no'  # noqa: E731
    what = 'CUDA peak allocated' if str(st.get('device', '')).startswith('cuda') else 'CPU RSS growth'
    mem = f'{units.fmt_bytes(r["peak_mem_bytes"])} {what}' if r.get('peak_mem_bytes') else '—'
    stamp = f'{st.get("device_name", "")}, {st.get("threads", "?")} threads, torch {st.get("torch", "?")}'
    busy = busy_note(st)
    if busy:
        stamp = f'⚠ {busy}; {stamp}'
    return [
        str(i + 1),
        escape(r.get('name', '')),
        escape(str(st.get('device', ''))),
        escape(str(st.get('dtype', ''))),
        str(st.get('batch_size', '')),
        yes(st.get('channels_last')),
        yes(st.get('compile')),
        plain(r['throughput']),
        f'{plain(r["latency_ms_median"])} ({plain(r["latency_ms_p10"])}–{plain(r["latency_ms_p90"])})',
        mem,
        f'{100 * r["peak_fraction"]:.1f}%',
        f'<span title="{escape(json.dumps(st))}">{escape(stamp)}</span>',
    ]


def history_html(history: list[dict]) -> str:
    if not history:
        return '<div class="mfx-note">No measurement yet.</div>'
    head = ''.join(f'<th>{c}</th>' for c in HISTORY_COLUMNS)
    body = ''
    for i, row in enumerate(history):
        cells = history_cells(i, row)
        body += (
            '<tr>' + ''.join(f'<td{" class=l" if j in (1, 11) else ""}>{c}</td>' for j, c in enumerate(cells)) + '</tr>'
        )
    return (
        f'<table class="mfx-table" id="mfx-history"><tr>{head}</tr>{body}</table><div class="mfx-note">'
        'Throughput = batch / median latency; random weights, inference mode. Hover a stamp for the full '
        'record (threads, load, timer, versions).</div>'
    )


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
            channels_last = gr.Checkbox(label='channels_last', min_width=120)
            compile_ = gr.Checkbox(label='torch.compile (slow first run)', min_width=160)
            presets = gr.Dropdown(
                choices=catalog.preset_choices(), multiselect=True, label='also measure presets', scale=2, min_width=200
            )
        run = gr.Button('Measure', variant='primary', elem_id='mfx-bench')
        result = gr.HTML(
            '<div class="mfx-note">Press Measure: warm-up, then timed runs for at least 2 s; the '
            'progress shows here.</div>',
            min_height=60,
        )
        with gr.Row():
            table = gr.HTML(history_html([]), elem_id='mfx-history-box')
        chart = gr.Plot(show_label=False)

    def list_devices(current):
        return gr.Dropdown(choices=prof.available_devices(), value=current)

    tab.select(list_devices, device, device, show_progress='hidden', **PRIVATE)

    def measure(spec, device, batch, dtype, channels_last, compile_, presets, history, progress=gr.Progress()):
        if not spec:
            raise gr.Error('Compose a valid network first.')
        targets = [('composer', spec)] + [(p, catalog.get_preset(p)) for p in presets or []]
        history = list(history or [])
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
                )
            except (SpecError, ValueError, RuntimeError) as e:
                raise user_error(f'{label}: {e}') from None
            history.append(row)
        last = history[-1]
        busy = busy_note(last.get('stamp', {}))
        msg = (
            f'<div class="mfx-note">Last: <b>{escape(last["name"])}</b> {plain(last["throughput"])} images/s, '
            f"{100 * last['peak_fraction']:.1f}% of this device's measured matmul peak"
            + (f'. ⚠ {escape(busy)}: measure again when the machine is quieter.' if busy else '.')
            + '</div>'
        )
        return history, msg, history_html(history), bench_figure(history)

    run.click(
        measure,
        [ctx.spec, device, batch, dtype, channels_last, compile_, presets, ctx.history],
        [ctx.history, result, table, chart],
        concurrency_limit=1,
        concurrency_id='bench',
        show_progress_on=result,
        **PRIVATE,
    )


# ---- compare --------------------------------------------------------------------------------------------
def _throughput_by_preset(history: list[dict]) -> dict[str, float]:
    out = {}
    for row in history or []:
        if row.get('preset') and row.get('throughput'):
            out[row['preset']] = row['throughput']  # the latest measurement wins
    return out


def accuracy_plot(spec: dict | None, report: dict | None, axis: str, history: list[dict] | None):
    """Top-1 of every preset against the chosen axis, the frontier, and the composer's model."""
    x = {'MACs': 'x_gmacs', 'params': 'x_params_m', 'throughput': 'x_throughput'}[axis]
    points = cmp.preset_points(_throughput_by_preset(history))
    front = cmp.pareto_front(points, x, lower_x_better=axis != 'throughput')
    user = None
    if spec and report:
        top1 = (spec.get('meta') or {}).get('top1')
        ux = {'MACs': report['macs'] / 1e9, 'params': report['params'] / 1e6}.get(axis)
        if axis == 'throughput':
            mine = [r for r in history or [] if r.get('name') == spec['name'] and r.get('throughput')]
            ux = mine[-1]['throughput'] if mine else None
        user = {'name': spec['name'], 'x': ux, 'top1': top1}
    title = cmp.X_AXES[x[2:]]
    if axis == 'throughput' and not any(p['x_throughput'] for p in points):
        return empty_figure('No preset measured yet: pick presets under "also measure presets" in the Measure tab.')
    return accuracy_figure(points, x, title, front, user)


def add_compare_tab(ctx: AppContext) -> None:
    with gr.Tab('Compare', id='compare') as tab:
        with gr.Row():
            axis = gr.Radio(
                ['MACs', 'params', 'throughput'], value='MACs', label='top-1 against', scale=0, min_width=300
            )
            gr.HTML(
                '<div class="mfx-note">Presets with a published ImageNet-1k top-1 (hover for the source); '
                'cost counted by this package at 224². The dashed line or star is your composition.</div>'
            )
        scatter = gr.Plot(show_label=False, elem_id='mfx-scatter')
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
                gr.Markdown('**Diff: per-stage Δ against another spec** (B − A, A = your composition)')
                with gr.Row():
                    other = gr.Dropdown(
                        choices=catalog.preset_choices(), value='convformer_s18', label='B: preset', scale=3
                    )
                    upload = gr.UploadButton('B: upload JSON', file_types=['.json'], scale=1, size='md', min_width=150)
                diff_box = gr.HTML()
                diff_plot = gr.Plot(show_label=False)
        other_spec = gr.State(None)

    def scaling_plot(spec, sizes_text, names):
        if not spec:
            return gr.skip()
        try:
            sizes = [int(v) for v in sizes_text.replace(';', ',').split(',') if v.strip()]
        except ValueError:
            raise user_error(f'resolutions: {sizes_text!r} must be whole numbers separated by commas') from None
        if not sizes or any(not 8 <= v <= 1536 for v in sizes):
            raise gr.Error('resolutions: give 1 or more sizes in [8, 1536]', print_exception=False)
        specs = {f'yours: {spec["name"]}': spec, **{n: catalog.get_preset(n) for n in names or []}}
        return scaling_figure(cmp.scaling(specs, sizes))

    def diff_view(spec, b_spec):
        if not spec or not b_spec:
            return gr.skip(), gr.skip()
        d = cmp.diff(spec, b_spec)
        return diff_html(d), diff_figure(d)

    def pick_other(name):
        return catalog.get_preset(_str_arg('name', name)) if name else gr.skip()

    plot_in = [ctx.spec, ctx.report, axis, ctx.history]
    tab.select(accuracy_plot, plot_in, scatter, **PRIVATE).then(
        scaling_plot, [ctx.spec, sizes, others], scale_plot, **PRIVATE
    ).then(pick_other, other, other_spec, **PRIVATE).then(
        diff_view, [ctx.spec, other_spec], [diff_box, diff_plot], **PRIVATE
    )
    axis.input(accuracy_plot, plot_in, scatter, **PRIVATE)
    gr.on([sizes.submit, others.input], scaling_plot, [ctx.spec, sizes, others], scale_plot, **PRIVATE)
    other.input(pick_other, other, other_spec, **PRIVATE).then(
        diff_view, [ctx.spec, other_spec], [diff_box, diff_plot], **PRIVATE
    )
    upload.upload(read_uploaded_spec, upload, other_spec, **PRIVATE).success(
        diff_view, [ctx.spec, other_spec], [diff_box, diff_plot], **PRIVATE
    )


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
                'JSON); the address bar follows every valid change, so a reload keeps your work.</div>'
            )
        with gr.Row():
            snippet = gr.Code(language='python', label='Python: rebuild this model', elem_id='mfx-snippet')
            as_json = gr.Code(language='json', label='spec JSON', max_lines=30)

    def share_values(spec):
        if not spec:
            return [gr.skip()] * 4
        link = '?spec=' + share.encode_share(spec)
        return link, spec_download(spec), share.python_snippet(spec), share.spec_json(spec)

    ctx.spec.change(share_values, ctx.spec, [url, download, snippet, as_json], show_progress='hidden', **PRIVATE).then(
        None, url, url, js=SHARE_JS, **PRIVATE
    )

    ctx.load_spec(upload.upload(read_uploaded_spec, upload, ctx.spec, **PRIVATE))

    def initial(request: gr.Request):
        """?spec=<token> restores a shared composition, ?preset=<name> opens a preset; else the default."""
        params = dict(request.query_params) if request is not None else {}
        try:
            if params.get('spec'):
                return share.decode_share(params['spec'])
            if params.get('preset'):
                return catalog.get_preset(params['preset'])
        except SpecError as e:
            gr.Warning(html_text(f'Could not restore the link: {e}'))
        return catalog.get_preset(catalog.DEFAULT_PRESET)

    ctx.load_spec(ctx.demo.load(initial, None, ctx.spec, **PRIVATE))


# ---- API ------------------------------------------------------------------------------------------------
def _api(fn):
    """Expose a handler as an endpoint: SpecError and bad values become a clean error for the client. Anything
    else is still answered with a message naming the endpoint (never Gradio's generic error), and logged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SpecError, ValueError) as e:
            raise api_error(e) from None
        except Exception as e:  # noqa: BLE001 - a bug must not look like a crash to the client
            logging.getLogger('explorer').exception('endpoint %s failed', fn.__name__)
            raise user_error(
                f'{fn.__name__.removeprefix("api_")}: could not handle this request ({type(e).__name__}: {e})'
            ) from None

    return wrapper


def _int_arg(name: str, value, low: int, high: int) -> int:
    """An integer argument from a client (JSON numbers may arrive as 3.0), or a ValueError naming it."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f'{name}: {value!r} must be an integer in [{low}, {high}]')
    return value


def _str_arg(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f'{name}: {value!r} must be a non-empty string')
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
    load_model_code()
    return prof.verify(spec, img_size)


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
) -> dict:
    """Throughput and latency of the built model; one measurement at a time server-wide."""
    return prof.bench(spec, device, batch_size, dtype, channels_last, compile)


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


def api_share(spec: dict | str) -> str:
    """The value of the app's ?spec= query parameter for this spec."""
    return share.encode_share(spec)


def api_unshare(token: str) -> dict:
    """The spec dict behind a ?spec= value."""
    return share.decode_share(_str_arg('token', token))


def api_snippet(spec: dict | str) -> str:
    """Python code that rebuilds the model."""
    return share.python_snippet(spec)


def api_add_stage(spec: dict | str) -> dict:
    """The spec with one more stage (the last one's mixer, depth 2, twice its width), as the composer does."""
    return spec_form.add_stage(catalog.parse_spec(spec).to_dict())


def api_remove_stage(spec: dict | str, index: int) -> dict:
    """The spec without stage `index` (0-based), per-stage lists kept consistent."""
    return spec_form.remove_stage(catalog.parse_spec(spec).to_dict(), _int_arg('index', index, 0, 5))


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
        gr.api(_api(fn), api_name=name, **extra)


__all__ = ['add_measure_tab', 'add_compare_tab', 'add_share_tab', 'register_api', 'API']
