"""The "Train" tab: train the composer's current design on Fashion-MNIST, with a progress bar and live curves.

Layout and wiring only. The work is explorer.train.loop (train, adapt_for_fmnist, list_trained); the figure is
explorer.viz.training. Training runs in a worker thread; the click handler is a generator that drains the
worker's progress events and yields (status, figure, ...) updates, so the plot grows while the model learns.
Checkpoints go to explorer.train.checkpoints.USER_DIR, where list_trained() (Predict & explain, Compare) finds them.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from explorer.app.context import download_file, md_text, spec_download, user_error
from explorer.core.spec import ArchSpec, SpecError
from explorer.train.checkpoints import list_trained
from explorer.train.data import DatasetNotFound, find_dataset
from explorer.train.fit import adapt_for_fmnist, check_trainable, scale_command
from explorer.train.runner import request_stop, training_events
from explorer.viz.training import training_figure

PRIVATE = dict(api_visibility='private')


def adapt_handler(spec: dict | None, img_size: int = 32) -> tuple[dict, str]:
    """(adapted spec dict, Markdown of what changed). Raises gr.Error for a spec that cannot be adapted."""
    if not spec:
        raise gr.Error('Compose a valid network first.', print_exception=False)
    try:
        new, notes = adapt_for_fmnist(spec, int(img_size))
    except (SpecError, ValueError) as e:
        raise user_error(e, title='Cannot adapt') from None
    return new.to_dict(), 'Adapted for Fashion-MNIST: ' + '; '.join(notes) + '.'


def readiness(spec: dict | None) -> str:
    """One line: can this spec be trained as it is, and at what cost per image."""
    if not spec:
        return 'Compose a valid network first.'
    try:
        s = ArchSpec.from_dict(spec)
        check_trainable(s)
    except (SpecError, ValueError) as e:
        return f'**Not trainable as it is:** {md_text(e)}. Press *Adapt to Fashion-MNIST*.'
    cost = ''
    try:
        from explorer.measure.analytic import analytic_cost

        r = analytic_cost(s)
        cost = (
            f' {r.params / 1e6:.2f} M params, {r.macs / 1e6:.1f} M MACs per image '
            f'(one multiply-accumulate = 1; a training step costs about 3x the forward pass).'
        )
    except ImportError:
        pass
    return f'Ready: **{md_text(s.name)}**, {s.img_size}x{s.img_size} grayscale input, 10 classes.{cost}'


def scale_values(spec: dict | None) -> tuple:
    """(the torchrun commands for this design, its spec file to download) for the "at scale" panel."""
    if not spec:
        return 'Compose a valid network first.', None
    try:
        s = ArchSpec.from_dict(spec)
    except SpecError as e:
        return f'Not a valid spec: {e}', None
    path = spec_download(spec)
    return scale_command(s, Path(path).name), path


def _result_text(res) -> str:
    m = res.metrics
    return (
        f'**Done:** test accuracy **{100 * m["test_accuracy"]:.2f}%** ({m["test_correct"]:,}/{m["test_n"]:,}) '
        f'after {m["epochs"]:g} epochs ({m["steps"]} steps, stopped by {m["stopped_by"]}), '
        f'{m["train_time_s"]:.0f} s of training on {m["device"]} with {m["threads"]} threads. '
        f'Saved as the trained model **{md_text(Path(res.checkpoint).stem)}** (pick it in Predict & explain).'
    )


def trained_table() -> list[list]:
    return [
        [
            t['name'],
            None if t['accuracy'] is None else round(100 * t['accuracy'], 2),
            t['params'],
            t['epochs'],
            'shipped' if t['shipped'] else 'trained here',
        ]
        for t in list_trained()
    ]


def add_train_tab(ctx) -> None:
    """The Train tab. ctx: explorer.app.context.AppContext (ctx.spec: gr.State with the composer's spec dict;
    ctx.load_spec(event) pushes a spec the event stored in ctx.spec into the composer)."""
    spec_state = ctx.spec
    with gr.Tab('Train'):
        gr.Markdown(
            'Train the composed design from scratch on **Fashion-MNIST** (60,000 training and 10,000 test '
            'images, 28x28 grayscale, 10 classes; MIT licence, Zalando Research), here on the CPU. '
            'Images are centred on a 32x32 canvas. Recipe: AdamW, warm-up then cosine decay, label '
            'smoothing 0.1, random 2-pixel crops and horizontal flips, optional random erasing (the shipped '
            'best model used 0.25).'
        )
        ready = gr.Markdown(readiness(None))
        with gr.Row():
            img_size = gr.Radio([32, 28], value=32, label='input size', scale=1)
            adapt = gr.Button('Adapt to Fashion-MNIST', scale=1)
        with gr.Row():
            epochs = gr.Number(value=1, minimum=0.05, maximum=100, step=0.5, label='epochs')
            budget = gr.Number(value=0, minimum=0, maximum=24 * 3600, label='time budget (s, 0: none)')
            batch = gr.Dropdown([32, 64, 128, 256], value=128, label='batch size')
            seed = gr.Number(value=0, precision=0, minimum=0, label='seed')
            limit = gr.Dropdown(['all 60,000', '10,000', '2,000'], value='all 60,000', label='training images')
            erase = gr.Slider(0, 1, value=0, step=0.05, label='random erasing (chance per image)')
        with gr.Row():
            start = gr.Button('Train', variant='primary')
            stop = gr.Button('Stop (keeps the weights so far)')
        status = gr.Markdown()
        plot = gr.Plot(label='training curves')
        ckpt = gr.File(label='checkpoint (.safetensors: weights + spec + preprocessing + metrics)')
        with gr.Accordion('Trained models on this machine', open=False):
            table = gr.Dataframe(
                headers=['name', 'test acc. (%)', 'params', 'epochs', 'origin'], value=trained_table, interactive=False
            )
        with gr.Accordion('Train at scale: many GPUs, many machines (torchrun)', open=False):
            gr.Markdown(
                'The same design, trained with `torchrun` (DistributedDataParallel) on an image folder in '
                "ImageNet's layout or on Fashion-MNIST, then exported as a timm model. Download the spec, then:"
            )
            at_scale = gr.Code(language='shell', label='commands', elem_id='mfx-scale-cmd')
            spec_file = gr.DownloadButton('Download spec JSON', size='sm')
        gr.api(api_train, api_name='train', concurrency_id='train', concurrency_limit=1)
        run_id = gr.State('')
        trained_path = gr.State(None)
        ctx.extras['trained_checkpoint'] = trained_path  # the latest checkpoint trained in this session

    spec_state.change(readiness, spec_state, ready, show_progress='hidden', **PRIVATE)
    spec_state.change(scale_values, spec_state, [at_scale, spec_file], show_progress='hidden', **PRIVATE)
    adapted = adapt.click(adapt_handler, [spec_state, img_size], [spec_state, status], **PRIVATE)
    if getattr(ctx, 'load_spec', None):
        ctx.load_spec(adapted)

    def run(spec, n_epochs, secs, bs, sd, lim, erase_p, progress=gr.Progress()):
        try:
            s = ArchSpec.from_dict(spec or {})
            check_trainable(s)
            find_dataset('fashion-mnist', split='train')
        except (SpecError, ValueError, DatasetNotFound) as e:
            raise user_error(e, title='Cannot train') from None
        rid = uuid.uuid4().hex
        n = {'all 60,000': None, '10,000': 10_000, '2,000': 2_000}[lim]
        steps, rows, last = [], [], 0.0
        yield rid, 'Starting...', training_figure([], [], s.name), None, None
        for ev in training_events(
            spec, float(n_epochs), float(secs) or None, int(bs), int(sd or 0), n, rid, erase_prob=float(erase_p or 0)
        ):
            if ev['kind'] == 'step':
                steps.append(ev)
                progress(ev['step'] / ev['total_steps'], desc=f'epoch {ev["epoch"]:.2f}, loss {ev["loss"]:.3f}')
                if time.monotonic() - last < 1.0:  # redraw at most once a second
                    continue
            elif ev['kind'] == 'epoch':
                rows.append(ev)
            elif ev['kind'] == 'error':
                raise user_error(ev['message'], title='Training failed')
            elif ev['kind'] == 'done':
                res = ev['result']
                # the checkpoint stays in the runs folder; the browser downloads a copy Gradio may serve
                src = res.checkpoint
                copy = download_file(Path(src).stem, '.safetensors', lambda p, src=src: shutil.copyfile(src, p))
                yield rid, _result_text(res), training_figure(steps, res.history, s.name), copy, res.checkpoint
                return
            last = time.monotonic()
            acc = next((r['test_accuracy'] for r in reversed(rows) if r.get('test_accuracy') is not None), None)
            text = f'Training `{s.name}`: step {steps[-1]["step"] if steps else 0}/{ev["total_steps"]}' + (
                f', test accuracy after epoch {rows[-1]["epoch"]:g}: {100 * acc:.2f}%' if acc is not None else ''
            )
            yield rid, text, training_figure(steps, rows, s.name), None, None

    def stop_run(rid):
        if request_stop(rid):
            return 'Stopping after the current step; the checkpoint keeps the weights so far.'
        return 'Nothing is training.'

    done = start.click(
        run,
        [spec_state, epochs, budget, batch, seed, limit, erase],
        [run_id, status, plot, ckpt, trained_path],
        concurrency_limit=1,
        concurrency_id='train',
        **PRIVATE,
    )
    done.then(trained_table, None, table, **PRIVATE)
    stop.click(stop_run, run_id, status, **PRIVATE)


def api_train(
    spec: dict | str, epochs: float = 1.0, batch_size: int = 128, seed: int = 0, train_limit: int = 0
) -> Iterator[dict]:
    """Train `spec` (a spec dict or JSON; in_chans 1, 10 classes, 28 or 32 px) on Fashion-MNIST on this server.

    Streams progress dicts ({'kind': 'step' | 'epoch', ...}), then {'kind': 'done', 'model': name, 'metrics':
    {...}}: the trained model is then offered by /list_models and /predict under that name. One training at a
    time server-wide (EXPLORER_MAX_TRAIN_S limits each); cancelling the job stops the training after its
    current step, keeping the weights so far. train_limit: use the first N training images (0: all).
    """
    import contextlib
    import json

    try:
        s = ArchSpec.from_json(spec) if isinstance(spec, str) else ArchSpec.from_dict(spec)
        check_trainable(s)
        for name, v, low, high in (
            ('epochs', epochs, 0.01, 100),
            ('batch_size', batch_size, 1, 256),
            ('seed', seed, 0, 2**31 - 1),
            ('train_limit', train_limit, 0, 60_000),
        ):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high
            if not ok or (name != 'epochs' and int(v) != v):
                raise ValueError(
                    f'{name}: {v!r} must be a number in [{low}, {high}]' + ('' if name == 'epochs' else ' (whole)')
                )
        find_dataset('fashion-mnist', split='train')
    except (SpecError, ValueError, DatasetNotFound) as e:
        raise user_error(e, title='Cannot train') from None
    run = training_events(
        s.to_dict(), float(epochs), None, int(batch_size), int(seed), int(train_limit) or None, uuid.uuid4().hex
    )
    with contextlib.closing(run) as events:  # a cancelled job closes this generator, and so stops the training
        for ev in events:
            if ev['kind'] == 'error':
                raise user_error(ev['message'], title='Training failed')
            if ev['kind'] == 'done':
                res = ev['result']
                yield {
                    'kind': 'done',
                    'model': Path(res.checkpoint).stem,
                    'metrics': json.loads(json.dumps(res.metrics)),
                }
                return
            yield ev
