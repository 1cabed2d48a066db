"""The Compose tab: preset picker, global settings, up to six stage rows, live cost, diagram.

Six stage rows are built once and shown or hidden (faster than re-rendering). Every user edit recounts the
composition analytically (no model build) and then, in a chained event, verifies it with fvcore. An invalid
form keeps the last valid numbers and shows the validation message; the user's inputs are never rewritten.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from html import escape
from types import SimpleNamespace

import gradio as gr

from explorer.app import form as spec_form
from explorer.app.context import AppContext, error_text, load_model_code, user_error
from explorer.core import catalog
from explorer.core.registry import MIXERS
from explorer.core.spec import ACTIVATIONS, HEADS, MAX_STAGES, NORMS, ArchSpec, SpecError
from explorer.measure import profile as prof
from explorer.measure import units
from explorer.viz.diagram import network_html
from explorer.viz.plots import stage_cost_figure

PRIVATE = dict(api_visibility='private')


class _Latest:
    """The composition each browser session shows last (bounded), so a slow fvcore verification that
    finishes after a newer edit is dropped instead of overwriting the newer numbers."""

    def __init__(self, size: int = 2048):
        self.size, self.keys = size, OrderedDict()

    @staticmethod
    def _key(spec: dict) -> str:
        return json.dumps(spec, sort_keys=True)

    def mark(self, request, spec: dict) -> None:
        session = getattr(request, 'session_hash', None)
        self.keys[session] = self._key(spec)
        self.keys.move_to_end(session)
        while len(self.keys) > self.size:
            self.keys.popitem(last=False)

    def is_current(self, request, spec: dict) -> bool:
        key = self.keys.get(getattr(request, 'session_hash', None))
        return key is None or key == self._key(spec)


_LATEST = _Latest()


def _option_component(key: str, name: str, arg):
    label = name if key == name else key
    if arg.kind is bool:
        return gr.Checkbox(value=arg.default, label=label, min_width=40, scale=4)
    if arg.choices is not None:
        return gr.Dropdown(choices=list(arg.choices), value=arg.default, label=label, min_width=40, scale=3)
    return gr.Number(
        value=arg.default,
        label=label,
        min_width=40,
        scale=3,
        precision=0 if arg.kind is int else None,
        placeholder='auto' if arg.nullable else None,
    )


def _stage_row(i: int) -> dict:
    row = {}
    with gr.Row(visible=i < 4, elem_id=f'mfx-stage-{i + 1}', elem_classes='mfx-stage') as group:
        gr.HTML(f'<div>S{i + 1}</div>', elem_classes='mfx-stage-title', min_width=30, padding=False)
        row['mixer'] = gr.Dropdown(
            choices=list(MIXERS), label='token mixer', min_width=40, scale=5, elem_id=f'mfx-s{i + 1}-mixer'
        )
        row['depth'] = gr.Number(label='depth', precision=0, min_width=40, scale=3, elem_id=f'mfx-s{i + 1}-depth')
        row['dim'] = gr.Number(label='dim', precision=0, min_width=40, scale=3, elem_id=f'mfx-s{i + 1}-dim')
        row['mlp_ratio'] = gr.Number(label='MLP ratio', min_width=40, scale=3, step=0.5, elem_id=f'mfx-s{i + 1}-mlp')
        row['options'] = {key: _option_component(key, name, arg) for key, name, arg in spec_form.option_slots()}
        row['downsample'] = gr.Checkbox(
            label='downsample', min_width=40, scale=5, visible=i > 0, elem_id=f'mfx-s{i + 1}-down'
        )
        row['remove'] = gr.Button(
            '✕', size='sm', min_width=30, scale=0, elem_classes='mfx-remove', elem_id=f'mfx-s{i + 1}-remove'
        )
    row['group'] = group
    return row


def _latency_card(spec: ArchSpec) -> tuple:
    """Predicted latency of one image on this machine's CPU (float32) from its calibration, or why there is none.
    Closed-form features and a fitted linear model: tens of microseconds, no model built."""
    from explorer.measure.latency import LatencyError, predict_latency

    try:
        p = predict_latency(spec, batch_size=1, dtype='float32', device='cpu')
    except (LatencyError, ValueError) as e:
        return 'latency (predicted)', 'n/a', escape(str(e)[:120]), 'mfx-latency'
    if p.seconds is None:
        return 'latency (predicted)', '—', 'not calibrated for this device (explorer calibrate)', 'mfx-latency'
    return (
        'latency (predicted)',
        f'{p.ms:.3g} ms',
        f'{p.ms:.4g} ms, batch 1, fp32, calibrated on {escape(p.calibrated_on)}',
        'mfx-latency',
    )


def _totals_html(spec: ArchSpec, report: dict) -> str:
    """The headline: params, MACs, matching preset and its published figures, the counting convention."""
    preset = report.get('preset')
    frozen = report.get('frozen_params') or 0
    cards = [
        (
            'parameters',
            units.fmt_count(report['params']),
            f'{report["params"]:,}' + (f' ({frozen:,} frozen)' if frozen else ''),
            'mfx-params',
        ),
        ('MACs', units.fmt_count(report['macs']), f'{report["macs"]:,}', 'mfx-macs'),
        _latency_card(spec),
    ]
    html = (
        '<div class="mfx-cards">'
        + ''.join(
            f'<div class="mfx-card"><div class="k">{k}</div><div class="v">{v}</div>'
            f'<div class="x" id="{i}" data-value="{x.split(" ")[0].replace(",", "")}">{x}</div></div>'
            for k, v, x, i in cards
        )
        + '</div>'
    )
    if preset:
        m = spec.meta
        pub = ', '.join(
            s
            for s in (
                f'{m["top1"]:g}% top-1' if m.get('top1') is not None else '',
                f'{m["params_m"]:g} M params' if m.get('params_m') is not None else '',
                f'{m["gmacs"]:g} GMACs' if m.get('gmacs') is not None else '',
            )
            if s
        )
        note = (
            f'Same network as <b>{escape(m.get("display_name", preset))}</b>: published {pub} '
            f'(source: {escape(m.get("source", "not recorded"))}).'
        )
    else:
        note = 'Custom network: no published accuracy.'
    conv = (
        f'<details><summary>MACs: one multiply-accumulate = 1, one {spec.img_size}² image, inference; '
        f'params include frozen ones</summary>{escape(report.get("convention", ""))}</details>'
    )
    return f'{html}<div class="mfx-note">{note}</div><div class="mfx-note">{conv}</div>'


def _verified_html(analytic: dict, verified: dict) -> str:
    same = verified['params'] == analytic['params'] and verified['macs'] == analytic['macs']
    mark = (
        '✓ equals the analytic count'
        if same
        else f'differs from analytic by {verified["params"] - analytic["params"]:+,} params, '
        f'{verified["macs"] - analytic["macs"]:+,} MACs'
    )
    unc = verified.get('uncounted_ops') or {}
    extra = f' · ops fvcore skips: {escape(", ".join(unc))}' if unc else ''
    return (
        f'<div class="mfx-note" id="mfx-verified">fvcore on the built model: {verified["params"]:,} params, '
        f'{verified["macs"]:,} MACs — {mark}{extra}</div>'
    )


def _table_html(rows: list[list], report: dict) -> str:
    head = ['stage', 'mixer', 'output', 'tokens', 'params', 'MACs']
    body = ''
    for stage, mixer, _depth, _dim, _grid, tokens, shape, params, macs in rows:
        body += (
            f'<tr><td>S{stage}</td><td class="l">{escape(mixer)}</td><td>{shape}</td>'
            f'<td>{tokens:,}</td><td>{params}</td><td>{macs}</td></tr>'
        )
    rest = [report[k] - sum(st[k] for st in report['stages']) for k in ('params', 'macs')]
    body += (
        f'<tr><td>rest</td><td class="l" colspan="3">stem and head</td><td>{units.fmt_count(rest[0])}</td>'
        f'<td>{units.fmt_count(rest[1])}</td></tr>'
    )
    return f'<table class="mfx-table" id="mfx-shapes"><tr>{"".join(f"<th>{c}</th>" for c in head)}</tr>{body}</table>'


def _layout() -> SimpleNamespace:
    """The tab's components: preset picker, global fields `g`, stage `rows`, and the result panes."""
    with gr.Tab('Compose', id='compose'):
        with gr.Row():
            with gr.Column(scale=8, min_width=640):
                with gr.Row(elem_classes='mfx-tight'):
                    preset = gr.Dropdown(
                        choices=catalog.preset_choices(),
                        value=None,
                        scale=5,
                        elem_id='mfx-preset',
                        label='load a published model (by family)',
                        filterable=True,
                    )
                    scratch = gr.Button('Start from scratch', scale=0, min_width=180, elem_id='mfx-scratch')
                with gr.Row(elem_classes='mfx-tight'):
                    g = {
                        'name': gr.Textbox(label='name', scale=3, min_width=100, elem_id='mfx-name'),
                        'img_size': gr.Number(
                            label='image size', precision=0, min_width=64, scale=1, elem_id='mfx-img'
                        ),
                        'in_chans': gr.Number(label='channels', precision=0, min_width=60, scale=1),
                        'num_classes': gr.Number(label='classes', precision=0, min_width=74, scale=1),
                        'mlp_act': gr.Dropdown(choices=list(ACTIVATIONS), label='MLP act', min_width=110, scale=2),
                        'norm': gr.Dropdown(choices=list(NORMS), label='norm', min_width=150, scale=2),
                        'head': gr.Dropdown(choices=list(HEADS), label='head', min_width=84, scale=1),
                    }
                rows = [_stage_row(i) for i in range(MAX_STAGES)]
                with gr.Row():
                    add = gr.Button('+ add stage', size='sm', elem_id='mfx-add', scale=0, min_width=120)
                    gr.HTML(
                        '<div class="mfx-note">1 to 6 stages. Each stage after the first downsamples '
                        "(stride 2) unless unticked; a row shows only its mixer's options.</div>"
                    )
                diagram = gr.HTML(elem_id='mfx-diagram')
                with gr.Accordion('What the token mixers do', open=False):
                    gr.Markdown('\n'.join(f'- **{n}**: {escape(m.description)}' for n, m in MIXERS.items()))
            with gr.Column(scale=4, min_width=380):
                totals = gr.HTML(elem_id='mfx-totals')
                verified = gr.HTML(elem_id='mfx-verified-box')
                error = gr.Markdown(visible=False, elem_classes='mfx-error', elem_id='mfx-error')
                chart = gr.Plot(show_label=False, elem_id='mfx-chart')
                table = gr.HTML(elem_id='mfx-table')
        n_state = gr.State(4)  # inside the Tab: a component directly under gr.Tabs shifts the tab buttons
    return SimpleNamespace(
        preset=preset,
        scratch=scratch,
        g=g,
        rows=rows,
        add=add,
        diagram=diagram,
        totals=totals,
        verified=verified,
        error=error,
        chart=chart,
        table=table,
        n_state=n_state,
    )


