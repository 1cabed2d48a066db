"""The first page carries the default design's numbers in its own config: the browser shows params and MACs as it
renders, with no event round trip (issue 15's start-up). Built in a fresh process, as `python app.py` does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import json
from explorer.app.main import build_demo
cfg = build_demo().get_config_file()
out = {}
for c in cfg['components']:
    p = c.get('props', {})
    if p.get('elem_id') in ('mfx-totals', 'mfx-name', 'mfx-s1-depth', 'mfx-s3-mixer', 'mfx-undo', 'mfx-share-url',
                            'mfx-table', 'mfx-chart', 'mfx-stage-4', 'mfx-stage-5'):
        out[p['elem_id']] = {'value': p.get('value'), 'interactive': p.get('interactive'), 'visible': p.get('visible')}
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope='module')
def first_page() -> dict:
    out = subprocess.run(
        [sys.executable, '-c', CODE], capture_output=True, text=True, cwd=ROOT, timeout=180, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _data_value(html: str, elem_id: str) -> int:
    m = re.search(rf'id="{elem_id}" data-value="(\d+)"', html)
    assert m, f'no {elem_id} in the first page'
    return int(m.group(1))


def test_first_page_shows_the_default_designs_counts(first_page):
    from explorer.core import catalog
    from explorer.core.share import decode_share
    from explorer.measure.analytic import analytic_cost

    spec = catalog.load_spec(catalog.DEFAULT_PRESET)
    totals = first_page['mfx-totals']['value']
    assert _data_value(totals, 'mfx-macs') == analytic_cost(spec).macs
    # CAFormer-S18: 26.3 M parameters published (MetaFormer Baselines, Table; timm caformer_s18)
    assert _data_value(totals, 'mfx-params') == analytic_cost(spec).params
    assert round(_data_value(totals, 'mfx-params') / 1e6, 1) == 26.3
    assert first_page['mfx-name']['value'] == catalog.DEFAULT_PRESET
    assert first_page['mfx-s1-depth']['value'] == spec.stages[0].depth
    assert first_page['mfx-s3-mixer']['value'] == 'attention'
    assert first_page['mfx-stage-4']['visible'] is not False and first_page['mfx-stage-5']['visible'] is False
    assert first_page['mfx-undo']['interactive'] is False  # nothing to undo yet
    assert first_page['mfx-chart']['value'], 'the stage-cost chart is empty on the first page'
    assert 'S4' in first_page['mfx-table']['value']
    link = first_page['mfx-share-url']['value']
    assert link.startswith('?spec=') and decode_share(link.removeprefix('?spec='))['name'] == catalog.DEFAULT_PRESET
