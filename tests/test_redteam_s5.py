"""Red-team checks of the newest server paths, as a stranger on the network would send them: /search with a
space as JSON text (huge integers, deep nesting), the trained-accuracy bounds, /bench's flags, and the ?spec=
link restored on page load. Each request must get a clear error naming the field, never an internal one."""

from __future__ import annotations

import base64
import json

import pytest

from explorer.app.history import Workbench

from .conftest import TINY
from .test_compose_stages import refusal_of
from .test_search_app_accuracy import tiny_space

HUGE = 10**400  # valid JSON, and a Python int; float(HUGE) raises OverflowError


def space(name: str, **extra) -> dict:
    """Two 2-stage designs of a Fashion-MNIST-shaped base (scored in closed form, no training)."""
    s = tiny_space(name)
    del s['training']
    return {**s, 'objectives': {'gmacs': 'minimize'}, **extra}


def trained(name: str, **training) -> dict:
    return tiny_space(name, **training)


def search_error(space_value, trials: int = 2) -> str:
    """The message /search's handler answers with (a gr.Error: what the client is shown)."""
    import gradio as gr

    from explorer.app.search import api_search

    with pytest.raises(gr.Error) as info:
        list(api_search(space_value, trials))
    return info.value.message


@pytest.fixture
def studies(tmp_path, monkeypatch):
    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path / 'studies'))


# ---- /search ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('field', ['epochs', 'train_limit', 'batch_size', 'time_budget', 'seed', 'min_trials'])
def test_a_huge_integer_in_the_training_budget_is_refused_naming_the_field(studies, field):
    """Was: OverflowError (int too large to convert to float) from check_training, an internal error."""
    from explorer.train.runner import TRAINING_SLOT

    msg = search_error(json.dumps(trained('rt_huge_budget', **{field: HUGE})))
    assert f'training.{field}: {str(HUGE)[:20]}' in msg and ' is not ' in msg  # with the space, before its study
    assert not TRAINING_SLOT.locked()


@pytest.mark.parametrize('bound', ['max', 'min'])
def test_a_huge_integer_constraint_is_refused_before_the_search_runs(studies, bound):
    """Was: every trial failed with OverflowError in the constraint function and /search answered with it."""
    from explorer.search.space import SpaceError, parse_space

    text = json.dumps(space('rt_huge_constraint', constraints={'gmacs': {bound: HUGE}}))
    assert search_error(text) == f"constraints.gmacs: ['{bound}'] must be finite numbers"
    with pytest.raises(SpaceError, match='must be finite numbers'):
        parse_space(json.loads(text))  # a dict, as gr.api hands a JSON object over


@pytest.mark.parametrize(
    'text, named',
    [
        ('[' * 50_000, 'the space is not valid JSON: nested too deeply'),
        ('{"name": ' + '9' * 5_000 + '}', 'the space is not valid JSON: an integer of 5,000 digits'),
    ],
)
def test_space_text_that_python_json_cannot_read_is_a_clear_error(studies, text, named):
    """Was: RecursionError / a bare ValueError out of json.loads, an internal error for the client."""
    assert search_error(text).startswith(named)


def test_the_search_form_reports_unreadable_space_text_plainly():
    import gradio as gr

    from explorer.app.search import merged_space

    for text in ('[' * 50_000, '{"name": ' + '9' * 5_000 + '}'):
        with pytest.raises(gr.Error, match='the space is not valid JSON'):
            merged_space(text, None, None, None, 'gmacs', 'minimize', 'none', 'minimize')


def test_the_search_endpoint_answers_a_huge_budget_with_the_field_over_the_network(studies, client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r'training\.epochs: 10{19}\d* is not a number'):
        client.predict(space=json.dumps(trained('rt_net', epochs=HUGE)), trials=2, api_name='/search')
    with pytest.raises(AppError, match='the space is not valid JSON: nested too deeply'):
        client.predict(space='[' * 50_000, trials=2, api_name='/search')
    assert client.predict(space=json.dumps(space('rt_net_ok')), trials=2, api_name='/search')['trials'] == 2


