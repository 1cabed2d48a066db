"""`explorer profile` (exact params and MACs) and `explorer bench` (measured speed)."""

from __future__ import annotations

import sys
import textwrap

from explorer.cli.args import int_in, number_in, print_json
from explorer.core.errors import UserError
from explorer.measure.speed import MAX_ITERS

_positive_int = int_in(1)
_non_negative_int = int_in(0)


def register(sub) -> None:
    p = sub.add_parser(
        'profile',
        help='exact params and MACs: per stage, per component, activation memory',
        description="Count params and MACs (one MAC = one multiply-accumulate, fvcore's and the "
        'MetaFormer papers\' convention; every mixer op counted, see "convention").',
    )
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument('--img-size', type=_positive_int, default=None, help="input resolution (default: the spec's)")
    p.add_argument(
        '--method',
        choices=('both', 'analytic', 'fvcore'),
        default='both',
        help='both (default): closed form, verified against fvcore on the built model; analytic: '
        'closed form only, instant; fvcore: build and count only',
    )
    p.add_argument('--batch-size', type=_positive_int, default=1, help='batch for the activation-memory estimate')
    p.add_argument(
        '--dtype',
        choices=('fp32', 'bf16', 'fp16'),
        default='fp32',
        help='element size for the activation-memory estimate',
    )
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        'bench',
        help='measure throughput, latency, peak memory and fraction of matmul peak',
        description='Warm up, then time repeated forward passes (inference). See explorer/measure/speed.py '
        'for the rules.',
    )
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument('--device', default='auto', help='auto (default), cpu or cuda[:N]')
    p.add_argument('--batch-size', type=_positive_int, default=8)
    p.add_argument(
        '--dtype', choices=('fp32', 'bf16', 'fp16'), default=None, help='fp32 (default) or autocast to bf16/fp16'
    )
    p.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    p.add_argument('--compile', action='store_true', help='torch.compile the model (compile time is reported)')
    p.add_argument(
        '--fast',
        action='store_true',
        help='the fast path: channels_last + bf16 autocast on CPUs with native bf16, '
        'channels_last on other CPUs, channels_last + fp16 AMP on CUDA',
    )
    p.add_argument('--img-size', type=_positive_int, default=None, help="input resolution (default: the spec's)")
    p.add_argument('--warmup', type=int_in(0, MAX_ITERS), default=None, help='warm-up iterations (default: by time)')
    p.add_argument('--iters', type=int_in(1, MAX_ITERS), default=None, help='timed iterations (default: by time)')
    p.add_argument(
        '--min-time',
        type=number_in(0, 3600, low_open=True),
        default=2.0,
        help='seconds of timed runs when --iters is not given',
    )
    p.add_argument(
        '--threads',
        type=int_in(1, 1024),
        default=None,
        help="torch's CPU threads for this run (default: torch's; the result's stamp says how many)",
    )
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_bench)


def _spec(args):
    from explorer.cli.specs import resolve_spec
    from explorer.core.catalog import with_published_meta

    spec, _ = resolve_spec(args.spec)
    spec = with_published_meta(spec)  # a file's meta is published only while it is the preset's network
    if args.img_size is not None and args.img_size != spec.img_size:
        spec = spec.replace(img_size=args.img_size)
    return spec


def _mismatches(a, f) -> list[str]:
    out = []
    if (a.params, a.macs) != (f.params, f.macs):
        out.append(f'total: analytic {a.params} params / {a.macs} MACs, fvcore {f.params} / {f.macs}')
    for sa, sf in zip(a.stages, f.stages):
        if (sa.params, sa.macs) != (sf.params, sf.macs):
            out.append(f'stage {sa.index}: analytic {sa.params} / {sa.macs}, fvcore {sf.params} / {sf.macs}')
    for k in a.components:
        if a.components[k] != f.components.get(k):
            out.append(f'{k}: analytic {a.components[k]}, fvcore {f.components.get(k)}')
    return out


