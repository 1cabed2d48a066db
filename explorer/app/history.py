"""The composer's memory as plain data: the undo/redo history of the design and the names of modified designs.

Pure Python (no gradio), so the rules are tested without a server. A `Workbench` lives in one browser session's
gr.State (it deep-copies).

Names. A design is named after where it came from (a preset, a search trial, a name the user typed). An edit that
changes the network gives it that name with a suffix, `caformer_s18-mod1`, `-mod2`, ... one number per distinct
network, so the same name never stands for two networks in one session: editing back to the original network gives
the original name back, and a network met before gets its earlier number again. A name the user types is kept as
it is for that network; a further edit numbers from it (`my_net-mod1`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from explorer.core.spec import name_problem, network_key

HISTORY_STEPS = 100  # undo steps kept (the brief asks for at least 50)
MAX_NAME_CHARS = 100  # ArchSpec's limit on a name
MAX_NAMED = 2_000  # networks remembered by the naming (oldest forgotten first): bounded per session


def same_design(a: dict | None, b: dict | None) -> bool:
    """Same network and same name."""
    if a is None or b is None:
        return a is b
    return a.get('name') == b.get('name') and network_key(a) == network_key(b)


def _suffixed(base: str, k: int, suffix: str | None = None) -> str:
    """`base-mod{k}` (or `base` + `suffix`), the base shortened so the whole name stays within MAX_NAME_CHARS and
    a valid name: a cut between a character and its mark (a keycap's variation selector) made one the spec
    refuses, so every later edit raised instead of recounting."""
    suffix = f'-mod{k}' if suffix is None else suffix
    cut = MAX_NAME_CHARS - len(suffix)
    name = base[:cut] + suffix
    while cut > 1 and name_problem(name) is not None and name_problem(base) is None:
        cut -= 1
        name = base[:cut].rstrip() + suffix
    return name


@dataclass
class Names:
    """Which network each name stands for. bases: base name -> {network key: k} (k = 0: the base name itself,
    k > 0: `base-mod{k}`); auto: each generated name -> its base; owner: each name given -> its network key."""

    bases: dict[str, dict[str, int]] = field(default_factory=dict)
    auto: dict[str, str] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)

    def base_of(self, name: str) -> str:
        return self.auto.get(name, name)

    def typed(self, name: str, key: str) -> str:
        """The user typed `name` for the network `key`: it is that network's name from now on."""
        self.auto.pop(name, None)
        self.bases[name] = {k: n for k, n in self.bases.get(name, {}).items() if n != 0}
        self.bases[name][key] = 0
        self.owner[name] = key
        self._trim()
        return name

    def name_for(self, name: str, key: str) -> str:
        """The name for network `key` reached from a design called `name` (an edit, or a design loaded with this
        name): the base name for the network first seen under it, `base-mod{k}` for every other network."""
        base = self.base_of(name)
        known = self.bases.setdefault(base, {})
        if key not in known:  # the base name while no network holds it (restored pins may hold only -modN names)
            known[key] = 0 if 0 not in known.values() else max(known.values()) + 1
        k = known[key]
        out = base if k == 0 else _suffixed(base, k)
        if k:
            self.auto[out] = base
        self.owner[out] = key
        self._trim()
        return out

    def reserve(self, name: str, key: str) -> None:
        """A restored pin's generated name `base-mod{k}` stays its network's: the session's next edits number
        past it (they handed out 'caformer_s18-mod1' again, for another network, so a chart showed one name for
        two). A name already used for another network here is left alone."""
        m = re.fullmatch(r'(.+)-mod([1-9][0-9]{0,5})', name)
        if not m:
            return
        base, k = m.group(1), int(m.group(2))
        known = self.bases.setdefault(base, {})
        if key not in known and k not in known.values() and self.owner.get(name, key) == key:
            known[key] = k
            self.auto[name], self.owner[name] = base, key
            self._trim()

    def _trim(self) -> None:
        while sum(len(v) for v in self.bases.values()) > MAX_NAMED and len(self.bases) > 1:
            self.bases.pop(next(iter(self.bases)))
        for names in (self.auto, self.owner):
            while len(names) > MAX_NAMED:
                names.pop(next(iter(names)))


@dataclass
class Workbench:
    """Undo/redo of the composition plus the naming.

    past: the committed designs, oldest first; past[-1] is the one shown. future: the designs undone, the next
    redo last. Each entry is {'spec': spec dict, 'label': what made it}. invalid: the form shows an invalid edit
    that is not committed. notice: a replacement to offer an undo for ('Replaced a with b'), or ''. change: the
    design the last edit changed, (name, params, MACs), until another commit. refusals: messages of loads refused
    (an unreadable upload, a link), kept until the page shows them.
    """

    steps: int = HISTORY_STEPS
    past: list[dict] = field(default_factory=list)
    future: list[dict] = field(default_factory=list)
    names: Names = field(default_factory=Names)
    invalid: bool = False
    notice: str = ''
    change: tuple | None = None  # the last edit's design before it: (name, params, MACs), for the change line
    refusals: list[dict] = field(default_factory=list)  # refused loads not shown yet (at most 5, the newest)
    refused: int = 0  # loads refused so far: the value of the page field whose change shows them
    loaded: int = 0  # changes of the design shown so far (loads, edits, undos): the page field the tabs follow

    def refuse(self, problem: dict) -> str:
        """Keep a refused load's message to show; returns the page field's new value (its change shows it)."""
        self.refusals = [*self.refusals, problem][-5:]
        self.refused += 1
        return str(self.refused)

    def load(self) -> str:
        """Count a design loaded; returns the page field's new value (the tabs that follow the design follow it)."""
        self.loaded += 1
        return str(self.loaded)

    def take_refusals(self) -> list[dict]:
        """The refusals not shown yet, oldest first; none are kept."""
        out, self.refusals = self.refusals, []
        return out

    def current(self) -> dict | None:
        return self.past[-1]['spec'] if self.past else None

    @property
    def can_undo(self) -> bool:
        return len(self.past) > 1

    @property
    def can_redo(self) -> bool:
        return bool(self.future)

    def name_edit(self, spec: dict, typed: bool) -> str:
        """The name `spec` gets: the typed name when the user typed one, else the name the naming rules give
        it (see the module docstring), relative to the design shown now."""
        key = network_key(spec)
        if typed:
            return self.names.typed(spec['name'], key)
        return self.names.name_for(spec['name'], key)

    def name_taken(self, name: str, spec: dict) -> bool:
        """Whether this session already gave `name` to a network other than `spec`'s."""
        owner = self.names.owner.get(name)
        return owner is not None and owner != network_key(spec)

    def commit(self, spec: dict, label: str = 'edit') -> bool:
        """Record `spec` as the design shown. A design equal to the current one records nothing (False); a new
        one clears the redo list and drops the oldest step beyond `steps`."""
        self.invalid = False
        if same_design(self.current(), spec):
            return False
        self.past.append({'spec': copy.deepcopy(spec), 'label': label})
        self.future.clear()
        del self.past[: max(0, len(self.past) - self.steps - 1)]  # `steps` undos back from the newest
        return True

    def undo(self) -> dict | None:
        """The design before the current one (now current), or None when there is none."""
        self.notice, self.invalid = '', False
        if not self.can_undo:
            return None
        self.future.append(self.past.pop())
        return self.current()

    def redo(self) -> dict | None:
        """The design last undone (now current), or None when there is none."""
        self.notice, self.invalid = '', False
        if not self.future:
            return None
        self.past.append(self.future.pop())
        return self.current()

    def undo_label(self) -> str:
        return self.past[-1]['label'] if self.can_undo else ''

    def redo_label(self) -> str:
        return self.future[-1]['label'] if self.future else ''


# ---- pins: designs kept aside to compare -----------------------------------------------------------------
MAX_PINS = 20  # a list a person can read; the Compare tab plots each pin


def pin(pins: list[dict], spec: dict, limit: int = MAX_PINS) -> tuple[list[dict], str]:
    """(new pin list, plain-text message) after pinning `spec`. Each pin is {'name': str, 'spec': dict}. Names in
    the list stay unique (a second design of the same name is pinned as 'name (2)', its spec renamed to match);
    a network already pinned is not pinned twice; at most `limit` pins."""
    key = network_key(spec)
    for p in pins:
        if network_key(p['spec']) == key:
            return pins, f'Already pinned as {p["name"]}.'
    if len(pins) >= limit:
        return pins, f'{limit} designs are pinned, the most kept: unpin one first.'
    taken = {p['name'] for p in pins}
    name, k = spec['name'], 2
    while name in taken:
        name, k = _suffixed(spec['name'], k, f' ({k})'), k + 1
    kept = {**copy.deepcopy(spec), 'name': name}
    return [*pins, {'name': name, 'spec': kept}], f'Pinned {name} ({len(pins) + 1} of at most {limit}).'


def restore_pins(saved, limit: int = MAX_PINS) -> tuple[list[dict], str]:
    """(pins, plain-text message) from what a browser kept (gr.BrowserState: request data like any other). Each
    entry's spec is checked as any spec is and pinned again (so names stay unique and a network is kept once); an
    entry that is not a valid pin is dropped and counted, and at most `limit` are read."""
    from explorer.core import catalog
    from explorer.core.spec import MAX_JSON_DEPTH, MAX_JSON_ITEMS, SpecError, json_excess

    if not saved:
        return [], ''
    if not isinstance(saved, list) or json_excess(saved, MAX_JSON_DEPTH + 2, MAX_JSON_ITEMS * limit):
        return [], 'The pins this browser kept could not be read: none restored.'
    pins, dropped = [], max(0, len(saved) - limit)
    for entry in saved[:limit]:
        try:
            # published figures only where the architecture is a preset's: a browser can send any `meta`
            spec = catalog.with_published_meta(catalog.parse_spec(entry['spec'])).to_dict()
        except (SpecError, TypeError, KeyError, ValueError):
            dropped += 1
            continue
        pins, _ = pin(pins, spec, limit)
    kept = f'Restored {len(pins)} pin{"s" if len(pins) != 1 else ""} this browser kept'
    return pins, kept + (f'; {dropped} could not be read.' if dropped else '.')


def reserve_pin_names(names: Names, pins: list[dict]) -> None:
    """Restored pins' generated names belong to their networks from now on (Names.reserve)."""
    for p in pins:
        names.reserve(p['name'], network_key(p['spec']))


def unpin(pins: list[dict], name: str) -> list[dict]:
    """The pin list without the pin called `name` (unchanged when there is none)."""
    return [p for p in pins if p['name'] != name]


def find_pin(pins: list[dict], name: str) -> dict | None:
    """The spec pinned as `name`, or None."""
    return next((copy.deepcopy(p['spec']) for p in pins if p['name'] == name), None)
