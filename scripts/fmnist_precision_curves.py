"""The same design trained in two precisions: per-epoch test accuracy and training speed, read from checkpoints.

    python scripts/fmnist_precision_curves.py FP32.safetensors BF16.safetensors [FP32 BF16 ...] [--plot PNG]

Takes one pair of runs per seed. For each pair it prints one row per epoch (test accuracy of each run, the
difference, and each run's images/s in that epoch by the loop's own clock: training steps only, evaluations
excluded), then the final test accuracies as recorded in the checkpoints and the speed ratio of the median epochs
(a slow spell on a shared machine moves one epoch, not the median). For issue 15's check: bf16 autocast >= 1.8x
fp32 images/s with the same final accuracy (within 0.3 points over 5 epochs). The two runs of a pair must come
from the same spec, seed and recipe but the precision. With several pairs (seeds) it ends with a summary: each
seed's final accuracies and their difference, the mean difference with its sample standard deviation and its 95%
interval (Student's t over the pairs), the one-sided bound on how far bf16 may fall below fp32 (issue 15's
+-0.3 points is met when both ends of the interval are inside it; "no worse by more than 0.3" when the one-sided
bound is), and how far apart the seeds of one precision land (the yardstick for a difference between precisions).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from explorer.train.checkpoints import read_metadata  # noqa: E402


def runs(paths: list[Path]) -> list[dict]:
    out = []
    for p in paths:
        m = read_metadata(p)
        metrics, history = m['metrics'], m['history']
        images = metrics['steps'] * metrics['global_batch']
        clock = [0.0] + [h['train_time'] for h in history]
        steps = [0] + [h['step'] for h in history]
        rates = [
            metrics['global_batch'] * (steps[i + 1] - steps[i]) / (clock[i + 1] - clock[i])
            for i in range(len(history))
            if clock[i + 1] > clock[i]
        ]
        out.append(
            {
                'path': p,
                'amp': metrics['amp'] or 'fp32',
                'spec': m['spec']['name'],
                'history': history,
                'accuracy': metrics['test_accuracy'],
                'images_per_s': images / metrics['train_time_s'],
                'epoch_rates': rates,
                'median_rate': sorted(rates)[len(rates) // 2] if rates else images / metrics['train_time_s'],
                'recipe': {k: v for k, v in metrics['recipe'].items() if k != 'amp'},
            }
        )
    return out


def report(rs: list[dict]) -> str:
    a, b = rs
    if a['spec'] != b['spec'] or a['recipe'] != b['recipe']:
        raise SystemExit('the two checkpoints differ in more than precision (spec or recipe)')
    amps = [r['amp'] for r in rs]
    lines = [
        f'# {a["spec"]}: {amps[0]} vs {amps[1]}',
        f'| epoch | {amps[0]} | {amps[1]} | diff | {amps[0]} images/s | {amps[1]} images/s |',
        '|---:|---:|---:|---:|---:|---:|',
    ]
    for i, (ha, hb) in enumerate(zip(a['history'], b['history'])):
        if ha.get('test_accuracy') is None or hb.get('test_accuracy') is None:  # not evaluated after this epoch
            continue
        x, y = 100 * ha['test_accuracy'], 100 * hb['test_accuracy']
        speed = ' | '.join(f'{r["epoch_rates"][i]:.0f}' if i < len(r['epoch_rates']) else '' for r in rs)
        lines.append(f'| {ha["epoch"]:g} | {x:.2f} | {y:.2f} | {y - x:+.2f} | {speed} |')
    for r in rs:
        lines.append(
            f'{r["amp"]}: final test accuracy {100 * r["accuracy"]:.2f}%, {r["images_per_s"]:.0f} images/s over '
            f'the run, {r["median_rate"]:.0f} in its median epoch'
        )
    lines.append(
        f'speed {b["amp"]} / {a["amp"]} (median epochs): {b["median_rate"] / a["median_rate"]:.2f}x; final '
        f'accuracy difference {100 * (b["accuracy"] - a["accuracy"]):+.2f} points'
    )
    return '\n'.join(lines) + '\n'


def t_quantile(q: float, df: int) -> float:
    """Student's t quantile (0.5 < q < 1) with `df` degrees of freedom: the density integrated by Simpson's
    rule from 0, bisected to the point where the distribution function reaches q (no scipy here)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float, n: int = 4000) -> float:
        h = x / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def summary(pairs: list[list[dict]]) -> str:
    """Final accuracy by seed and precision over several pairs: the precisions' difference beside the seeds'."""
    import statistics

    amps = [r['amp'] for r in pairs[0]]
    if any([r['amp'] for r in p] != amps or p[0]['spec'] != pairs[0][0]['spec'] for p in pairs):
        raise SystemExit('every pair must be the same spec in the same two precisions, in the same order')
    lines = [
        f'# {pairs[0][0]["spec"]}: final test accuracy by seed',
        f'| seed | {amps[0]} | {amps[1]} | diff | speed {amps[1]} / {amps[0]} (median epochs) |',
        '|---:|---:|---:|---:|---:|',
    ]
    diffs = []
    for a, b in pairs:
        diffs.append(100 * (b['accuracy'] - a['accuracy']))
        lines.append(
            f'| {a["recipe"].get("seed")} | {100 * a["accuracy"]:.2f} | {100 * b["accuracy"]:.2f} | {diffs[-1]:+.2f} '
            f'| {b["median_rate"] / a["median_rate"]:.2f}x |'
        )
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float('nan')
    mean = statistics.mean(diffs)
    lines.append(f'mean difference {amps[1]} - {amps[0]}: {mean:+.2f} points (sd {sd:.2f}, n {len(diffs)})')
    if len(diffs) > 1:  # the pairs' differences as a sample: Student's t with n - 1 degrees of freedom
        se, df = sd / math.sqrt(len(diffs)), len(diffs) - 1
        both, one = t_quantile(0.975, df), t_quantile(0.95, df)
        lines.append(
            f'95% interval of the mean difference: [{mean - both * se:+.2f}, {mean + both * se:+.2f}] points '
            f'(t {both:.3f}, {df} df); one-sided 95%: {amps[1]} at most {max(0.0, -(mean - one * se)):.2f} points '
            f'below {amps[0]} (t {one:.3f})'
        )
    for i, amp in enumerate(amps):
        acc = [100 * p[i]['accuracy'] for p in pairs]
        lines.append(f'{amp} over seeds: mean {statistics.mean(acc):.2f}%, range {min(acc):.2f}-{max(acc):.2f}')
    return '\n'.join(lines) + '\n'


