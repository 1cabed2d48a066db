import os

import pytest
import torch

# Tests run on the CPU with a fixed, small thread count so results do not depend on the machine's load.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_spec(mixers=('pooling', 'sepconv', 'attention'), dims=(16, 32, 64), depths=(1, 1, 1), img_size=32, **kw):
    """A small valid spec dict (stride-4 stem, 2x downsampling): 32x32 input -> 8x8, 4x4, 2x2 tokens."""
    stages = [dict(mixer=m, depth=d, dim=c) for m, d, c in zip(mixers, depths, dims)]
    for st in stages:
        if st['mixer'] == 'attention':
            st['mixer_args'] = {'head_dim': 8}
    return dict(name='tiny', img_size=img_size, num_classes=10, stages=stages, **kw)


@pytest.fixture
def tiny():
    return tiny_spec
