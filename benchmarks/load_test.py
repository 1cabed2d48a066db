"""Load test: many concurrent gradio_client sessions against one app on loopback.

Starts the app on 127.0.0.1 (a free port), makes every call once, one by one, to get the expected answers,
then runs N client sessions at once, each doing the same mix of profile, predict and mixing-map calls in its
own order. Meanwhile one more client runs a speed measurement and one starts a training and abandons it (cancels
the job), as a visitor closing the tab would. Prints errors (must be 0), whether every concurrent answer
equals the one-by-one answer, the throughput (calls/s), the p50/p95 latency, whether the abandoned training
stopped, and the server's memory and temporary files before and after. Bounded: a fixed number of calls and
a wall-clock limit; traffic goes to 127.0.0.1 only.

    python benchmarks/load_test.py [--clients 25] [--rounds 2] [--timeout 600]
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


def start_app(port: int, home: str, tmp: str) -> subprocess.Popen:
    # its own HOME (the trainings it runs write their checkpoints under HOME/.cache, not the user's) and its own
    # temporary folder (gradio's cache and the spec downloads), so what it leaves behind can be measured
    env = {
        **os.environ,
        'GRADIO_ANALYTICS_ENABLED': 'False',
        'HF_HUB_OFFLINE': '1',
        'HOME': home,
        'TMPDIR': tmp,
        'GRADIO_TEMP_DIR': os.path.join(tmp, 'gradio'),
    }
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


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def tmp_files(folder: str) -> tuple[int, float]:
    """(files, MiB) under the server's temporary folder: what a long-running server could leave behind."""
    n, size = 0, 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                size += os.lstat(os.path.join(root, f)).st_size
                n += 1
            except OSError:
                pass
    return n, size / 2**20


def side_jobs(url: str, out: dict) -> None:
    """One speed measurement, and one training started then abandoned after its first progress events."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    try:
        bench = client.predict(
            spec='poolformer_s12',
            device='cpu',
            batch_size=1,
            dtype='fp32',
            channels_last=False,
            compile=False,
            api_name='/bench',
        )
        out['bench'] = f'{bench["throughput"]:.2f} img/s in {time.perf_counter() - t0:.1f} s'
    except Exception as e:  # noqa: BLE001 - reported as an error
        out['errors'].append(f'/bench: {type(e).__name__}: {e}')
    spec = json.loads((ROOT / 'assets' / 'fmnist' / 'specs' / 'fmnist_identity.json').read_text())
    try:
        job = client.submit(spec=spec, epochs=20, batch_size=64, seed=0, train_limit=0, api_name='/train')
        deadline = time.monotonic() + 120

        def progress() -> int:  # steps and epochs: not the {'kind': 'wait'} heartbeats sent between them
            return sum(isinstance(o, dict) and o.get('kind') in ('step', 'epoch') for o in job.outputs())

        while progress() < 3 and time.monotonic() < deadline and not job.done():
            time.sleep(0.2)
        out['train_events_before_cancel'] = progress()
        job.cancel()
        out['train_cancelled_at'] = time.monotonic()
    except Exception as e:  # noqa: BLE001
        out['errors'].append(f'/train: {type(e).__name__}: {e}')


def training_stopped(url: str, limit_s: float = 120) -> float | None:
    """Seconds until the server accepts a new training (the abandoned one has stopped), or None."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    spec = json.loads((ROOT / 'assets' / 'fmnist' / 'specs' / 'fmnist_identity.json').read_text())
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        try:
            client.predict(spec=spec, epochs=0.05, batch_size=64, seed=0, train_limit=2000, api_name='/train')
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - 'another training is running': try again
            time.sleep(1)
    return None


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--clients', type=int, default=25)
    ap.add_argument('--rounds', type=int, default=2, help='times each session repeats its mix')
    ap.add_argument('--timeout', type=float, default=600, help='wall-clock limit of a concurrent phase, s')
    ap.add_argument('--phases', type=int, default=3, help='concurrent phases; memory is read after each')
    args = ap.parse_args()
    import tempfile

    from gradio_client import Client

    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    home = tempfile.TemporaryDirectory(prefix='mfx-load-home-')
    tmp_dir = tempfile.TemporaryDirectory(prefix='mfx-load-tmp-')
    tmp = tmp_dir.name
    proc = start_app(port, home.name, tmp)
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

        levels = [(rss_mib(proc.pid), tmp_files(tmp))]  # after the one-by-one calls, then after each phase
        side: dict = {'errors': []}
        results, errors, wall = [], [], 0.0
        for phase in range(args.phases):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients + 1) as pool:
                if phase == 0:
                    pool.submit(side_jobs, url, side)
                futures = [pool.submit(session, i) for i in range(args.clients)]
                for f in as_completed(futures, timeout=args.timeout):
                    for lat, api, same in f.result():
                        results.append((lat, api, same))
                        if ':' in api:
                            errors.append(api)
            wall += time.perf_counter() - t0
            if phase == 0:
                stopped_in = training_stopped(url)
            levels.append((rss_mib(proc.pid), tmp_files(tmp)))
        errors += side['errors']
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        home.cleanup()
        tmp_dir.cleanup()

    lat = [r[0] for r in results]
    mismatched = sum(1 for _, api, same in results if ':' not in api and not same)
    print(
        f'{args.phases} phases of {args.clients} concurrent sessions x {args.rounds} rounds x {len(mix)} calls = '
        f'{len(results)} calls '
        f'(profile, predict, mixing_map; models: {", ".join(trained[:2]) or "poolformer_s12 random"})'
    )
    print(f'errors: {len(errors)}' + (f'  first: {errors[0]}' if errors else ''))
    print(f'answers different from the one-by-one calls: {mismatched}')
    print(
        f'throughput: {len(results) / wall:.2f} calls/s over {wall:.1f} s wall; latency p50 '
        f'{percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s (CPU, {os.cpu_count()} cores, '
        f'app queue: default concurrency 4, model calls 2)'
    )
    print(f'speed run beside them: {side.get("bench", "none")}')
    print(
        f'abandoned training: cancelled after {side.get("train_events_before_cancel", 0)} progress events; '
        + (
            f'a new training was accepted {stopped_in:.1f} s after the load ended'
            if stopped_in is not None
            else 'still running 120 s later'
        )
    )
    print(
        'server memory (RSS, MiB) and its temporary files, after the one-by-one calls and after each phase: '
        + ', '.join(f'{r:.0f} MiB / {n} files ({m:.2f} MiB)' for r, (n, m) in levels)
    )
    return 0 if not errors and not mismatched and stopped_in is not None else 1


if __name__ == '__main__':
    sys.exit(main())
