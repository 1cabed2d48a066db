"""Benchmark 2: the explorer's fast path against timm eager fp32, poolformer_s12, batch 8 (interleaved).

The fast path (`explorer.measure.speed.fast_path`): channels_last + bf16 autocast on CPUs with native bf16
(AVX512-BF16/AMX), channels_last alone on other CPUs, channels_last + fp16 AMP on CUDA. Target (issue 3):
>= 2.5x on a CPU with native bf16, >= 1.0x where bf16 is not supported. Also prints the pieces
(channels_last alone, bf16 alone where supported) so the gain can be attributed.

    python benchmarks/bench_fast_path.py
    python benchmarks/bench_fast_path.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import statistics

from _common import conditions, fmt_ms, interleaved, ratio, ratio_of_medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='poolformer_s12')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--seconds', type=float, default=60.0, help='approximate timed seconds in all')
    ap.add_argument('--compile', action='store_true', help='also time torch.compile of the fast path')
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import timm
    import torch

    from explorer.core.build import build_model
    from explorer.core.catalog import load_spec
    from explorer.measure.speed import cpu_native_bf16, fast_path, prepare, resolve_device, time_steps

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    fp = fast_path(device)
    native = device != 'cpu' or cpu_native_bf16()
    target = 2.5 if (device == 'cpu' and native) else 1.0
    print('# fast path vs timm eager fp32:', conditions())
    print(f'# {args.model}, batch {args.batch}, device {device}; fast path here = {fp}')
    spec = load_spec(args.model)
    timm_model = timm.create_model(spec.meta.get('timm_name', args.model))
    composed = build_model(spec, seed=0)
    variants = {'timm eager fp32': (timm_model, 'fp32', False, False)}
    variants['explorer fp32'] = (composed, 'fp32', False, False)
    variants['explorer channels_last'] = (build_model(spec, seed=0), 'fp32', True, False)
    if fp['dtype'] != 'fp32':
        variants[f'explorer {fp["dtype"]} autocast'] = (build_model(spec, seed=0), fp['dtype'], False, False)
    fast_name = f'explorer fast path ({fp["dtype"]}, channels_last)'
    variants[fast_name] = (build_model(spec, seed=0), fp['dtype'], True, False)
    if args.compile:
        variants[fast_name + ' + compile'] = (build_model(spec, seed=0), fp['dtype'], True, True)
    runners = {}
    for label, (model, dtype, cl, comp) in variants.items():
        step, _, _ = prepare(spec, device, args.batch, dtype, cl, comp, model=model)
        if comp:
            time_steps(step, device, 1)  # compile outside the timed rounds
        runners[label] = step
    one = sum(time_steps(r, device, 1)[0] for r in runners.values())
    rounds = max(6, min(300, int(args.seconds / max(one, 1e-4))))
    lat = interleaved(runners, device, rounds)
    base = lat['timm eager fp32']
    for label, xs in lat.items():
        r, lo, hi = ratio(xs, base)
        thr = args.batch / statistics.median(xs)
        print(
            f'{label:48s} {fmt_ms(xs)} {thr:8.1f} img/s  x{r:.2f} [{lo:.2f}, {hi:.2f}] vs timm eager fp32 '
            f'(ratio of medians {ratio_of_medians(xs, base):.2f})'
        )
    if device.startswith('cuda'):
        print('# peak CUDA memory of each variant: max_memory_allocated during 3 steps, above what was resident')
        for label, step in runners.items():
            torch.cuda.synchronize(device)
            resident = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            time_steps(step, device, 3)
            peak = torch.cuda.max_memory_allocated(device) - resident
            print(f'{label:48s} peak {peak / 2**20:9.1f} MiB (batch {args.batch})')
    r, lo, hi = ratio(lat[fast_name], base)
    print('# after:', conditions())
    print(
        f'# fast path / timm eager fp32 = {r:.2f} [{lo:.2f}, {hi:.2f}]; target >= {target} '
        f'({"native bf16" if native else "bf16 not supported here"}): {"PASS" if r >= target else "FAIL"}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
