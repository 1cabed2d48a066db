"""Every preset's published top-1 is the paper's (or repository README's) figure, typed in here from the sources
(the MetaFormer and PoolFormer READMEs, the ResMLP/DeiT/CycleMLP READMEs, the PoolFormer paper's hybrid
ablation; see ../shared/reference/metaformer_results.md): the Compare chart's y values, its Pareto frontier and
`explorer presets` read them, and only two were pinned before."""

import pytest

from explorer.core.catalog import get_preset, preset_names
from tests.conftest import run_cli

# top-1 (%) on ImageNet-1k at 224 px, in1k training only; None where no primary source publishes one
PUBLISHED_TOP1 = {
    'poolformer_s12': 77.2,
    'poolformer_s24': 80.3,
    'poolformer_s36': 81.4,
    'poolformer_m36': 82.1,
    'poolformer_m48': 82.5,
    'poolformerv2_s12': 78.0,
    'poolformerv2_s24': 80.7,
    'poolformerv2_s36': 81.6,
    'poolformerv2_m36': 82.2,
    'poolformerv2_m48': 82.6,
    'identityformer_s12': 74.6,
    'identityformer_s24': 78.2,
    'identityformer_s36': 79.3,
    'identityformer_m36': 80.0,
    'identityformer_m48': 80.4,
    'randformer_s12': 76.6,
    'randformer_s24': 78.2,
    'randformer_s36': 79.5,
    'randformer_m36': 81.2,
    'randformer_m48': 81.4,
    'convformer_s18': 83.0,
    'convformer_s36': 84.1,
    'convformer_m36': 84.5,
    'convformer_b36': 84.8,
    'caformer_s18': 83.6,
    'caformer_s36': 84.5,
    'caformer_m36': 85.2,
    'caformer_b36': 85.5,
    'poolformer_hybrid_ppaa_s12': 81.0,  # PoolFormer paper, [Pool, Pool, Attention, Attention]
    'cyclemlp_b1': 78.9,
    'deit_small': 79.9,
    'resmlp_s12': 76.66,  # timm's validation of the non-distilled weights the preset loads (README: distilled only)
    'mixer_b16': None,  # ImageNet-1k-only top-1 not in a primary source (timm's weights are in21k pretrained)
}


def test_every_preset_has_a_typed_in_figure():
    assert sorted(PUBLISHED_TOP1) == sorted(preset_names())


@pytest.mark.parametrize('name', sorted(PUBLISHED_TOP1))
def test_published_top1_is_the_sources(name):
    meta = get_preset(name)['meta']
    assert meta.get('top1') == PUBLISHED_TOP1[name]
    assert meta.get('resolution') == 224 and meta.get('source')


def test_explorer_presets_prints_every_published_figure():
    """`explorer presets` (text and --json) had no test in the inner loop."""
    import json

    code, out, err = run_cli('presets')
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert sorted(lines) == sorted(PUBLISHED_TOP1)
    assert lines['caformer_s18'].split()[2:5] == ['83.6', '26', '4.1']
    assert lines['caformer_s18'].endswith('caformer_s18.sail_in1k')
    assert lines['mixer_b16'].split()[2] == '-'  # no published in1k figure: a dash, not 0 or None
    assert 'MACs: one multiply-accumulate = 1' in out
    code, out, err = run_cli('presets', '--json')
    assert code == 0, err
    assert {r['name']: r['top1'] for r in json.loads(out)} == PUBLISHED_TOP1
