"""The "Search" tab: a design space (a shipped one, edited as JSON, with the constraints and objectives as form
fields), a search that runs as a background job with progress and stop, and the trials as a scatter with the
Pareto frontier and the published presets. Clicking a point (or a frontier row) opens that design in Compose.

Layout and wiring only: the search is explorer.search.study.run_search (the same as `explorer search`), the
figure explorer.viz.search. Studies live in the default storage (a SQLite file in the runs folder), named after
their space: a page reload or a server restart shows the study again, and the next search continues it. On a
shared server, visitors searching the same space share its study (designs only; nothing personal is stored).

A space with the trained-accuracy objective (or an accuracy constraint) trains every trial on Fashion-MNIST
(explorer.search.accuracy, through explorer.train's loop). Such a search is bounded before anything runs
(check_training: at most EXPLORER_MAX_TRAINED_TRIALS trials, each trial's budget within this server's limits), holds
the server's one training slot (the Train tab's: one CPU-heavy training at a time) and ends at the next training
step when Stop is pressed, the page goes away or the server's time limit for one training (EXPLORER_MAX_TRAIN_S)
has passed; the trials completed by then stay in the study.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator

import gradio as gr

from explorer.app.context import download_file, endpoint, md_text, public_text, user_error
from explorer.core.spec import SpecError
from explorer.measure.guard import Limits
from explorer.measure.units import whole_number
from explorer.search.space import MIXER_LETTER, SpaceError, design, load_space, parse_space, space_json, space_names
from explorer.train.data import DatasetNotFound, find_dataset
from explorer.train.runner import HEARTBEAT_S, TRAINING_SLOT, background

PRIVATE = dict(api_visibility='private')
DEFAULT_SPACE = 'metaformer_hybrid'
_SLOT = threading.Lock()  # one analytic search at a time on this server (they share the CPU with everything else)
# an analytic search waits this long for the one before it: one of EXPLORER_MAX_SEARCH_TRIALS (2,000) trials takes
# about a minute on 2 cores (30-36 trials/s into SQLite), and a shorter wait refused searches queued behind it
ANALYTIC_WAIT_S = 150.0
BUSY = 'another search is running on this server (one at a time); try again soon'
PROGRESS_S = 0.25  # /search streams an analytic search's progress at most this often
_STOP: dict[str, threading.Event] = {}  # run id -> its stop flag (gr.State holds the id: plain data)
FORM_LIMITS = (
    ('params_m', 'max params (M; 0: none)'),
    ('gmacs', 'max GMACs (0: none)'),
    ('latency_ms', 'max predicted latency (ms; 0: none)'),
)
METRIC_CHOICES = ['gmacs', 'params_m', 'latency_ms', 'act_mib', 'accuracy']


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or int(raw) <= 0:
        raise SpecError([('', f'{name}={raw!r} must be a positive integer')])
    return int(raw)


def max_trials() -> int:
    """Trials one app request may run: EXPLORER_MAX_SEARCH_TRIALS, default 2,000."""
    return _env_int('EXPLORER_MAX_SEARCH_TRIALS', 2000)


def max_trained_trials() -> int:
    """Trials one app request may train (the accuracy objective): EXPLORER_MAX_TRAINED_TRIALS, default 20."""
    return _env_int('EXPLORER_MAX_TRAINED_TRIALS', 20)


def max_trial_epochs() -> int:
    """Epochs one trained trial may run in the app: EXPLORER_MAX_TRIAL_EPOCHS, default 5."""
    return _env_int('EXPLORER_MAX_TRIAL_EPOCHS', 5)


FMNIST_TRAIN, FMNIST_TEST = 60_000, 10_000  # images in Fashion-MNIST's splits


def max_study_trials() -> int:
    """Trials one study may hold in the app's storage: EXPLORER_MAX_STUDY_TRIALS, default 10,000."""
    return _env_int('EXPLORER_MAX_STUDY_TRIALS', 10_000)


def max_studies_mb() -> int:
    """MiB the app's study database may take on disk: EXPLORER_MAX_STUDIES_MB, default 256. The server keeps
    the finished trials it has read in memory (explorer.search.study._cached): about 7 KiB a trial against about
    3 KiB on disk, so at most about 2.6x this."""
    return _env_int('EXPLORER_MAX_STUDIES_MB', 256)


TRIAL_BYTES = 8 * 2**10  # what a trial may add to the study database, counted generously (about 3 KiB measured)


