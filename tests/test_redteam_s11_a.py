"""Red-team checks of the Search tab's space editor, /get_preset and ?preset=, the Train tab's fields and share
links, as a stranger would send them: a space whose constraints have the wrong shape, a name of 5,000
characters, a seed of 1e30 or a blank epochs field, a link that is not base64. Each must get a clear error naming
the field and what is allowed (echoing at most 60 characters), never a crash or a misleading message."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from explorer.app.history import Workbench
from explorer.core.spec import SpecError

from .conftest import TINY
from .test_compose_stages import refusal_of


@pytest.fixture(scope='module')
def demo():
    from explorer.app.main import build_demo

    return build_demo()


def handler(demo, qualname: str):
    """The event handler of the built app whose function is `qualname` (e.g. 'add_search_tab.<locals>.show')."""
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, '__qualname__', '').endswith(qualname))


def gr_error(fn, *args, **kwargs):
    """The gr.Error `fn` raises (a generator's at its first value)."""
    import gradio as gr

    with pytest.raises(gr.Error) as info:
        out = fn(*args, **kwargs)
        if hasattr(out, '__next__'):
            next(out)
    return info.value


# ---- the Search tab's space editor --------------------------------------------------------------------------
BAD_CONSTRAINTS = [[1, 2], {'params_m': 'x'}, {'params_m': 5}, 'abc', {'params_m': [['max', 5]]}]


@pytest.mark.parametrize('constraints', BAD_CONSTRAINTS, ids=str)
def test_wrongly_shaped_constraints_in_the_space_editor_are_the_error_search_answers(
    demo, constraints, tmp_path, monkeypatch
):
    """Was: TypeError / ValueError out of dict() in merged_space, shown as Gradio's bare "Error", on page load
    and edit (show) and on Search (run). Now the tab says what /search says about the same space."""
    from explorer.app.search import _parse_request, form_values, merged_space, space_text

    monkeypatch.setenv('EXPLORER_SEARCH_DIR', str(tmp_path))
    text = space_text('metaformer_hybrid')
    form = form_values(text)
    space = {**json.loads(text), 'constraints': constraints}
    api = gr_error(_parse_request, space, 2)  # what /search answers
    assert api.title == 'Bad space' and api.message.startswith('constraints')
    bad = json.dumps(space)
    for fn, args in (
        (merged_space, (bad, *form)),
        (handler(demo, 'add_search_tab.<locals>.show'), (bad, *form)),
        (handler(demo, 'add_search_tab.<locals>.run'), (bad, 5, *form)),
    ):
        e = gr_error(fn, *args)
        assert (e.title, e.message) == ('Bad space', api.message), fn


def test_the_form_still_writes_its_limits_into_well_shaped_or_absent_constraints():
    from explorer.app.search import form_values, merged_space, space_text

    text = space_text('metaformer_hybrid')
    form = form_values(text)
    for constraints in (None, {}, {'params_m': None}, {'params_m': {'min': 1}}):
        space = merged_space(json.dumps({**json.loads(text), 'constraints': constraints}), 20, None, 9, *form[3:])
        assert space.constraints['params_m']['max'] == 20.0 and space.constraints['latency_ms'] == {'max': 9.0}


# ---- /get_preset and ?preset= -----------------------------------------------------------------------------
def test_get_preset_echoes_at_most_60_characters_of_a_long_name():
    """Was: the whole name, up to the 1,000 characters a message keeps (SECURITY.md promises 60)."""
    from explorer.app.context import endpoint
    from explorer.app.panels import API

    msg = gr_error(endpoint(API['get_preset']), 'a' * 5_000).message
    assert msg.startswith("preset: 'aaa") and 'is not a preset; choose from caformer_b36' in msg
    assert 'a' * 60 not in msg and '(5,002 characters)' in msg
    with pytest.raises(SpecError, match="'caformer_s1' is not a preset"):  # a short one stays whole
        API['get_preset']('caformer_s1')


def test_a_preset_link_echoes_at_most_60_characters_of_its_name(demo):

    restore = next(f.fn for f in demo.fns.values() if getattr(f.fn, '__name__', '') == 'link_restored')
    w = Workbench()
    msg = refusal_of(restore(SimpleNamespace(query_params={'preset': 'b' * 2_000}), w), w, n_after=1)['message']
    assert msg.startswith("Could not restore the link: preset: 'bbb") and 'b' * 60 not in msg


def test_an_unknown_spec_name_echoes_at_most_60_characters():
    from explorer.core.catalog import load_spec

    with pytest.raises(SpecError, match='is neither a preset nor a spec file') as info:
        load_spec('c' * 3_000)
    assert 'c' * 60 not in str(info.value)


# ---- the Train tab's fields -------------------------------------------------------------------------------
# the Train tab's inputs: spec, epochs, time budget, batch size, seed, training images, random erasing, compile
GOOD = dict(spec=TINY, n_epochs=1, secs=0, bs=128, sd=0, lim='all 60,000', erase_p=0.0, compile_=False)


@pytest.mark.parametrize(
    'field, value, named',
    [
        ('sd', 1e30, 'seed: 1e+30 must be a number in [0, 2147483647] (whole)'),
        ('sd', 10**30, f'seed: {10**30} must be a number in [0, 2147483647] (whole)'),
        ('sd', -1, 'seed: -1 must be a number in [0, 2147483647] (whole)'),
        ('n_epochs', None, 'epochs: (empty) must be a number in [0.01, 100]'),
        ('n_epochs', float('nan'), 'epochs: nan must be a number in [0.01, 100]'),
        ('secs', -5, 'time budget (s): -5 must be a number in [0, 86400]'),
        ('secs', float('inf'), 'time budget (s): inf must be a number in [0, 86400]'),
        ('bs', None, 'batch size: (empty) must be a number in [1, 256] (whole)'),
        ('bs', 12.5, 'batch size: 12.5 must be a number in [1, 256] (whole)'),
        ('lim', 'lots', "training images: 'lots' is not one of all 60,000, 10,000, 2,000"),
        ('erase_p', 2, 'random erasing: 2 must be a number in [0, 1]'),
    ],
)
def test_the_train_tab_names_each_bad_field(demo, monkeypatch, field, value, named):
    """Was: float()/int() of the raw values: 'Training failed: Overflow when unpacking long long' for a seed of
    1e30, Gradio's bare "Error" for a blank epochs field. Now the checks /train makes, named as the tab names
    the field."""
    import explorer.app.train as train_app

    monkeypatch.setattr(train_app, 'training_events', lambda *a, **k: pytest.fail('training started'))
    run = handler(demo, 'add_train_tab.<locals>.run')
    e = gr_error(run, **{**GOOD, field: value})
    assert (e.title, e.message) == ('Cannot train', named)


def test_a_good_train_tab_request_reaches_the_training_with_its_values(demo, monkeypatch):
    """Blank seed and erasing fields mean their defaults, a time budget of 0 none, 'all 60,000' no limit."""
    import explorer.app.train as train_app

    calls = []

    def events(*args, **kwargs):
        calls.append((args, kwargs))
        yield {'kind': 'error', 'message': 'stubbed'}

    monkeypatch.setattr(train_app, 'training_events', events)
    monkeypatch.setattr(train_app, 'find_dataset', lambda *a, **k: None)
    run = handler(demo, 'add_train_tab.<locals>.run')
    for values, expect in (
        ({**GOOD, 'sd': None, 'erase_p': None}, (1.0, None, 128, 0, None, 0.0, False)),
        ({**GOOD, 'n_epochs': 2.5, 'secs': 30, 'bs': 64.0, 'sd': 7.0, 'lim': '2,000', 'erase_p': 0.25}, None),
    ):
        out = run(**values)
        assert next(out)[1] == 'Starting...'
        with pytest.raises(Exception, match='stubbed'):
            next(out)
        args, kwargs = calls.pop()
        got = (args[1], args[2], args[3], args[4], args[5], kwargs['erase_prob'], kwargs['compile'])
        assert got == (expect or (2.5, 30.0, 64, 7, 2_000, 0.25, False))
        assert type(args[3]) is int and type(args[4]) is int


def test_the_train_api_clips_what_it_echoes_and_keeps_its_names(monkeypatch):
    """The same checks, with /train's argument names; a value of 5,000 characters is echoed in 60."""
    import explorer.app.train as train_app
    from explorer.app.train import api_train

    monkeypatch.setattr(train_app, 'training_events', lambda *a, **k: pytest.fail('training started'))
    assert gr_error(api_train, TINY, seed=1e30).message == 'seed: 1e+30 must be a number in [0, 2147483647] (whole)'
    assert gr_error(api_train, TINY, train_limit=-1).message.startswith('train_limit: -1 must be a number in')
    msg = gr_error(api_train, TINY, epochs='x' * 5_000).message
    assert msg.startswith("epochs: 'xxx") and 'x' * 60 not in msg
    assert gr_error(api_train, TINY, compile='false').message == "compile: 'false' must be true or false"


# ---- share links --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'token, why',
    [
        ('@@@@', "character 1 ('@') is not allowed; allowed: A-Z, a-z, 0-9, - and _"),
        ('!!!', "character 1 ('!') is not allowed"),
        ('eyJu YW1l', "character 5 (' ') is not allowed"),  # a space: a '+' the URL turned into one
        ('eyJ+', "character 4 ('+') is not allowed"),
        ('ab=c', "character 3 ('=') is not allowed"),
        ('abcde', '5 characters (padding aside) is a length no base64 text has'),
        ('====', '0 characters (padding aside)'),
        ('_-8', 'it decodes to bytes that are not UTF-8 text'),
    ],
)
def test_a_share_link_that_is_not_base64_says_so(token, why):
    """Was: urlsafe_b64decode dropped the characters outside its alphabet, so '@@@@' decoded to nothing and the
    message said the link was not valid JSON."""
    from explorer.core.share import decode_share

    with pytest.raises(SpecError) as info:
        decode_share(token)
    (path, msg), *_ = info.value.errors
    assert path == 'spec' and msg.startswith('the share link parameter (?spec=) is not URL-safe base64')
    assert why in msg


