"""Start-up: from `python app.py` to a composition's params and MACs on screen, beside `import gradio` alone.

Each round, in one run and alternating: (1) a fresh `python -c "import gradio"`, timed; (2) a fresh `python app.py`
on a free loopback port, and headless Chromium (Playwright, Debian's /usr/bin/chromium) polling the page until the
composer's MACs card shows a number; timed from the launch. Prints the medians, their difference (the target is
at most 2 s over `import gradio`) and the machine's load. `--root DIR` times another checkout (a before/after).

    python benchmarks/bench_startup.py [--rounds 3] [--root .]
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


def time_launch_to_numbers(root: Path, browser, limit_s: float = 180) -> float:
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
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(args.root).resolve()
    load0 = os.getloadavg()
    gradio, launch = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        time_launch_to_numbers(root, browser)  # one untimed start: disk caches warm for both
        for _ in range(args.rounds):
            gradio.append(time_import_gradio(root))
            launch.append(time_launch_to_numbers(root, browser))
        browser.close()
    g, a = statistics.median(gradio), statistics.median(launch)
    print(f'# start-up of {root} ({os.cpu_count()} CPUs, load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f})')
    print(f'import gradio alone:            median {g:.2f} s  ({", ".join(f"{v:.2f}" for v in gradio)})')
    print(f'python app.py -> MACs on screen: median {a:.2f} s  ({", ".join(f"{v:.2f}" for v in launch)})')
    print(f'difference: {a - g:.2f} s  (target <= 2 s: {"PASS" if a - g <= 2 else "FAIL"})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
