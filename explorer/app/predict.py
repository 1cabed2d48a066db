"""The "Predict & explain" tab: top-k predictions, captum attribution overlays, a two-model comparison,
token-mixing maps and effective receptive fields.

Hook: `add_predict_tab(ctx)` opens its own `gr.Tab` inside the app's `gr.Tabs()`; `ctx.spec` (a gr.State
holding the composer's spec dict) feeds the "(composer spec)" model choice. Without a ctx the tab keeps a
State of its own. The handlers below are plain functions (values in, figure + Markdown out) so they can be
tested without a server; models are cached here by (spec, weights), never stored in gr.State.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Callable

import gradio as gr

from explorer.app.context import MODEL_SLOTS, api_error, endpoint, html_text, load_model_code, md_text
from explorer.core.catalog import get_preset, preset_names, pretrained_name
from explorer.core.registry import show
from explorer.core.spec import ArchSpec, SpecError
from explorer.explain.cache import ModelCache
from explorer.explain.images import ImageError, example_images, example_path, examples_for, fmnist_examples, load_image
from explorer.explain.methods import (
    BASELINE_METHODS,
    BASELINES,
    METHODS,
    RANDOM_WARNING,
    resolve_baseline,
    resolve_method,
)
from explorer.measure.units import whole_number
from explorer.viz import predict as pp

COMPOSER = '(composer spec)'
FROM_CHECKPOINT = '(spec inside checkpoint)'
TRAINED = 'trained: '  # prefix of the trained checkpoints' choices (shipped Fashion-MNIST models, the user's)
WEIGHT_MODES = ('pretrained', 'checkpoint', 'random')
MODELS = ModelCache(size=3)  # loaded models by (spec, weights); never in gr.State
USER_ERRORS = (SpecError, ImageError, ValueError)  # WeightsError is a ValueError
# The model code (torch, timm, captum) is imported by the handlers that run a model, not with this module: the
# page and its counts come up without waiting for it.


# ---- plain handlers ---------------------------------------------------------------------------------------
def trained_choices() -> dict[str, str]:
    """'trained: <name>' -> checkpoint path, for the shipped Fashion-MNIST models and the user's own."""
    from explorer.train.checkpoints import list_trained

    out = {}
    for t in list_trained():
        out.setdefault(f'{TRAINED}{t["name"]}', t['path'])
    return out


def default_choice() -> str:
    """The most accurate shipped trained model (works offline), else a timm preset."""
    from explorer.train.checkpoints import list_trained

    shipped = [t for t in list_trained() if t['shipped'] and t['accuracy'] is not None]
    return f'{TRAINED}{max(shipped, key=lambda t: t["accuracy"])["name"]}' if shipped else 'poolformer_s12'


def _epochs(n) -> str:
    """30.002 -> '30 epochs', 2.3 -> '2.3 epochs', 1 -> '1 epoch'."""
    if not isinstance(n, (int, float)):
        return 'epochs unknown'
    v = round(n, 1)
    return f'{v:g} epoch' + ('' if v == 1 else 's')


def second_choice(first: str) -> str:
    """The second model to compare with: another shipped trained model (works offline), else a preset."""
    others = [c for c in trained_choices() if c != first]
    return others[0] if others else 'poolformer_s12'


def _trained_path(choice: str) -> str:
    path = trained_choices().get(choice)
    if path is None:
        raise ValueError(
            f'model: {show(choice, 40)} is not a trained checkpoint on this machine; '
            f'available: {", ".join(trained_choices()) or "none"}'
        )
    return path


def resolve_spec(choice: str, spec_dict: dict | None, checkpoint: str | None) -> ArchSpec:
    load_model_code()  # one thread imports torch/timm at a time (the page-load preload may be importing them now)
    from explorer.explain.weights import checkpoint_spec  # torch: only on a request, never while the page is built

    if not isinstance(choice, str) or not choice:
        raise ValueError('model: pick a preset, a trained model or the composer spec')
    if choice.startswith(TRAINED):
        return checkpoint_spec(_trained_path(choice))
    if choice == COMPOSER:
        if not spec_dict:
            raise ValueError('model: the composer has no valid spec yet; compose one or pick a preset')
        return ArchSpec.from_dict(spec_dict)
    if choice == FROM_CHECKPOINT:
        if not checkpoint:
            raise ValueError('model: upload a MetaFormer Explorer .safetensors checkpoint to use its spec')
        spec = checkpoint_spec(checkpoint)
        if spec is None:
            raise ValueError('model: the uploaded checkpoint holds no spec; pick a preset or the composer spec')
        return spec
    return preset_spec(choice)


def image_path_only(payload):
    """The Predict image's preprocessing (set on the gr.Image instance): the uploaded file's path, nothing decoded
    (load_image decodes, with its format allow-list and pixel limit). gr.Image's own decoded an image sent as a
    data: URL with every PIL decoder (EPS reaches Ghostscript) and whole (169 M pixels from a 219 kB request,
    1.7 GB) before any check of the app's, and an upload PIL could not identify ended in a blank 'Error'. (A
    gr.Image subclass would do the same, but Gradio writes a .pyi stub beside any module defining one.)"""
    if payload is None:
        return None
    if (payload.url or '').startswith('data:') or not payload.path:
        raise gr.Error(
            'image: send an uploaded image file (PNG, JPEG, WebP, BMP, GIF or TIFF); a data: URL is not read',
            title='Bad request',
            print_exception=False,
        )
    return str(payload.path)


def preset_spec(name: str) -> ArchSpec:
    """A preset by name: the server opens no file a request names, so anything else is an unknown model."""
    if name not in preset_names():
        trained = [c.removeprefix(TRAINED) for c in trained_choices()]
        raise ValueError(
            f'unknown model {show(name, 40)}; known models: trained ones ({", ".join(trained) or "none"}) '
            f'and presets ({", ".join(preset_names())})'
        )
    return ArchSpec.from_dict(get_preset(name))


