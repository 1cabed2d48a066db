"""Start-up: from `python app.py` to a composition's params and MACs on screen, beside `import gradio` alone.

Each round, in one run and alternating: (1) a fresh `python -c "import gradio"`, timed; (2) a fresh `python app.py`
on a free loopback port, and headless Chromium (Playwright, Debian's /usr/bin/chromium) polling the page until the
composer's MACs card shows a number; timed from the launch. Prints the medians, their difference (the target is
at most 2 s over `import gradio`) and the machine's load. `--root DIR` times another checkout (a before/after).

The browser opens the page once the server accepts connections (`--poll socket`, the default: what `gradio`'s own
`inbrowser=True` does, and what a user does on reading the URL). `--poll browser` makes Chromium itself retry the
page every 50 ms until it loads, as this script did before 2026-12-01 17:00: each failed navigation renders
Chromium's error page, and on 2 cores those renders take CPU from the app's start-up (about 1 s measured; both
are printed by `--poll both`, alternating in one run).

    python benchmarks/bench_startup.py [--rounds 3] [--root .] [--poll socket|browser|both]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'
ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def time_import_gradio(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, '-c', 'import gradio'], cwd=root, check=True)
    return time.perf_counter() - t0


def wait_listening(port: int, t0: float, limit_s: float) -> None:
    """Return once something accepts connections on the port (a TCP connect: no page rendered)."""
    while time.perf_counter() - t0 < limit_s:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f'nothing listened on port {port} within {limit_s:.0f} s')


def time_launch_to_numbers(root: Path, browser, poll: str = 'socket', limit_s: float = 180) -> float:
    port = free_port()
    env = {**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False', 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(root)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(root / 'app.py'), '--port', str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the round ends with the app's helper process too
    )
    page = browser.new_page()
    try:
        if poll == 'socket':
            wait_listening(port, t0, limit_s)
        while time.perf_counter() - t0 < limit_s:
            try:
                page.goto(f'http://127.0.0.1:{port}/', timeout=5_000)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
        page.wait_for_function(
            '() => { const e = document.querySelector("#mfx-macs"); return e && e.dataset.value; }',
            timeout=limit_s * 1000,
            polling=20,
        )
        return time.perf_counter() - t0
    finally:
        page.close()
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its helper (the next round must not share the CPU)
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--root', default=str(Path(__file__).resolve().parent.parent), help='checkout to time')
    ap.add_argument('--poll', choices=('socket', 'browser', 'both'), default='socket', help='how the page is awaited')
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(args.root).resolve()
    load0 = os.getloadavg()
    polls = ('socket', 'browser') if args.poll == 'both' else (args.poll,)
    gradio, launch = [], {poll: [] for poll in polls}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        time_launch_to_numbers(root, browser)  # one untimed start: disk caches warm for both
        for _ in range(args.rounds):
            gradio.append(time_import_gradio(root))
            for poll in polls:
                launch[poll].append(time_launch_to_numbers(root, browser, poll))
        browser.close()
    g = statistics.median(gradio)
    print(f'# start-up of {root} ({os.cpu_count()} CPUs, load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f})')
    print(f'import gradio alone:            median {g:.2f} s  ({", ".join(f"{v:.2f}" for v in gradio)})')
    for poll, times in launch.items():
        a = statistics.median(times)
        print(
            f'python app.py -> MACs on screen (page awaited by {poll}): median {a:.2f} s  '
            f'({", ".join(f"{v:.2f}" for v in times)})'
        )
        print(f'difference: {a - g:.2f} s  (target <= 2 s: {"PASS" if a - g <= 2 else "FAIL"})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