def check_store(space, trials: int) -> int:
    """Refuse a search that would take its study past EXPLORER_MAX_STUDY_TRIALS trials or the study database
    past EXPLORER_MAX_STUDIES_MB (raises SpaceError naming the figures). Nothing is ever deleted: a full study
    stays readable, and a space under another name starts a study of its own. Returns how many trials the study
    holds: the server's searches seed their sampler with it (see search_events)."""
    from explorer.search.study import storage_bytes, stored_trials

    held, cap = stored_trials(space), max_study_trials()
    if held + trials > cap:
        room = f'add at most {cap - held:,}' if held < cap else 'it is full'
        holds = f'holds {held:,} trials and ' if held else 'is new and '
        raise SpaceError(
            f'{trials:,} trials asked for; the study of this space {holds}this server keeps at most {cap:,} per '
            f'study (EXPLORER_MAX_STUDY_TRIALS): {room}, or search the space under another name to start a new '
            'study'
        )
    size, limit = storage_bytes(), max_studies_mb()
    if size is not None and size + trials * TRIAL_BYTES > limit * 2**20:
        raise SpaceError(
            f"the server's study database takes {size / 2**20:,.1f} MiB and {trials:,} more trials may add "
            f'{trials * TRIAL_BYTES / 2**20:,.1f} MiB: over its limit of {limit:,} MiB (EXPLORER_MAX_STUDIES_MB)'
        )
    return held


def check_training(space, trials: int, limits: Limits | None = None) -> dict:
    """Refuse a training search over this server's limits, before anything is loaded or trained: at most
    max_trained_trials() trials, and each trial's budget (the space's "training" object over
    explorer.search.accuracy.DEFAULTS) within the limits: epochs, train_limit, test_limit, batch_size
    (EXPLORER_MAX_BATCH), time_budget and trials x time_budget (EXPLORER_MAX_TRAIN_S). Returns the budget;
    raises SpaceError naming every field that is wrong, its value and what is allowed."""
    from explorer.search.accuracy import DEFAULTS
    from explorer.search.space import training_errors

    limits = limits or Limits.from_env()
    errors = []
    cap = max_trained_trials()
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= cap:
        errors.append(
            f'trials: {public_text(trials, 20)} is not allowed for a search that trains every trial; '
            f'allowed 1 to {cap} (EXPLORER_MAX_TRAINED_TRIALS)'
        )
    cfg = {**DEFAULTS, **space.training}  # parse_space refused any other field
    errors += [e for e in training_errors(space.training) if e.startswith('training.amp')]  # before the slot
    bounds = (  # field, lowest, highest, whole number, None allowed (and what it means), env var naming the limit
        ('epochs', 0, max_trial_epochs(), False, None, 'EXPLORER_MAX_TRIAL_EPOCHS'),
        ('train_limit', 1, FMNIST_TRAIN, True, 'all 60,000', None),
        ('test_limit', 1, FMNIST_TEST, True, 'all 10,000', None),
        ('batch_size', 1, limits.max_batch, True, None, 'EXPLORER_MAX_BATCH'),
        ('time_budget', 0, limits.max_train_s, False, 'none', 'EXPLORER_MAX_TRAIN_S'),
        ('seed', 0, 2**31 - 1, True, None, None),
        ('min_trials', 1, 1000, True, None, None),
    )
    for key, low, high, whole, none, env in bounds:
        v = cfg[key]
        if v is None and none:
            continue
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, int) or math.isfinite(v))
        ok = number and (low < v if key in ('epochs', 'time_budget') else low <= v) and v <= high
        if not ok or (whole and int(v) != v):
            side = '(0' if key in ('epochs', 'time_budget') else f'[{low:g}'
            allowed = f'{side}, {high:g}]' + (' (whole)' if whole else '') + (f', or null ({none})' if none else '')
            errors.append(
                f'training.{key}: {str(v)[:20]} is not allowed; allowed {allowed}' + (f' ({env})' if env else '')
            )
    budget = cfg['time_budget']
    if not errors and budget is not None and trials * budget > limits.max_train_s:
        errors.append(
            f'trials x training.time_budget: {trials} x {budget:g} s = {trials * budget:,.0f} s is over this '
            f"server's limit of {limits.max_train_s:,g} s for one training (EXPLORER_MAX_TRAIN_S)"
        )
    if errors:
        raise SpaceError('; '.join(errors))
    return cfg


def space_text(name: str) -> str:
    if name not in space_names():
        raise gr.Error(f'{md_text(name, 80)} is not a shipped space', print_exception=False)
    return json.dumps(load_space(name).source, indent=2)


def form_values(text: str) -> list:
    """The form fields (three limits, x objective + direction, y objective + direction) from a space's JSON."""
    try:
        sp = parse_space(text)
    except SpaceError:
        return [gr.skip()] * 7
    limits = [sp.constraints.get(k, {}).get('max') or 0 for k, _ in FORM_LIMITS]  # 0: none, as the fields say
    objs = list(sp.objectives.items()) + [(None, 'minimize')] * (2 - len(sp.objectives))
    return [*limits, objs[0][0], objs[0][1], objs[1][0] or 'none', objs[1][1]]


