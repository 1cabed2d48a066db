"""Print the Fashion-MNIST ablation table (Markdown) from the trained checkpoints in a directory.

    python scripts/fmnist_results_table.py [DIR]          (default: assets/fmnist)

Every number comes from the checkpoints' own metadata (accuracy measured at the end of training on the
10,000 test images; `explorer evaluate` re-measures it) and from explorer.measure.analytic.analytic_cost (params, MACs).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.core.spec import ArchSpec  # noqa: E402
from explorer.train.checkpoints import read_metadata  # noqa: E402
from explorer.train.loop import TrainConfig  # noqa: E402

ORDER = ('identity', 'random', 'pooling', 'sepconv', 'attention', 'spatial_mlp', 'hybrid')


def macs_of(spec: ArchSpec) -> tuple[int | None, int | None]:
    try:
        from explorer.measure.analytic import analytic_cost
    except ImportError:  # counting not installed: params from the checkpoint, MACs left out
        return None, None
    r = analytic_cost(spec)
    return r.macs, r.frozen_params


def rows(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob('*.safetensors')):
        info = read_metadata(path)
        spec = ArchSpec.from_dict(info['spec'])
        m = info['metrics']
        macs, frozen = macs_of(spec)
        key = path.stem.removeprefix('fmnist_')
        out.append(
            {
                'file': path.name,
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
    return sorted(out, key=lambda r: (rank.get(r['key'], len(ORDER)), r['file']))


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
    """What a run's recipe changed from the shared one (TrainConfig's defaults), e.g. 'random erasing 0.25'."""
    base = TrainConfig()
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
        'recipe | threads | training time (s) | file |',
        '|---|---|---:|---:|---:|---:|---|---|---:|---:|---|',
    ]
    for r in rs:
        params = f'{r["params"] / 1e6:.3f} M' + (f' ({r["frozen"] / 1e6:.3f} M frozen)' if r['frozen'] else '')
        macs = '-' if r['macs'] is None else f'{r["macs"] / 1e6:.1f} M'
        lines.append(
            f'| {r["family"]} | {r["mixers"]} | {r["acc"]:.2f} | {params} | {macs} | {r["epochs"]:g} | '
            f'{r["budget"]} | {r["recipe"]} | {r["threads"]} | {r["time"]:.0f} | '
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
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(
        table(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / 'assets' / 'fmnist'),
        end='',
    )
