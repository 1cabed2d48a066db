"""Shared helpers for the benchmarks: interleaved timing of several runners and a ratio with a bootstrap
interval. Each benchmark prints its ratios; none is a unit test."""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.measure.speed import time_steps  # noqa: E402


def conditions() -> str:
    import torch

    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    from explorer.measure.speed import cpu_name, cpu_native_bf16

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA'
    return (
        f'{time.strftime("%Y-%m-%d %H:%M:%S")}; CPU {cpu_name()} ({os.cpu_count()} CPUs, torch threads '
        f'{torch.get_num_threads()}, native bf16: {cpu_native_bf16()}); GPU: {dev}; torch {torch.__version__}; '
        f'load average {"/".join(f"{v:.2f}" for v in load) if load else "n/a"}'
    )


def interleaved(runners: dict, device: str, rounds: int, per_turn: int = 1, warmup: int = 2) -> dict:
    """Time each runner (name -> step callable) in turns, round-robin with the order rotated every round, so
    that slow spells on a shared machine hit every runner alike. Returns name -> latencies (s)."""
    names = list(runners)
    for name in names:
        time_steps(runners[name], device, warmup)
    lat = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order.reverse()
        for name in order:
            lat[name] += time_steps(runners[name], device, per_turn)
    return lat


def ratio(num: list[float], den: list[float], boots: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Throughput ratio num/den from latencies measured in the same rounds of `interleaved`: the median over
    rounds of den[i] / num[i] (each pair ran back to back, so a slow spell on a shared machine hits both),
    with a 95% bootstrap interval over rounds."""
    rng = random.Random(seed)
    pairs = [d / n for n, d in zip(num, den)]
    point = statistics.median(pairs)
    rs = sorted(statistics.median([rng.choice(pairs) for _ in pairs]) for _ in range(boots))
    return point, rs[int(0.025 * boots)], rs[int(0.975 * boots) - 1]


def ratio_of_medians(num: list[float], den: list[float]) -> float:
    return statistics.median(den) / statistics.median(num)


def fmt_ms(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10) if len(xs) >= 2 else [xs[0]] * 9
    return f'median {1e3 * statistics.median(xs):8.1f} ms (p10 {1e3 * q[0]:.1f}, p90 {1e3 * q[-1]:.1f}, n={len(xs)})'
