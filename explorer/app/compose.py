"""The Compose tab: preset picker, global settings, up to six stage rows, live cost, diagram, and the workbench
around them: undo/redo of the design, modified-design names, pins, field-level validation.

Six stage rows are built once and shown or hidden (faster than re-rendering). Choices (dropdowns, ticks) recount
at once; typed fields (numbers, the name) when typing pauses, on Enter or when left. A recount is analytic (no
model build); a chained event then verifies it with fvcore. An invalid form keeps the last valid numbers, marks the
bad field with its message and the figures as stale; the user's inputs are never rewritten. Every valid change is
a step of the session's history (explorer.app.history: undo/redo, naming, pins, no gradio there); a design
replaced by another (a preset, scratch, or through ctx.load_spec a pin, a Search or Compare click, Train's adapt, a
spec upload) shows a notice with an Undo.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from html import escape
from types import SimpleNamespace

import gradio as gr

from explorer.app import form as spec_form
from explorer.app import history
from explorer.app.context import (
    AppContext,
    error_text,
    md_text,
    person_path,
    public_text,
    show_initially,
    spec_line,
    user_error,
)
from explorer.app.history import Workbench, network_key, same_design
from explorer.app.workers import HELPER, HelperBusy, HelperTimeout
from explorer.core import catalog
from explorer.core.registry import MIXERS
from explorer.core.spec import ACTIVATIONS, HEADS, MAX_STAGES, NORMS, ArchSpec, SpecError
from explorer.measure import profile as prof
from explorer.measure import units
from explorer.measure.guard import Limits, ResourceError
from explorer.viz.costchart import stage_cost_svg
from explorer.viz.diagram import network_html

PRIVATE = dict(api_visibility='private')

# The page script (run once, by the field-errors HTML component's js_on_load):
# - keyboard: Ctrl/Cmd+Z undoes the design, Ctrl/Cmd+Shift+Z and Ctrl/Cmd+Y redo it, while the Compose tab is
#   shown, except in a text or number field being typed in, where the browser's own undo of the text is what a
#   person expects (a dropdown's search box or a tick box is not such a field);
# - recount on a pause: typing in a number or the name field recounts 700 ms after the last key (a blur event
#   the server listens to), a paste at once: no recount, and no message, per keystroke;
# - field messages: the server writes [[field elem_id, message], ...] into data-errors; each message is put
#   below its field as text (never HTML) and the field is outlined.
# a page opened with a link dims the composer until the link's design is shown (the page itself is built with the
# default design's values); the class is removed once the link's design is counted (whatever happened), and
# body[data-mfx-ready] says the page's own start-up events, the fvcore check included, are done
RESTORING_JS = """(...args) => {
  if (/[?&](spec|preset)=/.test(window.location.search)) document.body.classList.add('mfx-restoring');
  return args;
}"""
RESTORED_JS = "() => { document.body.classList.remove('mfx-restoring'); }"
READY_JS = "() => { document.body.classList.remove('mfx-restoring'); document.body.dataset.mfxReady = '1'; }"
PAGE_JS = """
(() => {
  if (window.__mfxCompose) return;
  window.__mfxCompose = true;
  const shown = (id) => { const e = document.getElementById(id); return e && e.offsetParent !== null ? e : null; };
  const typing = (el) => !!el && (el.tagName === 'TEXTAREA' || (el.tagName === 'INPUT' &&
    ['text', 'number', 'search'].includes(el.type) && el.getAttribute('role') !== 'combobox'));
  document.addEventListener('keydown', (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.altKey) return;
    const k = e.key.toLowerCase();
    const id = k === 'z' ? (e.shiftKey ? 'mfx-redo' : 'mfx-undo') : (k === 'y' && !e.shiftKey ? 'mfx-redo' : null);
    if (!id || !shown('mfx-compose-form') || typing(document.activeElement)) return;
    e.preventDefault();
    const b = document.getElementById(id);
    if (b && !b.disabled) b.click();
  });
  const typed = (el) => {
    const form = document.getElementById('mfx-compose-form');
    return form && form.contains(el) && typing(el) && !el.closest('.mfx-pins');
  };
  let timer = null;
  const recount = (el, ms) => {
    clearTimeout(timer);
    timer = setTimeout(() => { if (el.isConnected) el.dispatchEvent(new FocusEvent('blur')); }, ms);
  };
  document.addEventListener('input', (e) => { if (typed(e.target)) recount(e.target, 700); }, true);
  document.addEventListener('paste', (e) => { if (typed(e.target)) recount(e.target, 30); }, true);
  document.addEventListener('blur', (e) => { if (e.isTrusted && typed(e.target)) clearTimeout(timer); }, true);
  document.addEventListener('keydown', (e) => { if (e.key === 'Enter' && typed(e.target)) clearTimeout(timer); }, true);
  const apply = () => {
    const carrier = document.querySelector('#mfx-field-errors .mfx-field-errors');
    let errors = [];
    try { errors = JSON.parse(carrier ? carrier.dataset.errors || '[]' : '[]'); } catch (err) { errors = []; }
    document.querySelectorAll('.mfx-field-msg').forEach((m) => m.remove());
    document.querySelectorAll('.mfx-invalid').forEach((f) => {
      f.classList.remove('mfx-invalid');
      f.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
    });
    for (const [id, text] of errors) {
      const field = document.getElementById(id);
      if (!field) continue;
      field.classList.add('mfx-invalid');
      field.querySelectorAll('input, textarea').forEach((i) => i.setAttribute('aria-invalid', 'true'));
      const m = document.createElement('div');
      m.className = 'mfx-field-msg';
      m.setAttribute('role', 'alert');
      m.textContent = text;
      field.appendChild(m);
    }
  };
  const root = document.getElementById('mfx-field-errors') || element;
  new MutationObserver(apply).observe(root, {childList: true, subtree: true, attributes: true, characterData: true});
  apply();
})();
"""


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


def _option_component(key: str, name: str, arg, elem_id: str):
    label = spec_form.option_label(name if key == name else key)
    common = dict(label=label, min_width=40, elem_id=elem_id)
    if arg.kind is bool:
        return gr.Checkbox(value=arg.default, scale=4, **common)
    if arg.choices is not None:
        return gr.Dropdown(choices=list(arg.choices), value=arg.default, scale=3, **common)
    return gr.Number(value=arg.default, scale=3, placeholder='auto' if arg.nullable else None, **common)


def _stage_row(i: int) -> dict:
    row = {}
    sid = functools.partial(spec_form.stage_elem_id, i)
    with gr.Row(visible=i < 4, elem_id=f'mfx-stage-{i + 1}', elem_classes='mfx-stage') as group:
        gr.HTML(f'<div>S{i + 1}</div>', elem_classes='mfx-stage-title', min_width=30, padding=False)
        row['mixer'] = gr.Dropdown(
            choices=list(MIXERS), label='token mixer', min_width=40, scale=5, elem_id=sid('mixer')
        )
        # no `precision` on whole-number fields: Gradio rounded 2.5 to 2 while the field went on showing 2.5; the
        # spec refuses it at the field instead ('must be an integer')
        row['depth'] = gr.Number(label='depth', min_width=40, scale=3, elem_id=sid('depth'))
        row['dim'] = gr.Number(label='dim', min_width=40, scale=3, elem_id=sid('dim'))
        row['mlp_ratio'] = gr.Number(label='MLP ratio', min_width=40, scale=3, step=0.5, elem_id=sid('mlp_ratio'))
        row['options'] = {
            key: _option_component(key, name, arg, spec_form.option_elem_id(i, key))
            for key, name, arg in spec_form.option_slots()
        }
        row['downsample'] = gr.Checkbox(
            label='downsample', min_width=40, scale=5, visible=i > 0, elem_id=sid('downsample')
        )
        row['remove'] = gr.Button(
            '✕', size='sm', min_width=30, scale=0, elem_classes='mfx-remove', elem_id=f'mfx-s{i + 1}-remove'
        )
    row['group'] = group
    return row


def _latency_card(spec: ArchSpec) -> tuple:
    """Predicted latency of one image on this machine's CPU (float32) from its calibration, or why there is none.
    Closed-form features and a fitted linear model: tens of microseconds, no model built. A design over the
    largest calibration design (its MACs an image past the calibration's max_macs) is marked as an
    extrapolation: the model reads large presets 9-27% off (benchmarks/README.md)."""
    from explorer.measure.latency import LatencyError, predict_latency

    try:
        p = predict_latency(spec, batch_size=1, dtype='float32', device='cpu')
    except (LatencyError, ValueError) as e:
        return 'latency (predicted)', 'n/a', escape(str(e)[:120]), 'mfx-latency'
    if p.seconds is None:
        return (
            'latency (predicted)',
            '—',
            'not calibrated for this device (Measure tab: Calibrate, or explorer calibrate)',
            'mfx-latency',
        )
    beyond = ''
    if p.extrapolated:
        beyond = (
            f'; extrapolated: {p.extrapolated:.0f}x the largest calibration design '
            f'({p.fitted_max_macs / 1e6:g} MMACs): it may be tens of % off'
        )
    return (
        'latency (predicted)',
        f'{p.ms:.3g} ms',
        f'{p.ms:.4g} ms, batch 1, fp32, calibrated on {escape(p.calibrated_on)}{beyond}',
        'mfx-latency',
    )


def _change_html(before: tuple[str, int, int] | None, report: dict) -> str:
    """What the last edit changed: params and MACs against the design shown before it (its name, params, MACs);
    '' when there was none or the counts are the same."""
    if before is None:
        return ''
    name, params, macs = before
    parts = []
    for what, was, now in (('params', params, report['params']), ('MACs', macs, report['macs'])):
        diff = now - was
        sign = '+' if diff >= 0 else '−'  # a typographic minus, as the figures beside it
        share = abs(100 * diff / was) if was else None
        pct = '' if share is None else f' ({sign}{share:.1f}%)' if share >= 0.05 or not diff else ' (<0.1%)'
        parts.append(f'{sign}{units.fmt_count(abs(diff))} {what}{pct}')
    if params == report['params'] and macs == report['macs']:
        return ''
    shown = name if len(name) <= 60 else name[:59] + '…'
    return f'<div class="mfx-note" id="mfx-change">Change from {escape(shown)}: {escape(", ".join(parts))}</div>'


def _totals_html(spec: ArchSpec, report: dict, before: tuple[str, int, int] | None = None) -> str:
    """The headline: params, MACs, matching preset and its published figures, what the last edit changed
    (`before`: the previous design's name, params and MACs), the counting convention."""
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
    return f'{html}{_change_html(before, report)}<div class="mfx-note">{note}</div><div class="mfx-note">{conv}</div>'


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
    """The tab's components: preset picker, global fields `g`, stage `rows`, the workbench (undo, redo, pins) and
    the result panes (a column that stays on screen while the form scrolls)."""
    ui = SimpleNamespace()
    with gr.Tab('Compose', id='compose'):
        with gr.Row(elem_id='mfx-compose'):
            with gr.Column(scale=8, min_width=560, elem_id='mfx-compose-form'):
                with gr.Row(elem_classes='mfx-tight'):
                    ui.preset = gr.Dropdown(
                        choices=catalog.preset_choices(),
                        value=None,
                        scale=5,
                        elem_id='mfx-preset',
                        label='load a published model (by family)',
                        filterable=True,
                    )
                    ui.scratch = gr.Button('Start from scratch', scale=0, min_width=180, elem_id='mfx-scratch')
                with gr.Row(elem_classes='mfx-tight mfx-globals'):
                    ui.g = {
                        'name': gr.Textbox(label='name', scale=3, min_width=100, elem_id='mfx-name'),
                        'img_size': gr.Number(label='image size', min_width=64, scale=1, elem_id='mfx-img'),
                        'in_chans': gr.Number(label='channels', min_width=60, scale=1, elem_id='mfx-chans'),
                        'num_classes': gr.Number(label='classes', min_width=74, scale=1, elem_id='mfx-classes'),
                        'mlp_act': gr.Dropdown(
                            choices=list(ACTIVATIONS), label='MLP act', min_width=110, scale=2, elem_id='mfx-act'
                        ),
                        'norm': gr.Dropdown(
                            choices=list(NORMS), label='norm', min_width=150, scale=2, elem_id='mfx-norm'
                        ),
                        'head': gr.Dropdown(
                            choices=list(HEADS), label='head', min_width=84, scale=1, elem_id='mfx-head'
                        ),
                    }
                with gr.Row(elem_classes='mfx-tight mfx-toolbar'):
                    ui.undo = gr.Button(
                        '↶ Undo', size='sm', scale=0, min_width=84, interactive=False, elem_id='mfx-undo'
                    )
                    ui.redo = gr.Button(
                        '↷ Redo', size='sm', scale=0, min_width=84, interactive=False, elem_id='mfx-redo'
                    )
                    ui.pin = gr.Button('Pin', size='sm', scale=0, min_width=84, elem_id='mfx-pin')
                    ui.pin_status = gr.Markdown(elem_id='mfx-pin-status', elem_classes='mfx-note')
                with gr.Row(visible=False, elem_classes='mfx-tight mfx-notice', elem_id='mfx-notice') as ui.notice:
                    ui.notice_text = gr.Markdown(elem_id='mfx-notice-text')
                    ui.notice_undo = gr.Button('Undo', size='sm', scale=0, min_width=70, elem_id='mfx-notice-undo')
                ui.rows = [_stage_row(i) for i in range(MAX_STAGES)]
                with gr.Row():
                    ui.add = gr.Button('+ add stage', size='sm', elem_id='mfx-add', scale=0, min_width=120)
                    gr.HTML(
                        '<div class="mfx-note">1 to 6 stages. Each stage after the first downsamples '
                        '(stride 2) unless unticked (a stage added where the grid cannot halve again starts '
                        "unticked, at the same width); a row shows only its mixer's options. Numbers recount when "
                        'you pause, press Enter or leave the field. Ctrl+Z undoes the design, Ctrl+Shift+Z or '
                        'Ctrl+Y redoes it (in a text or number field they undo the typing).</div>'
                    )
                ui.diagram = gr.HTML(elem_id='mfx-diagram')
                with gr.Row(elem_classes='mfx-tight mfx-pins'):
                    ui.pins = gr.Radio(
                        choices=[],
                        label='pinned designs (Pin keeps the design shown, to load back or compare)',
                        scale=5,
                        elem_id='mfx-pins',
                    )
                    with gr.Column(scale=0, min_width=90):
                        # on once a pin is chosen: pressed with none, they could only answer with an error toast
                        ui.pin_load = gr.Button('Load', size='sm', elem_id='mfx-pin-load', interactive=False)
                        ui.pin_drop = gr.Button('Unpin', size='sm', elem_id='mfx-pin-drop', interactive=False)
                # the pins, kept in the browser too (localStorage, through Gradio's BrowserState, whose secret is
                # made at each start): a reload or a new tab has them back until the server restarts; what a
                # page sends back is request data, checked like any other (history.restore_pins). Made inside
                # the tab: a component directly under gr.Tabs shifts the tab buttons' labels (main.py)
                ui.kept_pins = gr.BrowserState([], storage_key='mfx-pins')
                with gr.Accordion('What the token mixers do', open=False):
                    gr.Markdown('\n'.join(f'- **{n}**: {escape(m.description)}' for n, m in MIXERS.items()))
            with gr.Column(scale=4, min_width=320, elem_id='mfx-figs'):
                ui.totals = gr.HTML(elem_id='mfx-totals')
                ui.verified = gr.HTML(elem_id='mfx-verified-box')
                ui.error = gr.Markdown(visible=False, elem_classes='mfx-error', elem_id='mfx-error')
                ui.stale = gr.HTML(elem_id='mfx-stale')
                ui.chart = gr.HTML(elem_id='mfx-chart', padding=False)  # SVG: swapped in as fast as the numbers
                ui.table = gr.HTML(elem_id='mfx-table')
        # field messages: the JSON of (field elem_id, message) the page script puts at each field; plus shortcuts
        ui.field_errors = gr.HTML('', elem_id='mfx-field-errors', js_on_load=PAGE_JS, padding=False)
        # a load refused (a design loaded or linked): the answer keeps its message in the session's Workbench and
        # gives this field a new value, whose change shows it in a queued step (Gradio's page shows no error or
        # warning toast of an answer outside the queue)
        ui.refused = gr.Textbox('', visible='hidden', elem_id='mfx-refused')
        # set when the design changes (a load, an edit, a stage added or removed, an undo or redo; not a load
        # refused, a field left unchanged, an invalid value): the tabs that follow the design follow its change,
        # so that those leave them (and Predict's results) alone
        ui.loaded = gr.Textbox('', visible='hidden', elem_id='mfx-loaded')
        # set when the page's link is restored: its change starts the tabs that follow the design, so that a page
        # opened without a link (or with one refused) runs none of it
        ui.linked = gr.Textbox('', visible='hidden', elem_id='mfx-linked')
        ui.n_state = gr.State(4)  # inside the Tab: a component directly under gr.Tabs shifts the tab buttons
        # the spec dict the form was last filled from (a load, undo, or the result of adding or removing a stage):
        # what the form does not show (a stage's position embedding, per-stage scales) comes from it, stage by
        # stage. The last committed design would not do: after removing S1 its stages no longer line up
        ui.form_base = gr.State(None)
        ui.hist = gr.State(Workbench())
    return ui


def _form_io(ui: SimpleNamespace) -> SimpleNamespace:
    """How the form's values map to a spec dict and back: `form` (inputs) -> read_form -> raw spec dict;
    spec dict -> fill -> `fill_outputs` updates."""
    g, rows, n_state, form_base = ui.g, ui.rows, ui.n_state, ui.form_base
    keys = [k for k, _, _ in spec_form.option_slots()]
    row_fields = [
        c
        for r in rows
        for c in (r['mixer'], r['depth'], r['dim'], r['mlp_ratio'], r['downsample'], *r['options'].values())
    ]
    form = [form_base, n_state, *g.values(), *row_fields]
    fill_outputs = [form_base, n_state, *g.values(), *[r['group'] for r in rows], *row_fields]
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
        out = [
            spec,
            n,
            *[gr.update(value=values[k]) for k in g],
            *[gr.update(visible=i < n) for i in range(MAX_STAGES)],
        ]
        for r in frows:
            shown = set(spec_form.slots_for(r['mixer']))
            out += [r['mixer'], r['depth'], r['dim'], r['mlp_ratio'], gr.update(value=r['downsample'])]
            out += [gr.update(value=r['options'][k], visible=k in shown) for k in keys]
        return out

    groups = {id(r['group']) for r in rows}

    def values_of(spec: dict, filled: list | None = None) -> list:
        """The values `form` holds once `fill(spec)` (`filled`, if given) is shown: what read_form reads back."""
        filled = fill(spec) if filled is None else filled
        shown = [u for c, u in zip(fill_outputs[1:], filled[1:]) if id(c) not in groups]  # [0]: the form's base
        return [spec, *[u.get('value') if isinstance(u, dict) else u for u in shown]]

    return SimpleNamespace(
        keys=keys,
        row_fields=row_fields,
        form=form,
        fill_outputs=fill_outputs,
        read_form=read_form,
        fill=fill,
        values_of=values_of,
    )


def _field_errors_html(errors: list[tuple[str, str]], raw: dict) -> str:
    """The hidden carrier of field-level messages: data-errors holds [[field elem_id, message], ...] as escaped
    JSON; the page script writes each message as text next to its field and outlines the field."""
    by_field: dict[str, list[str]] = {}
    for path, message in errors[:20]:
        elem = spec_form.field_elem_id(path, raw)
        if elem is not None:
            by_field.setdefault(elem, []).append(public_text(person_path(message), 300))
    payload = json.dumps([[k, '; '.join(v)] for k, v in by_field.items()])
    return f'<div class="mfx-field-errors" data-errors="{escape(payload, quote=True)}"></div>'


STALE_HTML = (
    '<div class="mfx-stale" role="status">⚠ The form is not a valid network: the numbers and figures show '
    'the last valid design.</div>'
)


def verify_in_helper(spec: dict | str, img_size: int | None = None) -> dict:
    """fvcore's count (explorer.measure.profile.verify) in the helper process, stopped past the server's limit
    (EXPLORER_MAX_VERIFY_S): raises ResourceError naming it. The composer's check and /verify both run here."""
    limit = Limits.from_env().max_verify_s
    try:
        return HELPER.call(prof.verify, spec, img_size, timeout=limit)
    except HelperTimeout as e:
        stopped = f'took more than {limit:g} s here and was stopped (EXPLORER_MAX_VERIFY_S)'
        why = stopped if 'took more than' in str(e) else f'failed: {e}'
        raise ResourceError(
            [('verify', f'building and tracing this design with fvcore {why}; the analytic count stands')]
        ) from None
    except HelperBusy:
        raise ResourceError(
            [
                (
                    'verify',
                    f'the fvcore check is busy with other designs (one at a time, each up to {limit:g} s): try '
                    'again; the analytic count stands',
                )
            ]
        ) from None


class _Verified:
    """fvcore counts by network (the name does not change them): a rename does not build the model again."""

    def __init__(self, size: int = 64):
        self.size, self.items = size, OrderedDict()

    def __call__(self, spec: dict) -> dict:
        key = network_key(spec)
        if key not in self.items:
            self.items[key] = verify_in_helper({**spec, 'name': 'verified'})
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return self.items[key]


_VERIFIED = _Verified()
# a session's history (gr.State holds one Workbench per session, not copied per request) is read and changed by
# edits, undos and redos, all outside the queue and so at once: one at a time, server-wide (each takes ~3 ms).
# Reentrant: an undo counts the design it restores.
HISTORY_LOCK = threading.RLock()


def add_compose_tab(ctx: AppContext) -> None:
    ui = _layout()
    io = _form_io(ui)
    g, rows, keys, preset, hist = ui.g, ui.rows, io.keys, ui.preset, ui.hist
    form, fill_outputs, read_form, fill = io.form, io.fill_outputs, io.read_form, io.fill
    refresh_outputs = [
        *(hist, ctx.spec, ctx.report, ui.totals, ui.verified, ui.error, ui.chart, ui.table, ui.diagram, preset),
        *(g['name'], ui.undo, ui.redo, ui.notice, ui.notice_text, ui.field_errors, ui.stale),
    ]

    def workbench_updates(w: Workbench) -> list:
        notice = f'{md_text(w.notice, 300)}.' if w.notice else ''
        return [
            gr.update(interactive=w.can_undo),
            gr.update(interactive=w.can_redo),
            gr.update(visible=bool(w.notice)),
            notice,
        ]

    def invalid(w: Workbench, e: SpecError, raw: dict) -> list:
        w.invalid = True
        error = gr.update(value=error_text(e), visible=True)
        return [w, *[gr.skip()] * 4, error, *[gr.skip()] * 5, *workbench_updates(w)] + [
            _field_errors_html(e.errors, raw),
            STALE_HTML,
        ]

    def followed(answer):
        """answer(request, w, *values), a recount or a history step, and then the new value of the hidden field
        ui.loaded (whose change the tabs that follow the design follow) when the design shown changed, else
        gr.skip(): nothing follows a field left unchanged, an invalid value or an undo with nothing to undo."""

        @functools.wraps(answer)
        def answer_followed(request: gr.Request, w: Workbench, *values):
            with HISTORY_LOCK:
                before = w.past[-1] if w.past else None
                out = answer(request, w, *values)
                after = w.past[-1] if w.past else None
                token = w.load() if after is not before and not w.invalid else gr.skip()
            return [*out, token]

        return answer_followed

    def counter(kind: str, label: str = 'edit'):
        """The recount after an edit of a field ('edit': the design keeps its name, or gets a -modN suffix when
        the network changed), of the name field ('rename': the typed name, unless empty or already naming another
        network), a replacement ('replace': an undo notice is shown) or an undo/redo ('restore': shown as kept)."""

        def refresh(request: gr.Request, w: Workbench, *values):
            with HISTORY_LOCK:
                raw = read_form(values)
                prev, form_name = w.current(), raw.get('name')
                # only the name field renames: another field's event may carry a name the browser showed before the
                # last recount landed, and that is no rename
                typed = kind == 'rename' and prev is not None and form_name != prev['name']
                if kind in ('edit', 'rename') and prev is not None and not typed:
                    raw['name'] = prev['name']
                if typed and not str(form_name or '').strip():
                    message = f'type a name for the design (the last valid one: {prev["name"]})'
                    return invalid(w, SpecError([('name', message)]), raw)
                try:
                    parsed = catalog.parse_spec(raw)
                except SpecError as e:
                    return invalid(w, e, raw)
                d = parsed.to_dict()
                if typed and w.name_taken(d['name'], d):
                    message = f'{d["name"]} already names another design in this session: choose another name'
                    return invalid(w, SpecError([('name', message)]), raw)
                if typed and catalog.names_another_preset(d['name'], parsed):
                    message = f'{d["name"]} is a published preset, another network: choose another name'
                    return invalid(w, SpecError([('name', message)]), raw)
                if kind != 'restore':
                    d['name'] = w.name_edit(d, typed)
                try:  # a generated name (-modN) is checked too: an error here is a message, never a stale page
                    spec = catalog.with_published_meta(catalog.parse_spec(d))
                except SpecError as e:
                    return invalid(w, e, raw)
                report = prof.profile(spec)
                d = spec.to_dict()
                if kind == 'restore':
                    w.invalid, w.change = False, None
                elif w.commit(d, f'load {d["name"]}' if kind == 'replace' else label):
                    replaced = kind == 'replace' and prev is not None
                    w.notice = f'Replaced {prev["name"]} with {d["name"]}' if replaced else ''
                    w.change = None  # the change line: what an edit changed (a load, undo or redo shows none)
                    if prev is not None and kind == 'edit':
                        was = prof.profile(catalog.parse_spec(prev))
                        w.change = (prev['name'], was['params'], was['macs'])
                # else the same design counted again (the field left, Enter, a pin): the line stays
                if request is not None:  # None: the first page's values, computed at build time
                    _LATEST.mark(request, d)
                pending = '<div class="mfx-note">fvcore: counting the built model…</div>'
                return [
                    w,
                    d,
                    report,
                    _totals_html(spec, report, w.change),
                    pending,
                    gr.update(value='', visible=False),
                    stage_cost_svg(report),
                    _table_html(stage_rows(spec, report), report),
                    network_html(spec),
                    gr.update(value=report['preset']),
                    gr.update(value=d['name']) if d['name'] != form_name else gr.skip(),
                    *workbench_updates(w),
                    _field_errors_html([], raw),
                    '',
                ]

        return refresh

    def verify(request: gr.Request, spec: dict, report: dict):
        if not spec or not report or not _LATEST.is_current(request, spec):
            return gr.skip()
        try:
            html = _verified_html(report, _VERIFIED(spec))
        except ResourceError as e:  # too slow to verify here: said where the check would be
            html = f'<div class="mfx-note" id="mfx-verified">fvcore: {escape(str(e))}</div>'
        # an edit that arrived while fvcore ran has its own verification coming: never show stale numbers
        return html if _LATEST.is_current(request, spec) else gr.skip()

    # chained steps run again for the latest input when triggered while a previous run is still pending
    # (the default for chained events, 'once', would drop them and leave stale numbers on screen)
    chained = dict(show_progress='hidden', trigger_mode='always_last', **PRIVATE)

    def verify_after(event):
        return event.then(
            verify, [ctx.spec, ctx.report], ui.verified, concurrency_limit=1, concurrency_id='verify', **chained
        )

    # every user edit: recount (no model build), then verify. Choices (dropdowns, ticks) recount at once; typed
    # fields when typing pauses (the page script), on Enter or when the field is left: never on each keystroke
    fields = [c for c in (*g.values(), *io.row_fields) if c is not g['name']]
    numbers = [c for c in fields if isinstance(c, gr.Number)]
    edits = [c.input for c in fields if c not in numbers] + [e for c in numbers for e in (c.blur, c.submit)]
    # outside Gradio's queue: its server-sent events cost about 40% of the time from Enter to new numbers (p95 233
    # -> 144 ms, benchmarks/bench_interaction.py). The count is closed-form arithmetic (well under 1 ms), so it
    # needs no queue slot. Gradio fires no gr.State.change for such an event: the tabs that follow the design
    # follow the hidden field ui.loaded (ctx.changes_design, ctx.follow_design), which an edit sets only when it
    # changed the design (a field left or Enter pressed without a change, or an invalid value, ran them all the
    # same, and Predict lost its results)
    for triggers, kind, label in ((edits, 'edit', 'edit'), ([g['name'].blur, g['name'].submit], 'rename', 'rename')):
        event = gr.on(
            triggers,
            followed(counter(kind, label)),
            [hist, *form],
            refresh_outputs + [ui.loaded],
            trigger_mode='always_last',
            show_progress='hidden',
            queue=False,
            **PRIVATE,
        )
        verify_after(event)

    def recount_totals(spec: dict, report: dict):
        """The counts' cards again, for the design shown (the Measure tab's calibration changes the latency)."""
        if not spec or not report:
            return gr.skip()
        return _totals_html(catalog.parse_spec(spec), report)

    ctx.extras['totals'] = (ui.totals, recount_totals)
    for r in rows:
        r['mixer'].input(
            lambda m: [gr.update(visible=k in spec_form.slots_for(m)) for k in keys],
            r['mixer'],
            list(r['options'].values()),
            show_progress='hidden',
            queue=False,  # before any Undo clicked after it (unqueued): a late answer showed the wrong fields
            **PRIVATE,
        )

    def edit_stages(op, index, values):
        try:
            raw = read_form(values)
            return op(raw, index) if index is not None else op(raw)
        except SpecError as e:
            raise user_error(e) from None

    # a stage added or removed, an undo or a redo: one answer outside the queue, like an edit, with the whole form
    # and its counts from one design. As queued chained events (change, fill the form, count it) an undo took
    # 1.1-1.4 s and a stage button 0.34-0.36 s against 0.1 s for an edit (benchmarks/bench_interaction.py --undo),
    # and an unqueued undo could overtake a queued chain
    name_at = refresh_outputs.index(g['name'])
    name_in_form = fill_outputs.index(g['name'])
    shown_outputs = fill_outputs + [c for c in refresh_outputs if c is not g['name']]

    def shown_and_counted(kind: str, label: str, request: gr.Request, w: Workbench, spec: dict) -> list:
        """fill(spec) and counter(kind, label) of it as one answer (shown_outputs): the name field once, as the
        count names the design (an edit's -modN)."""
        filled = fill(spec)
        counted = counter(kind, label)(request, w, *io.values_of(spec, filled))
        name = counted[name_at]
        if not (isinstance(name, dict) and set(name) == {'__type__'}):  # not gr.skip()
            filled[name_in_form] = name
        return filled + counted[:name_at] + counted[name_at + 1 :]

    def restored(request: gr.Request, w: Workbench, spec: dict) -> list:
        """A design from the history, shown and counted (two answers in flight at once, an Undo and a Redo
        clicked together, each leave the form and the numbers on one design, whichever lands last)."""
        return shown_and_counted('restore', 'edit', request, w, spec)

    def staged(op, index=None, label: str = 'edit'):
        """The form's design with a stage added or removed (it may be invalid: the count then says why). A seventh
        stage or none is refused (the buttons are off then, but a key press on a focused one still reaches them)."""

        def stage_edit(request: gr.Request, w: Workbench, *values):
            try:
                spec = edit_stages(op, index, values)
            except gr.Error as e:
                return refused(w, e, 1)  # ui.loaded unchanged: the tabs that follow the design stay as they are
            out = shown_and_counted('edit', label, request, w, spec)
            with HISTORY_LOCK:
                token = w.load()
            return out + [token, gr.skip()]

        return stage_edit

    unqueued = dict(show_progress='hidden', queue=False, **PRIVATE)
    # as a load: the other tabs follow ui.loaded (below), which a refused stage button leaves alone
    staged_outputs = shown_outputs + [ui.loaded, ui.refused]
    add = staged(spec_form.add_stage, label='add stage')
    verify_after(ui.add.click(add, [hist, *form], staged_outputs, **unqueued))
    for i, r in enumerate(rows):
        remove = staged(spec_form.remove_stage, i, f'remove S{i + 1}')
        verify_after(r['remove'].click(remove, [hist, *form], staged_outputs, **unqueued))

    def load_spec(trigger, fn, inputs, outputs=(), select: bool = False):
        """AppContext.load_spec: a design from elsewhere (a preset picked, "start from scratch", a pin, a Search or
        Compare click, Train's adapt, a spec upload) shown and counted in one answer outside the queue. As queued
        chained events (store it, fill the form, count the form) an Undo clicked meanwhile ran between them and the
        count then committed the undone design: the loaded one was lost. A refusal (a gr.Error or SpecError of fn:
        an unreadable upload, a design that cannot be adapted) changes nothing and is shown as an error."""
        outputs = list(outputs)

        def answer(request, w: Workbench, *args) -> list:
            try:
                got = fn(*args)
                spec, extra = (got[0], list(got[1:])) if isinstance(got, tuple) else (got, [])
                if spec is None:
                    return [gr.skip()] * (len(shown_outputs) + len(outputs) + 2)
                shown = catalog.parse_spec(spec).to_dict()
            except SpecError as e:
                return refused(w, user_error(spec_line(e), title='Cannot load'), len(outputs) + 1)
            except gr.Error as e:
                return refused(w, e, len(outputs) + 1)
            out = shown_and_counted('replace', 'edit', request, w, shown)
            with HISTORY_LOCK:
                token = w.load()
            return out + extra + [token, gr.skip()]

        if select:

            def loaded(request: gr.Request, evt: gr.SelectData, w: Workbench, *args):
                return answer(request, w, evt, *args)
        else:

            def loaded(request: gr.Request, w: Workbench, *args):
                return answer(request, w, *args)

        loaded.__name__ = f'compose_{fn.__name__}'  # the event's name in a "Bad request" answer
        event = trigger(loaded, [hist, *inputs], shown_outputs + outputs + [ui.loaded, ui.refused], **unqueued)
        verify_after(event)  # the other tabs follow ui.loaded (below)
        return event

    ctx.load_spec = load_spec

    def restore_link(initial):
        """Wire the page's load: initial(request) gives the design of the link the page was opened with (?spec=,
        ?preset=), or None, or raises SpecError (a warning says why; the page keeps its design). The link's design
        is shown and counted in one answer outside the queue, with a history of its own (the design the page was
        built with was never the visitor's: no "Replaced ..." notice, no undo back to it); it was three queued
        events (store it, fill the form, count the form). Without a link the design the page was built with stays
        (its values are in the page already) and is only verified. The form is dimmed and takes no input until
        then (RESTORING_JS), so an early edit is never overwritten."""

        def link_restored(request: gr.Request, w: Workbench):
            try:
                spec = initial(request)
            except SpecError as e:  # the page keeps its design and its address (the link), and says why
                e = user_error(f'Could not restore the link: {spec_line(e)}', title='Warning')
                return refused(w, e, warning=True) + [gr.skip()]  # ui.linked unchanged
            if spec is None:
                return [gr.skip()] * (len(shown_outputs) + 2)
            # a history of its own, but what the session's other steps keep in it stays: the names the pins
            # restored as the page loaded reserved, refusals not shown yet, the page fields' counters
            fresh = Workbench(names=w.names, refusals=w.refusals, refused=w.refused, loaded=w.loaded)
            return shown_and_counted('replace', 'edit', request, fresh, spec) + [gr.skip(), 'restored']

        outputs = shown_outputs + [ui.refused, ui.linked]
        event = ctx.demo.load(link_restored, hist, outputs, js=RESTORING_JS, **unqueued)
        event.then(None, None, None, js=RESTORED_JS, **PRIVATE)  # the link's design is shown: undim
        verify_after(event).then(None, None, None, js=READY_JS, **PRIVATE)
        # a link restored only: a page without one (or with one refused) starts no queued step for these
        ctx.changes_design(ui.linked.change(None, None, None, **PRIVATE))

        def calibrated_since(request: gr.Request, spec: dict, report: dict):
            """A calibration made since the page was built shows in the first design's latency card; a link's
            design gets its own recount, and a page whose link is refused keeps the first design (its card too)."""
            try:
                linked = initial(request) is not None
            except SpecError:
                linked = False
            return gr.skip() if linked else calibrated_card(spec, report)

        ctx.demo.load(calibrated_since, [ctx.spec, ctx.report], ui.totals, **unqueued)

    def refused(w: Workbench, e: gr.Error, n_extra: int = 0, warning: bool = False) -> list:
        """The answer to a load refused: nothing changes but the history, which keeps the message to show (in
        shown_outputs), n_extra outputs skipped, and ui.refused's new value, whose change shows it."""
        with HISTORY_LOCK:
            token = w.refuse({'message': str(e.message), 'title': str(e.title or 'Error'), 'warning': warning})
        return [w if c is hist else gr.skip() for c in shown_outputs] + [gr.skip()] * n_extra + [token]

    def show_problem(w: Workbench) -> None:
        """The queued step that shows the loads refused (the field ui.refused changed): each as a toast, a warning
        for a link that could not be restored (the page keeps its design), else an error. Messages were escaped
        when the refusal was made (user_error)."""
        with HISTORY_LOCK:
            pending = w.take_refusals() if isinstance(w, Workbench) else []
        for i, p in enumerate(pending):
            if p['warning'] or i < len(pending) - 1:
                gr.Warning(p['message'], title=p['title'])
            else:
                raise gr.Error(p['message'], title=p['title'], print_exception=False)

    ui.refused.change(show_problem, hist, None, **chained)
    ctx.changes_design(ui.loaded.change(None, None, None, **PRIVATE))  # a design loaded, not a load refused

    ctx.extras['restore_link'] = restore_link

    def preset_picked(name: str | None) -> dict | None:
        """The preset picked (a crafted request's other name is refused by name; none picked changes nothing)."""
        return catalog.get_preset(name) if name else None

    # a replacement like any load: the design it replaces stays one undo away, and the preset field then names the
    # preset, or none (fill)
    load_spec(preset.input, preset_picked, [preset])
    load_spec(ui.scratch.click, catalog.scratch_spec, [])
    _wire_history(ui, io, restored, shown_outputs, followed, verify_after)
    _wire_pins(ui, ctx)

    # the first page shows the default design's numbers as it renders: the same fill and recount a loaded
    # design gets, run once here (closed-form arithmetic, no model code), not as events after the page loads
    first = catalog.get_preset(catalog.DEFAULT_PRESET)
    show_initially(fill_outputs, fill(first))
    show_initially(refresh_outputs, counter('replace')(None, Workbench(), *io.values_of(first)))
    built = _latency_card(catalog.parse_spec(first))

    def calibrated_card(spec: dict, report: dict):
        """The first page's latency card was rendered at build time: a calibration made since (the Measure tab's
        or `explorer calibrate`) shows as the page loads (restore_link's calibrated_since)."""
        if not spec or not report:
            return gr.skip()
        shown = catalog.parse_spec(spec)
        return gr.skip() if _latency_card(shown) == built else _totals_html(shown, report)


def _shown_design(read_form, values) -> dict | None:
    """The design the form shows, as the recount would commit it (None when it is not valid)."""
    try:
        return catalog.parse_spec(read_form(values)).to_dict()
    except SpecError:
        return None


def _wire_history(ui: SimpleNamespace, io: SimpleNamespace, restored, outputs: list, followed, wire) -> None:
    """Undo and redo: each takes a committed design from the history and `restored` shows and counts it in one
    answer (`outputs`), `followed` adds the hidden field the other tabs follow (ui.loaded); `wire` chains the
    verification onto each event."""
    skip_all = [gr.skip()] * len(outputs)

    def undo(request: gr.Request, w: Workbench, *values):
        with HISTORY_LOCK:
            current = w.current()
            if current is None:
                return skip_all
            shown = _shown_design(io.read_form, values)
            # the network only: a field typed and then Undo clicked sends the form before the edit's answer (with
            # its -modN name) arrived, though the edit was counted first; comparing names lost that click
            if w.invalid or shown is None or not same_design({**shown, 'name': current['name']}, current):
                w.invalid, w.notice = False, ''
                return restored(request, w, current)  # an edit not counted yet (or invalid) is what undo takes back
            back = w.undo()
            return restored(request, w, back) if back is not None else skip_all

    def redo(request: gr.Request, w: Workbench):
        with HISTORY_LOCK:
            again = w.redo()
            return restored(request, w, again) if again is not None else skip_all

    unqueued = dict(show_progress='hidden', queue=False, **PRIVATE)
    for button in (ui.undo, ui.notice_undo):
        wire(button.click(followed(undo), [ui.hist, *io.form], [*outputs, ui.loaded], **unqueued))
    wire(ui.redo.click(followed(redo), ui.hist, [*outputs, ui.loaded], **unqueued))


def _pin_choices(pins: list[dict]) -> list[tuple[str, str]]:
    """(label, name) per pin: the name with its parameter and MAC counts."""
    out = []
    for p in pins or []:
        try:
            r = prof.profile(catalog.parse_spec(p['spec']))
            out.append(
                (f'{p["name"]} · {units.fmt_count(r["params"])} params · {units.fmt_count(r["macs"])} MACs', p['name'])
            )
        except SpecError:
            out.append((p['name'], p['name']))
    return out


def _wire_pins(ui: SimpleNamespace, ctx: AppContext) -> None:
    """Pin the design shown, list the pins, load one back (a replacement, so undoable), unpin one."""

    def do_pin(w: Workbench, pins: list[dict] | None, spec: dict | None):
        if not spec:
            return gr.skip(), 'Nothing to pin yet.'
        if w.invalid:
            return gr.skip(), 'The form is not a valid network: fix the marked field first (a pin is what you see).'
        new, message = history.pin(pins or [], spec)
        return new, md_text(message)

    def do_unpin(pins: list[dict] | None, name: str | None):
        if not name:
            return gr.skip(), 'Choose a pinned design first.'
        return history.unpin(pins or [], name), md_text(f'Unpinned {name}.')

    def do_load(pins: list[dict] | None, name: str | None):
        spec = history.find_pin(pins or [], name) if name else None
        if spec is None:
            raise gr.Error('Choose a pinned design to load.', print_exception=False)
        return spec, md_text(f'Loaded the pin {name}.')  # what the line said about the last Pin is stale now

    kept = ui.kept_pins

    def restore(saved, hist):
        pins, message = history.restore_pins(saved)
        history.reserve_pin_names(hist.names, pins)  # the next edits' -modN names pass the pins' by
        return (pins, md_text(message)) if message else (gr.skip(), gr.skip())

    ctx.demo.load(restore, [kept, ui.hist], [ctx.pins, ui.pin_status], show_progress='hidden', **PRIVATE)
    ctx.pins.change(lambda pins: pins or [], ctx.pins, kept, show_progress='hidden', **PRIVATE)
    ui.pin.click(do_pin, [ui.hist, ctx.pins, ctx.spec], [ctx.pins, ui.pin_status], show_progress='hidden', **PRIVATE)
    ui.pin_drop.click(do_unpin, [ctx.pins, ui.pins], [ctx.pins, ui.pin_status], show_progress='hidden', **PRIVATE)
    ctx.load_spec(ui.pin_load.click, do_load, [ctx.pins, ui.pins], [ui.pin_status])
    ui.pins.change(
        lambda name: [gr.update(interactive=bool(name))] * 2,
        ui.pins,
        [ui.pin_load, ui.pin_drop],
        show_progress='hidden',
        **PRIVATE,
    )
    ctx.pins.change(
        lambda pins: gr.update(choices=_pin_choices(pins), value=None),
        ctx.pins,
        ui.pins,
        show_progress='hidden',
        **PRIVATE,
    )


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
