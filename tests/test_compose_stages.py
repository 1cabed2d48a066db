"""Adding and removing stages in the composer, through the built app's own handlers as the page calls them: the
form is filled from a design, a stage button sends the form's values, the form is filled again from the result,
and the recount reads the form. The network counted must be the one `explorer.app.form` says the edit makes,
including what the form does not show (a stage's position embedding, per-stage scales)."""

from __future__ import annotations

import copy
import re

import pytest

from explorer.app import form as spec_form
from explorer.core import catalog
from explorer.core.spec import MAX_STAGES, SpecError
from explorer.measure import profile as prof
from tests.conftest import tiny_spec


@pytest.fixture(scope='module')
def app():
    from explorer.app.main import build_demo

    demo = build_demo()
    fns = [getattr(f.fn, '__wrapped__', f.fn) for f in demo.fns.values()]  # an edit's recount, without ui.loaded

    def free(fn) -> dict:
        return dict(zip(fn.__code__.co_freevars, [c.cell_contents for c in fn.__closure__ or ()]))

    edit = next(f for f in fns if getattr(f, '__name__', '') == 'refresh' and free(f).get('kind') == 'edit')
    staged = {
        (getattr(free(f)['op'], '__name__', None), free(f)['index']): f
        for f in fns
        if getattr(f, '__name__', '') == 'stage_edit'
    }
    fill = free(free(staged[('add_stage', None)])['shown_and_counted'])['fill']
    n_globals = len(free(free(edit)['read_form'])['g'])
    return edit, staged, fill, n_globals


def _values(filled: list, n_globals: int) -> list:
    """What the page sends after a fill: the form's inputs (its base, stage count, globals, row fields)."""
    plain = [u.get('value') if isinstance(u, dict) and u.get('__type__') == 'update' else u for u in filled]
    return [plain[0], plain[1], *plain[2 : 2 + n_globals], *plain[2 + n_globals + MAX_STAGES :]]


def _composer(app, spec: dict, op: str, index=None) -> dict:
    from explorer.app.history import Workbench

    edit, staged, fill, n = app
    w = Workbench()
    edit(None, w, *_values(fill(spec), n))  # the design loaded and counted
    out = staged[(op, index)](None, w, *_values(fill(spec), n))  # the form and its count in one answer
    return out[len(fill(spec)) + 1]  # after the form: the history, then the design


def test_removing_a_stage_keeps_each_stages_hidden_fields_with_its_stage(app):
    """Removing S1 of the hybrid preset moved its position embedding from the first attention stage to the last
    one (the recount matched hidden fields to the design before the removal, by position): 16,441,896 params shown
    where the design without S1 has 16,592,424."""
    p = catalog.get_preset('poolformer_hybrid_ppaa_s12')
    got = _composer(app, p, 'remove_stage', 0)
    want = spec_form.remove_stage(p, 0)
    assert (
        [st['pos_embed'] for st in got['stages']] == [st['pos_embed'] for st in want['stages']] == [False, True, False]
    )
    assert prof.profile(got)['params'] == prof.profile(want)['params'] == 16_592_424


def test_removing_a_stage_drops_that_stages_scales(app):
    p = catalog.get_preset('poolformer_s12')
    p = {**p, 'layer_scale_init': [1e-6, 0.1, 0.2, 0.3], 'res_scale_init': [None, 2.0, 3.0, 4.0]}
    got = _composer(app, p, 'remove_stage', 1)
    assert got['layer_scale_init'] == [1e-6, 0.2, 0.3] and got['res_scale_init'] == [None, 3.0, 4.0]


def test_adding_a_stage_makes_the_stage_the_api_makes(app):
    p = catalog.get_preset('poolformer_hybrid_ppaa_s12')
    three = {**p, 'name': 'three', 'stages': p['stages'][:3], 'res_scale_init': None}
    got = _composer(app, three, 'add_stage')
    assert [st['pos_embed'] for st in got['stages']] == [st['pos_embed'] for st in spec_form.add_stage(three)['stages']]
    assert got['stages'][-1]['pos_embed'] is False  # the form shows no pos_embed: a new stage gets none


