"""`explorer calibrate` (measure random designs, fit this device's latency model) and `explorer latency`
(the predicted latency of a spec, instantly)."""

from __future__ import annotations

import sys

from explorer.cli.args import int_in, number_in, print_json
from explorer.core.errors import UserError
from explorer.measure.latency import MAX_DESIGN_MACS  # no torch, no numpy: plain data

DTYPE_CHOICES = ('float32', 'bfloat16', 'float16', 'fp32', 'bf16', 'fp16')


def register(sub) -> None:
    p = sub.add_parser(
        'calibrate',
        help="measure random designs and fit this device's latency model (per batch size, dtype, threads)",
        description='Measure DESIGNS + HOLDOUT random designs (1-4 stages, every mixer, widths 16-256, images '
        '16-448 px) in interleaved rounds, fit a non-negative per-component latency model on DESIGNS of them, '
        'report its accuracy on the HOLDOUT ones beside latency proportional to MACs, and save it for this '
        'device fingerprint (processor, threads, torch version, dtype, batch size) under '
        '$EXPLORER_LATENCY_DIR or ~/.cache/metaformer-explorer/latency. See explorer/measure/latency.py.',
    )
    p.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    p.add_argument(
        '--batch-size', type=int_in(1, 256), nargs='+', default=[1], help='one or more batch sizes (default 1)'
    )
    p.add_argument('--dtype', choices=DTYPE_CHOICES, default='float32', help='float32 (default) or autocast')
    p.add_argument('--designs', type=int_in(2, 2000), default=400, help='designs to fit on (default 400)')
    p.add_argument('--holdout', type=int_in(0, 2000), default=30, help='unseen designs to test on (default 30)')
    p.add_argument('--threads', type=int_in(1, 1024), default=None, help="torch threads (default: torch's)")
    p.add_argument(
        '--rounds',
        type=int_in(1, 1000),
        default=9,
        help='interleaved timing rounds (default 9, then up to 9 more for unsettled designs)',
    )
    p.add_argument('--seed', type=int_in(0), default=0, help='seed of the random designs')
    p.add_argument(
        '--max-mmacs',
        type=number_in(0.1, 100_000),
        default=MAX_DESIGN_MACS / 1e6,
        help=f'largest design, millions of MACs per image (default {MAX_DESIGN_MACS / 1e6:g})',
    )
    p.add_argument(
        '--keep-untrusted',
        action='store_true',
        help='save a calibration that cannot be trusted (too few designs, or no better than MACs on its unseen '
        'designs) even over the one saved for this device; without it such a calibration replaces none',
    )
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        'latency', help='predicted latency of a spec on this device, from its calibration (instant, nothing is built)'
    )
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument('--batch-size', type=int_in(1, 4096), default=1)
    p.add_argument('--dtype', choices=DTYPE_CHOICES, default='float32')
    p.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    p.add_argument('--threads', type=int_in(1, 1024), default=None, help="torch threads (default: torch's)")
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_latency)


def cmd_calibrate(args) -> int:
    from explorer.measure.latency import (
        Fingerprint,
        LatencyError,
        calibrate,
        calibration_problem,
        load_model,
        save_model,
    )
    from explorer.measure.speed import BenchError

    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(frac, desc=''):
            print(f'\r{desc:<40} {100 * frac:5.1f}%', end='', file=sys.stderr, flush=True)

    from explorer.cli.args import writable_path
    from explorer.measure.latency import ENV_DIR, latency_dir

    writable_path(f'${ENV_DIR} (where calibrations are saved)', latency_dir(), folder=True)  # before measuring
    results = []
    for batch in dict.fromkeys(args.batch_size):  # `--batch-size 1 1` calibrated twice, the second over the first
        try:
            cal = calibrate(
                device=args.device,
                batch_size=batch,
                dtype=args.dtype,
                designs=args.designs,
                holdout=args.holdout,
                threads=args.threads,
                rounds=args.rounds,
                seed=args.seed,
                progress=progress,
                max_macs=args.max_mmacs * 1e6,
                save=False,
            )
        except (LatencyError, BenchError) as e:
            raise UserError(str(e)) from None
        if progress is not None:
            print(file=sys.stderr)
        problem = calibration_problem(cal.model)
        saved = load_model(Fingerprint(**cal.model.fingerprint))
        if saved is not None and calibration_problem(saved):  # an untrusted one is no better to keep
            saved = None
        if problem and saved is not None and not args.keep_untrusted:
            # a 2-design calibration silently replaced a good one: every prediction and search on this device
            # (and a server's visitors') would have used it
            print(
                f'warning: {problem}; not saved: the calibration saved for this device on {saved.created} '
                f'({saved.n_designs} designs) is kept (--keep-untrusted to replace it)',
                file=sys.stderr,
            )
        else:
            if problem:  # nothing trusted to keep: saved, and said (the page keeps no such calibration)
                print(f'warning: {problem}; run it again when the machine is idle', file=sys.stderr)
            cal.path = str(save_model(cal.model))
        results.append(cal)
        if not args.json:
            _print_calibration(cal)
    if args.json:
        print_json([c.to_dict() for c in results])
    return 0


def _print_calibration(cal) -> None:
    m = cal.model
    print(
        f'calibrated on {m.label()}: {m.n_designs} designs, {m.measure["rounds"]} rounds, '
        f'{cal.seconds_taken:.0f} s; ' + (f'saved to {cal.path}' if cal.path else 'not saved')
    )
    ev = cal.evaluation
    if ev is None:
        print('no holdout designs: accuracy not measured (--holdout N)')
        return
    fmt = '  {:<22} {:>14} {:>9} {:>16}'
    print(fmt.format(f'{ev["model"]["n"]} unseen designs', 'within +-10%', 'Spearman', 'median |error|'))
    for name, key in (('latency model', 'model'), ('MACs x constant', 'baseline')):
        a = ev[key]
        print(fmt.format(name, f'{100 * a["within"]:.0f}%', f'{a["spearman"]:.3f}', f'{a["median_abs_pct"]:.1f}%'))


def cmd_latency(args) -> int:
    from explorer.cli.specs import resolve_spec
    from explorer.measure.analytic import analytic_cost
    from explorer.measure.latency import LatencyError, predict_latency

    spec, _ = resolve_spec(args.spec)
    try:
        pred = predict_latency(spec, args.batch_size, args.dtype, args.device, args.threads)
    except LatencyError as e:
        raise UserError(str(e)) from None
    cost = analytic_cost(spec)
    if args.json:
        print_json(pred.to_dict() | {'spec': spec.name, 'params': cost.params, 'macs': cost.macs})
        return 0
    from explorer.measure.units import fmt_count

    # MACs in G, M or k: a small design read '0.000 GMACs' (a review)
    print(f'{spec.name}: {cost.params:,} params, {fmt_count(cost.macs)} MACs per image; {pred.text()}')
    if pred.seconds is not None:
        top = sorted(pred.components.items(), key=lambda kv: -kv[1])[:6]
        print('largest parts: ' + ', '.join(f'{k} {100 * v / pred.seconds:.0f}%' for k, v in top))
        if pred.holdout:
            a = pred.holdout['model']
            print(
                f'calibration accuracy on {a["n"]} unseen designs: {100 * a["within"]:.0f}% within +-10%, '
                f'Spearman {a["spearman"]:.3f}'
            )
    return 0
