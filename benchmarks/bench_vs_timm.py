"""Benchmark 1: a composed preset against `timm.create_model` of the same architecture.

Eager inference, interleaved runs, batch 1 and 16 by default; prints the throughput ratio composed / timm
(median over rounds of the back-to-back pair ratio) with a 95% bootstrap interval. Target (issue 3): >= 0.97
for poolformer_s12, convformer_s18, caformer_s18.

    python benchmarks/bench_vs_timm.py                      # CPU, fp32
    python benchmarks/bench_vs_timm.py --device cuda --dtype fp16 --channels-last --batches 1 256
"""

from __future__ import annotations

import argparse
import statistics

from _common import conditions, fmt_ms, interleaved, ratio, ratio_of_medians

MODELS = ('poolformer_s12', 'convformer_s18', 'caformer_s18')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=list(MODELS))
    ap.add_argument('--batches', nargs='+', type=int, default=[1, 16])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--dtype', default='fp32', choices=('fp32', 'bf16', 'fp16'))
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--seconds', type=float, default=40.0, help='approximate timed seconds per model and batch')
    ap.add_argument('--threshold', type=float, default=0.97)
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import timm
    import torch

    from explorer.core.build import build_model
    from explorer.core.catalog import load_spec
    from explorer.measure.speed import prepare, resolve_device, time_steps

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print('# composed preset vs timm.create_model:', conditions())
    print(f'# device {device}, dtype {args.dtype}, channels_last {args.channels_last}, eager, inference_mode')
    worst = None
    rows = []
    for name in args.models:
        spec = load_spec(name)
        composed = build_model(spec, seed=0)
        reference = timm.create_model(spec.meta.get('timm_name', name))
        n_c = sum(p.numel() for p in composed.parameters())
        n_t = sum(p.numel() for p in reference.parameters())
        assert n_c == n_t, (name, n_c, n_t)
        for batch in args.batches:
            runners = {}
            for label, model in (('composed', composed), ('timm', reference)):
                step, _, _ = prepare(spec, device, batch, args.dtype, args.channels_last, model=model)
                runners[label] = step
            # size the rounds from one timed call of each
            one = sum(time_steps(r, device, 1)[0] for r in runners.values())
            rounds = max(6, min(200, int(args.seconds / max(one, 1e-4))))
            lat = interleaved(runners, device, rounds)
            r, lo, hi = ratio(lat['composed'], lat['timm'])
            worst = r if worst is None else min(worst, r)
            ok = 'PASS' if r >= args.threshold else 'FAIL'
            thr_c = batch / statistics.median(lat['composed'])
            thr_t = batch / statistics.median(lat['timm'])
            rows.append((name, batch, thr_c, thr_t, r, lo, hi, ok))
            print(
                f'{name:16s} batch {batch:4d}: composed {fmt_ms(lat["composed"])}  {thr_c:8.1f} img/s | '
                f'timm {fmt_ms(lat["timm"])}  {thr_t:8.1f} img/s | ratio {r:.3f} [{lo:.3f}, {hi:.3f}] {ok} '
                f'(ratio of medians {ratio_of_medians(lat["composed"], lat["timm"]):.3f})',
                flush=True,
            )
    print('# after:', conditions())
    print(f'# worst ratio {worst:.3f} (target >= {args.threshold})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