def get_model(choice: str, spec_dict: dict | None, mode: str, checkpoint: str | None):
    """The model a picker names with the chosen weights (explain.session.Loaded), cached by spec and weights."""
    from explorer.explain.session import open_model
    from explorer.explain.weights import checkpoint_spec

    trained = _trained_path(choice) if isinstance(choice, str) and choice.startswith(TRAINED) else None
    spec = checkpoint_spec(trained) if trained else resolve_spec(choice, spec_dict, checkpoint)
    if mode not in WEIGHT_MODES:
        raise ValueError(f'weights: {mode!r} is not allowed; choose from {", ".join(WEIGHT_MODES)}')
    uploaded = mode == 'checkpoint' and bool(checkpoint)
    if trained and mode != 'random' and not uploaded:  # a trained model's own weights
        mode, checkpoint = 'checkpoint', trained
    elif choice == FROM_CHECKPOINT and mode == 'pretrained':  # the weights of the checkpoint the spec came from
        mode = 'checkpoint'  # (pretrained loaded timm's weights for a preset's spec, or failed for any other)
    if mode == 'checkpoint' and not checkpoint:
        raise ValueError('weights: upload a checkpoint (.safetensors, .pth, .pth.tar) or choose pretrained/random')
    weights = checkpoint if mode == 'checkpoint' else mode
    # random weights for a checkpoint's own spec: that checkpoint's preprocessing (not timm's ImageNet defaults)
    source = trained or (checkpoint if choice == FROM_CHECKPOINT else None)
    file = checkpoint if mode == 'checkpoint' else source if mode == 'random' else None
    stamp = os.path.getmtime(file) if file and os.path.exists(file) else None
    key = (spec.to_json(), mode, file, stamp)
    if trained and not uploaded:
        label = f'trained model {choice.removeprefix(TRAINED)!r}'
    elif mode == 'checkpoint':  # an upload: into a trained model's network too (it was ignored, the review)
        label = 'the uploaded checkpoint'
    else:
        label = f'timm {pretrained_name(spec)} (Hugging Face)'
    return MODELS.get(
        key, lambda: open_model(spec, weights, label=label, preprocessing_of=file if mode == 'random' else None)
    )


def _status(spec: ArchSpec, info) -> str:
    if info.trained:
        text = f'**{md_text(spec.name)}**: {md_text(info.banner())}'
        if info.report is not None and not info.report.ok:
            text += f'\n\n<pre>{html_text(info.report, 4000)}</pre>'
        return text
    return f'**{md_text(spec.name)}**: ⚠️ {RANDOM_WARNING}'


def _error(e: Exception) -> str:
    return f'**Error:** {md_text(e)}'


def predict_handler(choice, spec_dict, mode, checkpoint, image_path, topk=5):
    """-> (top-k Figure, status Markdown)."""
    from explorer.explain.predict import predict

    try:
        m = get_model(choice, spec_dict, mode, checkpoint)
        if not image_path:
            raise ValueError('image: pick an example or upload an image')
        img = load_image(image_path)
        with MODELS.lock(m.model):
            res = predict(m.model, img, m.cfg, topk=int(topk), weights=m.info)
    except USER_ERRORS as e:
        return None, _error(e)
    k = len(res.top)
    every = f' (all {k} classes; asked for {int(topk)})' if k < int(topk) else ''  # a model with fewer classes
    fig = pp.topk_figure([p.__dict__ for p in res.top], f'{m.spec.name}: top-{k}{every}')
    return fig, _status(m.spec, m.info)


def _attribution(
    choice,
    spec_dict,
    mode,
    checkpoint,
    image_path,
    method,
    smoothgrad,
    target,
    stage,
    progress: Callable | None = None,
    baseline: str = 'black',
):
    from explorer.explain.session import explain

    m = get_model(choice, spec_dict, mode, checkpoint)
    if not image_path:
        raise ValueError('image: pick an example or upload an image')
    target = whole(target, 'target class', -1)
    stage = whole(stage, 'GradCAM stage', -1)  # 1 = S1 as in the form, -1: the last
    n = m.spec.num_stages
    if resolve_method(method)[0] != 'gradcam':  # the field is greyed out and keeps a value for another model
        stage = -1
    elif stage == 0:
        raise ValueError('GradCAM stage: 0 is not a stage; stages count from 1 (S1), or -1 for the last')
    elif not -n <= stage <= n:  # in the form's numbering (the explainer counts from 0)
        raise ValueError(
            f'GradCAM stage: {show(stage)} is out of range; the model has {n} stages (1 to {n}: S1 to S{n}, or -1 '
            'for the last)'
        )
    with MODELS.lock(m.model):
        e = explain(
            m,
            load_image(image_path),
            method,
            target=None if target == -1 else target,
            stage=stage - 1 if stage > 0 else stage,
            smoothgrad=bool(smoothgrad),
            progress=progress,
            baseline=baseline,
        )
    return m, e


def trust_text(e) -> str:
    """How far an explanation can be believed, as Markdown: its baseline, IG's completeness, the faithfulness
    curves beside random orders, and how long it took."""
    from explorer.explain.session import completeness_text

    lines = [f'**{md_text(e.title)}**, {md_text(e.baseline_text)}.']
    if e.completeness:
        lines.append(md_text(completeness_text(e.completeness, e.baseline)) + '.')
    if e.faithfulness:
        lines.append(f'How far to trust it: {md_text(e.faithfulness.text())}.')
    lines.append(f'Computed in {e.seconds:.1f} s.')
    return '\n\n'.join(lines)