def test_unshare_and_the_page_load_report_a_non_base64_link(demo):

    from explorer.app.context import endpoint
    from explorer.app.panels import API

    msg = gr_error(endpoint(API['unshare']), '!!!').message
    assert msg.startswith('spec: the share link parameter (?spec=) is not URL-safe base64') and 'JSON:' not in msg
    restore = next(f.fn for f in demo.fns.values() if getattr(f.fn, '__name__', '') == 'link_restored')
    w = Workbench()
    problem = refusal_of(restore(SimpleNamespace(query_params={'spec': '@@@@'}), w), w, n_after=1)
    assert 'is not URL-safe base64' in problem['message']


def test_every_length_of_share_link_still_round_trips():
    """Padding is stripped from a link: each of the four lengths mod 4 a token can have comes back, as do
    non-ASCII names and a link pasted with its padding restored."""
    from explorer.core.share import decode_share, encode_share

    lengths = set()
    for name in ['n', 'na', 'nam', 'name', 'ñame_é', 'x' * 41]:
        spec = {**TINY, 'name': name}
        token = encode_share(spec)
        lengths.add(len(token) % 4)
        assert decode_share(token)['name'] == name
        assert decode_share(token + '=' * (-len(token) % 4))['name'] == name
    assert lengths == {0, 2, 3}  # 1 is no base64 length