def _form_io(ui: SimpleNamespace, spec_state) -> SimpleNamespace:
    """How the form's values map to a spec dict and back: `form` (inputs) -> read_form -> raw spec dict;
    spec dict -> fill -> `fill_outputs` updates."""
    g, rows, n_state = ui.g, ui.rows, ui.n_state
    keys = [k for k, _, _ in spec_form.option_slots()]
    row_fields = [
        c
        for r in rows
        for c in (r['mixer'], r['depth'], r['dim'], r['mlp_ratio'], r['downsample'], *r['options'].values())
    ]
    form = [spec_state, n_state, *g.values(), *row_fields]
    fill_outputs = [n_state, *g.values(), *[r['group'] for r in rows], *row_fields]
    per_row = 5 + len(keys)

    def read_form(values) -> dict:
        base, n, gvals, flat = values[0], values[1], values[2 : 2 + len(g)], values[2 + len(g) :]
        form_rows = []
        for i in range(MAX_STAGES):
            chunk = flat[i * per_row : (i + 1) * per_row]
            form_rows.append({**dict(zip(spec_form.STAGE_FIELDS, chunk[:5])), 'options': dict(zip(keys, chunk[5:]))})
        return spec_form.form_to_spec(
            base or catalog.get_preset(catalog.DEFAULT_PRESET), dict(zip(g, gvals)), n, form_rows
        )

    def fill(spec: dict) -> list:
        values, n, frows = spec_form.spec_to_form(spec)
        out = [n, *[gr.update(value=values[k]) for k in g], *[gr.update(visible=i < n) for i in range(MAX_STAGES)]]
        for r in frows:
            shown = set(spec_form.slots_for(r['mixer']))
            out += [r['mixer'], r['depth'], r['dim'], r['mlp_ratio'], gr.update(value=r['downsample'])]
            out += [gr.update(value=r['options'][k], visible=k in shown) for k in keys]
        return out

    return SimpleNamespace(
        keys=keys, row_fields=row_fields, form=form, fill_outputs=fill_outputs, read_form=read_form, fill=fill
    )