def warning_html(notes: list[str]) -> str:
    """The random-weights flag shown next to a map ('' when every model is trained)."""
    return ''.join(f'<div class="mfx-trust-warning">⚠️ {html_text(n)}</div>' for n in notes)


def attribution_view(
    choice,
    spec_dict,
    mode,
    checkpoint,
    image_path,
    method='ig',
    smoothgrad=False,
    target=None,
    stage=-1,
    progress: Callable | None = None,
    baseline='black',
) -> tuple:
    """-> (overlay Figure, faithfulness Figure, status Markdown, warning HTML, trust Markdown)."""
    try:
        method, implied = resolve_method(method)  # 'smoothgrad' names SmoothGrad saliency
        smoothgrad = smoothgrad or implied
        baseline = resolve_baseline(baseline)
        m, e = _attribution(
            choice, spec_dict, mode, checkpoint, image_path, method, smoothgrad, target, stage, progress, baseline
        )
    except USER_ERRORS as err:
        return None, None, _error(err), '', ''
    title = f'{m.spec.name}: {e.title}, class {e.target} ({pp.clip_text(e.label, 30)}, p={e.prob:.2f})'
    fig = pp.overlay_figure(e.image, e.map, title)
    ffig = pp.faithfulness_figure({e.title: e.faithfulness.to_dict()}) if e.faithfulness else None
    return fig, ffig, _status(m.spec, m.info), warning_html([e.warning] if e.warning else []), trust_text(e)


def attribute_handler(
    choice,
    spec_dict,
    mode,
    checkpoint,
    image_path,
    method='ig',
    smoothgrad=False,
    target=None,
    stage=-1,
    progress: Callable | None = None,
    baseline='black',
):
    """-> (overlay Figure, faithfulness Figure, status Markdown with the trust text and any warning)."""
    fig, ffig, status, warning, trust = attribution_view(
        choice, spec_dict, mode, checkpoint, image_path, method, smoothgrad, target, stage, progress, baseline
    )
    return fig, ffig, '\n\n'.join(t for t in (status, trust) if t)


def compare_handler(
    choice_a,
    mode_a,
    choice_b,
    mode_b,
    spec_dict,
    checkpoint,
    image_path,
    method='ig',
    smoothgrad=False,
    progress: Callable | None = None,
    baseline='black',
):
    """Same image, method and baseline, two models side by side.
    -> (Figure, faithfulness Figure, status Markdown, warning HTML)."""
    panels, curves, notes, warnings = [], {}, [], []
    try:
        method, implied = resolve_method(method)  # 'smoothgrad' names SmoothGrad saliency
        smoothgrad = smoothgrad or implied
        baseline = resolve_baseline(baseline)
        for choice, mode in ((choice_a, mode_a), (choice_b, mode_b)):
            m, e = _attribution(
                choice, spec_dict, mode, checkpoint, image_path, method, smoothgrad, None, -1, progress, baseline
            )
            flag = ' ⚠️ random weights' if e.warning else ''
            panels.append(
                {
                    'image': e.image,
                    'map': e.map,
                    'title': f'{m.spec.name}{flag}: {pp.clip_text(e.label, 22)} ({e.prob:.2f})',
                }
            )
            # by position: two models of one name (a composer edit beside its preset) would share one key
            curves[f'{"AB"[len(curves)]}: {m.spec.name} ({mode})'] = e.faithfulness.to_dict()
            notes.append(_status(m.spec, m.info) + '\n\n' + trust_text(e))
            if e.warning:
                warnings.append(f'{m.spec.name}: {e.warning}')
    except USER_ERRORS as err:
        return None, None, _error(err), ''
    return pp.compare_figure(panels), pp.faithfulness_figure(curves), '\n\n---\n\n'.join(notes), warning_html(warnings)


def mixing_handler(
    choice,
    spec_dict,
    mode,
    checkpoint,
    image_path,
    stage=0,
    block=0,
    row=-1,
    col=-1,
    method='auto',
    reduce='diag',
    head='mean',
):
    """-> (mixing-map Figure, status Markdown). row/col -1: the centre token."""
    from explorer.explain.mixing import mixing_map
    from explorer.explain.predict import preprocess, to_display

    try:
        m = get_model(choice, spec_dict, mode, checkpoint)
        spec, info = m.spec, m.info
        x = preprocess(load_image(image_path), m.cfg) if image_path else None
        row, col = whole(row, 'query row', -1), whole(col, 'query col', -1)
        if (row, col) != (-1, -1) and min(row, col) < 0:  # one field left at the centre: the other was ignored
            raise ValueError(
                f'query: row {show(row)}, col {show(col)}: give both (0 and up), or both -1 for the centre token'
            )
        query = None if (row, col) == (-1, -1) else (row, col)
        with MODELS.lock(m.model):
            mm = mixing_map(m.model, int(stage), int(block), query, x, method=method, reduce=reduce)
        if head in (None, '', 'mean'):
            w, which = mm.mean, 'mean over heads' if mm.weights.shape[0] > 1 else ''
        else:
            try:
                h = whole(head, 'head', 0)
            except ValueError:
                raise ValueError(
                    f"head: {show(head)} must be 'mean' or a head index (0 to {mm.weights.shape[0] - 1})"
                ) from None
            if not 0 <= h < mm.weights.shape[0]:
                raise ValueError(f'head: {show(h)} is out of range; this mixer has {mm.weights.shape[0]} head(s)')
            w, which = mm.weights[h], f'head {h}'
    except USER_ERRORS as e:
        return None, _error(e)
    img = to_display(x, m.cfg) if x is not None else None
    how = mm.method + (f', {mm.reduce}' if mm.reduce else '')
    title = f'S{mm.stage + 1} block {mm.block + 1}: {mm.mixer} ({how}) query (row, col) {mm.query} {which}'
    status = (
        _status(spec, info) + f'\n\n{mm.grid[0]}x{mm.grid[1]} tokens; weights sum {w.sum():.4g}; '
        f'{mm.weights.shape[0]} head(s).'
        + (
            ''
            if x is not None
            else ' No image: computed on a seeded random mixer input; this map does not depend on the input.'
            if not mm.depends_on_input
            else ' **No image: computed on a seeded random mixer input, not on an image; this map depends on the '
            'input, so pick an image to see what the model does on it.**'
        )
    )
    return pp.mixing_figure(img, w, mm.query, title), status