def with_page_hint(e: SpaceError) -> str:
    """The message of `e`; for a missing calibration that the Measure tab makes (this CPU, float32, batch 1),
    with where to make it on this page."""
    from explorer.app import calibration
    from explorer.search.space import Uncalibrated

    made_here = {'device': calibration.DEVICE, 'dtype': calibration.DTYPE, 'batch_size': calibration.BATCH}
    if isinstance(e, Uncalibrated) and e.latency == made_here:
        return (
            f'{e} (on this page: the Measure tab, "Calibrate this CPU", a few minutes once; or set the objectives '
            'to others than latency_ms and "max predicted latency" to 0)'
        )
    return str(e)


def merged_space(text: str, p_max, g_max, l_max, x_obj, x_dir, y_obj, y_dir):
    """The space JSON with the form's constraints and objectives written into it (form wins). What the form leaves
    as the space has it stays as written (no `constraints: {}` added, no default objectives spelled out, a third
    objective kept): the study is found by the space's text, so the tab, `/search` and `explorer search` fill one
    study for one space file."""
    from explorer.search.space import DEFAULT_OBJECTIVES

    try:
        data = space_json(text) if isinstance(text, str) and len(text) <= 100_000 else None
    except SpaceError as e:
        raise user_error(str(e), title='Bad space') from None
    if not isinstance(data, dict):
        raise user_error('the space must be a JSON object (a shipped space is a good start)', title='Bad space')
    written = data.get('constraints') or {}
    cons = written
    if isinstance(cons, dict):  # else parse_space names what is wrong, in the words /search answers with
        cons = dict(cons)
        for (key, _), value in zip(FORM_LIMITS, (p_max, g_max, l_max)):
            bounds = cons.get(key) or {}
            if not isinstance(bounds, dict):  # {"params_m": 5}: as above (it is {"params_m": {"max": 5}})
                continue
            if not value and bounds.get('max') in (None, 0):  # the form shows such a bound as 0: as written
                continue
            bounds = dict(bounds)
            if value:
                if bounds.get('max') != value:  # unchanged: the space (and its study) stays the shipped one
                    bounds['max'] = float(value)
            else:
                bounds.pop('max', None)
            cons[key] = bounds
        cons = {k: v for k, v in cons.items() if v}
        if cons != written:
            data['constraints'] = cons
    objectives = {x_obj: x_dir}
    if y_obj and y_obj not in ('none', x_obj):
        objectives[y_obj] = y_dir
    current = data.get('objectives', DEFAULT_OBJECTIVES)
    shown = list(current.items())[:2] if isinstance(current, dict) else None  # the form shows two
    if list(objectives.items()) != shown:
        data['objectives'] = objectives
    try:
        return parse_space(data)
    except SpaceError as e:
        raise user_error(e, title='Bad space') from None


def preset_points(space, scorer) -> list[dict]:
    """The published presets the space's axes can show: those with the base's input size and channels (the
    figure keeps those near the trials)."""
    from explorer.core.catalog import get_preset, preset_names
    from explorer.core.spec import ArchSpec
    from explorer.measure.latency import LatencyError

    out = []
    for name in preset_names():
        spec = ArchSpec.from_dict(get_preset(name))
        if (spec.img_size, spec.in_chans) == (space.base['img_size'], space.base['in_chans']):
            try:
                out.append({'name': name, 'metrics': scorer.metrics(spec)})
            except LatencyError:  # a mixer newer than the calibration: this preset has no latency to draw
                continue
    return out


