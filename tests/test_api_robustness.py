"""Whatever a client sends, every endpoint answers with a result or a clear error naming the problem; the
server never fails with an internal error and keeps serving."""

from __future__ import annotations

import pytest

pytest.importorskip('gradio_client')

JUNK = [
    None,
    '',
    'nonsense',
    '{"stages": [}',
    -1,
    10**9,
    3.5,
    True,
    [],
    [1, 'a'],
    {},
    {'stages': 'x'},
    {'stages': [{'mixer': 'attention', 'depth': 1, 'dim': 33}]},
]


# endpoint -> the keyword that receives the junk, plus fixed valid keywords
ENDPOINTS = {
    '/get_preset': ('name', {}),
    '/profile': ('spec', {}),
    '/verify': ('spec', {}),
    '/validate': ('spec', {}),
    '/memory': ('batch_size', {'spec': 'poolformer_s12'}),
    '/bench': ('batch_size', {'spec': 'poolformer_s12'}),
    '/diff': ('spec_b', {'spec_a': 'poolformer_s12'}),
    '/scaling': ('sizes', {'spec': 'poolformer_s12'}),
    '/compare': ('axis', {}),
    '/unshare': ('token', {}),
    '/snippet': ('spec', {}),
    '/diagram': ('spec', {}),
    '/remove_stage': ('index', {'spec': 'poolformer_s12'}),
    '/predict': ('image', {'model': 'poolformer_s12', 'weights': 'random'}),
    '/mixing_map': ('stage', {'model': 'poolformer_s12', 'weights': 'random'}),
}


@pytest.mark.parametrize('endpoint', sorted(ENDPOINTS))
def test_junk_gives_a_clear_error_never_an_internal_one(client, endpoint):
    from gradio_client.exceptions import AppError

    key, fixed = ENDPOINTS[endpoint]
    bad = []
    for junk in JUNK:
        try:
            client.predict(api_name=endpoint, **fixed, **{key: junk})
        except AppError as e:
            msg = str(e)
            # an unhandled exception reaches the client as Gradio's generic text; a Python-internal message
            # (int() of junk, KeyError repr) names no field: both count as failures
            if (
                not msg
                or 'not enabled verbose error reporting' in msg
                or 'invalid literal' in msg
                or 'object has no attribute' in msg
                or 'Traceback' in msg
            ):
                bad.append((junk, msg))
        except Exception as e:  # noqa: BLE001
            # the client may refuse to send some values (e.g. it validates types itself): that is fine,
            # as long as it is a client-side ValueError/TypeError and not a server failure
            assert isinstance(e, (ValueError, TypeError)), (endpoint, junk, type(e), e)
    assert not bad, f'{endpoint}: {bad}'
    # and the server still answers
    assert client.predict(spec='poolformer_s12', api_name='/validate') == []
