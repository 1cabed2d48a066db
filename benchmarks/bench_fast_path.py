"""Benchmark 2: the explorer's fast path against timm eager fp32, batch 8 (interleaved), one model after another.

The fast path (`explorer.measure.speed.fast_path`): channels_last + bf16 autocast on CPUs with native bf16
(AVX512-BF16/AMX), channels_last alone on other CPUs, channels_last + fp16 AMP on CUDA. `--compile` adds
torch.compile (inductor, freezing) of the fast path: its compile time is printed (and whether inductor's on-disk
cache served it), its achieved MAC/s as a fraction of this device's measured matmul peak in the fast path's
dtype (compiled bf16 on a CPU casts the whole model to bf16 instead of autocasting: faster, same
accuracy), and its logits on the example images against the eager fp32 model's (same weights): top-1 agreement and
the max abs difference. Targets (issue 15): fast path >= 2.5x on a CPU with native bf16 (>= 1.0x elsewhere);
with compile >= 4x on a CPU with AMX.

    python benchmarks/bench_fast_path.py --models poolformer_s12 convformer_s18 caformer_s18 --compile
    python benchmarks/bench_fast_path.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from _common import conditions, fmt_ms, interleaved, ratio, ratio_of_medians


def example_batch(spec, batch: int):
    """The example photos (assets/images), preprocessed with timm's default ImageNet config, repeated to `batch`."""
    import torch

    from explorer.explain.images import example_images, load_image
    from explorer.explain.predict import data_config, preprocess

    cfg = data_config(spec)  # timm's defaults at the spec's size (ImageNet mean/std, crop 0.875, bicubic)
    xs = [preprocess(load_image(p), cfg) for p in example_images()]
    n = len(xs)
    return torch.cat([xs[i % n] for i in range(batch)]), min(n, batch)


def logits_check(step, x_buf, spec, batch: int) -> str:
    """Run the fast path's own step on the example photos (written into its input buffer) beside the eager fp32
    model with the same weights (built from the same seed); return the agreement line."""
    import torch

    from explorer.core.build import build_model

    imgs, n = example_batch(spec, batch)
    with torch.inference_mode():
        x_buf.copy_(imgs)
        fast = step().float()[:n].cpu()
        ref = build_model(spec, seed=0).eval()(imgs[:n].contiguous())
    agree = int((fast.argmax(-1) == ref.argmax(-1)).sum())
    diff = (fast - ref).abs().max().item()
    scale = ref.abs().max().item()
    top2 = ref.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    return (
        f'logits vs eager fp32 on {n} example photos: top-1 agreement {agree}/{n}, max |diff| {diff:.4g} '
        f'(largest |logit| {scale:.3g}; smallest fp32 top-1 margin {margin:.3g})'
    )