def test_a_generated_name_is_cut_where_it_stays_valid(app):
    """A valid name of 98 characters with a keycap emoji near the end: cutting it for '-mod1' split the keycap from
    its variation selector, a name the spec refuses, and every edit of the design raised instead of recounting;
    a second pin of that name could not be loaded."""
    import copy

    from explorer.app import history
    from explorer.app.history import Workbench
    from explorer.core.spec import name_problem

    edit, _, fill, n = app
    d = catalog.get_preset('poolformerv2_s12')
    d['name'] = 'a' * 93 + '1\ufe0f\u20e3' + 'bb'
    assert catalog.validate(d) == []
    w = Workbench()
    edit(None, w, *_values(fill(d), n))
    deeper = copy.deepcopy(d)
    deeper['stages'][0]['depth'] = 3
    out = edit(None, w, *_values(fill(deeper), n))
    assert out[1]['name'].endswith('-mod1') and name_problem(out[1]['name']) is None
    assert out[1]['stages'][0]['depth'] == 3
    d2 = {**catalog.get_preset('poolformerv2_s12'), 'name': 'a' * 94 + '1\ufe0f\u20e3' + 'bb'}
    e2 = copy.deepcopy(d2)
    e2['stages'][0]['depth'] = 3
    pins, _ = history.pin([], catalog.parse_spec(d2).to_dict())
    pins, _ = history.pin(pins, catalog.parse_spec(e2).to_dict())
    assert pins[1]['name'].endswith(' (2)') and catalog.validate(pins[1]['spec']) == []


def test_the_stage_endpoints_refuse_to_answer_an_invalid_spec():
    """/remove_stage answered a spec the package refuses (a stage left without downsampling beside one of another
    width), as a success."""
    from explorer.app.panels import api_remove_stage

    d = tiny_spec(mixers=('pooling',) * 3, dims=(64, 128, 128), img_size=64)
    d['stages'][2]['downsample'] = False  # S3 keeps S2's width and grid
    assert catalog.validate(d) == []
    assert [st['dim'] for st in api_remove_stage(d, 0)['stages']] == [128, 128]  # S2 follows the stem: fine
    with pytest.raises(SpecError) as e:
        api_remove_stage(d, 1)
    assert 'removing stage 1 (S2) leaves' in str(e.value) and 'stages[1].downsample' in str(e.value)


def test_a_listed_mixer_and_a_float_image_size_get_clear_answers():
    """A crafted recount with a mixer sent as ['pooling'] raised TypeError (unhashable) with no field named;
    /profile and /diff refused img_size 256.0, which /memory, /verify and /scaling take."""
    from explorer.measure import compare as cmp

    p = catalog.get_preset('poolformer_s12')
    values, n, rows = spec_form.spec_to_form(p)
    rows[0]['mixer'] = ['pooling']
    raw = spec_form.form_to_spec(p, values, n, rows)
    errors = dict(catalog.validate(raw))
    assert 'stages[0].mixer' in errors, errors
    assert prof.profile(p, img_size=256.0)['img_size'] == 256
    assert cmp.diff(p, p, img_size=256.0)['total']['d_params'] == 0


