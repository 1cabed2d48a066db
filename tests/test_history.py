"""The composer's undo/redo history, the names of modified designs and the pin list (explorer.app.history)."""

from __future__ import annotations

import copy

from explorer.app.history import HISTORY_STEPS, MAX_NAME_CHARS, MAX_PINS, Workbench, find_pin, network_key, pin, unpin
from explorer.core.spec import ArchSpec


def design(dim: int = 64, name: str = 'caformer_s18') -> dict:
    return {'name': name, 'img_size': 224, 'stages': [{'mixer': 'pooling', 'depth': 2, 'dim': dim}]}


def edited(w: Workbench, spec: dict, typed: bool = False) -> dict:
    """What the composer does on a valid edit: name it, commit it."""
    spec = {**spec, 'name': w.name_edit(spec, typed)}
    w.commit(spec)
    return spec


def test_undo_and_redo_walk_the_history_both_ways():
    w = Workbench()
    for dim in (64, 96, 128):
        w.commit(design(dim))
    assert w.undo()['stages'][0]['dim'] == 96
    assert w.undo()['stages'][0]['dim'] == 64
    assert w.undo() is None and not w.can_undo  # nothing before the first design
    assert w.redo()['stages'][0]['dim'] == 96
    assert w.redo()['stages'][0]['dim'] == 128
    assert w.redo() is None and not w.can_redo


def test_a_new_edit_clears_redo():
    w = Workbench()
    for dim in (64, 96, 128):
        w.commit(design(dim))
    w.undo()
    assert w.can_redo
    w.commit(design(100))
    assert not w.can_redo and w.redo() is None
    assert w.undo()['stages'][0]['dim'] == 96


def test_the_same_design_twice_is_one_step():
    w = Workbench()
    assert w.commit(design(64)) is True
    assert w.commit(copy.deepcopy(design(64))) is False
    assert w.commit({**design(64), 'meta': {'top1': 1.0}}) is False  # published metadata is not the network
    assert not w.can_undo


def test_history_keeps_at_least_fifty_steps_and_drops_the_oldest_beyond_its_limit():
    assert HISTORY_STEPS >= 50
    w = Workbench()
    for dim in range(1, HISTORY_STEPS + 11):  # 10 more designs than steps
        w.commit(design(dim))
    undone = 0
    while w.undo() is not None:
        undone += 1
    assert undone == HISTORY_STEPS
    assert w.current()['stages'][0]['dim'] == 10  # the design 100 steps back; the 9 before it are gone
    assert [w.redo()['stages'][0]['dim'] for _ in range(3)] == [11, 12, 13]


def test_undo_clears_the_replacement_notice():
    w = Workbench()
    w.commit(design(64))
    w.commit(design(96, 'my_metaformer'), label='Start from scratch')
    w.notice = 'Replaced caformer_s18 with my_metaformer'
    assert w.undo_label() == 'Start from scratch'
    assert w.undo()['name'] == 'caformer_s18' and w.notice == ''
    assert w.redo_label() == 'Start from scratch'


def test_an_edit_suffixes_the_name_once_per_distinct_network():
    w = Workbench()
    preset = edited(w, design(64))
    assert preset['name'] == 'caformer_s18'  # the first network seen under a name keeps it
    a = edited(w, design(96))
    assert a['name'] == 'caformer_s18-mod1'
    b = edited(w, {**design(128), 'name': a['name']})  # the form now shows the suffixed name
    assert b['name'] == 'caformer_s18-mod2'
    back = edited(w, {**design(96), 'name': b['name']})
    assert back['name'] == 'caformer_s18-mod1'  # a network met before gets its earlier name
    orig = edited(w, {**design(64), 'name': back['name']})
    assert orig['name'] == 'caformer_s18'  # edited back to the preset: the preset's name


def test_a_typed_name_is_kept_and_numbered_from_by_later_edits():
    w = Workbench()
    edited(w, design(64))
    edited(w, design(96))
    mine = edited(w, design(96, 'my_net'), typed=True)
    assert mine['name'] == 'my_net'
    assert edited(w, design(128, 'my_net'))['name'] == 'my_net-mod1'
    # typing a name that looks generated makes it a plain name of its own
    typed = edited(w, design(200, 'caformer_s18-mod1'), typed=True)
    assert typed['name'] == 'caformer_s18-mod1'
    assert edited(w, design(256, 'caformer_s18-mod1'))['name'] == 'caformer_s18-mod1-mod1'


def test_a_name_already_given_to_another_network_is_known_as_taken():
    w = Workbench()
    preset = edited(w, design(64))
    mod = edited(w, design(96))
    assert w.name_taken('caformer_s18', mod) and w.name_taken('caformer_s18-mod1', preset)
    assert not w.name_taken('caformer_s18', preset) and not w.name_taken('fresh_name', mod)


def test_a_loaded_design_of_a_known_name_but_another_network_is_suffixed():
    w = Workbench()
    edited(w, design(64, 'trial'))
    assert edited(w, design(64, 'search_t3'))['name'] == 'search_t3'  # a new name is taken as it comes
    assert edited(w, design(512, 'trial'))['name'] == 'trial-mod1'  # 'trial' already names another network


def test_suffixed_names_stay_within_the_spec_limit():
    w = Workbench()
    long = 'x' * MAX_NAME_CHARS
    edited(w, design(64, long))
    name = edited(w, design(96, long))['name']
    assert len(name) == MAX_NAME_CHARS and name.endswith('-mod1')
    assert edited(w, design(128, name))['name'].endswith('-mod2')  # the shortened name still knows its base