def study_view(space) -> tuple:
    """(figure, frontier rows, CSV file, spec files, status) for what the space's study holds now."""
    from explorer.search.space import Scorer
    from explorer.search.study import Frontier, frontier, frontier_csv, open_study, spec_file_name, study_name
    from explorer.viz.search import search_figure

    scorer = Scorer(space)
    # a look stores nothing: it ran on every page load and edit, and stored a study for any space text sent to it
    st = open_study(space, create=False)
    if st is None:
        front = Frontier(study_name(space), dict(space.objectives), [], [], scorer.calibrated_on)
    else:
        front = frontier(st, space, scorer.calibrated_on)
    fig = search_figure(front.trials, front.frontier, space.objectives, preset_points(space, scorer))
    keys = list(space.objectives)
    rows = [
        # 4 significant digits: rounded to 4 decimals, frontier designs of small spaces (0.0036 GMACs) looked equal
        [t['number'], t['pattern'], *(float(f'{t["metrics"][k]:.4g}') for k in keys), t['design']]
        for t in front.frontier
    ]
    # named after what they hold: a name from the study and its trial count alone served one space's files for
    # another's once a long space name pushed the study's hash past the 80 characters a name keeps
    text = frontier_csv(front)
    csv_path = download_file(f'frontier-{_digest(text)}', '.csv', lambda p: p.write_text(text))
    files = {spec_file_name(front, t): json.dumps(t['spec'], indent=2) + '\n' for t in front.frontier}
    zip_path = download_file(f'frontier-specs-{_digest(json.dumps(files))}', '.zip', lambda p: _zip(files, p))
    recorded = front.conditions.get('latency calibrated on') or scorer.calibrated_on
    lat = f' Latency predicted for batch {space.latency["batch_size"]}, calibrated on {md_text(recorded or "")}.'
    top = (scorer.latency_model.measure or {}).get('max_macs') if scorer.latency_model is not None else None
    same = not recorded or recorded == scorer.calibrated_on  # another calibration's limits are not known here
    beyond = sum(t['metrics'].get('macs', 0) > top for t in front.frontier) if top and same else 0
    if beyond:  # as the composer's card says for one design
        lat += (
            f' {beyond} of the {len(front.frontier)} frontier designs have more MACs than the largest calibration'
            f' design ({top / 1e6:g} MMACs an image): their latency is extrapolated and may be tens of % off.'
        )
    if recorded and recorded != scorer.calibrated_on:  # the study's trials were predicted elsewhere
        lat += (
            f' (This server is calibrated for {md_text(scorer.calibrated_on or "nothing")}: its searches are refused.)'
        )
    invalid = (
        f' {front.invalid} trial(s) drew a combination that is no valid network, e.g. '
        f'{md_text(front.invalid_example or "")}.'
        if front.invalid
        else ''
    )
    status = (
        f'Study **{md_text(front.study)}**: {len(front.trials)} trials, '
        f'{sum(t["feasible"] for t in front.trials)} within the constraints, {len(front.frontier)} on the frontier.'
        + (lat if recorded else '')
        + invalid
        + (f' Trials trained in {md_text(prec)}.' if (prec := front.conditions.get('training precision')) else '')
    )
    table = gr.update(value=rows, headers=['trial', 'pattern', *keys, 'design'])
    return fig, table, csv_path, zip_path, status


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _zip(files: dict[str, str], path) -> None:
    import zipfile

    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)


def search_events(space, trials: int, stop: threading.Event) -> Iterator[dict]:
    """Run the search in a worker thread; yield {'kind': 'trial', ...} events, then 'done' or 'error'. A space
    that trains (the accuracy objective) runs as training_search_events.

    Same request, same answer: the sampler's seed is the number of trials the study holds (read holding the
    search slot), so a search of a new study draws the same designs on any server, and a later search of the
    same study draws new ones rather than repeating them."""
    from explorer.search.study import run_search

    if space.needs_training:
        yield from training_search_events(space, trials, stop)
        return
    if not _SLOT.acquire(timeout=ANALYTIC_WAIT_S):
        yield {'kind': 'error', 'message': BUSY}
        return
    try:
        held = check_store(space, trials)  # holding the slot: no other analytic search adds trials meanwhile
    except SpaceError as e:
        _SLOT.release()
        yield {'kind': 'error', 'message': str(e)}
        return
    except BaseException:  # any other failure (a storage error, a bad server setting) gives the slot back too
        _SLOT.release()
        raise

    def work(emit):
        front = run_search(space, trials=trials, seed=held, progress=emit, should_stop=stop.is_set)
        return {'frontier': front, 'stopped_by': 'user' if stop.is_set() else None, 'seed': held}

    yield from background(work, stop, 'search', (SpaceError, SpecError, ValueError), _SLOT.release)


