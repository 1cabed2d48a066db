"""Print the Fashion-MNIST ablation table (Markdown) from the trained checkpoints in a directory (and its seed1/
folder: the same families trained with another seed), and draw the per-epoch test accuracy of every family row.

    python scripts/fmnist_results_table.py [DIR] [--plot PNG]          (default: assets/fmnist)

The plot is a plotly figure rendered to PNG in Debian's Chromium (Playwright), so it needs no image exporter.

Every number comes from the checkpoints' own metadata (accuracy measured at the end of training on the
10,000 test images; `explorer evaluate` re-measures it) and from explorer.measure.analytic.analytic_cost (params, MACs).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.core.spec import ArchSpec  # noqa: E402
from explorer.train.checkpoints import read_metadata  # noqa: E402
from explorer.train.loop import TrainConfig  # noqa: E402

ORDER = ('identity', 'random', 'randformer', 'pooling', 'sepconv', 'attention', 'spatial_mlp', 'hybrid')


def macs_of(spec: ArchSpec) -> tuple[int | None, int | None]:
    try:
        from explorer.measure.analytic import analytic_cost
    except ImportError:  # counting not installed: params from the checkpoint, MACs left out
        return None, None
    r = analytic_cost(spec)
    return r.macs, r.frozen_params


def rows(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob('*.safetensors')) + sorted(directory.glob('seed1/*.safetensors')):
        info = read_metadata(path)
        spec = ArchSpec.from_dict(info['spec'])
        m = info['metrics']
        macs, frozen = macs_of(spec)
        key = path.stem.removeprefix('fmnist_')
        out.append(
            {
                'file': path.relative_to(directory).as_posix(),
                'seed': m.get('seed', m.get('recipe', {}).get('seed')),
                'history': info.get('history') or [],
                'key': key,
                'family': spec.meta.get('family', spec.name),
                'mixers': ' / '.join(st.mixer for st in spec.stages),
                'acc': 100 * m['test_accuracy'],
                'params': m['params'],
                'frozen': frozen if frozen is not None else m['params'] - m['trainable_params'],
                'macs': macs,
                'epochs': m['epochs'],
                'time': m['train_time_s'],
                'budget': _budget(m),
                'threads': m['threads'],
                'recipe': _recipe_changes(m.get('recipe', {})),
                'size_mb': path.stat().st_size / 2**20,
            }
        )
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(out, key=lambda r: (rank.get(r['key'], len(ORDER)), r['seed'] or 0, r['file']))


def _budget(m: dict) -> str:
    if m.get('time_budget_s'):
        return f'{m["time_budget_s"]:g} s (max {m["epochs_requested"]:g} ep.)'
    return f'{m["epochs_requested"]:g} epoch' + ('s' if m['epochs_requested'] != 1 else '')


# fields that say how long or where a run trained, not how: they have their own columns
_NOT_RECIPE = {'epochs', 'time_budget', 'seed', 'threads', 'eval_batch_size', 'eval_every_epoch'}
_NAMES = {
    'erase_prob': 'random erasing',
    'crop_pad': 'crop padding',
    'hflip': 'flips',
    'lr': 'peak lr',
    'batch_size': 'batch',
    'label_smoothing': 'label smoothing',
    'weight_decay': 'weight decay',
    'warmup_epochs': 'warm-up epochs',
}


def _recipe_changes(recipe: dict) -> str:
    """What a run's recipe changed from the shared one (TrainConfig's defaults), e.g. 'random erasing 0.25'. The
    precision is named when it is not fp32 (the default, 'auto', depends on the machine)."""
    base = replace(TrainConfig(), amp=None)
    changes = [
        f'{_NAMES.get(k, k)} {v:g}' if isinstance(v, float) else f'{_NAMES.get(k, k)} {v}'
        for k, v in recipe.items()
        if k not in _NOT_RECIPE and hasattr(base, k) and getattr(base, k) != v
    ]
    return ', '.join(changes) or 'shared'


def table(directory: Path) -> str:
    rs = rows(directory)
    lines = [
        '| model (token mixer) | mixers per stage | test acc. (%) | params | MACs / image | epochs | budget | '
        'recipe | seed | threads | training time (s) | file |',
        '|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|',
    ]
    for r in rs:
        params = f'{r["params"] / 1e6:.3f} M' + (f' ({r["frozen"] / 1e6:.3f} M frozen)' if r['frozen'] else '')
        macs = '-' if r['macs'] is None else f'{r["macs"] / 1e6:.1f} M'
        lines.append(
            f'| {r["family"]} | {r["mixers"]} | {r["acc"]:.2f} | {params} | {macs} | {r["epochs"]:g} | '
            f'{r["budget"]} | {r["recipe"]} | {r["seed"]} | {r["threads"]} | {r["time"]:.0f} | '
            f'`{r["file"]}` ({r["size_mb"]:.1f} MB) |'
        )
    lines += [
        '',
        'Fashion-MNIST test set (10,000 images), top-1 accuracy of the weights at the end of training (no '
        'checkpoint selection on the test set). Params: every parameter of the model, frozen RandFormer matrices '
        'included and shown apart. MACs: one multiply-accumulate = 1, per 32x32 image, forward pass, from '
        '`explorer.measure.analytic.analytic_cost`. Recipe: what a row changed from the shared recipe '
        '(`explorer.train.loop.TrainConfig` defaults). Training time: wall-clock seconds of the training loop '
        '(evaluation excluded) on a 2-core CPU shared with other jobs, with the torch threads shown: it '
        'measures the load of the machine as much as the model, so compare MACs for cost.',
    ]
    spread = _seed_spread(rs)
    if spread:
        lines += ['', 'Seed spread (same spec, recipe and budget; only the seed differs):', ''] + spread
    return '\n'.join(lines) + '\n'


def _seed_spread(rs: list[dict]) -> list[str]:
    by_key: dict[str, list[dict]] = {}
    for r in rs:
        if r['key'] in ORDER:
            by_key.setdefault(r['key'], []).append(r)
    out = []
    for runs in by_key.values():
        if len(runs) > 1:
            accs = ', '.join(f'seed {r["seed"]}: {r["acc"]:.2f}' for r in runs)
            gap = max(r['acc'] for r in runs) - min(r['acc'] for r in runs)
            out.append(f'- {runs[0]["family"]}: {accs} (spread {gap:.2f} points)')
    return out


def plot(rs: list[dict], png: Path) -> None:
    """Test accuracy after each epoch of every family row (seed 1 dashed), as a PNG drawn by Chromium."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in rs:
        if r['key'] not in ORDER or len(r['history']) < 2:
            continue
        h = [e for e in r['history'] if e.get('test_accuracy') is not None]
        fig.add_scatter(
            x=[e['epoch'] for e in h],
            y=[100 * e['test_accuracy'] for e in h],
            mode='lines+markers',
            name=f'{r["family"]} (seed {r["seed"]})',
            line={'dash': 'dash' if r['seed'] else 'solid'},
        )
    save_accuracy_plot(fig, png, 'Fashion-MNIST: test accuracy after each epoch, only the token mixer differs')


def save_accuracy_plot(fig, png: Path, title: str, width: int = 1000, height: int = 600) -> None:
    """A figure of test-accuracy curves (epoch on x) as a PNG, drawn by headless Chromium (Debian's; no kaleido)."""
    from playwright.sync_api import sync_playwright

    fig.update_layout(
        title=title,
        xaxis_title='epoch',
        yaxis_title='test accuracy (%), 10,000 images',
        width=width,
        height=height,
        template='plotly_white',
    )
    html = png.with_suffix('.html')
    fig.write_html(html, include_plotlyjs=True, full_html=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox', '--disable-gpu'])
        page = b.new_page(viewport={'width': width, 'height': height})
        page.goto(html.resolve().as_uri())
        page.wait_for_selector('.main-svg')
        page.screenshot(path=str(png))
        b.close()
    html.unlink()


if __name__ == '__main__':
    args = sys.argv[1:]
    out_png = None
    if '--plot' in args:
        i = args.index('--plot')
        out_png = Path(args[i + 1])
        del args[i : i + 2]
    d = Path(args[0]) if args else Path(__file__).resolve().parent.parent / 'assets' / 'fmnist'
    print(table(d), end='')
    if out_png:
        plot(rows(d), out_png)
