"""Benchmark 3: the analytic counter against building the model and counting it with fvcore.

Target (issue 3): >= 50x faster, and < 5 ms per spec for the largest preset. Prints the analytic time for
every preset (best and median of many calls), then for the largest (by MACs and by params): build +
fvcore as a user would do it (`build_model` with its random init, then `fvcore_cost` on it) and the
explorer's own `fvcore_cost` (which builds without random init), and checks both counts agree.

    python benchmarks/bench_analytic_vs_fvcore.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import conditions


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--calls', type=int, default=200, help='analytic calls per preset')
    ap.add_argument('--builds', type=int, default=2, help='build + fvcore repetitions for the largest presets')
    args = ap.parse_args()

    from explorer.core.build import build_model
    from explorer.core.catalog import load_spec, preset_names
    from explorer.measure.analytic import analytic_cost
    from explorer.measure.fvcore_count import fvcore_cost

    print('# analytic vs build + fvcore:', conditions())
    specs = {n: load_spec(n) for n in preset_names()}
    worst = 0.0
    for name, spec in specs.items():
        xs = timed(lambda spec=spec: analytic_cost(spec), args.calls)
        worst = max(worst, statistics.median(xs))
        print(f'{name:28s} analytic best {1e6 * min(xs):7.1f} us, median {1e6 * statistics.median(xs):7.1f} us')
    print(f'# slowest analytic median over all presets: {1e3 * worst:.3f} ms (target < 5 ms)')
    by_macs = max(specs, key=lambda n: analytic_cost(specs[n]).macs)
    by_params = max(specs, key=lambda n: analytic_cost(specs[n]).params)
    for name in dict.fromkeys((by_macs, by_params)):
        spec = specs[name]
        a = timed(lambda spec=spec: analytic_cost(spec), args.calls)
        user, own = [], []
        for _ in range(args.builds):
            t0 = time.perf_counter()
            model = build_model(spec)
            f = fvcore_cost(spec, model=model)
            user.append(time.perf_counter() - t0)
            del model
            t0 = time.perf_counter()
            g = fvcore_cost(spec)
            own.append(time.perf_counter() - t0)
        r = analytic_cost(spec)
        same = (r.macs, r.params) == (f.macs, f.params) == (g.macs, g.params)
        am, um = statistics.median(a), statistics.median(user)
        largest = ' and '.join(k for k, n in (('MACs', by_macs), ('params', by_params)) if n == name)
        print(
            f'{name} (largest by {largest}): {r.macs / 1e9:.3f} GMACs, {r.params / 1e6:.2f} M params; '
            f'counts equal: {same}'
        )
        print(
            f'  analytic           median {1e3 * am:8.3f} ms  (best {1e3 * min(a):.3f} ms)  '
            f'{"PASS" if am < 0.005 else "FAIL"} < 5 ms'
        )
        print(
            f'  build + fvcore     median {um:8.2f} s   -> analytic is {um / am:,.0f}x faster '
            f'{"PASS" if um / am >= 50 else "FAIL"} >= 50x'
        )
        print(
            f'  fvcore_cost (no random init) median {statistics.median(own):6.2f} s -> '
            f'{statistics.median(own) / am:,.0f}x'
        )
    print('# after:', conditions())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