def training_search_events(space, trials: int, stop: threading.Event, limits: Limits | None = None):
    """A search that trains every trial, in a worker thread holding the server's one training slot. Yields
    {'kind': 'train', 'number', 'epoch', 'total_epochs', 'accuracy'} while a trial trains, {'kind': 'trial', 'done',
    'total', 'number', 'values', 'state'} after each trial (state COMPLETE, PRUNED or FAIL), then {'kind': 'done',
    'result': {'frontier': Frontier, 'stopped_by': None | 'user' | 'time limit', 'seed'}} or {'kind': 'error',
    'message'} ('seed': the sampler's, the number of trials the study held before this search).

    Refused at once (an 'error' event, nothing loaded) when check_training refuses, Fashion-MNIST is not on this
    server or another training holds the slot. Setting `stop` (or closing this generator) ends the trial in
    training at its next step (it is pruned) and the search after it; so does the server's time limit for one
    training (EXPLORER_MAX_TRAIN_S), counted over the whole search. The completed trials stay in the study."""
    from explorer.search.accuracy import Trainer
    from explorer.search.study import run_search

    try:
        limits = limits or Limits.from_env()
        check_training(space, trials, limits)
        trainer = Trainer(space)  # checks that the space's designs fit Fashion-MNIST
        for split in ('train', 'test'):
            find_dataset('fashion-mnist', split=split)
    except (SpaceError, SpecError, DatasetNotFound) as e:
        yield {'kind': 'error', 'message': str(e)}
        return
    if not TRAINING_SLOT.acquire(blocking=False, holder='a training search'):
        yield {'kind': 'error', 'message': TRAINING_SLOT.busy()}
        return
    try:
        held = check_store(space, trials)
    except SpaceError as e:
        TRAINING_SLOT.release()
        yield {'kind': 'error', 'message': str(e)}
        return
    except BaseException:  # any other failure (a storage error, a bad server setting) gives the slot back too
        TRAINING_SLOT.release()
        raise
    deadline = time.monotonic() + limits.max_train_s
    timed_out = threading.Event()

    def should_stop() -> bool:
        if time.monotonic() > deadline:
            timed_out.set()
        return stop.is_set() or timed_out.is_set()

    def work(emit):
        trainer.should_stop, trainer.progress = should_stop, emit
        front = run_search(space, trials=trials, seed=held, progress=emit, should_stop=should_stop, trainer=trainer)
        why = 'time limit' if timed_out.is_set() else 'user' if stop.is_set() else None
        return {'frontier': front, 'stopped_by': why, 'seed': held}

    expected = (SpaceError, SpecError, ValueError, DatasetNotFound)
    # a heartbeat: between two events (a trial's epoch: minutes) a cancelled job's generator can still be closed
    yield from background(work, stop, 'training-search', expected, TRAINING_SLOT.release, HEARTBEAT_S)


class TrainingProgress:
    """What a training search's status line says, from its events: the trial in training (k of n, its epoch and
    accuracy so far) and how the finished ones ended (complete with their accuracy, pruned, failed)."""

    def __init__(self, total: int):
        self.total, self.done, self.current, self.finished = total, 0, None, []
        self.accuracy: dict[int, float] = {}  # trial number -> its latest test accuracy (fraction)

    def add(self, ev: dict) -> None:
        if ev['kind'] == 'train':
            self.current = ev
            if ev.get('accuracy') is not None:
                self.accuracy[ev['number']] = ev['accuracy']
        elif ev['kind'] == 'trial':
            self.done, self.current = ev['done'], None
            self.finished.append((ev['number'], ev.get('state', 'COMPLETE')))

    def outcome(self, number: int, state: str) -> str:
        acc = self.accuracy.get(number)
        if state == 'COMPLETE':
            return 'outside the constraints (not trained)' if acc is None else f'complete, {100 * acc:.1f} %'
        if state == 'PRUNED':
            return 'pruned' + ('' if acc is None else f' at {100 * acc:.1f} %')
        return 'failed (too big to train here?)' if state == 'FAIL' else state.lower()

    def text(self, stopped_by: str | None = None, finished: bool = False) -> str:
        parts = []
        if self.current is not None and not finished:
            ev = self.current
            acc = self.accuracy.get(ev['number'])
            parts.append(
                f'Training trial {self.done + 1} of {self.total} (study trial {ev["number"]}): '
                f'epoch {ev["epoch"]:.2f} of {ev["total_epochs"]:g}, '
                + ('no test accuracy yet' if acc is None else f'test accuracy {100 * acc:.1f} % so far')
                + '.'
            )
        elif not finished:
            parts.append(f'Training search: {self.done} of {self.total} trials done.')
        else:
            why = {'user': ' (stopped)', 'time limit': " (stopped at this server's time limit, EXPLORER_MAX_TRAIN_S)"}
            parts.append(f'Training search finished{why.get(stopped_by, "")}: {self.done} of {self.total} trials.')
        if self.finished:
            shown = [f'{n}: {self.outcome(n, st)}' for n, st in self.finished[-5:]]
            if finished and stopped_by and self.finished[-1][1] == 'PRUNED':  # the trial the stop cut short
                shown[-1] = f'{self.finished[-1][0]}: stopped (not counted)'
            parts.append('Trials: ' + '; '.join(shown) + '.')
        return ' '.join(parts)


