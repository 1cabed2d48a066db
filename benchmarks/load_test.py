"""Load test: many concurrent gradio_client sessions against one app on loopback.

Starts the app on 127.0.0.1 (a free port), makes every call once, one by one, to get the expected answers,
then runs N client sessions at once, each doing the same mix of profile, predict and mixing-map calls in its
own order. Prints errors (must be 0), whether every concurrent answer equals the one-by-one answer, the
throughput (calls/s) and the p50/p95 latency. Bounded: a fixed number of calls and a wall-clock limit;
traffic goes to 127.0.0.1 only.

    python benchmarks/load_test.py [--clients 20] [--rounds 2] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_app(port: int) -> subprocess.Popen:
    env = {**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False', 'HF_HUB_OFFLINE': '1'}
    return subprocess.Popen(
        [sys.executable, str(ROOT / 'app.py'), '--port', str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(url: str, proc: subprocess.Popen, limit_s: float = 180) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f'the app exited: {proc.stderr.read()[-2000:]}')
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f'the app did not answer within {limit_s} s')


def calls(trained: list[str]) -> list[tuple[str, dict]]:
    """The mix one session makes: (api_name, kwargs)."""
    mine = {
        'stages': [
            {'mixer': 'pooling', 'depth': 2, 'dim': 64},
            {'mixer': 'sepconv', 'depth': 2, 'dim': 128},
            {'mixer': 'attention', 'depth': 4, 'dim': 256},
            {'mixer': 'attention', 'depth': 2, 'dim': 512},
        ]
    }
    model = trained[0] if trained else 'poolformer_s12'
    weights = 'pretrained' if trained else 'random'
    out = [
        ('/profile', {'spec': 'caformer_s18'}),
        ('/profile', {'spec': mine}),
        ('/predict', {'model': model, 'image': '00000_ankle_boot.png', 'weights': weights, 'topk': 3}),
        ('/predict', {'model': model, 'image': '00018_bag.png', 'weights': weights, 'topk': 3}),
        ('/mixing_map', {'model': model, 'image': '', 'weights': weights, 'stage': 0, 'block': 0}),
    ]
    if len(trained) > 1:
        out.append(
            (
                '/mixing_map',
                {'model': trained[1], 'image': '00002_trouser.png', 'weights': 'pretrained', 'stage': 1, 'block': 0},
            )
        )
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--clients', type=int, default=20)
    ap.add_argument('--rounds', type=int, default=2, help='times each session repeats its mix')
    ap.add_argument('--timeout', type=float, default=600, help='wall-clock limit of the concurrent phase, s')
    args = ap.parse_args()
    from gradio_client import Client

    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    proc = start_app(port)
    try:
        wait_ready(url, proc)
        probe = Client(url, verbose=False)
        trained = [m.split(': ', 1)[1] for m in probe.predict(api_name='/list_models') if m.startswith('trained: ')]
        mix = calls(trained[:2])
        key = lambda c: c[0] + json.dumps(c[1], sort_keys=True)  # noqa: E731
        expected = {}
        for api, kw in mix:  # one by one: the reference answers (and warm caches)
            expected[key((api, kw))] = probe.predict(api_name=api, **kw)

        def session(i: int) -> list[tuple[float, str, bool]]:
            client = Client(url, verbose=False)
            rng = random.Random(i)
            out = []
            for _ in range(args.rounds):
                order = mix[:]
                rng.shuffle(order)
                for api, kw in order:
                    t0 = time.perf_counter()
                    try:
                        result = client.predict(api_name=api, **kw)
                        same = result == expected[key((api, kw))]
                        out.append((time.perf_counter() - t0, api, same))
                    except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                        out.append((time.perf_counter() - t0, f'{api}: {type(e).__name__}: {e}', False))
            return out

        t0 = time.perf_counter()
        results, errors = [], []
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(session, i) for i in range(args.clients)]
            for f in as_completed(futures, timeout=args.timeout):
                for lat, api, same in f.result():
                    results.append((lat, api, same))
                    if ':' in api:
                        errors.append(api)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    lat = [r[0] for r in results]
    mismatched = sum(1 for _, api, same in results if ':' not in api and not same)
    print(
        f'{args.clients} concurrent sessions x {args.rounds} rounds x {len(mix)} calls = {len(results)} calls '
        f'(profile, predict, mixing_map; models: {", ".join(trained[:2]) or "poolformer_s12 random"})'
    )
    print(f'errors: {len(errors)}' + (f'  first: {errors[0]}' if errors else ''))
    print(f'answers different from the one-by-one calls: {mismatched}')
    print(
        f'throughput: {len(results) / wall:.2f} calls/s over {wall:.1f} s wall; latency p50 '
        f'{percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s (CPU, {os.cpu_count()} cores, '
        f'app queue: default concurrency 4, model calls 2)'
    )
    return 0 if not errors and not mismatched else 1


if __name__ == '__main__':
    sys.exit(main())