def _mixing_spec(choice, spec_dict) -> ArchSpec:
    return resolve_spec(choice, spec_dict, None) if choice != FROM_CHECKPOINT else None


def query_ranges(choice, spec_dict, stage=0) -> str:
    """The valid values of the token-mixing fields for this model and stage, as Markdown."""
    if not choice:
        return 'Valid ranges appear once a model is chosen.'
    try:
        spec = _mixing_spec(choice, spec_dict)
    except USER_ERRORS:
        spec = None
    if spec is None:
        return 'Valid ranges appear once a model is chosen.'
    n = spec.num_stages
    try:
        i = int(stage)
    except (TypeError, ValueError):
        i = 0
    if not 0 <= i < n:
        return f'stage: 1 to {n} (S1 to S{n}); {i + 1} is out of range.'
    h, w = spec.grid_sizes()[i]
    depth = spec.stages[i].depth
    return (
        f'stage 1 to {n} (S1 to S{n}); block 1 to {depth} in S{i + 1}; '
        f"query row 0 to {h - 1}, col 0 to {w - 1} on S{i + 1}'s {h}x{w} token grid (-1: the centre). "
        'Or click the image to pick the query token.'
    )


def whole(v, name: str, empty: int) -> int:
    """A form's whole-number field: `empty` when it was cleared (gradio sends None), else the integer it holds;
    a fraction, NaN or infinity is refused naming the field (int() truncated 2.7 to class 2, or raised TypeError)."""
    if v is None or v == '':
        return empty
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f'{name}: {show(v)} is not a whole number') from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f'{name}: {show(v)} is not a whole number')
    return int(f)


def _index(v) -> int:
    """A 1-based field value (stage 1 = S1, block 1 = the first) as the handlers' 0-based index; junk stays junk
    for the handler's own message (-1 is out of range)."""
    try:
        return int(v) - 1
    except (TypeError, ValueError):
        return -1


def _stage_block_error(choice, spec_dict, stage, block) -> str | None:
    """The mixing form's stage (1 = S1) and block (1 = first) checked against the model, in the form's own
    numbering; None when they fit (or the model cannot be read here: the handler then says why)."""
    try:
        spec = _mixing_spec(choice, spec_dict)
    except USER_ERRORS:
        return None
    if spec is None:
        return None
    n, i = spec.num_stages, _index(stage)
    if not 0 <= i < n:
        return f'stage: {show(stage)} is out of range; the model has {n} stages (1 to {n}: S1 to S{n})'
    depth = spec.stages[i].depth
    if not 0 <= _index(block) < depth:
        return f'block: {show(block)} is out of range; S{i + 1} has {depth} blocks (1 to {depth})'
    return None


def click_query(choice, spec_dict, mode, checkpoint, image_path, stage, xy) -> tuple:
    """The token under a click at pixel `xy` = (x, y) of the original image, on `stage`'s grid, following the
    model's preprocessing. -> (row, col, note Markdown); the fields keep their values on an error."""
    from explorer.explain.session import token_at

    try:
        if not image_path:
            raise ValueError('image: pick an example or upload an image, then click it')
        m = get_model(choice, spec_dict, mode, checkpoint)
        n = m.spec.num_stages
        i = int(stage)
        if not 0 <= i < n:
            raise ValueError(f'stage: {i + 1} is out of range; the model has {n} stages (S1 to S{n})')
        grid = m.spec.grid_sizes()[i]
        size = load_image(image_path).size
        row, col = token_at(size, m.cfg, grid, (float(xy[0]), float(xy[1])))
    except USER_ERRORS as e:
        return gr.skip(), gr.skip(), _error(e)
    note = (
        f"Query token (row {row}, col {col}) of S{i + 1}'s {grid[0]}x{grid[1]} grid, under pixel "
        f'({int(xy[0])}, {int(xy[1])}) of the image. Press **Mixing map**.'
    )
    return row, col, note


def erf_handler(choice, spec_dict, mode, checkpoint, image_path=None):
    """ERF of every stage averaged over the example images (plus the chosen one). -> (Figure, Markdown)."""
    from explorer.explain.session import receptive_fields

    try:
        m = get_model(choice, spec_dict, mode, checkpoint)
        paths = [str(p) for p in examples_for(m.spec.in_chans)] + ([image_path] if image_path else [])
        images = [load_image(p) for p in paths]
        with MODELS.lock(m.model):
            rows = receptive_fields(m, images)
    except USER_ERRORS as e:
        return None, _error(e)
    table = '| stage | mixer | 20% | 50% | 90% |\n|---|---|---|---|---|\n' + '\n'.join(
        f'| S{r["stage"] + 1} | {r["mixer"]} | '
        + ' | '.join(f'{100 * r["area"][k]:.1f}%' for k in ('20%', '50%', '90%'))
        + ' |'
        for r in rows
    )
    return pp.erf_figure(rows), (
        _status(m.spec, m.info) + f'\n\nFraction of the image area holding 20/50/90% of '
        f"the centre token's |gradient|, {len(paths)} images.\n\n" + table
    )


