"""Whatever a client sends, every endpoint answers with a result or a clear error naming the problem; the
server never fails with an internal error and keeps serving."""

from __future__ import annotations

import pytest

pytest.importorskip('gradio_client')

from tests.conftest import TWO_STAGE as TINY  # noqa: E402  (pooling then attention at 32 px)

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

# an internal error reaches a client as `endpoint()`'s "could not handle this request (TypeError: ...)" or, past
# it, as Gradio's generic text; a Python-internal message (int() of junk, a KeyError's repr) names no field
INTERNAL = (
    'could not handle this request',
    'not enabled verbose error reporting',
    'invalid literal',
    'object has no attribute',
    'Traceback',
)


def _internal_errors(client, endpoint: str, calls) -> list:
    """The (value, message) of each call of `endpoint` (keyword dicts) answered with an internal error."""
    from gradio_client.exceptions import AppError

    bad = []
    for kwargs in calls:
        try:
            client.predict(api_name=endpoint, **kwargs)
        except AppError as e:
            msg = str(e)
            if not msg or any(s in msg for s in INTERNAL):
                bad.append((kwargs, msg))
        except Exception as e:  # noqa: BLE001
            # the client may refuse to send some values (e.g. it validates types itself): that is fine,
            # as long as it is a client-side ValueError/TypeError and not a server failure
            assert isinstance(e, (ValueError, TypeError)), (endpoint, kwargs, type(e), e)
    return bad


@pytest.mark.parametrize('endpoint', sorted(ENDPOINTS))
def test_junk_gives_a_clear_error_never_an_internal_one(client, endpoint):
    key, fixed = ENDPOINTS[endpoint]
    bad = _internal_errors(client, endpoint, [{**fixed, key: junk} for junk in JUNK])
    assert not bad, f'{endpoint}: {bad}'
    # and the server still answers
    assert client.predict(spec='poolformer_s12', api_name='/validate') == []


# every field of every endpoint, the others valid (small designs and a shipped Fashion-MNIST model: where junk
# happens to be a valid value, the work it starts is quick); /train only through its spec (any other field's
# junk that happened to be valid would start a training run)
TRAINED = {'model': 'trained: fmnist_pooling', 'image': '00000_ankle_boot.png', 'weights': 'pretrained'}
FIELDS = {
    '/get_preset': {'name': 'poolformer_s12'},
    '/profile': {'spec': TINY, 'img_size': 32},
    '/verify': {'spec': TINY, 'img_size': 32},
    '/memory': {'spec': TINY, 'batch_size': 1, 'dtype': 'fp32', 'img_size': 32},
    '/bench': {
        'spec': TINY,
        'device': 'cpu',
        'batch_size': 1,
        'dtype': 'fp32',
        'channels_last': False,
        'compile': False,
        'repeats': 1,
    },
    '/diff': {'spec_a': TINY, 'spec_b': 'poolformer_s12', 'img_size': 32},
    '/scaling': {'spec': TINY, 'sizes': [32]},
    '/compare_points': {'axis': 'MACs', 'designs': [{'name': 'a', 'spec': TINY}], 'families': ['PoolFormer']},
    '/share': {'spec': TINY},
    '/add_stage': {'spec': TINY},
    '/remove_stage': {'spec': TINY, 'index': 1},
    '/predict': {**TRAINED, 'topk': 5},
    '/mixing_map': {**TRAINED, 'stage': 0, 'block': 0, 'row': -1, 'col': -1, 'method': 'auto'},
    '/attribute': {
        **TRAINED,
        'method': 'saliency',
        'baseline': 'black',
        'target': -1,
        'stage': -1,
        'smoothgrad': False,
        'seed': 0,
    },
    '/search': {'space': 'metaformer_hybrid', 'trials': 2},
    '/train': {'spec': 'nonsense'},
}
SOME_JUNK = [None, 'nonsense', -1, 2**70, [1, 'a'], {'stages': 'x'}, '../../etc/passwd']


@pytest.mark.parametrize('endpoint', sorted(FIELDS))
def test_junk_in_any_field_gives_a_clear_error(client, endpoint):
    """The sweep above puts junk into one field per endpoint and missed `endpoint()`'s own internal-error answer
    ("could not handle this request"); here every field of every endpoint gets junk, the others valid."""
    fixed = FIELDS[endpoint]
    calls = [{**fixed, key: junk} for key in fixed for junk in SOME_JUNK]
    bad = _internal_errors(client, endpoint, calls)
    assert not bad, f'{endpoint}: {bad}'