def plot(rs: list[dict], png: Path) -> None:
    import plotly.graph_objects as go
    from fmnist_results_table import save_accuracy_plot

    fig = go.Figure()
    colours = {}
    for r in rs:
        colour = colours.setdefault(r['amp'], ('#1f77b4', '#d62728', '#2ca02c')[len(colours) % 3])
        fig.add_scatter(
            x=[h['epoch'] for h in r['history'] if h.get('test_accuracy') is not None],
            y=[100 * h['test_accuracy'] for h in r['history'] if h.get('test_accuracy') is not None],
            mode='lines+markers',
            line={'color': colour, 'dash': ('solid', 'dash', 'dot', 'dashdot')[r['recipe'].get('seed', 0) % 4]},
            name=f'{r["amp"]}, seed {r["recipe"].get("seed")} ({r["median_rate"]:.0f} images/s, median epoch)',
        )
    title = f'{rs[0]["spec"]} on Fashion-MNIST: test accuracy after each epoch by training precision'
    save_accuracy_plot(fig, png, title, width=900, height=500)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument(
        'checkpoints', nargs='+', type=Path, metavar='CHECKPOINT', help='per seed: the fp32 run, then the bf16 run'
    )
    ap.add_argument('--plot', type=Path, metavar='PNG', help='also draw every curve into this PNG')
    args = ap.parse_args()
    if len(args.checkpoints) % 2:
        ap.error(f'{len(args.checkpoints)} checkpoints: give them in pairs (fp32, bf16), one pair per seed')
    rs = runs(args.checkpoints)
    pairs = [rs[i : i + 2] for i in range(0, len(rs), 2)]
    for pair in pairs:
        print(report(pair), end='')
    if len(pairs) > 1:
        print(summary(pairs), end='')
    if args.plot:
        plot(rs, args.plot)


if __name__ == '__main__':
    main()
