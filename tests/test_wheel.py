"""The package as a user installs it: build the wheel, install it into a fresh virtual environment, and use it
from a directory that is not the source tree (so nothing can come from the checkout).

The fresh environment gets the wheel and nothing else; its dependencies (torch, timm, gradio, ...) are taken from
the environment running the tests, added to its path, so the test needs no network and no second torch.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _installed_here() -> str | None:
    """Where the environment running the tests has metaformer-explorer installed from (None: not installed)."""
    out = subprocess.run(
        [sys.executable, '-m', 'pip', 'show', '-f', 'metaformer-explorer'], capture_output=True, text=True
    )
    return out.stdout if out.returncode == 0 else None


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(explorer executable, environment variables, working directory) of the wheel in a fresh venv."""
    tmp = tmp_path_factory.mktemp('wheel')
    subprocess.run(
        [sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', str(tmp / 'dist'), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheels = list((tmp / 'dist').glob('metaformer_explorer-*.whl'))
    assert len(wheels) == 1, wheels
    env_dir = tmp / 'venv'
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / 'bin' / 'python'
    env_site = Path(
        subprocess.run(
            [str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = _installed_here()
    pip = [sys.executable, '-m', 'pip', '--python', str(py), 'install', '--no-deps', '--no-index', '--quiet']
    subprocess.run([*pip, str(wheels[0])], check=True, capture_output=True, timeout=600)
    assert _installed_here() == before, 'installing the wheel elsewhere changed the environment running the tests'
    # then the dependencies, not the source tree: this environment's site-packages as a plain path entry (.pth
    # files there, such as an editable install's finder, are not run). Only after the install: with them in
    # view, pip would take the running environment's explorer as the one to replace, and uninstall it
    (env_site / 'deps.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
    work = tmp / 'elsewhere'
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return env_dir / 'bin' / 'explorer', env, work


def run(installed, *args, timeout=300) -> subprocess.CompletedProcess:
    exe, env, work = installed
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=work, env=env, timeout=timeout)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    exe, env, work = installed
    out = subprocess.run(
        [str(exe.parent / 'python'), '-c', 'import explorer; print(explorer.__file__)'],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        check=True,
    ).stdout
    assert str(exe.parent.parent) in out and str(ROOT) not in out


def test_presets_and_profile_equal_the_source_tree(installed):
    r = run(installed, 'presets', '--json')
    assert r.returncode == 0, r.stderr
    assert [row['name'] for row in json.loads(r.stdout)] == sorted(p.stem for p in (ROOT / 'presets').glob('*.json'))
    r = run(installed, 'profile', 'caformer_s18', '--json')
    assert r.returncode == 0, r.stderr
    rc, here, _ = run_cli('profile', 'caformer_s18', '--json')
    assert rc == 0
    wheel, source = json.loads(r.stdout), json.loads(here)
    # 26,341,656 params: timm's caformer_s18 (sum of its parameters); 4.1216 GMACs: the analytic count, which
    # fvcore verified in both runs ('verified')
    assert (wheel['params'], wheel['macs']) == (source['params'], source['macs']) == (26_341_656, 4_121_577_984)
    assert wheel['stages'] == source['stages'] and wheel['verified'] is True


def test_predict_with_a_shipped_model_and_example_image(installed):
    r = run(installed, 'predict', 'fmnist_hybrid_large', '00000_ankle_boot.png', '--json')
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)['top']
    assert top[0]['label'] == 'Ankle boot' and top[0]['prob'] > 0.5


def test_serve_answers_its_first_page_and_leaves_no_temporary_folder_when_stopped(installed, tmp_path):
    exe, env, work = installed
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), 'serve', '--port', str(port)],
        cwd=work,
        env={**env, 'TMPDIR': str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, page = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=5) as resp:
                    page = resp.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert page is not None, proc.stderr.read() if proc.poll() is not None else 'no answer within 180 s'
        assert '<title>MetaFormer Explorer</title>' in page or 'MetaFormer Explorer' in page
        assert [p.name for p in tmp_path.glob('mfx-downloads-*')]  # the server's downloads folder, made at start
    finally:
        proc.terminate()  # SIGTERM, as systemd and docker stop a server
        proc.wait(timeout=30)
    assert not list(tmp_path.glob('mfx-downloads-*'))  # removed: before, one was left behind per start