def test_undo_and_redo_show_and_count_the_design_in_one_unqueued_answer(app):
    """Undo and redo were three queued events (take the design, fill the form, count it): about 1.1 s and 0.8 s
    from the click to the restored design on screen against 0.25 s for an edit. Each is now one answer outside
    the queue, like an edit, holding the whole form and its counts from one design (two answers in flight at once
    each leave the form and the numbers on the same design)."""
    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    edit, _, fill, n = app
    demo = build_demo()
    events = {f.fn.__name__: f for f in demo.fns.values() if getattr(f.fn, '__name__', '') in ('undo', 'redo')}
    assert set(events) == {'undo', 'redo'}
    assert all(not f.queue for f in events.values())
    undo, redo = events['undo'], events['redo']
    at = {getattr(c, 'elem_id', None): i for i, c in enumerate(undo.outputs)}
    spec_at = undo.outputs.index(undo.inputs[0]) + 1  # hist, then the state holding the design

    p = catalog.get_preset('caformer_s18')
    wide = copy.deepcopy(p)
    wide['stages'][2]['dim'] = 384
    w = Workbench()
    edit(None, w, *_values(fill(p), n))
    shown = edit(None, w, *_values(fill(wide), n))[1]  # named caformer_s18-mod1
    out = undo.fn(None, w, *_values(fill(shown), n))
    assert out[spec_at]['stages'][2]['dim'] == 320 and out[spec_at]['name'] == 'caformer_s18'
    assert out[at['mfx-s3-dim']] == 320 and out[at['mfx-s1-dim']] == 64  # the whole form, from one design
    assert out[at['mfx-name']]['value'] == 'caformer_s18'
    report = out[undo.outputs.index(undo.inputs[0]) + 2]
    assert report['macs'] == prof.profile(catalog.parse_spec(p))['macs']

    out = redo.fn(None, w)
    assert out[spec_at]['stages'][2]['dim'] == 384 and out[at['mfx-s3-dim']] == 384
    assert out[spec_at]['name'] == 'caformer_s18-mod1'


def test_undo_right_after_typing_takes_the_typed_edit_back(app):
    """Review: a width typed and then Undo clicked: the field's blur counts the edit (caformer_s18-mod2) before
    the click arrives, but the click sends the form as it was, the new width under the old name -mod1. Undo
    compared names and took that for an edit not counted yet, so it showed -mod2 again: the click did nothing."""
    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    edit, _, fill, n = app
    undo = next(f for f in build_demo().fns.values() if getattr(f.fn, '__name__', '') == 'undo')
    spec_at = undo.outputs.index(undo.inputs[0]) + 1
    p = catalog.get_preset('caformer_s18')
    w = Workbench()
    edit(None, w, *_values(fill(p), n))
    wide = copy.deepcopy(p)
    wide['stages'][2]['dim'] = 384
    mod1 = edit(None, w, *_values(fill(wide), n))[1]
    wider = copy.deepcopy(mod1)
    wider['stages'][2]['dim'] = 448
    assert edit(None, w, *_values(fill(wider), n))[1]['name'] == 'caformer_s18-mod2'  # the blur's count
    out = undo.fn(None, w, *_values(fill(wider), n))  # 448 on screen, still named -mod1
    assert out[spec_at]['stages'][2]['dim'] == 384 and out[spec_at]['name'] == 'caformer_s18-mod1'


def test_a_stage_added_or_removed_is_shown_and_counted_in_one_unqueued_answer(app):
    """Adding or removing a stage filled the form and then counted it in two queued events (about a second, and an
    unqueued Undo clicked meanwhile ran first, so the chain then committed on top of the undone design)."""
    import gradio as gr

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    edit, staged, fill, n = app
    fns = build_demo().fns
    events = [f for f in fns.values() if getattr(f.fn, '__name__', '') == 'stage_edit']
    assert len(events) == 1 + MAX_STAGES and all(not f.queue for f in events)
    at = {getattr(c, 'elem_id', None): i for i, c in enumerate(events[0].outputs)}
    p = catalog.get_preset('poolformer_s12')
    w = Workbench()
    edit(None, w, *_values(fill(p), n))
    out = staged[('add_stage', None)](None, w, *_values(fill(p), n))
    design = out[len(fill(p)) + 1]
    assert len(design['stages']) == 5 and out[1] == 5  # the design and the form's stage count
    assert design['name'] == 'poolformer_s12-mod1' == out[at['mfx-name']]['value']  # the name field once, renamed
    report = out[len(fill(p)) + 2]
    assert report['macs'] == prof.profile(catalog.parse_spec(spec_form.add_stage(p)))['macs']
    assert w.current()['name'] == 'poolformer_s12-mod1' and w.can_undo
    # the tabs that follow the design follow the hidden field ui.loaded (as for a load), not the click: a stage
    # button refused ran them all the same, and Predict took down the composer model's results
    assert [c.elem_id for c in events[0].outputs[-2:]] == ['mfx-loaded', 'mfx-refused'] and out[-2:] == ['1', gr.skip()]
    for f in events:
        assert {g.fn.__name__ for g in fns.values() if g.trigger_after == f._id and g.fn is not None} == {'verify'}
    # a seventh stage (the button is off at six, but Enter on it when focused still sends the click) is refused and
    # said (Gradio's page shows no toast of an answer outside the queue: a queued step shows what the history kept)
    six = spec_form.add_stage(spec_form.add_stage(p))
    w = Workbench()
    edit(None, w, *_values(fill(six), n))
    out = staged[('add_stage', None)](None, w, *_values(fill(six), n))
    problem = refusal_of(out, w)
    assert 'at most 6 stages' in problem['message'] and len(w.current()['stages']) == 6
    assert out[-2] == gr.skip() and w.loaded == 0  # ui.loaded unchanged: nothing follows a refusal