def _raw_call(app_url: str, api_name: str, data: list) -> dict:
    """POST /gradio_api/call/<api_name> and read the event stream's last message: {'event': ..., 'data': ...}."""
    import json

    import httpx

    base = f'{app_url}gradio_api/call/{api_name}'
    event_id = httpx.post(base, json={'data': data}, timeout=30).json()['event_id']
    lines = httpx.get(f'{base}/{event_id}', timeout=60).text.strip().splitlines()
    return {'event': lines[-2].removeprefix('event: '), 'data': json.loads(lines[-1].removeprefix('data: '))}


def test_values_gradio_cannot_read_are_refused_by_name_without_a_traceback(app_url, capfd):
    """Gradio reads a request's values before any handler: an example index past the list, a checkpoint sent as a
    server path that was never uploaded, too few values, a wrong type. Each was answered {"error": null} (a blank
    "Error" in the page) with a traceback in the server log per request."""
    upload_first = "a file must first go through Gradio's upload route"
    cases = [
        ('load_example', [10**9], 'load_example: the values sent could not be read (examples): IndexError'),
        ('load_example', ['../../etc/passwd'], 'load_example: the values sent could not be read (examples)'),
        (
            'predict_handler',
            ['poolformer_s12', 'random', {'path': '/etc/passwd', 'meta': {'_type': 'gradio.FileData'}}, None, 5],
            upload_first,
        ),
        ('predict_handler', ['poolformer_s12'], "didn't receive enough input values"),
        ('predict_handler', ['poolformer_s12', 'random', None, 17, 'five'], 'ValidationError: the value: Input should'),
        # Gradio's own refusal: escaped, shortened (its list of 40 choices), titled, no traceback
        (
            'predict_handler',
            ['<b>x</b>', 'random', None, None, 5],
            'predict_handler: Value: &lt;b&gt;x&lt;/b&gt; is not in',
        ),
    ]
    capfd.readouterr()
    for api_name, data, expected in cases:
        answer = _raw_call(app_url, api_name, data)
        assert answer['event'] == 'error', (api_name, data, answer)
        assert expected in (answer['data']['error'] or ''), (api_name, data, answer)
        assert answer['data']['title'] == 'Bad request'
        assert len(answer['data']['error']) < 600 and 'input_value' not in answer['data']['error']
        if api_name == 'predict_handler' and 'Value:' not in expected:  # the fields as the page labels them
            assert '(model, weights, checkpoint, image, top-k)' in answer['data']['error']
    assert 'Traceback' not in capfd.readouterr().err


def test_a_server_fault_while_reading_values_is_logged_and_said_to_be_the_servers(caplog):
    """Review: every exception while Gradio read a request's values became a 'Bad request' with no log line, an
    OSError copying an upload (a full disk) included. Faults of the server's are logged and said to be."""
    import asyncio

    import gradio as gr

    from explorer.app.context import refuse_unreadable_values

    class Demo:
        async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
            raise OSError(28, 'No space left on device')

        async def call_function(self, block_fn, processed_input, *args, **kwargs):  # as gr.Blocks has
            pass

    class Fn:
        api_name, name, inputs = 'predict_handler', 'predict_handler', []

    demo = Demo()
    refuse_unreadable_values(demo)
    with caplog.at_level('ERROR', logger='explorer'), pytest.raises(gr.Error) as e:
        asyncio.run(demo.preprocess_data(Fn(), [], None))
    assert 'the server failed while reading the values sent (OSError)' in e.value.message
    assert e.value.title != 'Bad request' and 'reading the values of predict_handler failed' in caplog.text