def training_view(space, follow: TrainingProgress, ev: dict) -> tuple:
    """(figure, frontier rows, CSV, spec files, status) after one event of a training search (`follow` has seen
    it): the study redrawn when a trial has finished and at the end; only the status line while a trial trains."""
    if ev['kind'] == 'train':
        return *([gr.skip()] * 4), follow.text()
    fig, rows, csv_path, zip_path, text = study_view(space)
    if ev['kind'] == 'done':
        return fig, rows, csv_path, zip_path, follow.text(ev['result']['stopped_by'], finished=True) + ' ' + text
    return fig, rows, csv_path, zip_path, follow.text() + ' ' + text


def trials_for(text: str, n):
    """The trials box for a space just picked: at most max_trained_trials() when the space trains its trials."""
    try:
        trains = parse_space(text).needs_training
    except SpaceError:
        return gr.skip()
    cap = max_trained_trials()
    return min(n, cap) if trains and isinstance(n, (int, float)) and n > cap else gr.skip()


def _parse_request(space: dict | str, trials) -> object:
    try:
        if isinstance(space, str) and space in space_names():
            sp = load_space(space)
        elif isinstance(space, str) and space.lstrip()[:1] not in ('{', '['):  # a name, misspelled: not bad JSON
            raise SpaceError(
                f'{public_text(json.dumps(space), 60)} is neither a shipped space ({", ".join(space_names())}) '
                "nor a space's JSON"
            )
        else:
            sp = parse_space(space)
    except SpaceError as e:
        raise user_error(e, title='Bad space') from None
    cap, env = (max_trained_trials(), 'EXPLORER_MAX_TRAINED_TRIALS') if sp.needs_training else (max_trials(), '')
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= cap:
        what = ' for a search that trains every trial' if env else ''
        sent = json.dumps(trials) if isinstance(trials, str) else trials  # "5" is not 5: keep its quotes
        raise user_error(
            f'trials {public_text(sent, 20)} must be an integer from 1 to {cap:,}{what}' + (f' ({env})' if env else ''),
            title='Bad request',
        )
    return sp


def _public(front) -> dict:
    d = front.to_dict()
    d.pop('files', None)  # paths on the server are not the caller's business
    return d


def api_search(space: dict | str, trials: int = 100) -> Iterator[dict]:
    """Add `trials` trials to a space's study and return its frontier, as `explorer search SPACE --json` prints
    it: {'study', 'objectives', 'trials', 'feasible', 'frontier': [{'number', 'pattern', 'design', 'params',
    'macs', 'latency_ms', 'metrics', 'spec'}, ...], 'request': {'trials_before', 'seed'}} (the last value of the
    job: what a client's predict returns). A study is shared by everyone who searches its space, so the answer is
    the study's frontier after this request's trials: 'trials_before' is how many it held when this request
    began (its own trials are numbered from there), and the sampler was seeded with that number, so the same
    request to a study holding the same trials draws the same designs, whatever else runs.
    space: a shipped space's name, or a space as a JSON object or text. One analytic search at a time. Progress
    dicts stream first ({'kind': 'trial', 'done', 'total', 'number', 'values', 'state'}, at most every
    PROGRESS_S seconds), then the frontier. Cancelling the job stops the search after its current trial; the
    completed trials stay in the study.

    A space with the accuracy objective trains every trial on Fashion-MNIST (at most EXPLORER_MAX_TRAINED_TRIALS
    trials, each trial's "training" budget within this server's limits, one training at a time server-wide, the
    whole search within EXPLORER_MAX_TRAIN_S): every trial's progress dict streams, {'kind': 'train',
    'number', 'epoch', 'total_epochs', 'accuracy'} while one trains, and {'kind': 'wait'} when nothing else came
    for half a second (so a cancel closes the job at once). Cancelling the job stops the trial in
    training at its next step."""
    trials = whole_number(trials)  # JSON clients may send 5.0
    sp = _parse_request(space, trials)
    last = 0.0
    with contextlib.closing(search_events(sp, trials, threading.Event())) as events:
        for ev in events:  # a cancelled job closes this generator, which closes events: the search stops
            if ev['kind'] == 'error':
                busy = ev['message'] == BUSY or 'is running on this server (one at a time' in ev['message']
                raise user_error(ev['message'], title='Busy' if busy else 'Search failed')
            if ev['kind'] == 'done':
                # the study is shared: what it held before this request says which trials are this request's
                held = ev['result']['seed']
                yield {**_public(ev['result']['frontier']), 'request': {'trials_before': held, 'seed': held}}
                return
            if ev['kind'] == 'trial' and not sp.needs_training:  # analytic trials come by the hundred a second
                if time.monotonic() - last < PROGRESS_S:
                    continue
                last = time.monotonic()
            yield {**ev, 'values': _values(ev['values'])} if ev['kind'] == 'trial' else ev


def _values(values) -> list | None:
    return None if values is None else [float(v) for v in values]


CANNOT_SHOW = '**Cannot show this space:**'


