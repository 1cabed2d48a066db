"""The "Train" tab: train the composer's current design on Fashion-MNIST, with a progress bar and live curves.

Layout and wiring only. The work is explorer.train.loop (train, adapt_for_fmnist, list_trained); the figure is
explorer.viz.training. Training runs in a worker thread; the click handler is a generator that drains the
worker's progress events and yields (status, figure, ...) updates, so the plot grows while the model learns.
Checkpoints go to explorer.train.checkpoints.USER_DIR, where list_trained() (Predict & explain, Compare) finds them.

The runs table lists those checkpoints (plain units, names only, the user's newest first); ticked runs have their
per-epoch curves (the checkpoint's history) overlaid in one figure, with the training in progress drawn live from
LIVE, which every page with the Train tab open polls (a gr.Timer, active only while that tab is shown). "Use in
Predict" switches to the Predict & explain tab with the run picked (ctx.extras['predict_model']).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from explorer.app.context import download_file, endpoint, md_text, spec_download, user_error
from explorer.core import catalog
from explorer.core.registry import show
from explorer.core.spec import ArchSpec, SpecError
from explorer.measure.units import fmt_count, whole_number
from explorer.train.checkpoints import list_trained, read_metadata
from explorer.train.data import DatasetNotFound, find_dataset
from explorer.train.fit import adapt_for_fmnist, check_trainable, scale_command
from explorer.train.runner import HEARTBEAT_S, request_stop, training_events
from explorer.viz.training import runs_figure, training_figure

PRIVATE = dict(api_visibility='private')
# what a training request may set, as /train names it: (low, high, whole number); None: true or false. The Train
# tab checks its fields against the same table, named as its labels name them (TAB_FIELDS).
TRAIN_ARGS = {
    'epochs': (0.01, 100, False),
    'batch_size': (1, 256, True),
    'seed': (0, 2**31 - 1, True),
    'train_limit': (0, 60_000, True),
    'time_budget': (0, 24 * 3600, False),
    'erase_prob': (0, 1, False),
    'compile': None,
}
TAB_FIELDS = {
    'epochs': 'epochs',
    'batch_size': 'batch size',
    'seed': 'seed',
    'train_limit': 'training images',
    'time_budget': 'time budget (s)',
    'erase_prob': 'random erasing',
}
TAB_LIMITS = {'all 60,000': 0, '10,000': 10_000, '2,000': 2_000}  # the "training images" choices -> train_limit


def training_request(spec: dict | str | None, names: dict | None = None, **values) -> tuple[ArchSpec, dict]:
    """A training request checked before it waits for the training slot: the spec (dict or JSON) and `values`
    (keys of TRAIN_ARGS; whole numbers come back as int). Raises gr.Error('Cannot train') naming the first field
    that is wrong, as `names` calls it (default: as /train does), and what is allowed."""
    try:
        s = catalog.parse_spec(spec) if isinstance(spec, str) else ArchSpec.from_dict(spec or {})  # JSON or a preset
        check_trainable(s)
        args = {key: _training_arg(key, v, (names or {}).get(key, key)) for key, v in values.items()}
        find_dataset('fashion-mnist', split='train')
    except (SpecError, ValueError, DatasetNotFound) as e:
        raise user_error(e, title='Cannot train') from None
    return s, args


def _training_arg(key: str, value, name: str):
    if TRAIN_ARGS[key] is None:
        if not isinstance(value, bool):  # 'false' is truthy: it must not turn compiling on
            raise ValueError(f'{name}: {show(value)} must be true or false')
        return value
    low, high, whole = TRAIN_ARGS[key]
    value = whole_number(value)  # 1e30 stays 1e+30 in the message, and fails the range
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok or (whole and not isinstance(value, int)):
        raise ValueError(f'{name}: {show(value)} must be a number in [{low}, {high}]' + (' (whole)' if whole else ''))
    return value


def adapt_handler(spec: dict | None, img_size: int = 32) -> tuple[dict, str]:
    """(adapted spec dict, Markdown of what changed). Raises gr.Error for a spec that cannot be adapted."""
    if not spec:
        raise gr.Error('Compose a valid network first.', print_exception=False)
    size = whole_number(img_size)
    if not isinstance(size, int) or isinstance(size, bool):  # a raw request's null: the page sends 28 or 32
        raise user_error(f'input size: {show(img_size)} must be 28 or 32', title='Bad request')
    try:
        new, notes = adapt_for_fmnist(spec, size)
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


ENDED = {  # a run's metrics['stopped_by'], in words
    'epochs': 'every epoch run',
    'time_budget': 'ended by its time budget',
    'time_limit': "ended by the server's time limit on a run, its schedule fitted to it",
    'user': 'stopped before its end',
}


def _result_text(res) -> str:
    m = res.metrics
    compiled = f', compiled (first step {m.get("first_step_s") or 0:.0f} s)' if m.get('compile') else ''
    ended = ENDED.get(m['stopped_by'], f'stopped by {m["stopped_by"]}')
    return (
        f'**Done:** test accuracy **{100 * m["test_accuracy"]:.2f}%** ({m["test_correct"]:,}/{m["test_n"]:,}) '
        f'after {m["epochs"]:g} epoch{"" if m["epochs"] == 1 else "s"} ({m["steps"]} steps, {ended}), '
        f'{m["train_time_s"]:.0f} s of training on {m["device"]} with {m["threads"]} threads, '
        f'{"bf16 autocast" if m.get("amp") == "bf16" else m.get("amp") or "fp32"}{compiled}. '
        f'Saved as the trained model **{md_text(Path(res.checkpoint).stem)}** (pick it in Predict & explain).'
    )


# ---- the runs table and its overlaid curves ---------------------------------------------------------------
RUN_HEADERS = ['plot', 'run', 'design: mixer ×depth (dim)', 'test acc.', 'params', 'epochs', 'trained', 'origin']
PREDICT_TAB = 'predict'  # the Predict & explain tab's id


class LiveRun:
    """The training in progress on this server (one at a time, explorer.train.runner), as the runs figure draws
    it: the spec's name and the epoch rows so far. `version` counts changes and `finished` counts runs that
    ended: a page redraws when version moves and reads the runs folder again when finished moves."""

    KEYS = ('epoch', 'train_loss', 'test_accuracy', 'test_loss')

    def __init__(self):
        self._lock = threading.Lock()
        self.run_id, self.name, self.rows, self.version, self.finished = None, None, [], 0, 0

    def event(self, run_id: str, name: str, ev: dict) -> None:
        """Follow one progress event of run `run_id` (a step starts the record; an epoch adds a row)."""
        if ev.get('kind') not in ('step', 'epoch'):
            return
        with self._lock:
            if self.run_id != run_id:  # the first event: this run holds the server's training slot
                self.run_id, self.name, self.rows = run_id, name, []
                self.version += 1
            if ev['kind'] == 'epoch':
                self.rows = [*self.rows, {k: ev[k] for k in self.KEYS if ev.get(k) is not None}]
                self.version += 1

    def end(self, run_id: str) -> None:
        with self._lock:
            if self.run_id == run_id:
                self.run_id, self.name, self.rows = None, None, []
                self.version += 1
                self.finished += 1

    def snapshot(self) -> tuple[int, int, dict | None]:
        """(version, finished, the run in progress as runs_figure takes it, or None)."""
        with self._lock:
            live = None if self.run_id is None else {'name': self.name, 'history': list(self.rows), 'live': True}
            return self.version, self.finished, live


LIVE = LiveRun()


def tracked(events: Iterator[dict], run_id: str, name: str) -> Iterator[dict]:
    """`events` (explorer.train.runner.training_events), recorded in LIVE as they pass."""
    try:
        for ev in events:
            LIVE.event(run_id, name, ev)
            yield ev
    finally:
        events.close()  # closing this closes the training's events, which stops it after its current step
        LIVE.end(run_id)


def plain_count(n: int | float | None) -> str:
    """1080738 -> '1.08 M', 2458 -> '2.46 k', 980 -> '980' (three significant figures)."""
    text = fmt_count(n)
    return f'{text[:-1]} {text[-1]}' if text[-1:] in ('k', 'M', 'G') else text


def epochs_text(n: float | None) -> str:
    """30.002 -> '30', 2.295 -> '2.3', 0.05 -> '0.05'."""
    if not isinstance(n, (int, float)):
        return '—'
    return f'{round(n, 1):g}' if n >= 1 else f'{n:.2g}'


def design_text(spec: dict) -> str:
    """'pooling ×1 (8) → sepconv ×1 (16), 32 px': each stage's mixer, depth and width, then the input size."""
    try:
        s = ArchSpec.from_dict(spec)
    except (SpecError, TypeError, ValueError):
        return '—'
    return ' → '.join(f'{st.mixer} ×{st.depth} ({st.dim})' for st in s.stages) + f', {s.img_size} px'