def test_a_preset_or_scratch_replaces_the_design_in_one_unqueued_answer(app):
    """A preset picked or "start from scratch" filled the form and counted it in queued chained events, which an
    Undo (answered outside the queue) could overtake; now one answer, and still a replacement one undo away."""

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    edit, _, fill, n = app
    fns = {getattr(f.fn, '__name__', ''): f for f in build_demo().fns.values()}
    events = [fns['compose_preset_picked'], fns['compose_scratch_spec']]  # through ctx.load_spec, as every load
    assert all(not f.queue for f in events)
    picked, scratch = (f.fn for f in events)
    p = catalog.get_preset('poolformer_s12')
    w = Workbench()
    edit(None, w, *_values(fill(p), n))
    out = scratch(None, w)
    design = out[len(fill(p)) + 1]
    assert (
        design['name'] == catalog.scratch_spec()['name']
        and w.notice == f'Replaced poolformer_s12 with {design["name"]}'
    )
    assert w.undo()['name'] == 'poolformer_s12'
    out = picked(None, w, 'caformer_s18')
    assert out[len(fill(p)) + 1]['name'] == 'caformer_s18'
    assert out[len(fill(p)) + 2]['macs'] == prof.profile(catalog.parse_spec(catalog.get_preset('caformer_s18')))['macs']
    problem = refusal_of(picked(None, w, '../../etc/passwd'), w)  # a crafted name: refused by name, nothing changes
    assert 'not a preset' in problem['message'] and not problem['warning']


