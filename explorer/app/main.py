"""The Gradio app: `build_demo()` lays out the tabs and wires them to explorer.handlers.

This module and the `ui_*.py` files next to it are the only ones that import gradio. Handlers are plain
functions (explorer.handlers, explorer.measure.compare); figures come from explorer.viz.plots; the composition lives in
`gr.State` as a spec dict (never a model).

Adding a tab: write `add_<name>_tab(ctx: AppContext) -> None` in its own module and list `'module:function'`
in TAB_HOOKS (a missing module is skipped, so a tab can land later). The function is called inside
`gr.Tabs()`: it opens its own `gr.Tab(...)` and creates every component, gr.State included, inside that Tab
(a component directly under gr.Tabs shifts the tab buttons' labels in Gradio 6). Events may be wired after.
"""
from __future__ import annotations

import importlib

import gradio as gr

from explorer.app.context import AppContext

# tabs added after the built-in ones, in this order ('module:function'; a missing module is skipped)
TAB_HOOKS = ['explorer.app.predict:add_predict_tab', 'explorer.app.train:add_train_tab']

def build_demo() -> gr.Blocks:
    """The whole app. Cheap: no model is built and no cost is counted until a page loads."""
    from explorer.app.compose import add_compose_tab
    from explorer.app.panels import add_compare_tab, add_measure_tab, add_share_tab, register_api

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