def test_a_number_outside_its_fields_range_is_refused_by_the_fields_name():
    """A review: rounds 0 in the Measure tab, or trials 0 in the Search tab, said 'measure: Value 0 is less than
    minimum value 1.' (Gradio's own words while it reads the values), naming no field; an empty one said 'None'."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    from explorer.app.main import build_demo

    demo = build_demo()
    cases = [('measure', 'rounds (spread)', 0, 'measure: rounds (spread): 0 is out of range; allowed 1 to 10')]
    cases += [('measure', 'rounds (spread)', 11.5, 'rounds (spread): 11.5 is out of range; allowed 1 to 10')]
    run = next(f for f in demo.fns.values() if any(getattr(c, 'label', '') == 'trials to add' for c in f.inputs))
    cases += [(run.name, 'trials to add', 0, 'trials to add: 0 is out of range; allowed 1 to ')]
    for name, label, value, expected in cases:
        fn = next(
            f for f in demo.fns.values() if f.name == name and any(getattr(c, 'label', '') == label for c in f.inputs)
        )
        labels = [getattr(c, 'label', None) for c in fn.inputs]
        values = [getattr(c, 'value', None) for c in fn.inputs]
        values[labels.index(label)] = value
        with pytest.raises(gr.Error) as e:
            asyncio.run(demo.preprocess_data(fn, values, SessionState(demo)))
        assert expected in e.value.message and e.value.title == 'Bad request', e.value.message


def test_an_empty_number_reads_empty_and_measure_states_one_batch_range(monkeypatch):
    """A review: an empty field said 'None must be an integer', and Measure's batch 100000 gave '[1, 4096]' (the
    timer's limit) where 1000 gave 'allowed 1 to 256 (EXPLORER_MAX_BATCH)': the server's range is the one."""
    import gradio as gr

    from explorer.app.main import build_demo
    from explorer.core import catalog

    demo = build_demo()
    fn = next(f for f in demo.fns.values() if f.name == 'measure')
    measure = fn.fn
    spec = {**catalog.get_preset('poolformer_s12'), 'name': 'my_net'}
    for batch, expected in ((100_000, 'batch size: 100000 must be an integer in [1, 256]'), (None, '(empty)')):
        with pytest.raises(gr.Error) as e:
            measure(spec, 'cpu', batch, 'fp32', 1, False, False, [], [])
        assert expected in e.value.message and 'None' not in e.value.message, e.value.message
    with pytest.raises(gr.Error, match=r'rounds: \(empty\) must be an integer in \[1, 10\]'):
        measure(spec, 'cpu', 8, 'fp32', None, False, False, [], [])
    # a refusal of the measurement names the design ('composer:' named neither the design nor the tab)
    with pytest.raises(gr.Error) as e:
        measure(spec, 'cpu', 8, 'fp16' if not _cuda() else 'nope', 1, False, False, [], [])
    assert e.value.message.startswith('my_net: '), e.value.message


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_pages_events_called_by_name_without_their_values_are_refused_by_name(app_url, capfd):
    """The review: the page's private events, called by name with null values or without their event's data,
    answered {"error": null} and wrote a ~40-line traceback to the log per request."""
    cases = [
        ('compose_read_uploaded_spec', [None], 'no file sent'),
        ('take_upload', [None], 'no file sent'),
        ('load_example', [None], 'no example sent'),
        ('compose_from_row', [None] * 8, 'no event data sent'),
        ('shown_tab', [], 'no event data sent'),
        ('picked', [], 'no event data sent'),
    ]
    capfd.readouterr()
    for api_name, data, expected in cases:
        answer = _raw_call(app_url, api_name, data)
        assert answer['event'] == 'error', (api_name, answer)
        assert answer['data']['error'].startswith(f'{api_name}: {expected}'), (api_name, answer)
        assert answer['data']['title'] == 'Bad request'
    # a load into the composer is refused as the page shows it (a toast), not as a crash
    answer = _raw_call(app_url, 'compose_adapt_handler', [None])
    assert answer['event'] == 'complete', answer
    assert 'Traceback' not in capfd.readouterr().err


def test_the_handlers_of_uploads_and_adapt_refuse_a_null_value():
    import gradio as gr

    from explorer.app.context import read_uploaded_spec
    from explorer.app.train import adapt_handler

    for call in (lambda: read_uploaded_spec(None), lambda: adapt_handler(TINY, None)):
        with pytest.raises(gr.Error) as e:
            call()
        assert e.value.title == 'Bad request' and (
            'upload a spec file' in e.value.message or '28 or 32' in e.value.message
        )


def test_an_unknown_endpoint_is_a_404_naming_it_without_a_traceback(app_url, capfd):
    """The review: /gradio_api/call/nope was a bare 500 'Internal Server Error' and 68 lines of traceback."""
    import httpx

    capfd.readouterr()
    r = httpx.post(f'{app_url}gradio_api/call/nope', json={'data': []}, timeout=30)
    assert r.status_code == 404 and r.json() == {'error': "no endpoint 'nope'; see /gradio_api/info"}
    assert 'Traceback' not in capfd.readouterr().err
