"""Benchmark: the calibrated latency model against latency proportional to MACs, on designs it never saw.

Target (issue 16): on this CPU, fp32, at batch 1 and batch 32, at least 90% of 30 random unseen designs within
+-10% of their measured latency and a Spearman rank correlation >= 0.9, and better than the MACs baseline (one
scale factor fitted on the same calibration designs). For each batch size it runs `explorer calibrate`'s
function: DESIGNS + HOLDOUT random designs measured in the same interleaved rounds, the model fitted on DESIGNS,
scored on the HOLDOUT ones. Optionally (--presets) it also times a few presets (ImageNet size, far larger than
any calibration design) and prints the prediction beside the measurement: extrapolation, not the target.

    python benchmarks/bench_latency_model.py [--designs 400] [--holdout 30] [--batches 1 32] [--presets ...]
        [--save-measurements FILE.json]

--save-measurements keeps every design's spec and measured latency, so that `cv_latency_model.py` can score the
model on many splits of the same measurements instead of the one split this run scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from _common import conditions

MEASUREMENTS = 'metaformer-explorer/latency-measurements-v1'  # read by cv_latency_model.py


def cpu_flags() -> str:
    wanted = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16')
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
    except OSError:
        flags = []
    return ' '.join(f for f in wanted if f in flags) or 'unknown'


def row(name: str, a: dict) -> str:
    pct = f'{100 * a["within"]:.0f}%'
    return f'| {name} | {pct} | {a["spearman"]:.3f} | {a["median_abs_pct"]:.1f}% | {a["max_abs_pct"]:.0f}% |'


def presets_check(model, names: list[str], batch: int, rounds: int) -> None:
    from explorer.core.catalog import load_spec
    from explorer.measure.latency import measure_latencies

    specs = [load_spec(n) for n in names]
    measured = measure_latencies(specs, 'cpu', batch, 'float32', rounds, model.fingerprint['threads'])
    print(f'\npresets at batch {batch} (extrapolation: 224 px, GMACs per image, far outside the calibration designs):')
    print('| preset | measured | model | MACs baseline |\n|---|---:|---:|---:|')
    for name, spec, m in zip(names, specs, measured):
        p, b = model.predict(spec), model.baseline(spec)
        print(
            f'| {name} | {1e3 * m:.1f} ms | {1e3 * p:.1f} ms ({100 * (p / m - 1):+.0f}%) '
            f'| {1e3 * b:.1f} ms ({100 * (b / m - 1):+.0f}%) |'
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--designs', type=int, default=400, help='calibration designs per batch size')
    ap.add_argument('--holdout', type=int, default=30, help='unseen designs per batch size')
    ap.add_argument('--batches', type=int, nargs='+', default=[1, 32])
    ap.add_argument('--rounds', type=int, default=9)
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--presets', nargs='*', default=[], help='also time these presets (extrapolation)')
    ap.add_argument('--no-save', action='store_true', help='do not save the calibrations')
    ap.add_argument('--save-measurements', type=Path, help='write every design and its measured latency here')
    args = ap.parse_args()

    import torch

    from explorer.measure.latency import calibrate, evaluate_latency_model, latency_dir, random_designs

    if args.threads:
        torch.set_num_threads(args.threads)
    print('# latency model vs MACs:', conditions())
    print(f'# CPU flags: {cpu_flags()}; torch threads {torch.get_num_threads()}; torch {torch.__version__}')
    print(f'# saving to {latency_dir()}' if not args.no_save else '# not saving')
    ok = True
    models = {}
    kept = {'format': MEASUREMENTS, 'conditions': conditions(), 'cpu_flags': cpu_flags(), 'seed': args.seed}
    kept |= {'rounds': args.rounds, 'threads': torch.get_num_threads(), 'dtype': 'float32', 'batches': {}}
    for batch in args.batches:
        t0 = time.monotonic()

        def progress(frac, text='', t0=t0):
            print(f'#   {time.monotonic() - t0:6.0f} s {text}', flush=True) if 'round' in text else None

        cal = calibrate(
            batch_size=batch,
            designs=args.designs,
            holdout=args.holdout,
            rounds=args.rounds,
            seed=args.seed,
            save=not args.no_save,
            progress=progress,
        )
        models[batch] = cal.model
        ev = cal.evaluation
        if args.save_measurements:
            specs = random_designs(args.designs + args.holdout, args.seed)
            kept['batches'][str(batch)] = {
                'designs': args.designs,
                'holdout': args.holdout,
                'seconds_taken': round(cal.seconds_taken, 1),
                'measure': cal.model.measure,
                'specs': [s.to_dict() for s in specs],
                'seconds': cal.measured,
            }
            args.save_measurements.write_text(json.dumps(kept, indent=1) + '\n', encoding='utf-8')
            print(f'# measurements written to {args.save_measurements}')
        load = os.getloadavg() if hasattr(os, 'getloadavg') else None
        q = cal.model.measure
        print(
            f'\nbatch {batch}, fp32: {args.designs} calibration + {args.holdout} unseen designs, measured in '
            f'{cal.seconds_taken:.0f} s; settled {100 * q["settled"]:.0f}%, quiet turns {100 * q["quiet_turns"]:.0f}%'
            + (f', load after {load[0]:.2f}' if load else '')
        )
        print('| predictor | within +-10% | Spearman | median abs error | max abs error |')
        print('|---|---:|---:|---:|---:|')
        print(row('latency model', ev['model']))
        # the same fit without its local correction (the neighbours' residuals), on the same measurements
        unseen = random_designs(args.designs + args.holdout, args.seed)[args.designs :]
        measured = [d['ms_measured'] / 1e3 for d in ev['designs']]
        plain = evaluate_latency_model(dataclasses.replace(cal.model, local=None), unseen, measured)
        print(row('features only (no local correction)', plain['model']))
        print(row('MACs x constant', ev['baseline']))
        m, b = ev['model'], ev['baseline']
        passed = (
            m['within'] >= 0.9 and m['spearman'] >= 0.9 and m['within'] > b['within'] and m['spearman'] > b['spearman']
        )
        ok &= passed
        print(f'target (>= 90% within +-10%, Spearman >= 0.9, beats the baseline): {"PASS" if passed else "FAIL"}')
        worst = sorted(ev['designs'], key=lambda d: -abs(d['ms_predicted'] / d['ms_measured'] - 1))[:5]
        print(
            '# worst unseen designs: '
            + '; '.join(
                f'{d["ms_measured"]:.3g} ms measured, {100 * (d["ms_predicted"] / d["ms_measured"] - 1):+.0f}% '
                f'({d["img_size"]} px: {d["stages"]})'
                for d in worst
            )
        )
        top = sorted(cal.model.coef.items(), key=lambda kv: -kv[1])
        print('# nonzero coefficients:', ', '.join(f'{k} {v:.3g}' for k, v in top if v > 0))
    for batch, model in models.items():
        if args.presets:
            presets_check(model, args.presets, batch, 5 if batch == 1 else 3)
    print(f'\n# {"PASS" if ok else "FAIL"} overall; {conditions()}')
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