def run_model(name: str, args, torch, timm) -> dict:
    from explorer.core.build import build_model
    from explorer.core.catalog import load_spec
    from explorer.measure.analytic import analytic_cost
    from explorer.measure.speed import fast_path, matmul_peak, prepare, time_steps

    device = args.device
    fp = fast_path(device)
    spec = load_spec(name)
    timm_model = timm.create_model(spec.meta.get('timm_name', name))
    variants = {'timm eager fp32': (timm_model, 'fp32', False, False)}
    variants['explorer fp32'] = (build_model(spec, seed=0), 'fp32', False, False)
    if not args.compile:
        variants['explorer channels_last'] = (build_model(spec, seed=0), 'fp32', True, False)
        if fp['dtype'] != 'fp32':
            variants[f'explorer {fp["dtype"]} autocast'] = (build_model(spec, seed=0), fp['dtype'], False, False)
    fast_name = f'explorer fast path ({fp["dtype"]}, channels_last)'
    variants[fast_name] = (build_model(spec, seed=0), fp['dtype'], True, False)
    cast = ' (model cast to bf16)' if fp['dtype'] == 'bf16' and device == 'cpu' else ''
    comp_name = fast_name + ' + compile' + cast
    # timm's own model under the identical settings, so each setting's gain is read for both networks alike
    timm_fast = f'timm fast path ({fp["dtype"]}, channels_last)'
    timm_comp = timm_fast + ' + compile' + cast
    variants[timm_fast] = (copy.deepcopy(timm_model), fp['dtype'], True, False)
    if args.compile:
        variants[comp_name] = (build_model(spec, seed=0), fp['dtype'], True, True)
        variants[timm_comp] = (copy.deepcopy(timm_model), fp['dtype'], True, True)
    runners, extra = {}, {}
    for label, (model, dtype, cl, comp) in variants.items():
        step, x, m = prepare(spec, device, args.batch, dtype, cl, comp, model=model)
        if comp:
            t0 = time.perf_counter()
            time_steps(step, device, 1)  # compile outside the timed rounds
            from torch._dynamo.utils import counters

            hits = int(counters['inductor']['fxgraph_cache_hit'])
            extra.setdefault('compile', []).append(
                f'{label}: compiled in {time.perf_counter() - t0:.1f} s (inductor, freezing; FX graph cache hits '
                f'so far: {hits})'
            )
            if label == comp_name:
                extra['check'] = (step, x)
        runners[label] = step
    one = sum(time_steps(r, device, 1)[0] for r in runners.values())
    rounds = max(6, min(300, int(args.seconds / max(one, 1e-4))))
    lat = interleaved(runners, device, rounds)
    base = lat['timm eager fp32']
    macs = analytic_cost(spec).macs
    peak = matmul_peak(device, fp['dtype'])
    print(f'## {name}, batch {args.batch}, {macs / 1e9:.3f} GMACs per image, {rounds} rounds')
    for label, xs in lat.items():
        r, lo, hi = ratio(xs, base)
        thr = args.batch / statistics.median(xs)
        print(
            f'{label:52s} {fmt_ms(xs)} {thr:8.1f} img/s  x{r:.2f} [{lo:.2f}, {hi:.2f}] vs timm eager fp32 '
            f'(ratio of medians {ratio_of_medians(xs, base):.2f})'
        )
    best = comp_name if args.compile else fast_name
    thr = args.batch / statistics.median(lat[best])
    print(
        f'# {best}: {macs * thr / 1e9:.1f} GMAC/s = {100 * macs * thr / peak:.1f}% of the measured {fp["dtype"]} '
        f'matmul peak ({peak / 1e9:.1f} GMAC/s, 2048^3 GEMM, best of 5)'
    )
    pairs = [(fast_name, timm_fast)] + ([(comp_name, timm_comp)] if args.compile else [])
    for ours, theirs in pairs:
        r, lo, hi = ratio(lat[ours], lat[theirs])
        print(f'# identical settings: {ours} / {theirs} = {r:.2f} [{lo:.2f}, {hi:.2f}] (throughput ratio)')
    for line in extra.get('compile', []):
        print('#', line)
    if 'check' in extra:
        print('#', logits_check(*extra['check'], spec, args.batch))
    if device.startswith('cuda'):
        print('# peak CUDA memory of each variant: max_memory_allocated during 3 steps, above what was resident')
        for label, step in runners.items():
            torch.cuda.synchronize(device)
            resident = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            time_steps(step, device, 3)
            mem = torch.cuda.max_memory_allocated(device) - resident
            print(f'{label:52s} peak {mem / 2**20:9.1f} MiB (batch {args.batch})')
    return {'fast': ratio(lat[fast_name], base), 'compiled': ratio(lat[comp_name], base) if args.compile else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['poolformer_s12'])
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--seconds', type=float, default=60.0, help='approximate timed seconds per model')
    ap.add_argument('--compile', action='store_true', help='also time torch.compile (inductor, freezing) of it')
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import timm
    import torch

    from explorer.measure.speed import cpu_native_bf16, fast_path, resolve_device

    args.device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    native = args.device != 'cpu' or cpu_native_bf16()
    target = 2.5 if (args.device == 'cpu' and native) else 1.0
    print('# fast path vs timm eager fp32:', conditions())
    print(f'# device {args.device}; fast path here = {fast_path(args.device)}')
    results = {m: run_model(m, args, torch, timm) for m in args.models}
    print('# after:', conditions())
    for m, res in results.items():
        r, lo, hi = res['fast']
        line = f'# {m}: fast path / timm eager fp32 = {r:.2f} [{lo:.2f}, {hi:.2f}]'
        if m == 'poolformer_s12':  # issue 3's target is for this model
            line += f' (target >= {target}: {"PASS" if r >= target else "FAIL"})'
        if res['compiled'] is not None:
            r, lo, hi = res['compiled']
            line += f'; + compile = {r:.2f} [{lo:.2f}, {hi:.2f}] (target >= 4 with AMX: {"PASS" if r >= 4 else "FAIL"})'
        print(line)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