def test_a_design_from_another_tab_is_shown_and_counted_in_one_unqueued_answer(app):
    """A pin loaded, a Search or Compare click, Train's adapt and a spec upload stored the design, then filled the
    form and counted the form in queued chained events: an Undo clicked meanwhile (answered outside the queue) ran
    between them, and the count committed the undone design, so the loaded one was lost. Each is one answer now,
    and every tab that follows the design follows it, whichever tab was built first."""
    import gradio as gr

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    edit, _, fill, n = app
    fns = build_demo().fns
    loads = [f for f in fns.values() if getattr(f.fn, '__name__', '').startswith('compose_')]
    targets = sorted(t for f in loads for _, t in f.targets)  # preset, scratch, pin, Compare, Search x2, adapt, upload
    assert targets == ['change', 'change', 'click', 'click', 'click', 'input', 'select', 'upload']
    assert all(not f.queue for f in loads)
    loaded = loads[0].outputs[-2]  # set by a design loaded, not by a load refused
    assert loaded.elem_id == 'mfx-loaded'
    on_loaded = next(g for g in fns.values() if [(t[0], t[1]) for t in g.targets] == [(loaded._id, 'change')])
    for f in loads:
        ids = {getattr(c, 'elem_id', None) for c in f.outputs}
        assert {'mfx-s1-dim', 'mfx-name', 'mfx-totals'} <= ids  # the form and its counts
        assert f.outputs[-2] is loaded and getattr(f.outputs[-1], 'elem_id', None) == 'mfx-refused'  # see below
        followers = {g.fn.__name__: g for g in fns.values() if g.trigger_after == f._id and g.fn is not None}
        followers |= {g.fn.__name__: g for g in fns.values() if g.trigger_after == on_loaded._id and g.fn}
        assert {'verify', 'share_values', 'readiness', 'scale_values', '_stale', 'measure_target'} <= set(followers)
        # review: two designs loaded in quick succession left the share link and the Train tab's download on the
        # first (a chained step's default mode, 'once', skips a run while the previous one is pending)
        assert all(g.trigger_mode == 'always_last' for g in followers.values())
    edits = [f for f in fns.values() if getattr(f.fn, '__name__', '') == 'refresh' and not f.queue]
    for f in edits:  # the Measure tab's "Measure times <design>" line followed loads only, not edits
        assert f.outputs[-1] is loaded  # followed by on_loaded's followers, measure_target among them

    pin_load = next(f for f in loads if any(getattr(c, 'elem_id', None) == 'mfx-pin-status' for c in f.outputs))
    p = catalog.get_preset('poolformer_s12')
    w = Workbench()
    edit(None, w, *_values(fill(p), n))
    pins = [{'name': 'mine', 'spec': catalog.get_preset('caformer_s18')}]
    out = pin_load.fn(None, w, pins, 'mine')
    design, report = out[len(fill(p)) + 1], out[len(fill(p)) + 2]
    assert design['name'] == 'caformer_s18' and out[-3] == r'Loaded the pin mine\.' and out[-1] == gr.skip()
    assert out[-2] == str(w.loaded) == '1'  # the tabs that follow the design follow this field's change
    assert report['macs'] == prof.profile(catalog.parse_spec(catalog.get_preset('caformer_s18')))['macs']
    assert w.notice == 'Replaced poolformer_s12 with caformer_s18' and w.undo()['name'] == 'poolformer_s12'
    assert 'Choose a pinned design' in refusal_of(pin_load.fn(None, w, pins, 'theirs'), w)['message']
    assert w.current()['name'] == 'poolformer_s12'  # the design shown (after the undo) stays
    # shown by a queued step (Gradio's page shows no toast of an answer outside the queue): the hidden field's
    # change takes the refusals the history kept, each once
    show = next(g for g in fns.values() if g.fn is not None and g.fn.__name__ == 'show_problem')
    assert show.queue and [(t[0], t[1]) for t in show.targets] == [(pin_load.outputs[-1]._id, 'change')]
    w.refuse({'message': 'first', 'title': 'Error', 'warning': False})
    w.refuse({'message': 'second', 'title': 'Cannot load', 'warning': False})
    with pytest.warns(UserWarning, match='first'), pytest.raises(gr.Error, match='second'):
        show.fn(w)
    assert w.take_refusals() == [] and show.fn(w) is None


@pytest.mark.parametrize('row', [{'a': 1}, [[1]], [], [None]])
def test_a_crafted_trials_table_click_is_refused_by_name(app, row):
    """Review: a stranger's select event on the Search tab's trials table with a row that is not a list starting
    with a trial number raised an uncaught KeyError or TypeError: a blank "Error" and a traceback in the log."""
    import gradio as gr

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    f = next(f for f in build_demo().fns.values() if getattr(f.fn, '__name__', '') == 'compose_from_row')
    evt = gr.SelectData(None, {'index': [0, 0], 'value': 1, 'row_value': row})
    n_form = len(f.inputs) - 2  # the history and the space's text come first
    w = Workbench()
    problem = refusal_of(f.fn(None, evt, w, '{}', *[None] * n_form), w)  # shown by the queued step after
    assert re.search('trial number|not in this study', problem['message']) and not problem['warning']