def weights_hint(choice: str, spec_dict: dict | None) -> str:
    """Which weights a model choice can have (shown under the picker)."""
    if isinstance(choice, str) and choice.startswith(TRAINED):
        from explorer.train.checkpoints import read_metadata

        try:
            m = read_metadata(_trained_path(choice))['metrics']
        except (ValueError, OSError, KeyError):
            return ''
        acc = m.get('test_accuracy')
        return (
            f'Trained here on {m.get("dataset", "Fashion-MNIST")}: test accuracy '
            f'{100 * acc:.2f}%, {_epochs(m.get("epochs"))}. "pretrained" uses these weights; "checkpoint" '
            'an uploaded file in this network.'
            if acc is not None
            else '"pretrained" uses this checkpoint\'s weights; "checkpoint" an uploaded file in this network.'
        )
    try:
        spec = resolve_spec(choice, spec_dict, None) if choice != FROM_CHECKPOINT else None
    except USER_ERRORS:
        return ''
    if spec is None:
        return 'Weights come from the uploaded checkpoint.'
    name = pretrained_name(spec)
    return (
        f'timm pretrained: `{name}` (from the local Hugging Face cache; downloaded when online).'
        if name
        else f'No timm pretrained weights for {md_text(spec.name)}: use a checkpoint, or random ({RANDOM_WARNING}).'
    )


# A click on the image writes its pixel, in the image's own coordinates, into a hidden textbox. gr.Image's
# `.select` does the same but assumes the picture is never shown larger than its file (its scale is capped at 1),
# so on the upscaled 28x28 Fashion-MNIST images it misplaces or drops the click; this script reads the scale the
# picture is drawn at (object-fit: contain).
CLICK_JS = """
(() => {
  if (window.__mfxPredictClick) return;
  window.__mfxPredictClick = true;
  let clicks = 0;
  document.addEventListener('click', (ev) => {
    const root = ev.target.closest && ev.target.closest('#mfx-predict-image');
    const img = root && root.querySelector('img');
    if (!img || !img.naturalWidth || ev.target.closest('button')) return;
    const r = img.getBoundingClientRect();
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const x = (ev.clientX - r.left - (r.width - img.naturalWidth * s) / 2) / s;
    const y = (ev.clientY - r.top - (r.height - img.naturalHeight * s) / 2) / s;
    if (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) return;
    const box = document.querySelector('#mfx-click-xy textarea, #mfx-click-xy input');
    if (!box) return;
    clicks += 1;
    box.value = x.toFixed(2) + ',' + y.toFixed(2) + '#' + clicks;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }, true);
})();
"""


def parse_click(text: str) -> tuple[float, float]:
    """'x,y#n' from CLICK_JS -> (x, y) pixels; ValueError on anything else."""
    try:
        x, y = (float(v) for v in str(text).split('#', 1)[0].split(','))
    except ValueError:
        raise ValueError(f'click: {show(str(text), 40)} is not a pixel position') from None
    if not (0 <= x < 1e5 and 0 <= y < 1e5):
        raise ValueError(f'click: ({x}, {y}) is not a pixel position')
    return x, y


# ---- layout -----------------------------------------------------------------------------------------------
STALE = 'The image or the model changed: press a button to see its results.'


def model_choices() -> list[str]:
    """What the model pickers offer, trained models on this machine included (read again on every call)."""
    return [COMPOSER, FROM_CHECKPOINT] + list(trained_choices()) + preset_names()


def refresh_pickers(*current: str) -> list:
    """New choices for each picker (models trained since the page loaded appear), keeping each selection."""
    choices = model_choices()
    return [gr.Dropdown(choices=choices, value=c) for c in current]


def _model_picker(label: str, default: str):
    choices = model_choices()
    elem = 'mfx-' + label.replace(' ', '-')  # mfx-model, mfx-second-model
    with gr.Row():
        choice = gr.Dropdown(choices, value=default, label=label, scale=3, elem_id=elem)
        mode = gr.Radio(list(WEIGHT_MODES), value='pretrained', label='weights', scale=2, elem_id=f'{elem}-weights')
    return choice, mode