def add_search_tab(ctx) -> None:
    with gr.Tab('Search', id='search') as tab:
        gr.Markdown(
            'Search a design space for the best trade-offs: which mixer in which stage, at which depth and width. '
            'Optuna (NSGA-II) proposes designs; each is counted in closed form (and its latency predicted from '
            "this device's calibration, `explorer calibrate`), constraints are kept, and the Pareto frontier "
            'is drawn. Click a point or a frontier row to open that design in Compose. With the *accuracy* '
            "objective (the `fmnist_small_budget` space), each trial trains on Fashion-MNIST under the space's "
            f'"training" budget, laggards pruned at the median: at most {max_trained_trials()} trials per search, '
            'one training at a time on this server. Trials are coloured by their mixer pattern, one letter per '
            'stage: ' + ', '.join(f'{letter} {mixer}' for mixer, letter in MIXER_LETTER.items()) + '.'
        )
        with gr.Row():
            space_name = gr.Dropdown(
                space_names(), value=DEFAULT_SPACE, label='space', scale=2, elem_id='mfx-search-space'
            )
            trials = gr.Number(value=200, minimum=1, maximum=max_trials(), precision=0, label='trials to add')
            start = gr.Button('Search', variant='primary', elem_id='mfx-search-start')
            stop_btn = gr.Button('Stop')
        first = space_text(DEFAULT_SPACE)
        p_max, g_max, l_max, x0, xd, y0, yd = form_values(first)  # the form starts filled: no race with load
        with gr.Row():
            limits = [
                gr.Number(value=v, minimum=0, label=label) for v, (_, label) in zip((p_max, g_max, l_max), FORM_LIMITS)
            ]
        with gr.Row():
            x_obj = gr.Dropdown(METRIC_CHOICES, value=x0, label='objective 1 (x axis)')
            x_dir = gr.Radio(['minimize', 'maximize'], value=xd, label='direction')
            y_obj = gr.Dropdown(['none', *METRIC_CHOICES], value=y0 or 'none', label='objective 2 (y axis)')
            y_dir = gr.Radio(['minimize', 'maximize'], value=yd, label='direction')
        with gr.Accordion('Space (JSON): stages, choices, base spec', open=False):
            text = gr.Code(value=first, language='json', label='space', interactive=True)
        status = gr.Markdown(elem_id='mfx-search-status')
        plot = gr.Plot(label='trials', elem_id='mfx-search-plot')
        pick = gr.Textbox(visible='hidden', elem_id='mfx-search-pick')  # the clicked trial, set by SEARCH_JS
        table = gr.Dataframe(label='Pareto frontier (select a row to open it in Compose)', interactive=False)
        with gr.Row():
            csv_file = gr.DownloadButton('Frontier as CSV', size='sm')
            zip_file = gr.DownloadButton('Frontier as spec files (.zip)', size='sm')
        stop_flag = gr.State(None)
        # two at once: a training search (minutes; it holds the training slot) never queues the analytic ones,
        # which wait for each other on _SLOT
        gr.api(endpoint(api_search), api_name='search', concurrency_id='search', concurrency_limit=2)

    form = [*limits, x_obj, x_dir, y_obj, y_dir]
    view = [plot, table, csv_file, zip_file, status]

    def show(text_value, *form_value):
        try:
            return study_view(merged_space(text_value, *form_value))
        except SpaceError as e:  # latency objective without a calibration
            from explorer.viz.plots import empty_figure  # plotly: not at start-up

            text = md_text(with_page_hint(e).replace('`', '"'))  # escaped, a command's backticks would show
            blank = empty_figure('nothing to search here yet: see the line above the plot')
            return [blank, gr.skip(), gr.skip(), gr.skip(), f'{CANNOT_SHOW} {text}']

    space_name.input(space_text, space_name, text, **PRIVATE).then(form_values, text, form, **PRIVATE).then(
        show, [text, *form], view, **PRIVATE
    ).then(trials_for, [text, trials], trials, **PRIVATE)
    ctx.demo.load(show, [text, *form], view, **PRIVATE)

    def show_if_refused(status_value, text_value, *form_value):
        # a space this page could not show (no latency calibration yet) is looked at again when the tab is opened:
        # the Measure tab may have calibrated since
        if not str(status_value or '').startswith(CANNOT_SHOW):
            return [gr.skip()] * len(view)
        return show(text_value, *form_value)

    tab.select(show_if_refused, [status, text, *form], view, **PRIVATE)
    ctx.demo.load(None, None, None, js=SEARCH_JS, **PRIVATE)

    def run(text_value, n, *form_value):
        space = merged_space(text_value, *form_value)
        if not isinstance(n, (int, float)) or not 1 <= n <= max_trials():
            raise user_error(f'trials must be 1 to {max_trials():,}', title='Bad request')
        if space.needs_latency:
            from explorer.search.space import Scorer

            try:
                Scorer(space)  # the calibration is there (else: where to make it, before anything starts)
            except SpaceError as e:
                raise user_error(with_page_hint(e), title='Search failed') from None
        rid = uuid.uuid4().hex
        stop = _STOP.setdefault(rid, threading.Event())
        try:  # from here on: a page closed at the first yield leaves no stop flag behind
            yield rid, *([gr.skip()] * 4), 'Starting...'
            follow = TrainingProgress(int(n)) if space.needs_training else None
            last = 0.0
            with contextlib.closing(search_events(space, int(n), stop)) as events:  # closed: the search stops
                for ev in events:
                    if ev['kind'] == 'error':
                        raise user_error(ev['message'], title='Search failed')
                    if ev['kind'] == 'wait':  # a training search's heartbeat: a yield that changes nothing
                        yield (gr.skip(),) * (1 + len(view))
                        continue
                    if follow is not None:
                        follow.add(ev)
                        if ev['kind'] != 'train' or time.monotonic() - last > 1.0:  # a step: at most every 1 s
                            last = time.monotonic()
                            yield rid, *training_view(space, follow, ev)
                    elif ev['kind'] == 'done' or time.monotonic() - last > 2.0:  # redraw at most every 2 s
                        last = time.monotonic()
                        fig, rows, csv_path, zip_path, text = study_view(space)
                        if ev['kind'] == 'trial':
                            text = f'Searching: trial {ev["done"]}/{ev["total"]}. ' + text
                        yield rid, fig, rows, csv_path, zip_path, text
        finally:
            _STOP.pop(rid, None)

    start.click(run, [text, trials, *form], [stop_flag, *view], concurrency_id='search', concurrency_limit=2, **PRIVATE)

    def request_stop(rid):
        if isinstance(rid, str) and rid in _STOP:
            _STOP[rid].set()

    stop_btn.click(request_stop, stop_flag, None, **PRIVATE)

    def open_trial(number, text_value, *form_value):
        from explorer.search.study import open_study

        space = merged_space(text_value, *form_value)
        try:
            st = open_study(space, create=False)
            if st is None:
                raise KeyError(number)
            n = int(number)
            if n < 0:  # -1 opened the last trial
                raise IndexError(n)
            trial = st.get_trials(deepcopy=False)[n]  # st.trials deep-copied the whole study on every click
            spec = design(space, trial.params, name=f'{space.name}_t{trial.number}').to_dict()
        except (ValueError, TypeError, IndexError, KeyError, SpaceError):
            raise user_error(f'trial {str(number)[:20]} is not in this study', title='Cannot open') from None
        return spec, gr.Tabs(selected='compose')

    tabs = ctx.extras.get('tabs')
    outs = [tabs] if tabs is not None else []

    def from_click(number, *rest):
        from explorer.viz.search import PRESET_PICK  # plotly: not at start-up

        if isinstance(number, str) and number.startswith(PRESET_PICK):  # a published preset's diamond
            from explorer.core.catalog import get_preset, preset_names

            name = number.removeprefix(PRESET_PICK)
            if name not in preset_names():
                raise user_error(f'{public_text(name, 60)} is not a preset', title='Cannot open')
            return (get_preset(name), gr.Tabs(selected='compose'))[: 1 + len(outs)]
        return open_trial(number, *rest)[: 1 + len(outs)]

    def from_row(evt: gr.SelectData, text_value, *form_value):
        row = evt.row_value if evt is not None else None
        if row is not None and not (isinstance(row, list) and row and isinstance(row[0], (int, float, str))):
            raise user_error('a row of the trials table starts with its trial number', title='Bad request')
        return open_trial(row[0] if row else -1, text_value, *form_value)[: 1 + len(outs)]

    if getattr(ctx, 'load_spec', None):
        ctx.load_spec(pick.change, from_click, [pick, text, *form], outs)
        ctx.load_spec(table.select, from_row, [text, *form], outs, select=True)


# attaches a click listener to the trials plot (re-attached whenever plotly redraws it): the clicked point's trial
# number goes into the hidden textbox, whose input event opens the design
SEARCH_JS = """
() => {
  const hook = () => {
    const plot = document.querySelector('#mfx-search-plot .js-plotly-plot');
    if (!plot || plot.__mfxHooked || !plot.on) return;
    plot.__mfxHooked = true;
    plot.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p || !p.customdata) return;
      const box = document.querySelector('#mfx-search-pick textarea, #mfx-search-pick input');
      if (!box) return;
      box.value = String(p.customdata[0]);
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
  hook();
}
"""
