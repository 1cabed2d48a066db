"""The Gradio app: `build_demo()` lays out the tabs; each tab's module wires its events.

The `explorer.app` modules are the only ones that import gradio. A handler parses its inputs, calls one function
of the layers below (explorer.core, explorer.measure, explorer.explain, explorer.train) and formats the answer;
figures come from explorer.viz; the composition lives in `gr.State` as a spec dict (never a model).

Adding a tab: write `add_<name>_tab(ctx: AppContext) -> None` in its own module and list it in TABS. The
function is called inside `gr.Tabs()`: it opens its own `gr.Tab(...)` and creates every component, gr.State
included, inside that Tab (a component directly under gr.Tabs shifts the tab buttons' labels in Gradio 6).
Events may be wired after.
"""

from __future__ import annotations

import threading

import gradio as gr

from explorer.app.compose import add_compose_tab
from explorer.app.context import AppContext, load_model_code, refuse_unreadable_values
from explorer.app.panels import add_compare_tab, add_measure_tab, add_share_tab, register_api
from explorer.app.predict import add_predict_tab
from explorer.app.search import add_search_tab
from explorer.app.train import add_train_tab
from explorer.app.workers import HELPER

_PRELOAD = threading.Event()


def preload_model_code() -> None:
    """Import the model code (torch, timm, fvcore, captum) in a background thread, once: the page and its counts
    never wait for it, and the first prediction or verification finds it loaded."""
    if _PRELOAD.is_set():
        return
    _PRELOAD.set()

    threading.Thread(target=load_model_code, daemon=True, name='preload-model-code').start()
    HELPER.start()  # the process that verifies counts with fvcore imports its model code too


TABS = (
    add_compose_tab,
    add_measure_tab,
    add_compare_tab,
    add_search_tab,
    add_share_tab,
    add_predict_tab,
    add_train_tab,
)


def build_demo() -> gr.Blocks:
    """The whole app. Cheap: no model is built and no cost is counted until a page loads."""
    # Gradio's own cache (uploads, files handed to the browser) is swept every 30 min of anything over 1 h old
    with gr.Blocks(title='MetaFormer Explorer', delete_cache=(1800, 3600)) as demo:
        gr.HTML(
            '<div id="mfx-header"><h1>MetaFormer Explorer</h1><p>Compose a MetaFormer stage by stage, see its '
            'cost at once, measure it, compare it with every published model.</p></div>'
        )
        ctx = AppContext(demo=demo, spec=gr.State(None), report=gr.State(None), history=gr.State([]), pins=gr.State([]))
        register_api()  # first, so the API names are taken before any UI event is named after its function
        with gr.Tabs() as tabs:
            ctx.extras['tabs'] = tabs  # a tab may switch to another (Search opens a design in Compose)
            for add_tab in TABS:
                add_tab(ctx)
        # after the page is served: the model code loads while the visitor reads the first counts
        demo.load(preload_model_code, None, None, api_visibility='private', show_progress='hidden', queue=False)
    refuse_unreadable_values(demo)
    demo.queue(default_concurrency_limit=4)
    return demo