def cmd_profile(args) -> int:
    from explorer.measure.analytic import RULES, activation_memory, analytic_cost
    from explorer.measure.fvcore_count import fvcore_cost
    from explorer.measure.guard import ResourceError, check_request

    spec = _spec(args)
    problems: list[str] = []
    skipped = None  # why fvcore did not run (it builds and runs the model: the guard's limits apply)
    if args.method != 'analytic':
        try:
            check_request(spec, batch_size=1)
        except ResourceError as e:
            if args.method == 'fvcore':
                raise UserError(f'fvcore builds and runs the model: {e}; --method analytic counts it unbuilt') from None
            skipped = str(e)
    if args.method == 'analytic' or skipped:
        report = analytic_cost(spec)
    elif args.method == 'fvcore':
        report = fvcore_cost(spec)
    else:
        a = analytic_cost(spec)
        report = fvcore_cost(spec)
        problems = _mismatches(a, report)
        report.method = 'analytic+fvcore'
    mem = activation_memory(spec, args.batch_size, args.dtype)
    d = report.to_dict()
    if args.method == 'both':
        d['verified'] = None if skipped else not problems
        if problems:
            d['mismatches'] = problems
        if skipped:
            d['not_verified'] = f'fvcore not run (it builds the model): {skipped}'
            print(f'note: {d["not_verified"]}; the counts are analytic', file=sys.stderr)
    d['activation_memory'] = mem
    d['rules'] = RULES
    meta = spec.meta
    d['published'] = {
        k: meta[k] for k in ('gmacs', 'params_m', 'frozen_params_m', 'top1', 'resolution', 'source') if k in meta
    }

    if args.json:
        print_json(d)
    else:
        _print_profile(spec, report, mem, d)
    if problems:
        print(
            'error: the analytic count differs from fvcore (a bug; please report it):\n  ' + '\n  '.join(problems),
            file=sys.stderr,
        )
        return 1
    if report.uncounted_ops:
        print(f'warning: fvcore could not count: {report.uncounted_ops}', file=sys.stderr)
    return 0


def _print_profile(spec, report, mem, d) -> None:
    from explorer.measure.units import fmt_bytes

    how = {
        'analytic': 'closed form',
        'fvcore': 'fvcore on the built model',
        'analytic+fvcore': 'closed form, verified equal to fvcore on the built model',
    }[report.method]
    print(
        f'{spec.name} at {report.img_size}x{report.img_size}: {report.params:,} params'
        + (f' ({report.frozen_params:,} frozen)' if report.frozen_params else '')
        + f', {report.macs:,} MACs = {report.macs / 1e9:.3f} GMACs  [{how}]'
    )
    pub = d['published']
    if 'gmacs' in pub or 'params_m' in pub:
        at = f' at {pub["resolution"]}' if 'resolution' in pub else ''
        print(
            f'published{at}: {pub.get("params_m", "-")}M params'
            + (f' + {pub["frozen_params_m"]}M frozen' if pub.get('frozen_params_m') else '')
            + f', {pub.get("gmacs", "-")} GMACs '
            f'({pub.get("source", "")})'
        )
    fmt = '{:<5} {:<12} {:>5} {:>5} {:>14} {:>12} {:>15} {:>6} {:>15} {:>15} {:>10}'
    print(
        fmt.format(
            'stage',
            'mixer',
            'depth',
            'dim',
            'out (C,H,W)',
            'params',
            'MACs',
            '%MACs',
            'mixer MACs',
            'MLP MACs',
            'act mem',
        )
    )
    for s, act in zip(report.stages, mem['stages']):
        c, h, w = s.out_shape
        print(
            fmt.format(
                f'S{s.index + 1}',
                s.mixer,
                s.depth,
                s.dim,
                f'{c}x{h}x{w}',
                f'{s.params:,}',
                f'{s.macs:,}',
                f'{100 * s.macs / max(1, report.macs):.1f}',
                f'{s.token_mixer_macs:,}',
                f'{s.mlp_macs:,}',
                fmt_bytes(act),
            )
        )
    print(
        'components: '
        + '; '.join(f'{k} {v["params"]:,} params / {v["macs"]:,} MACs' for k, v in report.components.items())
    )
    print(
        f'activation memory (batch {mem["batch_size"]}, {mem["dtype"]}): {fmt_bytes(mem["total"])} '
        f'(stem {fmt_bytes(mem["stem"])}, head {fmt_bytes(mem["head"])})'
    )
    if report.method == 'analytic':
        print('uncounted ops: not traced (closed form; --method both checks the built model)')
    else:
        print('uncounted ops: ' + (', '.join(f'{k} x{v}' for k, v in report.uncounted_ops.items()) or 'none'))
    print(textwrap.fill('convention: ' + report.convention, width=110, subsequent_indent='  '))


