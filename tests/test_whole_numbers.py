"""The measuring endpoints take the same numbers: a whole-number float (what JSON clients and Gradio's number
fields send for 8) is the integer everywhere, and a fractional one is refused by name everywhere. Was: /bench
took batch_size 8.0 while /memory and /verify refused it."""

from __future__ import annotations

import pytest

from .conftest import TINY
from .test_redteam_s5b import panel_error


def test_memory_takes_a_whole_number_float_as_the_integer():
    from explorer.app.panels import API

    assert API['memory'](TINY, batch_size=8.0) == API['memory'](TINY, batch_size=8)
    assert API['memory'](TINY, batch_size=2, img_size=64.0) == API['memory'](TINY, batch_size=2, img_size=64)


def test_verify_takes_a_whole_number_float_image_size():
    from explorer.app.panels import API

    assert API['verify'](TINY, img_size=64.0) == API['verify'](TINY, img_size=64)


@pytest.mark.parametrize(
    ('endpoint', 'field'), [('memory', 'batch_size'), ('memory', 'img_size'), ('verify', 'img_size')]
)
def test_a_fractional_number_is_still_refused_by_name(endpoint, field):
    msg = panel_error(endpoint, TINY, **{field: 8.5})
    assert field in msg and '8.5' in msg