def trained_runs() -> list[dict]:
    """The trained models on this machine, as the runs table lists them: the user's runs newest first, then the
    shipped ones, most accurate first. Each: 'name' (file stem), 'spec', 'metrics', 'history', 'shipped',
    'time' (the file's modification time, s since the epoch). No path: the table and the API show names only."""
    runs = []
    for t in list_trained():
        try:
            info, mtime = read_metadata(t['path']), os.stat(t['path']).st_mtime
        except (OSError, ValueError, KeyError):  # removed or rewritten since it was listed
            continue
        runs.append(
            {
                'name': t['name'],
                'spec': info['spec'],
                'metrics': info['metrics'],
                'history': info['history'],
                'shipped': t['shipped'],
                'time': mtime,
            }
        )
    mine = sorted((r for r in runs if not r['shipped']), key=lambda r: (-r['time'], r['name']))
    shipped = sorted((r for r in runs if r['shipped']), key=lambda r: -(r['metrics'].get('test_accuracy') or 0))
    return mine + shipped


def run_row(run: dict, show: bool) -> list:
    """One row of the runs table (RUN_HEADERS): plain units, the run's name and no path; when it was trained
    (its file's time, server clock) for the user's runs."""
    m = run['metrics']
    acc = m.get('test_accuracy')
    return [
        bool(show),
        run['name'],
        design_text(run['spec']),
        '—' if acc is None else f'{100 * acc:.2f} %',
        plain_count(m.get('params')),
        epochs_text(m.get('epochs')),
        '—' if run['shipped'] else time.strftime('%Y-%m-%d %H:%M', time.localtime(run['time'])),
        'shipped' if run['shipped'] else 'trained here',
    ]


