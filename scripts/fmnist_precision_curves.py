"""The same design trained in two precisions: per-epoch test accuracy and training speed, read from checkpoints.

    python scripts/fmnist_precision_curves.py FP32.safetensors BF16.safetensors [--plot PNG]

Prints one row per epoch (test accuracy of each run, the difference, and each run's images/s in that epoch by
the loop's own clock: training steps only, evaluations excluded), then the final test accuracies as recorded in
the checkpoints and the speed ratio of the median epochs (a slow spell on a shared machine moves one epoch, not
the median). For issue 15's check: bf16 autocast >= 1.8x fp32 images/s with the same final
accuracy (within 0.3 points over 5 epochs). Runs must come from the same spec, seed and recipe but the precision.
"""

from __future__ import annotations

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


def plot(rs: list[dict], png: Path) -> None:
    import plotly.graph_objects as go
    from fmnist_results_table import save_accuracy_plot

    fig = go.Figure()
    for r in rs:
        fig.add_scatter(
            x=[h['epoch'] for h in r['history'] if h.get('test_accuracy') is not None],
            y=[100 * h['test_accuracy'] for h in r['history'] if h.get('test_accuracy') is not None],
            mode='lines+markers',
            name=f'{r["amp"]} ({r["median_rate"]:.0f} images/s, median epoch)',
        )
    title = f'{rs[0]["spec"]} on Fashion-MNIST: test accuracy after each epoch by training precision'
    save_accuracy_plot(fig, png, title, width=900, height=500)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('checkpoints', nargs=2, type=Path, metavar='CHECKPOINT', help='the fp32 run, then the bf16 run')
    ap.add_argument('--plot', type=Path, metavar='PNG', help='also draw both curves into this PNG')
    args = ap.parse_args()
    rs = runs(args.checkpoints)
    print(report(rs), end='')
    if args.plot:
        plot(rs, args.plot)


if __name__ == '__main__':
    main()