def test_a_non_text_preset_name_is_echoed_at_most_60_characters():
    from explorer.app.panels import api_get_preset

    with pytest.raises(ValueError) as e:
        api_get_preset(list(range(5000)))
    assert 'name: [0, 1, 2' in str(e.value) and len(str(e.value)) < 200


def test_train_on_an_untrainable_design_says_which_button_fits_it(demo, monkeypatch):
    """UX review: Train on the 224 px ImageNet design listed what was wrong but not the fix, one button away."""
    import explorer.app.train as train_app
    from explorer.core import catalog

    monkeypatch.setattr(train_app, 'training_events', lambda *a, **k: pytest.fail('training started'))
    run = handler(demo, 'add_train_tab.<locals>.run')
    e = gr_error(run, **{**GOOD, 'spec': catalog.get_preset('poolformer_s12')})
    assert e.title == 'Cannot train' and 'in_chans' in e.message
    assert e.message.endswith('Press "Adapt to Fashion-MNIST" above, then Train.')


def test_the_train_tab_says_when_it_evaluates_the_test_images(demo, monkeypatch):
    """UX review: after the last step the bar read 100% and the line 'step 1/2' for the minute the test set took."""
    import explorer.app.train as train_app

    def events(*args, **kwargs):
        yield {'kind': 'step', 'step': 1, 'total_steps': 2, 'epoch': 0.5, 'loss': 2.0}
        yield {'kind': 'step', 'step': 2, 'total_steps': 2, 'epoch': 1.0, 'loss': 1.5}
        yield {'kind': 'error', 'message': 'stubbed'}

    monkeypatch.setattr(train_app, 'training_events', events)
    monkeypatch.setattr(train_app, 'find_dataset', lambda *a, **k: None)
    run = handler(demo, 'add_train_tab.<locals>.run')
    seen = []
    out = run(**GOOD, progress=lambda frac, desc=None: seen.append(desc))
    texts = []
    with pytest.raises(Exception, match='stubbed'):
        for value in out:
            texts.append(value[1])
    assert seen[-1].startswith('evaluating on the test images') and texts[-1].endswith(
        'evaluating on the test images...'
    )


def test_the_scaling_chart_takes_what_scaling_takes(demo):
    """Red team: the Compare tab's scaling chart took any number of sizes and presets (5 s of CPU a request, no
    slot), and a non-text size list gave Gradio's bare error."""
    from explorer.core import catalog

    plot = handler(demo, 'add_compare_tab.<locals>.scaling_plot')
    spec = catalog.get_preset('poolformer_s12')
    e = gr_error(plot, spec, ', '.join(['224'] * 65), [], 'png')
    assert e.message == 'resolutions: give 1 to 64 sizes in [8, 1536]'
    e = gr_error(plot, spec, ['224'], [], 'png')
    assert e.message.startswith("resolutions: ['224'] must be whole numbers")
    e = gr_error(plot, spec, '224', ['poolformer_s12'] * 1000, 'png')
    assert e.message == 'presets: a list of preset names'
    assert plot(spec, '224, 256', ['poolformer_s12', 'poolformer_s12'], 'png') is not None


def test_the_measure_tab_names_the_design_it_will_time():
    """UX review: the tab said only "the composer's model"; the name appeared after the run. Names are text."""
    from explorer.app.panels import measure_target

    line = measure_target({**TINY, 'name': '<b>x</b>'})
    assert 'Measure times <b>&lt;b&gt;x&lt;/b&gt;</b> as composed: 32x32 px, 1 channel.' in line
    assert 'Compose a valid network first' in measure_target(None)