def test_a_link_is_shown_and_counted_in_one_unqueued_answer_with_a_history_of_its_own(app):
    """A page opened with a link (?spec=, ?preset=) stored the design, then filled the form and counted it in three
    queued events while the form stayed dimmed; now one answer outside the queue, followed by the verification and
    every tab that follows the design. The link's design starts the visitor's history: no notice, no undo back to
    the design the page was built with. Without a link nothing changes; one that cannot be read is refused."""
    from types import SimpleNamespace

    import gradio as gr

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo
    from explorer.core.share import encode_share

    _, _, fill, _ = app
    fns = build_demo().fns
    f = next(f for f in fns.values() if getattr(f.fn, '__name__', '') == 'link_restored')
    assert not f.queue and [t for _, t in f.targets] == ['load']
    assert 'verify' in {g.fn.__name__ for g in fns.values() if g.trigger_after == f._id and g.fn is not None}
    # the tabs that follow the design follow a link restored (a hidden field's change), so that a page opened
    # without a link, or with one refused, starts no queued step for them
    ids = [getattr(c, 'elem_id', None) for c in f.outputs]
    assert ids[-1] == 'mfx-linked'
    linked = next(g for g in fns.values() if [(t[0], t[1]) for t in g.targets] == [(f.outputs[-1]._id, 'change')])
    followers = {g.fn.__name__ for g in fns.values() if g.trigger_after == linked._id and g.fn is not None}
    assert {'share_values', 'readiness', 'scale_values', '_stale', 'measure_target'} <= followers

    mine = copy.deepcopy(catalog.get_preset('convformer_s18'))
    mine['stages'][1]['depth'], mine['name'] = 4, 'my_convformer'
    for query, want in (({'spec': encode_share(mine)}, mine), ({'preset': 'poolformer_s12'}, None)):
        want = want or catalog.get_preset('poolformer_s12')
        out = f.fn(SimpleNamespace(query_params=query), Workbench())
        assert out[-2:] == [gr.skip(), 'restored']
        w, design, report = out[len(fill(want)) : len(fill(want)) + 3]
        assert design['name'] == want['name'] == out[ids.index('mfx-name')]['value']
        assert report['macs'] == prof.profile(catalog.parse_spec(want))['macs']
        assert w.current()['name'] == want['name'] and not w.can_undo and not w.notice
    out = f.fn(SimpleNamespace(query_params={}), Workbench())  # no link: nothing changes, nothing follows
    assert all(o == gr.skip() for o in out)
    for query in ({'preset': 'nope'}, {'spec': '@@@@'}):  # refused: a warning; the page keeps its design and address
        w = Workbench()
        problem = refusal_of(f.fn(SimpleNamespace(query_params=query), w), w, n_after=1)
        assert problem['warning'] and problem['message'].startswith('Could not restore the link')


def test_a_link_restored_after_the_pins_keeps_their_names_reserved(app):
    """The pins kept in the browser are restored by a queued step as the page loads, which reserves their
    generated names in the session's history ('caformer_s18-mod1' stays the pin's network); a link restored after
    it started a fresh history and dropped the reservations, so the next edit to another network was named
    'caformer_s18-mod1' too: one name for two networks in the chart and the pins."""
    from types import SimpleNamespace

    from explorer.app.history import Workbench, reserve_pin_names, restore_pins
    from explorer.app.main import build_demo

    _, _, fill, _ = app
    f = next(f for f in build_demo().fns.values() if getattr(f.fn, '__name__', '') == 'link_restored')
    pinned = copy.deepcopy(catalog.get_preset('caformer_s18'))
    pinned['stages'][0]['dim'], pinned['name'] = 96, 'caformer_s18-mod1'
    pins, _ = restore_pins([{'name': pinned['name'], 'spec': pinned}])
    w = Workbench()
    reserve_pin_names(w.names, pins)  # the pins' restore ran first
    out = f.fn(SimpleNamespace(query_params={'preset': 'caformer_s18'}), w)
    shown = out[len(fill(catalog.get_preset('caformer_s18')))]
    assert shown.current()['name'] == 'caformer_s18'
    other = copy.deepcopy(catalog.get_preset('caformer_s18'))
    other['stages'][0]['dim'] = 128
    assert shown.name_edit(other, False) == 'caformer_s18-mod2'  # mod1 is the pin's network
    assert shown.name_edit(pinned, False) == 'caformer_s18-mod1'


