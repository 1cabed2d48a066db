"""How fast a design space is searched: designs scored per second (spec + closed-form params, MACs and activation
memory, no torch), in one process and in one process per core, against the issue's 5,000 designs/s on 2 cores;
and Optuna trials per second (NSGA-II) with each storage: in memory, a journal file, SQLite (WAL, the default).

    python benchmarks/bench_search.py [--designs 20000] [--trials 300] [--space metaformer_hybrid]

Scoring is what the explorer adds; the trial rate is Optuna's bookkeeping (sampling from all earlier trials and
writing each one to the storage), which dominates once the study is persistent.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.search.space import Scorer, Space, design, load_space  # noqa: E402


def random_params(space: Space, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = {}
        for i, st in enumerate(space.stages):
            p[f's{i}.mixer'] = rng.choice(st.mixers)
            p[f's{i}.depth'] = rng.randint(*st.depth)
            p[f's{i}.dim'] = rng.choice(st.dims)
            p[f's{i}.mlp_ratio'] = rng.choice(st.mlp_ratios)
        p.update({k: rng.choice(v) for k, v in space.choices.items()})
        out.append(p)
    return out


def score(args: tuple) -> tuple[int, float]:
    """Score `n` random designs of the space; (designs, seconds)."""
    name, n, seed = args
    space = load_space(name)
    scorer = Scorer(space)
    params = random_params(space, n, seed)
    t = time.perf_counter()
    for p in params:
        scorer.metrics(design(space, p))
    return n, time.perf_counter() - t


def trials_per_second(name: str, storage: str | None, trials: int) -> float:
    import optuna

    from explorer.search.study import Objective, open_study

    space = load_space(name)
    if storage is None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            directions=list(space.objectives.values()), sampler=optuna.samplers.NSGAIISampler(seed=0)
        )
    else:
        study = open_study(space, storage, 'bench', 'nsga2', 0)
    t = time.perf_counter()
    study.optimize(Objective(space, Scorer(space)), n_trials=trials)
    return trials / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--designs', type=int, default=20_000)
    ap.add_argument('--trials', type=int, default=300)
    ap.add_argument('--space', default='metaformer_hybrid')
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    flags = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    model = next((ln.split(':', 1)[1].strip() for ln in flags.splitlines() if ln.startswith('model name')), '?')
    print(f'{time.strftime("%Y-%m-%d %H:%M")}; CPU {model}, {cores} cores; load {os.getloadavg()[0]:.2f}')
    print(f'space {args.space}: {load_space(args.space).size():,} designs')

    n, s = score((args.space, args.designs // 4, 0))
    one = n / s
    print(f'scoring, 1 process: {one:,.0f} designs/s ({n:,} designs in {s:.2f} s)')
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(cores) as pool:
        pool.map(score, [(args.space, 50, 99)] * cores)  # start-up and imports, not timed
        t = time.perf_counter()
        parts = pool.map(score, [(args.space, args.designs // cores, k) for k in range(cores)])
        wall = time.perf_counter() - t
    total = sum(p[0] for p in parts)
    rate = total / wall
    verdict = 'meets' if rate >= 5000 else 'misses'
    print(f'scoring, {cores} processes: {rate:,.0f} designs/s ({total:,} designs in {wall:.2f} s wall); {verdict} the '
          f'5,000 designs/s target; {rate / one:.2f}x one process')  # fmt: skip

    with tempfile.TemporaryDirectory() as d:
        stores = {
            'in memory': None,
            'journal file': f'journal:{d}/journal.log',
            'SQLite, WAL (default)': f'sqlite:///{d}/studies.db',
        }
        for label, url in stores.items():
            r = trials_per_second(args.space, url, args.trials)
            print(f'Optuna NSGA-II, {args.trials} trials, storage {label}: {r:,.0f} trials/s')


if __name__ == '__main__':
    main()