def shown_names(table) -> list[str]:
    """The names of the runs ticked in the table's value (rows as lists; anything else is ignored)."""
    rows = table.values.tolist() if hasattr(table, 'values') else (table or [])
    return [str(r[1]) for r in rows if isinstance(r, (list, tuple)) and len(r) > 1 and (r[0] is True or r[0] == 'true')]


def runs_rows(runs: list[dict], shown: list[str] | None = None) -> list[list]:
    """The table's rows; `shown`: names to tick (None: the first run, so the figure is never empty at first)."""
    ticked = set(shown) if shown is not None else {r['name'] for r in runs[:1]}
    return [run_row(r, r['name'] in ticked) for r in runs]


def overlay_figure(runs: list[dict], shown: list[str], live: dict | None = None):
    """The curves of the runs named in `shown` (table order) and of the training in progress."""
    chosen = [r for r in runs if r['name'] in set(shown)]
    return runs_figure(chosen + ([live] if live else []))


def runs_view(shown: list[str] | None = None, figure: bool = True) -> tuple:
    """(table rows, overlay figure, the 'Use in Predict' picker's choices and value as a dict) from the runs
    folder as it is now; figure=False: None for the figure (the page's first build: opening the tab draws it)."""
    runs = trained_runs()
    rows = runs_rows(runs, shown)
    names = [r['name'] for r in runs]
    ticked = [row[1] for row in rows if row[0]]
    pick = dict(choices=names, value=ticked[0] if ticked else (names[0] if names else None))
    return rows, overlay_figure(runs, ticked, LIVE.snapshot()[2]) if figure else None, pick