def _with_threads(threads: int | None, fn, *args, **kwargs):
    """fn(*args, **kwargs) with torch's CPU threads set to `threads` (None: as they are), then set back: as
    `explorer latency --threads`, so a latency predicted for N threads is compared with one measured at N."""
    if not threads:
        return fn(*args, **kwargs)
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(prev)


def cmd_bench(args) -> int:
    from explorer.core.errors import UserError
    from explorer.measure.speed import BenchError, bench, busy_note, fast_path
    from explorer.measure.units import fmt_bytes

    spec = _spec(args)
    try:
        dtype, channels_last = args.dtype or 'fp32', args.channels_last
        if args.fast:
            fp = fast_path(args.device)
            dtype = args.dtype or fp['dtype']
            channels_last = True
        if args.min_time <= 0:
            raise BenchError(f'--min-time {args.min_time} must be positive')
        progress = None
        if not args.json and sys.stderr.isatty():

            def progress(frac, desc=None):
                print(f'\r{desc or ""} {100 * frac:5.1f}%   ', end='', file=sys.stderr, flush=True)

        r = _with_threads(
            args.threads,
            bench,
            spec,
            device=args.device,
            batch_size=args.batch_size,
            dtype=dtype,
            channels_last=channels_last,
            compile=args.compile,
            warmup=args.warmup,
            iters=args.iters,
            progress=progress,
            min_time_s=args.min_time,
        )
        if progress is not None:
            print(file=sys.stderr)
    except BenchError as e:
        raise UserError(str(e)) from None
    busy = busy_note(r.stamp)
    if busy:  # the figure alone read as this design's speed: 8.6 img/s beside 7,736 on a quiet CPU (a review)
        print(f'warning: {busy}', file=sys.stderr)
    if args.json:
        print_json(r.to_dict())
        return 0
    st = r.stamp
    compiled = f', compiled in {st["compile_s"]:.1f} s ({st.get("compile_cache")})' if st['compile'] else ''
    print(
        f'{spec.name} on {st["device_name"]} ({st["device"]}, {st["threads"]} threads), batch {st["batch_size"]}, '
        f'{st["dtype"]}{" autocast" if st["autocast"] else ""}, {st["memory_format"]}'
        f'{compiled}, img {st["img_size"]}'
    )
    print(
        f'throughput {r.throughput:.1f} img/s; latency median {r.latency_ms_median:.1f} ms '
        f'(p10 {r.latency_ms_p10:.1f}, p90 {r.latency_ms_p90:.1f}, IQR {r.latency_ms_iqr:.1f}) '
        f'over {r.iters} timed runs after {st["warmup_iters"]} warm-up'
    )
    print(f'peak memory {fmt_bytes(r.peak_mem_bytes)} ({st["peak_mem_rule"]})')
    if st.get('allocator'):
        print(f'host memory: {st["allocator"]}')
    print(
        f"achieved {r.achieved_macs_per_s / 1e9:.1f} GMAC/s = {100 * r.peak_fraction:.1f}% of this device's "
        f'measured {st["dtype"]} matmul peak ({r.matmul_peak_macs_per_s / 1e9:.1f} GMAC/s)'
    )
    load = st.get('loadavg_before')
    if load:
        print(
            f'load average before/after: {load[0]:.2f} / {st["loadavg_after"][0]:.2f} '
            f'({st["cpu_count"]} CPUs); torch {st["torch"]}'
        )
    return 0