def add_predict_tab(ctx=None) -> dict:
    """Build the tab (opens its own gr.Tab). Returns the main components by name."""
    spec_state = getattr(ctx, 'spec', None) or gr.State(None)
    first = default_choice()
    fmnist = [str(p) for p in fmnist_examples()]
    examples = (
        (fmnist + [str(p) for p in example_images()])
        if first.startswith(TRAINED)
        else [str(p) for p in example_images()] + fmnist
    )
    with gr.Tab('Predict & explain', id='predict') as tab:
        gr.Markdown(
            'What does a model see, and how does each token mixer move information? The models trained '
            "on Fashion-MNIST that ship with the explorer work offline; ImageNet presets load timm's "
            'pretrained weights (PoolFormer v1/v2, ConvFormer, CAFormer) from the Hugging Face cache or '
            'hub; any spec also runs with a checkpoint or with random weights, which still show the '
            "architecture's structure."
        )
        with gr.Row():
            with gr.Column(scale=2):
                choice, mode = _model_picker('model', first)
                if ctx is not None:
                    ctx.extras['predict_model'] = choice  # the Train tab's "Use in Predict" sets it
                hint = gr.Markdown(weights_hint(first, None))
                ckpt = gr.File(
                    label='checkpoint (.safetensors, .pth, .pth.tar)',
                    type='filepath',
                    height=110,
                    file_types=['.safetensors', '.pth', '.tar', '.pt', '.bin'],
                )
            with gr.Column(scale=2):
                image = gr.Image(
                    type='filepath',
                    image_mode=None,  # the file as uploaded: load_image decodes, checks sizes and converts
                    label='image (click it to pick the token-mixing query)',
                    value=examples[0] if examples else None,
                    height=260,
                    elem_id='mfx-predict-image',
                )
                image.preprocess = image_path_only  # Gradio decodes nothing of a request's image (see there)
                click_xy = gr.Textbox(visible='hidden', elem_id='mfx-click-xy')  # written by CLICK_JS
                gr.HTML('', js_on_load=CLICK_JS, elem_id='mfx-click-js', padding=False)
                if examples:
                    gr.Examples(
                        examples,
                        inputs=image,
                        examples_per_page=12,
                        elem_id='mfx-predict-examples',
                        api_visibility='private',  # the page's click; the API has /examples and example names
                        label='examples (Fashion-MNIST test images and photos; licences in '
                        'assets/fmnist/images/LICENSES.md and assets/images/LICENSES.md)',
                    )
        with gr.Tabs():
            with gr.Tab('Top-k'):
                with gr.Row():
                    topk = gr.Slider(1, 20, value=5, step=1, label='top-k')
                    run_pred = gr.Button('Predict', variant='primary')
                topk_plot = gr.Plot(label='top-k')
            with gr.Tab('Attribution'):
                with gr.Row():
                    method = gr.Dropdown(list(METHODS), value='ig', label='method', elem_id='mfx-method')
                    baseline = gr.Dropdown(
                        list(BASELINES),
                        value='black',
                        label='baseline (IG, GradientShap, Occlusion)',
                        elem_id='mfx-baseline',
                        info='black image, blurred input, or seeded uniform noise',
                    )
                    smooth = gr.Checkbox(False, label='SmoothGrad (NoiseTunnel)')
                    target = gr.Number(-1, precision=0, label='target class (-1: predicted)')
                    stage = gr.Number(
                        -1,
                        precision=0,
                        label='GradCAM stage (1 = S1, -1: last)',
                        interactive=False,
                        elem_id='mfx-cam-stage',
                    )
                    run_attr = gr.Button('Explain', variant='primary', elem_id='mfx-explain')

                def method_fields(m: str):  # off what the method does not use (it was read and ignored)
                    return (
                        gr.update(interactive=m in BASELINE_METHODS),
                        # SmoothGrad with occlusion is refused: off and unticked
                        gr.update(interactive=False, value=False) if m == 'occlusion' else gr.update(interactive=True),
                        gr.update(interactive=m == 'gradcam'),
                    )

                method.change(method_fields, method, [baseline, smooth, stage], api_visibility='private')
                attr_warning = gr.HTML('', elem_id='mfx-attr-warning')
                with gr.Row():
                    attr_plot = gr.Plot(label='attribution overlay', elem_id='mfx-attr-plot', scale=3)
                    attr_trust = gr.Markdown(elem_id='mfx-attr-trust', elem_classes='mfx-trust')
                del_plot = gr.Plot(label='faithfulness: deletion and insertion beside random orders')
            with gr.Tab('Compare two models'):
                choice_b, mode_b = _model_picker('second model', second_choice(first))
                run_cmp = gr.Button(
                    'Compare (same image, method and baseline)', variant='primary', elem_id='mfx-compare'
                )
                cmp_warning = gr.HTML('', elem_id='mfx-cmp-warning')
                cmp_plot = gr.Plot(label='side by side')
                cmp_del = gr.Plot(label='faithfulness of both maps beside random orders')
                cmp_trust = gr.Markdown(elem_id='mfx-cmp-trust', elem_classes='mfx-trust')
            with gr.Tab('Token mixing'):
                with gr.Row():
                    # people count stages S1, S2, ... and blocks from 1; the handlers take 0-based indices
                    mstage = gr.Number(1, precision=0, minimum=1, label='stage (1 = S1)', elem_id='mfx-mix-stage')
                    mblock = gr.Number(1, precision=0, minimum=1, label='block (1 = first)', elem_id='mfx-mix-block')
                    mrow = gr.Number(-1, precision=0, label='query row (-1: centre)', elem_id='mfx-mix-row')
                    mcol = gr.Number(-1, precision=0, label='query col (-1: centre)', elem_id='mfx-mix-col')
                    mmethod = gr.Radio(['auto', 'exact', 'jacobian'], value='auto', label='map')
                    mreduce = gr.Radio(['diag', 'norm'], value='diag', label='Jacobian reduction')
                    mhead = gr.Textbox('mean', label='head (mean or index)')
                # filled when the page loads: a trained model's grid is in its checkpoint (torch), not read here
                ranges = gr.Markdown(query_ranges(None, None, 0), elem_id='mfx-mix-ranges', elem_classes='mfx-note')
                click_note = gr.Markdown(elem_id='mfx-mix-click')
                with gr.Row():
                    run_mix = gr.Button('Mixing map', variant='primary')
                    run_erf = gr.Button('Effective receptive fields')
                mix_plot = gr.Plot(label='token-mixing weights')
                erf_plot = gr.Plot(label='effective receptive field per stage')
        # what the last action did (the model's weights, a mixing map's grid, the ERF table): under the results,
        # where the buttons are, not 700 px above them under the checkpoint upload
        status = gr.Markdown(elem_id='mfx-predict-status')

        common = [choice, spec_state, mode, ckpt, image]
        choice.change(weights_hint, [choice, spec_state], hint, api_visibility='private')
        tab.select(
            refresh_pickers, [choice, choice_b], [choice, choice_b], show_progress='hidden', api_visibility='private'
        )  # a model trained in the Train tab is listed at once

        def _attr(c, s, m, k, i, meth, sg, t, st, b, progress=gr.Progress()):
            bar = lambda d, n, phase: progress(d / n, desc=phase)  # noqa: E731
            return attribution_view(c, s, m, k, i, meth, sg, t, st, bar, b)

        def _cmp(ca, ma, cb, mb, s, k, i, meth, sg, b, progress=gr.Progress()):
            bar = lambda d, n, phase: progress(d / n, desc=phase)  # noqa: E731
            return compare_handler(ca, ma, cb, mb, s, k, i, meth, sg, bar, b)

        def _click(c, s, m, k, i, st, xy):
            try:
                point = parse_click(xy)
            except ValueError as e:
                return gr.skip(), gr.skip(), _error(e)
            return click_query(c, s, m, k, i, _index(st), point)

        def _ranges(c, s, st):
            return query_ranges(c, s, _index(st))

        def _mix(c, s, m, k, i, st, bl, *rest):
            bad = _stage_block_error(c, s, st, bl)
            if bad:
                return None, _error(ValueError(bad))
            return mixing_handler(c, s, m, k, i, _index(st), _index(bl), *rest)

        heavy = dict(api_visibility='private', concurrency_id='model', concurrency_limit=2)
        held = MODEL_SLOTS.held  # the work holds its slot to its end: a cancelled event's thread runs on
        # one progress bar, where the answer will appear (it was drawn over every output, the old text included)
        pred_run = run_pred.click(
            held(predict_handler), common + [topk], [topk_plot, status], show_progress_on=topk_plot, **heavy
        )
        attr_run = run_attr.click(
            held(_attr),
            common + [method, smooth, target, stage, baseline],
            [attr_plot, del_plot, status, attr_warning, attr_trust],
            show_progress_on=attr_plot,
            **heavy,
        )
        cmp_run = run_cmp.click(
            held(_cmp),
            [choice, mode, choice_b, mode_b, spec_state, ckpt, image, method, smooth, baseline],
            [cmp_plot, cmp_del, cmp_trust, cmp_warning],
            show_progress_on=cmp_plot,
            **heavy,
        )
        click_xy.change(held(_click), common + [mstage, click_xy], [mrow, mcol, click_note], **heavy)
        for trigger in (mstage.change, choice.change, ctx.demo.load):
            trigger(_ranges, [choice, spec_state, mstage], ranges, api_visibility='private', show_progress='hidden')
        mix_run = run_mix.click(
            held(_mix),
            common + [mstage, mblock, mrow, mcol, mmethod, mreduce, mhead],
            [mix_plot, status],
            show_progress_on=mix_plot,
            **heavy,
        )
        erf_run = run_erf.click(held(erf_handler), common, [erf_plot, status], show_progress_on=erf_plot, **heavy)
        # results of another image or model are taken down when the inputs change (the top-k of the ankle boot stayed
        # under the pullover until Predict was pressed again), and a run still working on the old inputs is
        # cancelled, so that it cannot put its result back afterwards; an edit of the composer's design takes its
        # results down when it is the model shown
        results = [topk_plot, attr_plot, del_plot, attr_warning, attr_trust, cmp_plot, cmp_del, cmp_trust]
        results += [cmp_warning, mix_plot, erf_plot, click_note]  # the note names a pixel of the old image

        def _stale(c=COMPOSER):
            return [None] * len(results) + [STALE] if c == COMPOSER else [gr.skip()] * (len(results) + 1)

        runs = [pred_run, attr_run, cmp_run, mix_run, erf_run]
        stale = dict(api_visibility='private', show_progress='hidden', queue=False, cancels=runs)
        for trigger in (image.change, choice.change, mode.change, ckpt.change):
            trigger(_stale, None, results + [status], **stale)
        compared = [cmp_plot, cmp_del, cmp_trust, cmp_warning]
        for trigger in (choice_b.change, mode_b.change):  # the second model of a comparison
            trigger(lambda: [None] * len(compared), None, compared, **{**stale, 'cancels': [cmp_run]})
        if ctx is not None:  # a composer edit clears only the composer's results, and cancels nothing
            ctx.on_design_change(_stale, choice, results + [status], **{**stale, 'cancels': None})
        for name, fn in API.items():
            fn = held(fn) if name in ('predict', 'mixing_map', 'attribute') else fn
            gr.api(endpoint(fn), api_name=name, concurrency_id='model', concurrency_limit=2)
    return dict(
        choice=choice,
        mode=mode,
        checkpoint=ckpt,
        image=image,
        status=status,
        topk_plot=topk_plot,
        attr_plot=attr_plot,
        compare_plot=cmp_plot,
        mixing_plot=mix_plot,
        erf_plot=erf_plot,
    )


