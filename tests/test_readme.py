"""README.md stays true: its Python examples run, its gradio_client example runs against the app, and every
command and flag of its CLI section exists."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text(encoding='utf-8')


def section(heading: str) -> str:
    """The README text under `## heading`, up to the next `## `."""
    m = re.search(rf'^## {re.escape(heading)}\n(.*?)(?=^## |\Z)', README, re.M | re.S)
    assert m, f'README has no section {heading!r}'
    return m.group(1)


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf'^```{lang}\n(.*?)^```', text, re.M | re.S)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'HOME': str(cwd)},
    )


def test_python_example_runs(tmp_path):
    (code,) = code_blocks(section('Python'), 'python')
    r = run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    # CAFormer-S18 at 256x256: the 224 count scaled by the token counts where they change (checked by the counter
    # tests); here: it printed the numbers it promised, with the convention
    assert re.fullmatch(r'[\d,]+ params, \d+\.\d\d GMACs at 256x256, batch 1\n', r.stdout), r.stdout


def test_adding_a_mixer_example_builds_counts_and_verifies(tmp_path):
    blocks = [b for b in code_blocks(section('The spec'), 'python') if 'declare_mixer' in b]
    assert len(blocks) == 1
    check = """
from explorer import ArchSpec, analytic_cost, build_model, fvcore_cost
import torch
spec = ArchSpec.from_dict({'name': 'shifty', 'img_size': 32, 'num_classes': 10,
                           'stages': [{'mixer': 'shift', 'depth': 1, 'dim': 16, 'mixer_args': {'shift': 2}},
                                      {'mixer': 'pooling', 'depth': 1, 'dim': 32}]})
model = build_model(spec).eval()
x = torch.randn(1, 3, 32, 32)
mixer = model.stages[0].blocks[0].token_mixer
assert torch.equal(mixer(x[:, :1].expand(1, 16, 32, 32)), torch.roll(x[:, :1].expand(1, 16, 32, 32), 2, -1) - x[:, :1])
assert model(x).shape == (1, 10)
a, f = analytic_cost(spec), fvcore_cost(spec)
assert (a.params, a.macs) == (f.params, f.macs), (a.params, a.macs, f.params, f.macs)
print('ok', a.macs)
"""
    r = run_python(blocks[0] + check, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('ok ')


def test_bad_mixer_argument_is_refused_by_name(tmp_path):
    (block,) = [b for b in code_blocks(section('The spec'), 'python') if 'declare_mixer' in b]
    r = run_python(
        block
        + """
from explorer import ArchSpec, SpecError
try:
    ArchSpec.from_dict({'stages': [{'mixer': 'shift', 'depth': 1, 'dim': 8, 'mixer_args': {'shift': 9}}]})
except SpecError as e:
    print(e)
""",
        tmp_path,
    )
    assert r.stdout.strip() == 'stages[0].mixer_args.shift: 9 is out of range; allowed [1, 3]', r.stderr


def test_gradio_client_example_runs_against_the_app(app_url):
    pytest.importorskip('gradio_client')
    (code,) = code_blocks(section('Use the app from Python (gradio_client)'), 'python')
    assert 'http://127.0.0.1:7860/' in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace('http://127.0.0.1:7860/', app_url), 'README.md', 'exec'), {})
    text = out.getvalue()
    assert 'params' in text and 'ΔMACs per stage' in text and 'Ankle boot' in text, text


def _cli_entries() -> list[str]:
    """Each `explorer ...` entry of the CLI section, continuation lines joined."""
    (block,) = code_blocks(section('CLI'), '')
    entries: list[str] = []
    for line in block.splitlines():
        text = line.split('#')[0].strip()
        if line.startswith('explorer '):
            entries.append(text)
        elif text and entries:
            entries[-1] += ' ' + text
    return entries


@pytest.mark.parametrize('entry', _cli_entries(), ids=lambda e: e.split()[1])
def test_cli_section_names_real_commands_and_flags(entry, capsys):
    command = entry.split()[1]
    rc, out, err = run_cli(command, '--help')
    assert rc == 0, err
    for flag in re.findall(r'(--[a-z][a-z-]*)', entry):
        assert re.search(rf'{flag}\b', out), f'`explorer {command}` has no {flag}'


def test_every_image_and_file_the_readme_links_exists():
    """Screenshots and linked files are in the repository (a renamed or never-taken screenshot shows as a broken
    image on the project page)."""
    links = re.findall(r'\]\(((?!https?://|#)[^)\s]+)\)', README)
    assert any(link.startswith('assets/screens/') for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