def test_network_key_ignores_name_and_meta_only():
    assert network_key(design(64, 'a')) == network_key({**design(64, 'b'), 'meta': {'x': 1}})
    assert network_key(design(64)) != network_key(design(65))


def test_pins_keep_unique_names_refuse_duplicates_and_cap_the_list():
    pins, msg = pin([], design(64))
    assert [p['name'] for p in pins] == ['caformer_s18'] and msg.startswith('Pinned caformer_s18')
    same, msg = pin(pins, design(64, 'renamed'))
    assert same == pins and msg == 'Already pinned as caformer_s18.'
    pins, _ = pin(pins, design(96))  # another network under the same name
    pins, _ = pin(pins, design(128))
    assert [p['name'] for p in pins] == ['caformer_s18', 'caformer_s18 (2)', 'caformer_s18 (3)']
    assert pins[1]['spec']['name'] == 'caformer_s18 (2)'  # the pinned spec carries its list name
    assert find_pin(pins, 'caformer_s18 (3)')['stages'][0]['dim'] == 128
    assert find_pin(pins, 'nothing') is None
    pins = unpin(pins, 'caformer_s18 (2)')
    assert [p['name'] for p in pins] == ['caformer_s18', 'caformer_s18 (3)']
    full = []
    for dim in range(1, MAX_PINS + 1):
        full, _ = pin(full, design(dim, f'd{dim}'))
    assert len(full) == MAX_PINS
    again, msg = pin(full, design(999, 'one_more'))
    assert again == full and f'{MAX_PINS} designs are pinned' in msg


def test_pins_a_browser_kept_are_checked_and_pinned_again():
    """What comes back from the browser's localStorage is request data: each spec is checked, names stay unique,
    a network is kept once, at most MAX_PINS are read, and what could not be read is counted, not raised."""
    from explorer.app.history import restore_pins
    from explorer.core.catalog import parse_spec

    kept, _ = pin([], parse_spec(design(64)).to_dict())  # as the composer pins them: whole specs
    kept, _ = pin(kept, parse_spec(design(96)).to_dict())
    pins, msg = restore_pins(copy.deepcopy(kept))
    assert pins == kept and msg == 'Restored 2 pins this browser kept.'
    bad = {'name': 'x', 'spec': {**design(64), 'stages': []}}  # no stage: not a network
    pins, msg = restore_pins([kept[0], bad, 'text', {'name': 'no spec'}, kept[0], kept[1]])
    assert [p['name'] for p in pins] == ['caformer_s18', 'caformer_s18 (2)']  # the repeat is kept once
    assert msg == 'Restored 2 pins this browser kept; 3 could not be read.'
    many = [{'name': f'd{i}', 'spec': design(16 * (i + 1), f'd{i}')} for i in range(MAX_PINS + 5)]
    pins, msg = restore_pins(many)
    assert len(pins) == MAX_PINS and msg.endswith('; 5 could not be read.')
    deep: list = []
    for _ in range(100):
        deep = [deep]
    for saved in ({'name': 'x'}, 'pins', deep):
        assert restore_pins(saved) == ([], 'The pins this browser kept could not be read: none restored.')
    assert restore_pins([]) == ([], '') and restore_pins(None) == ([], '')


def test_the_change_line_says_under_a_tenth_of_a_percent_rather_than_zero():
    from explorer.app.compose import _change_html

    html = _change_html(('a', 1_000_000, 2_000_000), {'params': 1_000_100, 'macs': 1_000_000})
    assert 'Change from a: +100 params (&lt;0.1%), −1M MACs (−50.0%)' in html
    assert _change_html(('a', 5, 5), {'params': 5, 'macs': 5}) == '' and _change_html(None, {}) == ''


def test_restored_pins_keep_published_figures_only_for_a_presets_architecture():
    """A browser sent back a pin of its own design claiming top-1 99.9, and the Compare chart drew it as 'published
    for this architecture' (found by a red-team pass)."""
    from explorer.app.history import restore_pins
    from explorer.core.catalog import get_preset

    fake = {**design(64, 'fakey'), 'meta': {'top1': 99.9, 'family': 'caformer'}}
    preset = {**get_preset('poolformer_s12'), 'meta': {'top1': 99.9}}  # a preset's architecture: its own figures
    pins, _ = restore_pins([{'name': 'a', 'spec': fake}, {'name': 'b', 'spec': preset}])
    assert pins[0]['spec']['meta'] == {}
    assert pins[1]['spec']['meta'] == get_preset('poolformer_s12')['meta'] and pins[1]['spec']['meta']['top1'] != 99.9


def test_restored_pins_names_are_not_handed_out_again_for_other_networks():
    """A pin restored from the browser named 'caformer_s18-mod1' (S1 width 96): the new session's first edit to
    another network was named 'caformer_s18-mod1' too, so the chart and the diff lists showed one name for two."""
    from explorer.app.history import reserve_pin_names, restore_pins

    pins, _ = restore_pins([{'name': 'caformer_s18-mod1', 'spec': {**design(96), 'name': 'caformer_s18-mod1'}}])
    w = Workbench()
    reserve_pin_names(w.names, pins)
    assert edited(w, design(64))['name'] == 'caformer_s18'
    assert edited(w, design(128))['name'] == 'caformer_s18-mod2'  # mod1 is the pin's network
    full = ArchSpec.from_dict(design(96)).to_dict()  # as the composer holds a design, and as pins keep it
    assert edited(w, {**full, 'name': 'caformer_s18-mod2'})['name'] == 'caformer_s18-mod1'  # the pin's network