# ---- API (gradio_client) ------------------------------------------------------------------------------------
def api_examples() -> list[str]:
    """Names of the example images an API call can use as `image`."""
    return [p.name for p in fmnist_examples() + example_images()]


def _api_image(image: str):
    """An example's file name, or an image's bytes as base64 (a data: URL is fine). Paths on the server are
    never opened from the API: only the shipped examples."""
    if not isinstance(image, str) or not image:
        raise ValueError('image: give an example name (see /examples) or base64-encoded image bytes')
    example = example_path(image)
    if example is not None:
        return str(example)
    data = image.split(',', 1)[1] if image.startswith('data:') else image
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f'image: {show(image, 40)} is neither an example name (see /examples) nor base64 image bytes'
        ) from None
    return load_image(raw)


def _api_model(model: str, weights: str):
    """get_model for an API call: a preset name, 'trained: name' or just the trained model's name."""
    if not isinstance(model, str) or not model:
        raise ValueError('model: a preset name, or a trained model (see /list_models)')
    if model not in preset_names() and f'{TRAINED}{model}' in trained_choices():
        model = f'{TRAINED}{model}'
    # the API takes no checkpoint: 'checkpoint' is a trained model's own weights (as 'pretrained') or nothing
    if weights not in ('pretrained', 'random') and not (weights == 'checkpoint' and model.startswith(TRAINED)):
        raise ValueError(
            f"weights: {show(weights, 40)} is not allowed; choose pretrained (a trained model's own weights, "
            "timm's for a preset) or random"
        )
    return get_model(model, None, weights, None)


def _raise(e: Exception):
    raise api_error(e) from None  # 'Invalid spec' or 'Invalid request', as every endpoint's refusals