def use_in_predict(name: str | None) -> tuple:
    """(switch to the Predict & explain tab, its model picker set to the run `name`)."""
    from explorer.app.predict import TRAINED, model_choices

    if not isinstance(name, str) or name not in {r['name'] for r in trained_runs()}:
        raise user_error(f'run: {str(name)[:80]!r} is not a trained model on this machine', title='Cannot use')
    return gr.Tabs(selected=PREDICT_TAB), gr.Dropdown(choices=model_choices(), value=f'{TRAINED}{name}')


def api_list_runs() -> list[dict]:
    """The trained models on this server (the Train tab's runs table), the user's newest first: name (use it as
    /predict's model), design, test_accuracy (a fraction), params, epochs, trained_at (ISO time on the server's
    clock; None for shipped ones), origin ('shipped' or 'trained here') and history (the per-epoch rows: epoch,
    train_loss, test_accuracy, test_loss). Names only, never a path."""
    return [
        {
            'name': r['name'],
            'design': design_text(r['spec']),
            'test_accuracy': r['metrics'].get('test_accuracy'),
            'params': r['metrics'].get('params'),
            'epochs': r['metrics'].get('epochs'),
            'trained_at': None if r['shipped'] else time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(r['time'])),
            'origin': 'shipped' if r['shipped'] else 'trained here',
            'history': [{k: row[k] for k in LiveRun.KEYS if k in row} for row in r['history']],
        }
        for r in trained_runs()
    ]