def add_compose_tab(ctx: AppContext) -> None:
    ui = _layout()
    io = _form_io(ui, ctx.spec)
    g, rows, keys, preset = ui.g, ui.rows, io.keys, ui.preset
    form, fill_outputs, read_form, fill = io.form, io.fill_outputs, io.read_form, io.fill

    def refresh(request: gr.Request, *values):
        """Count the form's network; on an invalid form only the message changes."""
        try:
            spec = catalog.with_published_meta(catalog.parse_spec(read_form(values)))
        except SpecError as e:
            return [gr.skip()] * 4 + [gr.update(value=error_text(e), visible=True)] + [gr.skip()] * 4
        report = prof.profile(spec)
        d = spec.to_dict()
        _LATEST.mark(request, d)
        pending = '<div class="mfx-note">fvcore: counting the built model…</div>'
        return [
            d,
            report,
            _totals_html(spec, report),
            pending,
            gr.update(value='', visible=False),
            stage_cost_figure(report),
            _table_html(stage_rows(spec, report), report),
            network_html(spec),
            gr.update(value=report['preset']),
        ]

    def verify(request: gr.Request, spec: dict, report: dict):
        if not spec or not report or not _LATEST.is_current(request, spec):
            return gr.skip()
        load_model_code()
        html = _verified_html(report, prof.verify(spec))
        # an edit that arrived while fvcore ran has its own verification coming: never show stale numbers
        return html if _LATEST.is_current(request, spec) else gr.skip()

    refresh_outputs = [ctx.spec, ctx.report, ui.totals, ui.verified, ui.error, ui.chart, ui.table, ui.diagram, preset]

    # chained steps run again for the latest input when triggered while a previous run is still pending
    # (the default for chained events, 'once', would drop them and leave stale numbers on screen)
    chained = dict(show_progress='hidden', trigger_mode='always_last', **PRIVATE)

    def verify_after(event):
        return event.then(
            verify, [ctx.spec, ctx.report], ui.verified, concurrency_limit=1, concurrency_id='verify', **chained
        )

    def chain_count(event):
        return verify_after(event.then(refresh, form, refresh_outputs, **chained))

    def load_spec(event):
        """After an event that stored a valid spec dict in ctx.spec: show it in the form and count it."""
        return chain_count(event.success(fill, ctx.spec, fill_outputs, **chained))

    ctx.load_spec = load_spec

    # every user edit: recount at once (no model build), then verify
    edits = [c.input for c in g.values()] + [c.input for c in io.row_fields]
    verify_after(
        gr.on(edits, refresh, form, refresh_outputs, trigger_mode='always_last', show_progress='hidden', **PRIVATE)
    )
    for r in rows:
        r['mixer'].input(
            lambda m: [gr.update(visible=k in spec_form.slots_for(m)) for k in keys],
            r['mixer'],
            list(r['options'].values()),
            show_progress='hidden',
            **PRIVATE,
        )

    def pick_preset(name):
        if not name:
            return gr.skip()
        return catalog.get_preset(name)

    load_spec(preset.input(pick_preset, preset, ctx.spec, **PRIVATE))
    load_spec(
        ui.scratch.click(catalog.scratch_spec, None, ctx.spec, **PRIVATE).then(lambda: None, None, preset, **PRIVATE)
    )

    def edit_stages(op, index, values):
        try:
            raw = read_form(values)
            return op(raw, index) if index is not None else op(raw)
        except SpecError as e:
            raise user_error(e) from None

    def staged(op, index=None):
        # the edited raw spec goes through the form, not the state: it may still be invalid
        return lambda *values: fill(edit_stages(op, index, values))

    chain_count(ui.add.click(staged(spec_form.add_stage), form, fill_outputs, show_progress='hidden', **PRIVATE))
    for i, r in enumerate(rows):
        chain_count(
            r['remove'].click(staged(spec_form.remove_stage, i), form, fill_outputs, show_progress='hidden', **PRIVATE)
        )

    ctx.extras.update(preset_dropdown=preset, fill=fill, fill_outputs=fill_outputs, form=form)


def stage_rows(spec: dict | str, report: dict) -> list[list]:
    """Table rows: stage, mixer, depth, dim, token grid, tokens, output (C, H, W), params, MACs."""
    s = catalog.parse_spec(spec)
    rows = []
    for st, sc in zip(s.stages, report['stages']):
        c, h, w = sc['out_shape']
        rows.append(
            [
                sc['index'] + 1,
                st.mixer,
                st.depth,
                st.dim,
                f'{h}×{w}',
                h * w,
                f'{c}×{h}×{w}',
                units.fmt_count(sc['params']),
                units.fmt_count(sc['macs']),
            ]
        )
    return rows
