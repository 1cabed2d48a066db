"""Cross-validation of the latency model on saved measurements (`bench_latency_model.py --save-measurements`).

One run of `bench_latency_model.py` scores one split: 30 unseen designs, so one design more or less within +-10%
moves its figure by 3.3 points, and runs of the same code swing by 10 points or more. This script takes the
designs and latencies such runs measured and, for each of many random splits, fits the model on DESIGNS of them
and scores HOLDOUT others, as `explorer calibrate` does: the mean share within +-10%, the share of splits that meet
issue 16's target (>= 90% within +-10% and Spearman >= 0.9), the median error; for the shipped model, the same fit
without its local correction, and latency proportional to MACs. No timing: it runs in seconds on saved numbers.

    python benchmarks/cv_latency_model.py FILE.json [FILE.json ...] [--splits 40] [--designs 400] [--holdout 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
from pathlib import Path

from bench_latency_model import MEASUREMENTS  # its `_common` import puts the repository on sys.path


def load(path: Path) -> dict:
    data = json.loads(path.read_text(encoding='utf-8'))
    if not isinstance(data, dict) or data.get('format') != MEASUREMENTS:
        raise SystemExit(f'{path}: not a file of bench_latency_model.py --save-measurements ({MEASUREMENTS})')
    return data


def cross_validate(specs, seconds, batch: int, designs: int, holdout: int, splits: int) -> dict:
    """Per predictor: mean within +-10%, share of splits passing, median of the splits' median abs errors."""
    from explorer.measure.latency import Fingerprint, evaluate_latency_model, fit_latency_model

    if designs + holdout > len(specs):
        raise SystemExit(f'{designs} + {holdout} designs asked for, {len(specs)} measured')
    fp = Fingerprint('cpu', 'saved measurements', 0, '', 'float32', batch)
    scores: dict[str, list[dict]] = {'latency model': [], 'features only': [], 'MACs x constant': []}
    for split in range(splits):
        order = list(range(len(specs)))
        random.Random(split).shuffle(order)
        fit, test = order[:designs], order[designs : designs + holdout]
        model = fit_latency_model([specs[i] for i in fit], [seconds[i] for i in fit], fp)
        unseen, measured = [specs[i] for i in test], [seconds[i] for i in test]
        ev = evaluate_latency_model(model, unseen, measured)
        scores['latency model'].append(ev['model'])
        scores['MACs x constant'].append(ev['baseline'])
        plain = dataclasses.replace(model, local=None)
        scores['features only'].append(evaluate_latency_model(plain, unseen, measured)['model'])
    return {
        name: {
            'within': statistics.fmean(a['within'] for a in runs),
            'pass': statistics.fmean(a['within'] >= 0.9 and a['spearman'] >= 0.9 for a in runs),
            'spearman': statistics.fmean(a['spearman'] for a in runs),
            'median_abs_pct': statistics.median(a['median_abs_pct'] for a in runs),
        }
        for name, runs in scores.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('files', nargs='+', type=Path)
    ap.add_argument('--splits', type=int, default=40)
    ap.add_argument('--designs', type=int, default=400, help='designs fitted per split')
    ap.add_argument('--holdout', type=int, default=30, help='unseen designs scored per split')
    args = ap.parse_args()

    from explorer.core.spec import ArchSpec

    print(f'# {args.splits} splits per set: fit {args.designs} designs, score {args.holdout} others (fp32)')
    print('| set | batch | predictor | within +-10% (mean) | splits passing | Spearman (mean) | median abs error |')
    print('|---|---:|---|---:|---:|---:|---:|')
    for path in args.files:
        data = load(path)
        for batch, b in data['batches'].items():
            specs = [ArchSpec.from_dict(d) for d in b['specs']]
            res = cross_validate(specs, b['seconds'], int(batch), args.designs, args.holdout, args.splits)
            for name, r in res.items():
                print(
                    f'| {path.name} (seed {data["seed"]}) | {batch} | {name} | {100 * r["within"]:.1f}% '
                    f'| {100 * r["pass"]:.0f}% | {r["spearman"]:.3f} | {r["median_abs_pct"]:.1f}% |'
                )
        print(f'# {path.name}: {data["conditions"]}; CPU flags {data["cpu_flags"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