def add_train_tab(ctx) -> None:
    """The Train tab. ctx: explorer.app.context.AppContext (ctx.spec: gr.State with the composer's spec dict;
    ctx.load_spec shows a design in the composer, ctx.on_design_change follows its changes)."""
    spec_state = ctx.spec
    with gr.Tab('Train', id='train') as tab:
        gr.Markdown(
            'Train the composed design from scratch on **Fashion-MNIST** (60,000 training and 10,000 test '
            'images, 28x28 grayscale, 10 classes; MIT licence, Zalando Research), here on the CPU. '
            'Images are centred on a 32x32 canvas. Recipe: AdamW, warm-up then cosine decay, label '
            'smoothing 0.1, random 2-pixel crops and horizontal flips, optional random erasing (the shipped '
            'best model used 0.25).'
        )
        ready = gr.Markdown(readiness(spec_state.value))  # the first page's design (set by the Compose tab)
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
        with gr.Row(equal_height=True):
            compiled = gr.Checkbox(
                label='torch.compile',
                info='the first step compiles (~1 min); pays on wide designs',
                elem_id='mfx-train-compile',
                scale=1,
                min_width=220,
            )
            start = gr.Button('Train', variant='primary', scale=2)
            stop = gr.Button('Stop (keeps the weights so far)', scale=2)
        status = gr.Markdown(elem_id='mfx-train-status')
        plot = gr.Plot(label='training curves')
        ckpt = gr.File(label='checkpoint (.safetensors: weights + spec + preprocessing + metrics)')
        with gr.Accordion('Trained models on this machine', open=True, elem_id='mfx-runs-box'):
            gr.Markdown(
                'Tick runs to overlay their test accuracy and loss per epoch; the training in progress is drawn '
                'dashed as its epochs finish. Click a row to pick it, then *Use in Predict*.',
                elem_classes='mfx-note',
            )
            first = runs_view(figure=False)  # a plotly figure at start-up cost 0.18 s; the tab's select draws it
            table = gr.Dataframe(
                value=first[0],
                headers=RUN_HEADERS,
                datatype=['bool'] + ['str'] * (len(RUN_HEADERS) - 1),
                type='array',
                interactive=True,
                static_columns=list(range(1, len(RUN_HEADERS))),
                row_limits=None,
                wrap=True,
                column_widths=['78px', '24%', '28%', '96px', '90px', '86px', '120px', '104px'],
                max_height=300,
                elem_id='mfx-runs',
            )
            overlay = gr.Plot(value=first[1], label='curves of the ticked runs', elem_id='mfx-runs-plot')
            with gr.Row(equal_height=True):
                use_pick = gr.Dropdown(**first[2], label='run', scale=3, elem_id='mfx-runs-pick')
                use = gr.Button('Use in Predict', scale=1, elem_id='mfx-runs-use')
            seen = gr.State(None)  # (LIVE.version, LIVE.finished) this page has drawn
            ticked = gr.State(None)  # the names ticked in the table; None: the newest run
            poll = gr.Timer(2.0, active=False)  # runs while the Train tab is shown
        with gr.Accordion('Train at scale: many GPUs, many machines (torchrun)', open=False):
            gr.Markdown(
                'The same design, trained with `torchrun` (DistributedDataParallel) on an image folder in '
                "ImageNet's layout or on Fashion-MNIST, then exported as a timm model. Download the spec, then:"
            )
            at_scale = gr.Code(language='shell', label='commands', elem_id='mfx-scale-cmd')
            spec_file = gr.DownloadButton('Download spec JSON', size='sm')
        # two at once, as /search: a second training (this or the tab's) reaches the training slot and is refused
        # at once ("Busy"), where it waited in the queue for the whole of the first one
        gr.api(endpoint(api_train), api_name='train', concurrency_id='train', concurrency_limit=2)
        gr.api(endpoint(api_list_runs), api_name='list_runs')
        run_id = gr.State('')
        trained_path = gr.State(None)
        ctx.extras['trained_checkpoint'] = trained_path  # the latest checkpoint trained in this session

    # the design's readiness, torchrun commands and spec download follow every change of the composer's design
    # (they followed the state's change event only, which edits answered outside the queue never fire: the
    # download gave the design before the edits)
    ctx.on_design_change(readiness, spec_state, ready, show_progress='hidden', **PRIVATE)
    ctx.on_design_change(scale_values, spec_state, [at_scale, spec_file], show_progress='hidden', **PRIVATE)
    if getattr(ctx, 'load_spec', None):
        ctx.load_spec(adapt.click, adapt_handler, [spec_state, img_size], [status])

    def run(spec, n_epochs, secs, bs, sd, lim, erase_p, compile_, progress=gr.Progress()):
        if lim not in TAB_LIMITS:
            raise user_error(f'training images: {show(lim)} is not one of {", ".join(TAB_LIMITS)}', 'Cannot train')
        try:
            arch = ArchSpec.from_dict(spec or {})
        except SpecError:
            arch = None  # training_request names what is wrong
        if arch is not None:
            try:
                check_trainable(arch)
            except (SpecError, ValueError) as e:  # the fix is one button away: say which
                raise user_error(f'{e}. Press "Adapt to Fashion-MNIST" above, then Train.', 'Cannot train') from None
        s, a = training_request(  # a blank seed, time budget or erasing chance: its default
            spec,
            TAB_FIELDS,
            epochs=n_epochs,
            time_budget=0 if secs is None else secs,
            batch_size=bs,
            seed=0 if sd is None else sd,
            train_limit=TAB_LIMITS[lim],
            erase_prob=0 if erase_p is None else erase_p,
            compile=compile_ is True,
        )
        rid = uuid.uuid4().hex
        steps, rows, last = [], [], 0.0
        yield rid, 'Starting...', training_figure([], [], s.name), None, None
        events = training_events(
            spec,
            float(a['epochs']),
            float(a['time_budget']) or None,
            a['batch_size'],
            a['seed'],
            a['train_limit'] or None,
            rid,
            erase_prob=float(a['erase_prob']),
            compile=a['compile'],
            heartbeat=HEARTBEAT_S,
        )
        shown = None  # the progress bar's last value: said again with each heartbeat, which a yield may clear
        for ev in tracked(events, rid, s.name):
            if ev['kind'] == 'wait':  # nothing new: a yield that changes nothing, where a closed tab stops the run
                if shown is not None:
                    progress(*shown)
                yield (gr.skip(),) * 5
                continue
            if ev['kind'] == 'step':
                steps.append(ev)
                # the last step, or an epoch's: the test images are evaluated next (a minute on a busy CPU)
                evaluating = ev['step'] >= ev['total_steps'] or float(ev['epoch']).is_integer()
                desc = 'evaluating on the test images' if evaluating else f'epoch {ev["epoch"]:.2f}'
                shown = (ev['step'] / ev['total_steps'], f'{desc}, loss {ev["loss"]:.3f}')
                progress(shown[0], desc=shown[1])
                if not evaluating and time.monotonic() - last < 1.0:  # redraw at most once a second
                    continue
            elif ev['kind'] == 'epoch':
                rows.append(ev)
            elif ev['kind'] == 'error':
                raise user_error(ev['message'], title='Busy' if ev.get('busy') else 'Training failed')
            elif ev['kind'] == 'done':
                res = ev['result']
                # the checkpoint stays in the runs folder; the browser downloads a copy Gradio may serve
                src = res.checkpoint
                copy = download_file(Path(src).stem, '.safetensors', lambda p, src=src: shutil.copyfile(src, p))
                yield rid, _result_text(res), training_figure(steps, res.history, s.name), copy, res.checkpoint
                return
            last = time.monotonic()
            acc = next((r['test_accuracy'] for r in reversed(rows) if r.get('test_accuracy') is not None), None)
            text = f'Training {md_text(s.name)}: step {steps[-1]["step"] if steps else 0}/{ev["total_steps"]}' + (
                f', test accuracy after epoch {rows[-1]["epoch"]:g}: {100 * acc:.2f}%' if acc is not None else ''
            )
            if ev['kind'] == 'step' and evaluating:
                text += '; evaluating on the test images...'

            yield rid, text, training_figure(steps, rows, s.name), None, None

    def stop_run(rid):
        if request_stop(rid):
            return 'Stopping after the current step; the checkpoint keeps the weights so far.'
        return 'Nothing is training.'

    done = start.click(
        run,
        [spec_state, epochs, budget, batch, seed, limit, erase, compiled],
        [run_id, status, plot, ckpt, trained_path],
        concurrency_limit=2,  # as /train's: the second is refused at once
        concurrency_id='train',
        show_progress_on=status,  # one bar (it was drawn on the curves and the checkpoint too), and an error there
        **PRIVATE,
    )
    stop.click(stop_run, run_id, status, **PRIVATE)
    wire_runs(
        ctx, tab, done, dict(table=table, overlay=overlay, pick=use_pick, use=use, seen=seen, ticked=ticked, poll=poll)
    )