def test_the_other_tabs_follow_an_edit_only_when_it_changed_the_design(app):
    """Every edit event ran the tabs that follow the design (the share link, the Train tab, Predict's "the
    composer's design changed", which takes down the composer model's results): a depth field clicked and left
    unchanged, Enter pressed again, an invalid value or an Undo with nothing to undo cleared Predict's results.
    An edit, undo or redo now sets the hidden field those tabs follow (ui.loaded) only when the design changed."""
    import gradio as gr

    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    _, _, fill, n = app
    fns = build_demo().fns
    named = {}
    for f in fns.values():
        named.setdefault(getattr(f.fn, '__name__', ''), []).append(f)
    recounts = [f for f in named['refresh'] if hasattr(f.fn, '__wrapped__')]  # an edit's, a rename's
    cells = {f._id: {c.cell_contents for c in f.fn.__wrapped__.__closure__ or ()} for f in recounts}
    edit = next(f for f in recounts if 'edit' in cells[f._id] and 'rename' not in cells[f._id])
    (undo, _), (redo,) = named['undo'], named['redo']  # Undo and the notice's Undo
    for f in (edit, undo, redo):
        assert f.outputs[-1].elem_id == 'mfx-loaded'
        assert {g.fn.__name__ for g in fns.values() if g.trigger_after == f._id and g.fn is not None} == {'verify'}

    p = catalog.get_preset('poolformer_s12')
    w = Workbench()
    assert edit.fn(None, w, *_values(fill(p), n))[-1] == '1'  # the first design
    assert edit.fn(None, w, *_values(fill(p), n))[-1] == gr.skip()  # the field left unchanged
    deeper = copy.deepcopy(p)
    deeper['stages'][0]['depth'] = 3
    out = edit.fn(None, w, *_values(fill(deeper), n))
    assert out[-1] == '2' and w.current()['name'] == 'poolformer_s12-mod1'
    broken = copy.deepcopy(deeper)
    broken['stages'][0]['dim'] = -5
    assert edit.fn(None, w, *_values(fill(broken), n))[-1] == gr.skip() and w.invalid  # an invalid value
    assert undo.fn(None, w, *_values(fill(broken), n))[-1] == gr.skip()  # back to the design shown: no change
    assert undo.fn(None, w, *_values(fill(deeper), n))[-1] == '3' and w.current()['name'] == 'poolformer_s12'
    assert undo.fn(None, w, *_values(fill(p), n))[-1] == gr.skip()  # nothing to undo
    assert redo.fn(None, w)[-1] == '4' and redo.fn(None, w)[-1] == gr.skip()


def test_a_presets_name_typed_for_another_network_is_refused_at_the_field(app):
    """A review: CAFormer-S18 renamed 'poolformer_s12' was taken, pinned and plotted in Compare as 'yours:
    poolformer_s12' at CAFormer-S18's MACs, beside the real PoolFormer points. A preset's name is taken by its
    network: typed for another one it is refused at the field (the README's "an already-used name is refused")."""
    from explorer.app.history import Workbench
    from explorer.app.main import build_demo

    _, _, fill, n = app
    fns = build_demo().fns
    recounts = [
        f.fn for f in fns.values() if getattr(f.fn, '__name__', '') == 'refresh' and hasattr(f.fn, '__wrapped__')
    ]
    rename = next(f for f in recounts if 'rename' in {c.cell_contents for c in f.__wrapped__.__closure__})
    for design, typed, refused in (
        ('caformer_s18', 'poolformer_s12', True),
        ('poolformer_s12', 'poolformer_s12', False),  # its own network
        ('caformer_s18', 'my_caformer', False),
    ):
        spec = catalog.get_preset(design)
        w = Workbench()
        rename(None, w, *_values(fill(spec), n))  # the design shown, counted
        out = rename(None, w, *_values(fill({**spec, 'name': typed}), n))
        assert w.invalid is refused and (w.current()['name'] == typed) is not refused, (design, typed)
        assert ('poolformer_s12 is a published preset, another network' in str(out)) is refused


def refusal_of(out: list, w, n_after: int = 0) -> dict:
    """The one refusal a load's answer kept in the history w: nothing else changed (every output skipped but the
    history), and the hidden field ui.refused got the new value whose change shows it (then n_after outputs)."""
    import gradio as gr

    end = len(out) - n_after
    assert out[end - 1] == str(w.refused)
    assert all(o is w or o == gr.skip() for o in out[: end - 1] + out[end:])
    (problem,) = w.take_refusals()
    return problem
