"""The Gradio app: `build_demo()` lays out the tabs and wires them to explorer.handlers.

This module and the `ui_*.py` files next to it are the only ones that import gradio. Handlers are plain
functions (explorer.handlers, explorer.compare); figures come from explorer.plots; the composition lives in
`gr.State` as a spec dict (never a model).

Adding a tab: write `add_<name>_tab(ctx: AppContext) -> None` in its own module and list `'module:function'`
in TAB_HOOKS (a missing module is skipped, so a tab can land later). The function is called inside
`gr.Tabs()`: it opens its own `gr.Tab(...)` and creates every component, gr.State included, inside that Tab
(a component directly under gr.Tabs shifts the tab buttons' labels in Gradio 6). Events may be wired after.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from .spec import SpecError

# tabs added after the built-in ones, in this order ('module:function'; a missing module is skipped)
TAB_HOOKS = ['explorer.ui_predict:add_predict_tab', 'explorer.ui_train:add_train_tab']

CSS = """
.gradio-container {max-width: 1400px !important}
#mfx-header h1 {margin: 0 0 2px 0; font-size: 1.45rem}
#mfx-header p {margin: 0; color: var(--body-text-color-subdued)}
.mfx-cards {display: flex; gap: 10px; flex-wrap: wrap}
.mfx-card {flex: 1 1 120px; border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px;
           background: var(--background-fill-secondary)}
.mfx-card .k {font-size: 12px; color: var(--body-text-color-subdued)}
.mfx-card .v {font-size: 1.5rem; font-weight: 650; line-height: 1.25}
.mfx-card .x {font-size: 11px; color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums}
.mfx-note {font-size: 12px; color: var(--body-text-color-subdued); margin-top: 6px}
#mfx-verified {color: var(--body-text-color)}
.mfx-error {border: 1px solid #fca5a5; background: #fef2f2; color: #991b1b; border-radius: 8px;
            padding: 6px 12px !important; font-size: 13px}
.mfx-error p, .mfx-error li {color: #991b1b !important}
table.mfx-table {border-collapse: collapse; width: 100%; font-size: 12px; font-variant-numeric: tabular-nums}
table.mfx-table th, table.mfx-table td {padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary);
           text-align: right; white-space: nowrap}
table.mfx-table th {font-weight: 600; color: var(--body-text-color-subdued)}
table.mfx-table td:first-child, table.mfx-table th:first-child, table.mfx-table td.l {text-align: left}
.mfx-tight, .mfx-stage {flex-wrap: nowrap !important; gap: 6px !important}
.mfx-stage {align-items: center; border: 1px solid var(--border-color-primary); border-radius: 6px;
            padding: 2px 4px; background: var(--background-fill-secondary)}
.mfx-stage > *, .mfx-stage .form {min-width: 0}
.mfx-stage .form, .mfx-tight .form {flex-wrap: nowrap !important; align-items: flex-start; background: transparent;
            border: none !important; gap: 6px !important; box-shadow: none !important}
.mfx-stage .container, .mfx-tight .container {height: auto !important; min-height: 0 !important}
.mfx-stage .block, .mfx-tight .block {min-height: 0 !important; padding: 2px 4px !important; border: none !important;
            box-shadow: none !important; background: transparent !important}
.mfx-stage label.container, .mfx-tight label.container {display: block}
.mfx-stage input[type=number], .mfx-tight input[type=number], .mfx-tight input[type=text] {padding: 5px 8px !important}
.mfx-stage label span, .mfx-tight label span {margin-bottom: 3px !important; white-space: nowrap; overflow: hidden;
            text-overflow: ellipsis}
.mfx-stage .block:has(input[type=checkbox]) {min-width: 92px !important; align-self: center}
.mfx-stage .block:has(input[type=checkbox]):last-of-type {min-width: 112px !important}
.mfx-stage-title {flex: 0 0 34px !important; min-width: 34px !important; align-self: center}
.mfx-stage-title div {font-weight: 700; font-size: 13px; text-align: center}
.mfx-remove {flex: 0 0 30px !important; min-width: 30px !important; max-width: 30px; align-self: center}
#mfx-scratch {max-height: 40px; align-self: center; white-space: nowrap; font-size: 14px}
"""
THEME = gr.themes.Default(primary_hue='blue', radius_size='sm', spacing_size='sm', text_size='sm')


@dataclass
class AppContext:
    """What a tab builder gets: the shared state and how to push a spec into the composer.

    spec: gr.State with the composer's last valid spec dict; report: its analytic CostReport dict.
    load_spec(event_fn_returning_spec_dict): wire an event whose function returns a spec dict (or raises
    SpecError) so that the composer shows that spec and recounts it. Returns the chained event.
    """
    demo: gr.Blocks
    spec: gr.State
    report: gr.State
    history: gr.State
    load_spec: Callable = None
    extras: dict = field(default_factory=dict)


def max_upload_mb() -> int:
    """Largest upload (image, checkpoint, spec) the server accepts, MiB: EXPLORER_MAX_UPLOAD_MB, default 512
    (a ConvFormer-B36 checkpoint is about 400 MB). Gradio refuses bigger files before they reach a handler."""
    raw = os.environ.get('EXPLORER_MAX_UPLOAD_MB', '512')
    if not raw.isdigit() or int(raw) <= 0:
        raise SpecError([('', f'EXPLORER_MAX_UPLOAD_MB={raw!r} must be a positive integer')])
    return int(raw)


def launch_kwargs() -> dict:
    """theme, css and the upload limit for Blocks.launch (Gradio 6 takes them there, not in Blocks())."""
    return {'theme': THEME, 'css': CSS, 'max_file_size': f'{max_upload_mb()}mb'}


def build_demo() -> gr.Blocks:
    """The whole app. Cheap: no model is built and no cost is counted until a page loads."""
    from .ui_compose import add_compose_tab
    from .ui_panels import add_compare_tab, add_measure_tab, add_share_tab, register_api

    with gr.Blocks(title='MetaFormer Explorer') as demo:
        gr.HTML('<div id="mfx-header"><h1>MetaFormer Explorer</h1><p>Compose a MetaFormer stage by stage, see its '
                'cost at once, measure it, compare it with every published model.</p></div>')
        ctx = AppContext(demo=demo, spec=gr.State(None), report=gr.State(None), history=gr.State([]))
        register_api()  # first, so the API names are taken before any UI event is named after its function
        with gr.Tabs():
            add_compose_tab(ctx)
            add_measure_tab(ctx)
            add_compare_tab(ctx)
            add_share_tab(ctx)
            for hook in TAB_HOOKS:
                fn = _hook(hook)
                if fn is not None:
                    fn(ctx)
    demo.queue(default_concurrency_limit=4)
    return demo


def _hook(path: str):
    module, _, name = path.partition(':')
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def error_text(e: SpecError) -> str:
    """A SpecError as Markdown: one bullet per field path."""
    lines = [f'- `{p}`: {m}' if p else f'- {m}' for p, m in e.errors]
    return '**Not a valid network** (the numbers show the last valid one):\n' + '\n'.join(lines)


def api_error(e: Exception) -> gr.Error:
    return gr.Error(str(e), title='Invalid spec' if isinstance(e, SpecError) else 'Error', print_exception=False)


__all__ = ['AppContext', 'build_demo', 'launch_kwargs', 'TAB_HOOKS', 'CSS', 'THEME', 'error_text']