def wire_runs(ctx, tab, done, c: dict) -> None:
    """The runs table's events. c: the components by name (table, overlay, pick, use, seen, ticked, poll).

    ticked: gr.State with the names the visitor ticked, None until they tick one (then the newest run is
    ticked): the table's own value is not read back for it, as a refresh racing a click could restore old ticks."""
    table, overlay, pick, seen, ticked, poll = (c[k] for k in ('table', 'overlay', 'pick', 'seen', 'ticked', 'poll'))
    quiet = dict(show_progress='hidden', **PRIVATE)

    def refresh(shown, new_run=None):
        """Everything from the runs folder again, keeping the ticks (and ticking a run that just finished)."""
        if new_run and shown is not None:
            shown = [*shown, Path(new_run).stem]
        version, finished, _ = LIVE.snapshot()
        rows, fig, choices = runs_view(shown)
        return rows, fig, gr.Dropdown(**choices), (version, finished), shown

    def opened(shown):
        return (*refresh(shown), gr.Timer(active=True))

    def tick(shown, drawn):
        """Redraw when the training in progress moved; read the folder again when a run finished."""
        version, finished, live = LIVE.snapshot()
        if drawn is not None and tuple(drawn) == (version, finished):
            return (gr.skip(),) * 5
        if drawn is not None and drawn[1] == finished:
            runs = trained_runs()
            names = shown if shown is not None else [r['name'] for r in runs[:1]]
            return gr.skip(), overlay_figure(runs, names, live), gr.skip(), (version, finished), gr.skip()
        return refresh(shown)

    def ticks(rows):
        shown = shown_names(rows)
        return overlay_figure(trained_runs(), shown, LIVE.snapshot()[2]), shown

    def picked(evt: gr.SelectData):
        row = evt.row_value if evt is not None else None
        return gr.skip() if not row or len(row) < 2 else row[1]

    outs = [table, overlay, pick, seen, ticked]
    tab.select(opened, ticked, [*outs, poll], **quiet)
    tabs = ctx.extras.get('tabs') if ctx is not None else None
    if tabs is not None:  # leaving the Train tab stops the polling

        def shown_tab(evt: gr.SelectData):
            return gr.Timer(active=evt.value == 'Train')

        tabs.select(shown_tab, None, poll, **quiet)
    poll.tick(tick, [ticked, seen], outs, **quiet)
    table.input(ticks, table, [overlay, ticked], **quiet)
    table.select(picked, None, pick, **quiet)
    done.then(refresh, [ticked, ctx.extras['trained_checkpoint']] if ctx else ticked, outs, **quiet)
    model = ctx.extras.get('predict_model') if ctx is not None else None
    if tabs is not None and model is not None:
        c['use'].click(use_in_predict, pick, [tabs, model], **PRIVATE)