# ---- /bench ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('flag', ['channels_last', 'compile'])
@pytest.mark.parametrize('value', ['false', 'no', 0.5, [True]])
def test_bench_flags_must_be_booleans(flag, value):
    """Was: any truthy value ('false' included) turned channels_last / torch.compile on, and the result said so."""
    import gradio as gr

    from explorer.app.context import endpoint
    from explorer.app.panels import API

    with pytest.raises(gr.Error, match=f'{flag}: .* must be true or false'):
        endpoint(API['bench'])(TINY, device='cpu', batch_size=1, **{flag: value})


# ---- ?spec= on page load ---------------------------------------------------------------------------------
def test_a_link_with_a_huge_integer_is_a_spec_error_the_page_can_show():
    """Was: ValueError (over 4,300 digits) escaped the page-load handler, which catches SpecError: no message, and
    the composer stayed dimmed (the restore chain never ran)."""
    from explorer.core.share import decode_share
    from explorer.core.spec import SpecError

    text = '{"name": "x", "img_size": ' + '9' * 5_000 + '}'
    token = base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')
    assert len(token) < 20_000
    with pytest.raises(SpecError) as info:
        decode_share(token)
    assert str(info.value) == 'not valid JSON: an integer of 5,000 digits (a number in a spec has at most 4,300)'


HUGE_INT_TEXT = '{"name": "<b>x</b>", "img_size": ' + '9' * 5_000 + '}'
HUGE_RATIO = {**TINY, 'name': '<b>x</b>', 'stages': [{**TINY['stages'][0], 'mlp_ratio': HUGE}, TINY['stages'][1]]}


@pytest.mark.parametrize(
    'text, named',
    [
        (HUGE_INT_TEXT, 'not valid JSON: an integer of 5,000 digits (a number in a spec has at most 4,300)'),
        (json.dumps(HUGE_RATIO), f'S1 MLP ratio: {HUGE} is out of range'[:60]),  # named as the form labels it
    ],
)
def test_the_page_load_handler_warns_about_a_huge_number_link_and_restores_nothing(text, named):
    """The ?spec= handler the page runs on load: a refusal naming the field (escaped text), nothing restored. Was:
    ValueError (over 4,300 digits) / OverflowError (mlp_ratio 10**400) escaped it."""
    from types import SimpleNamespace

    from explorer.app.main import build_demo

    demo = build_demo()
    restore = next(f.fn for f in demo.fns.values() if getattr(f.fn, '__name__', '') == 'link_restored')
    token = base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')
    w = Workbench()
    problem = refusal_of(restore(SimpleNamespace(query_params={'spec': token}), w), w, n_after=1)  # nothing else
    assert problem['warning'] and problem['message'].startswith('Could not restore the link: ' + named)


def test_a_search_base_with_a_huge_number_is_refused_naming_the_field(studies):
    """Was: OverflowError out of the spec check (math.isfinite of an int over float's range)."""
    msg = search_error(json.dumps(space('rt_huge_base', base=HUGE_RATIO)))
    assert msg.startswith('base: stages[0].mlp_ratio: 1000000000')


def test_a_training_space_with_an_input_size_fashion_mnist_cannot_take_is_refused_before_training(
    studies, fake_dir, monkeypatch
):
    """Was: only the first design was checked, so trials trained until the 128-pixel one failed the whole search."""
    from explorer.search.space import parse_space
    from explorer.search.study import open_study

    monkeypatch.setenv('FASHION_MNIST_DIR', str(fake_dir))
    s = trained('rt_img_sizes')
    s['choices'] = {'img_size': [32, 128]}
    msg = search_error(s, trials=4)
    assert 'img_size is 128; Fashion-MNIST images are 28x28' in msg
    assert open_study(parse_space(s)).trials == []  # nothing trained, nothing failed