def api_list_models() -> list[str]:
    """Models the predict endpoints take: trained checkpoints here ('trained: name') and every preset."""
    return list(trained_choices()) + preset_names()


def api_predict(model: str, image: str, weights: str = 'pretrained', topk: int = 5) -> dict:
    """Top-k classes of `image` (an example name or base64 bytes) under `model` with `weights`
    ('pretrained': timm's or the trained model's own; 'random'). Probabilities are softmax, fp32, CPU/GPU."""
    from explorer.explain.predict import predict

    try:
        m = _api_model(model, weights)
        img = load_image(_api_image(image))
        topk = whole_number(topk)  # JSON clients may send 3.0
        if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= 100:
            raise ValueError(f'topk: {topk!r} must be an integer in [1, 100]')
        with MODELS.lock(m.model):
            res = predict(m.model, img, m.cfg, topk=topk, weights=m.info)
    except USER_ERRORS as e:
        _raise(e)
    return {'model': m.spec.name, **res.to_dict()}


def api_mixing_map(
    model: str,
    image: str = '',
    weights: str = 'pretrained',
    stage: int = 0,
    block: int = 0,
    row: int = -1,
    col: int = -1,
    method: str = 'auto',
) -> dict:
    """Token-mixing weights of one block for one query token (-1, -1: the centre) over the input token grid,
    averaged over heads. `image` may be empty: the exact maps of pooling, identity and random mixers do not depend
    on the input; attention's and every Jacobian map do, and are then computed on a seeded random mixer input
    (`depends_on_input` and `input` in the answer say which)."""
    from explorer.explain.mixing import mixing_map
    from explorer.explain.predict import preprocess

    try:
        m = _api_model(model, weights)
        x = preprocess(load_image(_api_image(image)), m.cfg) if image else None
        stage, block, row, col = (whole_number(v) for v in (stage, block, row, col))  # 1.0 is 1
        for name, v in (('stage', stage), ('block', block), ('row', row), ('col', col)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f'{name}: {v!r} must be an integer')
        query = None if (row, col) == (-1, -1) else (row, col)  # any other pair is checked against the grid
        with MODELS.lock(m.model):
            mm = mixing_map(m.model, stage, block, query, x, method=method)
    except USER_ERRORS as e:
        _raise(e)
    return {
        'model': m.spec.name,
        'mixer': mm.mixer,
        'stage': mm.stage,
        'block': mm.block,
        'query': list(mm.query),
        'grid': list(mm.grid),
        'method': mm.method,
        'depends_on_input': mm.depends_on_input,
        'input': 'image' if x is not None else 'seeded random mixer input',
        'heads': int(mm.weights.shape[0]),
        'weights': mm.mean.astype(float).round(7).tolist(),
    }


def api_attribute(
    model: str,
    image: str,
    weights: str = 'pretrained',
    method: str = 'ig',
    baseline: str = 'black',
    target: int = -1,
    stage: int = -1,
    smoothgrad: bool = False,
    seed: int = 0,
) -> dict:
    """Attribution map of `image` (an example name or base64 bytes) for `target` (-1: the predicted class) with
    `method` (ig, saliency, gradshap, occlusion, gradcam) from `baseline` (black, blurred, noise with `seed`;
    IG, GradientShap and Occlusion; `seed` also draws GradientShap's and SmoothGrad's samples), and how far to
    trust it: the baseline used, IG's completeness gap (steps, gap relative to f(x) - f(baseline), converged),
    deletion and insertion areas beside random pixel orders, and `warning` when the weights are random (nothing
    to attribute). `map`: (H, W) float rows."""
    from explorer.explain.session import completeness_text, explain

    try:
        m = _api_model(model, weights)
        img = load_image(_api_image(image))
        method, implied = resolve_method(method)  # 'smoothgrad' names SmoothGrad saliency
        baseline = resolve_baseline(baseline)
        target, stage, seed = (whole_number(v) for v in (target, stage, seed))  # 1.0 is 1
        for name, v in (('target', target), ('stage', stage), ('seed', seed)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f'{name}: {v!r} must be an integer')
        if not 0 <= seed < 2**31:
            raise ValueError(f'seed: {show(seed)} must be in [0, 2**31)')
        if not isinstance(smoothgrad, bool):  # 'false' is truthy: it must not turn SmoothGrad on
            raise ValueError(f'smoothgrad: {show(smoothgrad, 40)} must be true or false')
        with MODELS.lock(m.model):
            e = explain(
                m,
                img,
                method,
                target=None if target == -1 else target,
                stage=stage,
                smoothgrad=smoothgrad or implied,
                baseline=baseline,
                seed=seed,
            )
    except USER_ERRORS as err:
        _raise(err)
    return {
        'model': m.spec.name,
        'method': method,
        'smoothgrad': bool(smoothgrad) or implied,
        'baseline': e.baseline,
        'baseline_text': e.baseline_text,
        'target': e.target,
        'label': e.label,
        'target_prob': e.prob,
        'completeness': e.completeness,
        'completeness_text': completeness_text(e.completeness, e.baseline) if e.completeness else None,
        'faithfulness': e.faithfulness.to_dict() if e.faithfulness else None,
        'warning': e.warning,
        'weights': m.info.to_dict(),
        'settings': e.settings,
        'seconds': e.seconds,
        'map': [[float(f'{v:.5g}') for v in row] for row in e.map.tolist()],
    }


API = {
    'list_models': api_list_models,
    'examples': api_examples,
    'predict': api_predict,
    'mixing_map': api_mixing_map,
    'attribute': api_attribute,
}


__all__ = [
    'add_predict_tab',
    'predict_handler',
    'attribute_handler',
    'compare_handler',
    'mixing_handler',
    'erf_handler',
    'get_model',
]