def api_train(
    spec: dict | str,
    epochs: float = 1.0,
    batch_size: int = 128,
    seed: int = 0,
    train_limit: int = 0,
    compile: bool = False,
) -> Iterator[dict]:
    """Train `spec` (a spec dict or JSON; in_chans 1, 10 classes, 28 or 32 px) on Fashion-MNIST on this server.

    Streams progress dicts ({'kind': 'step' | 'epoch', ...}; {'kind': 'wait'} when nothing else came for half a
    second), then {'kind': 'done', 'model': name, 'metrics': {...}}: the trained model is then offered by
    /list_models and /predict under that name. One training at a time server-wide (EXPLORER_MAX_TRAIN_S limits
    each; another one is refused at once, titled 'Busy'); cancelling the job stops the training after its
    current step, keeping the weights so far. train_limit: use the first N training images (0: all). compile:
    torch.compile the training step (the first step compiles; `metrics.first_step_s`).
    """
    import contextlib
    import json

    s, a = training_request(
        spec, epochs=epochs, batch_size=batch_size, seed=seed, train_limit=train_limit, compile=compile
    )
    rid = uuid.uuid4().hex
    limit = a['train_limit'] or None
    run = training_events(
        s.to_dict(),
        float(a['epochs']),
        None,
        a['batch_size'],
        a['seed'],
        limit,
        rid,
        compile=a['compile'],
        heartbeat=HEARTBEAT_S,  # the generator waits at a yield at least this often: a cancel closes it at once
    )
    run = tracked(run, rid, s.name)  # drawn live in the Train tab's runs figure
    with contextlib.closing(run) as events:  # a cancelled job closes this generator, and so stops the training
        for ev in events:
            if ev['kind'] == 'error':
                raise user_error(ev['message'], title='Busy' if ev.get('busy') else 'Training failed')
            if ev['kind'] == 'done':
                res = ev['result']
                yield {
                    'kind': 'done',
                    'model': Path(res.checkpoint).stem,
                    'metrics': json.loads(json.dumps(res.metrics)),
                }
                return
            yield ev
