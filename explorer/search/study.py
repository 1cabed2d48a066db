"""Search a space with Optuna: multi-objective (NSGA-II by default, or TPE), constraints through the sampler's
constraints_func, the study in an Optuna storage so that many workers (processes here, or machines sharing a
database) fill one study and a study outlives the process that started it.

Storage: by default a SQLite file in the runs folder (STUDY_DB, nothing to set up); any Optuna storage URL
otherwise (`postgresql://...`, `mysql://...`, or a JournalStorage file on a shared file system given as
`journal:PATH`). A study is named after its space (`<space name>-<hash of the space>`, or `study=`): reopening it
continues it; a study made for another space is refused.

Every trial stores its metrics, feasibility, pattern (mixer letters per stage) and a one-line description as
one user attribute ('r'), its constraints with `trial.set_constraint` and, for the accuracy objective, its
per-epoch curve ('curve'); `frontier(study)` reads them back from the storage,
so the frontier of a study filled by several workers is computed over all of them.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from explorer.search.space import Scorer, Space, SpaceError, describe, design, pareto_front, pattern, violations

STUDY_DIR = Path.home() / '.cache' / 'metaformer-explorer' / 'search'
MAX_TRIALS = 100_000
SAMPLERS = ('nsga2', 'tpe', 'random')


def default_storage() -> str:
    """The SQLite file of the runs folder: $EXPLORER_SEARCH_DIR/studies.db, else STUDY_DIR/studies.db."""
    folder = Path(os.environ.get('EXPLORER_SEARCH_DIR') or STUDY_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return f'sqlite:///{folder / "studies.db"}'


_STORAGES: dict = {}  # url -> storage: one per process (Optuna's storages are thread-safe)
_STORAGE_LOCK = threading.Lock()  # two threads creating one new database would both write its schema


def _storage(url: str | None):
    """An Optuna storage from a URL (None: the default SQLite file), made once per process."""
    url = url or default_storage()
    with _STORAGE_LOCK:
        if url not in _STORAGES:
            _STORAGES[url] = _new_storage(url)
        return _STORAGES[url]


def _new_storage(url: str):
    """An Optuna storage from a URL; SpaceError naming the URL (its password hidden) when it cannot be opened."""
    try:
        return _open_storage(url)
    except Exception as e:  # any driver's error: a bad URL, a missing driver, a file that cannot be opened
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpaceError(f'storage {_shown(url)}: cannot open it ({type(e).__name__}: {why})') from None


def _shown(url: str) -> str:
    """`url` with the password of a database URL replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        if '://' in url:
            return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: hide what looks like a password
        pass
    return re.sub(r'(://[^:/@]*:).*@', r'\1***@', url)


def sqlite_database(url: str) -> str | None:
    """The database of a SQLite URL ('' or ':memory:' for one in memory; the file's path without any ?query),
    None for other storages."""
    if not url.startswith('sqlite:'):
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).database or ''
    except Exception:  # noqa: BLE001 - opening it names what is wrong
        return None


def _open_storage(url: str):
    """'journal:PATH' -> a journal file; sqlite:///FILE -> SQLite in WAL mode; any other RDB URL (an in-memory
    SQLite database among them: write-ahead logging is for files, and setting it up would drop the database
    with its connection) as it is."""
    import optuna

    if url.startswith('journal:'):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix('journal:')))
    if url.startswith('sqlite:///') and not url.startswith('sqlite:///:memory:'):
        # a shared SQLite file: wait for the other workers' writes
        storage = optuna.storages.RDBStorage(url, engine_kwargs={'connect_args': {'timeout': 60}})
        _wal(storage.engine)
    else:
        storage = optuna.storages.RDBStorage(url)
    _ENGINES[url] = storage.engine
    return _cached(storage)


_ENGINES: dict = {}  # url -> the SQLAlchemy engine of an RDB storage (stored_trials counts with it)


def _cached(storage):
    """The RDB storage behind one in-process cache of finished trials (Optuna's own, as `create_study` makes
    for each study object: made once here, a later read of a study fetches only the trials new or unfinished
    since the last one; 2,000 trials: 2 s, then 0.1 s). Without it (Optuna's private class moved) plain."""
    try:
        from optuna.storages._cached_storage import _CachedStorage
    except ImportError:
        return storage
    return _CachedStorage(storage)


def _wal(engine) -> None:
    """Write-ahead logging for a SQLite study: readers do not block the writer (several workers), and a commit
    syncs less often (about 2x the trials per second; a power cut can lose the last trials, never corrupt)."""
    from sqlalchemy import event

    @event.listens_for(engine, 'connect')
    def _pragmas(conn, _record):
        cur = conn.cursor()
        cur.execute('PRAGMA journal_mode=WAL')
        cur.execute('PRAGMA synchronous=NORMAL')
        cur.close()

    engine.dispose()  # connections made from now on get the pragmas


def study_name(space: Space, name: str | None = None, storage: str | None = None) -> str:
    """`name`, else '<space name>-<long_key>'; a study made before under the short key's name is kept when the
    storage holds one made for this very space."""
    if name:
        return name
    old = f'{space.name}-{space.key}'
    st = _storage(storage)
    try:
        sid = st.get_study_id_from_name(old)
    except KeyError:
        return f'{space.name}-{space.long_key}'
    return old if st.get_study_user_attrs(sid).get('space') == space.source else f'{space.name}-{space.long_key}'


def stored_trials(space: Space, storage: str | None = None, name: str | None = None) -> int:
    """How many trials the space's study holds (0 when there is none); creates nothing. A SQL count on an RDB
    storage (milliseconds for any size), else Optuna's own count."""
    st = _storage(storage)
    try:
        sid = st.get_study_id_from_name(study_name(space, name, storage))
    except KeyError:
        return 0
    engine = _ENGINES.get(storage or default_storage())
    if engine is None:
        return st.get_n_trials(sid)
    from sqlalchemy import text

    with engine.connect() as conn:  # Optuna's schema: one row per trial in `trials`
        return int(conn.execute(text('SELECT COUNT(*) FROM trials WHERE study_id = :sid'), {'sid': sid}).scalar())


def storage_bytes(storage: str | None = None) -> int | None:
    """The bytes a SQLite or journal storage takes on disk (its write-ahead log included); None for a database
    server, whose size is its administrator's business."""
    url = storage or default_storage()
    db = sqlite_database(url)
    if db in ('', ':memory:'):
        return 0
    if db is not None:
        path = Path(db)
        files = [path, path.with_name(path.name + '-wal')]
    elif url.startswith('journal:'):
        files = [Path(url.removeprefix('journal:'))]
    else:
        return None
    return sum(f.stat().st_size for f in files if f.is_file())


def open_study(
    space: Space,
    storage: str | None = None,
    name: str | None = None,
    sampler: str = 'nsga2',
    seed=None,
    conditions: dict | None = None,
    create: bool = True,
):
    """The study for `space` (created when new; with create=False, None when there is none: a look at a space
    stores nothing). Raises SpaceError when `name` holds a study of another space, or
    one measured under other `conditions` (what this machine's metrics depend on, see `conditions`: the first
    worker records them, and a worker where they differ is refused rather than mixing its trials in)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create:
        try:
            _storage(storage).get_study_id_from_name(study_name(space, name, storage))
        except KeyError:
            return None
    if sampler not in SAMPLERS:
        raise SpaceError(f'sampler {sampler!r} is not known; choose from {", ".join(SAMPLERS)}')
    samplers = {  # constraints reach them through trial.set_constraint (Optuna 5)
        'nsga2': lambda: optuna.samplers.NSGAIISampler(seed=seed),
        'tpe': lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        'random': lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    directions = list(space.objectives.values())
    study = optuna.create_study(
        storage=_storage(storage),
        study_name=study_name(space, name, storage),
        directions=directions,
        sampler=samplers[sampler](),
        load_if_exists=True,
    )
    theirs = study.user_attrs.get('space_key')
    if theirs is None:
        study.set_user_attr('space_key', space.key)
        study.set_user_attr('space', space.source)
    elif theirs != space.key or study.user_attrs.get('space') != space.source:  # the key is a short hash
        raise SpaceError(
            f'study {study.study_name!r} in this storage was made for another space; name a new study (--study)'
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise SpaceError(f'study {study.study_name!r} has other objectives; name a new study (--study)')
    if conditions:
        recorded = study.user_attrs.get('conditions')
        if recorded is None:
            study.set_user_attr('conditions', conditions)
        else:
            differ = [k for k, v in conditions.items() if recorded.get(k) != v]
            if differ:
                what = '; '.join(
                    f'{k}: {"not recorded" if recorded.get(k) is None else repr(recorded[k])} there, '
                    f'{conditions[k]!r} here'
                    for k in differ
                )
                pin = ' (and pin training.amp in the space)' if 'training precision' in differ else ''
                raise SpaceError(
                    f'study {study.study_name!r} was measured under other conditions ({what}), so trials from '
                    f'here would not be comparable: run this worker where they hold, or name a new study '
                    f'(--study){pin}'
                )
    return study


def conditions(scorer: Scorer, trainer=None) -> dict:
    """What a trial's metrics depend on beyond the space: the latency calibration's device fingerprint (when
    latency_ms is an objective or constraint) and the precision trials train in (the accuracy objective)."""
    out = {}
    if scorer.calibrated_on:
        out['latency calibrated on'] = scorer.calibrated_on
        # which calibration: one made again on the same machine predicts other figures, not comparable
        out['latency calibration'] = scorer.calibration_id
    if getattr(trainer, 'precision', None):
        out['training precision'] = trainer.precision
    return out


# ---- one trial ---------------------------------------------------------------------------------------------
def suggest(trial, space: Space) -> dict:
    """The trial's point of the space (Optuna parameters named s0.mixer, s0.depth, ..., mlp_act, ...)."""
    params = {}
    for i, st in enumerate(space.stages):
        params[f's{i}.mixer'] = trial.suggest_categorical(f's{i}.mixer', st.mixers)
        params[f's{i}.depth'] = trial.suggest_int(f's{i}.depth', *st.depth)
        params[f's{i}.dim'] = trial.suggest_categorical(f's{i}.dim', st.dims)
        params[f's{i}.mlp_ratio'] = trial.suggest_categorical(f's{i}.mlp_ratio', st.mlp_ratios)
    for k, values in space.choices.items():
        params[k] = trial.suggest_categorical(k, values)
    return params


class Objective:
    """Optuna's objective: design -> metrics -> objective values; constraints stored for the sampler. With the
    accuracy objective, `trainer(spec, report)` trains the design and returns its test accuracy."""

    def __init__(self, space: Space, scorer: Scorer, trainer: Callable | None = None, conditions: dict | None = None):
        self.space, self.scorer, self.trainer = space, scorer, trainer
        self.conditions = conditions or {}  # stored with each trial: `frontier` leaves out trials measured otherwise

    def __call__(self, trial):
        import optuna

        params = suggest(trial, self.space)
        n = len(self.space.stages)
        try:
            spec = design(self.space, params, name=f'{self.space.name}_t{trial.number}')
        except SpaceError as e:  # a combination the space allows but no network has (attention at width 74)
            trial.set_user_attr('invalid', str(e)[:500])
            raise optuna.TrialPruned(str(e)[:500]) from None  # not a failure: no traceback, counted as invalid
        metrics = self.scorer.metrics(spec)
        cons = violations(self.space, metrics)  # before training: an accuracy bound counts as holding
        if self.trainer is not None and all(c <= 0 for c in cons):
            metrics['accuracy'] = 100 * self.trainer(spec, trial)
            cons = violations(self.space, metrics)  # and now with the accuracy it reached
        for i, c in enumerate(cons):
            trial.set_constraint(f'c{i}', c)
        feasible = all(c <= 0 for c in cons)
        # one attribute per trial (each is a write to the storage)
        rounded = {k: v if isinstance(v, int) else round(v, 6) for k, v in metrics.items()}
        record = {'metrics': rounded, 'feasible': feasible, 'worker': os.getpid()}
        if self.conditions:
            record['conditions'] = self.conditions
        trial.set_user_attr('r', {**record, 'pattern': pattern(params, n), 'design': describe(params, n)})
        if 'accuracy' in self.space.objectives and 'accuracy' not in metrics:
            metrics['accuracy'] = 0.0  # infeasible: not trained, and dominated on accuracy
        return tuple(metrics[k] for k in self.space.objectives)


# ---- a search --------------------------------------------------------------------------------------------
@dataclass
class Frontier:
    """A study's trials and its Pareto frontier over the feasible ones (all workers' trials)."""

    study: str
    objectives: dict
    trials: list[dict]  # {'number', 'params', 'metrics', 'pattern', 'design', 'feasible'}; untrained: no accuracy
    frontier: list[dict]  # the same entries plus 'spec' (a spec dict), sorted by the first objective
    calibrated_on: str | None = None
    files: list[str] = field(default_factory=list)
    conditions: dict = field(default_factory=dict)  # what the study's trials were measured under (open_study)
    left_out: int = 0  # trials measured under other conditions (two machines that created the study at once)
    invalid: int = 0  # trials whose design is not a valid network (the space allows it; `invalid_example` says why)
    invalid_example: str | None = None

    def to_dict(self) -> dict:
        return {
            'study': self.study,
            'objectives': self.objectives,
            'trials': len(self.trials),
            'feasible': sum(t['feasible'] for t in self.trials),
            'frontier': [
                {
                    'number': t['number'],
                    'pattern': t['pattern'],
                    'design': t['design'],
                    **{k: t['metrics'].get(k) for k in ('params', 'macs', 'latency_ms')},
                    'metrics': t['metrics'],
                    'spec': t['spec'],
                }
                for t in self.frontier
            ],
            'latency_calibrated_on': self.calibrated_on,
            'conditions': self.conditions,
            'left_out': self.left_out,
            'invalid': self.invalid,
            'invalid_example': self.invalid_example,
            'files': self.files,
        }


def frontier(study, space: Space, calibrated_on: str | None = None) -> Frontier:
    """All complete trials of the study (every worker's), and the Pareto frontier of the feasible ones."""
    import optuna

    trials, left_out = [], 0
    recorded = study.user_attrs.get('conditions') or {}
    invalid = [
        t.user_attrs['invalid']
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
        if isinstance(t.user_attrs.get('invalid'), str)
    ]
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        r = t.user_attrs.get('r')
        if not _ours(r, space):
            continue
        if r.get('conditions', recorded) != recorded:  # a worker that raced the first one to record its own
            left_out += 1
            continue
        trials.append({'number': t.number, 'params': dict(t.params), **r})
    ok = [t for t in trials if t['feasible']]
    front = []
    for i in pareto_front([t['metrics'] for t in ok], space.objectives):
        t = ok[i]
        spec = design(space, t['params'], name=f'{space.name}_t{t["number"]}').to_dict()
        front.append({**t, 'spec': spec})
    return Frontier(
        study.study_name,
        dict(space.objectives),
        trials,
        front,
        calibrated_on,
        conditions=recorded,
        left_out=left_out,
        invalid=len(invalid),
        invalid_example=invalid[0] if invalid else None,
    )


def _ours(r, space: Space) -> bool:
    """A trial record written by Objective for this space: its metrics hold every objective, except accuracy for a
    design outside the constraints (never trained)."""
    if not isinstance(r, dict) or not isinstance(r.get('metrics'), dict) or not isinstance(r.get('feasible'), bool):
        return False
    need = [k for k in space.objectives if r['feasible'] or k != 'accuracy']
    return all(k in r['metrics'] for k in need)


def run_search(
    space: Space,
    trials: int = 200,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    sampler: str = 'nsga2',
    seed: int | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    trainer: Callable | None = None,
) -> Frontier:
    """Run `trials` more trials of the space's study (shared between `workers` processes), then read the whole
    study's frontier. progress(event) gets {'kind': 'trial', 'done', 'total', 'number', 'values', 'state'} after each
    trial of this process; should_stop() ends the search after the current trial."""

    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_TRIALS:
        raise SpaceError(f'trials {trials!r} must be an integer from 1 to {MAX_TRIALS:,}')
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise SpaceError(f'workers {workers!r} must be an integer from 1 to 64')
    if workers > 1 and storage is not None and sqlite_database(storage) in ('', ':memory:'):
        raise SpaceError('workers > 1 need a storage every process can open (a file or a database)')
    scorer = Scorer(space)
    trainer = trainer or _trainer(space)
    cond = conditions(scorer, trainer)
    st = open_study(space, storage, study, sampler, seed, cond)
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    procs = []
    if workers > 1:
        ctx = multiprocessing.get_context('spawn')
        args = (space.source, storage or default_storage(), st.study_name, sampler)
        procs = [
            ctx.Process(target=_worker, args=(*args, n, None if seed is None else seed + i + 1))
            for i, n in enumerate(shares[1:])
        ]
        for p in procs:
            p.start()
    done = 0

    def callback(s, trial):
        nonlocal done
        done += 1
        if progress:
            progress(
                {
                    'kind': 'trial',
                    'done': done,
                    'total': shares[0],
                    'number': trial.number,
                    'values': trial.values,
                    'state': trial.state.name,  # COMPLETE, PRUNED (a trained trial) or FAIL
                }
            )
        if should_stop and should_stop():
            s.stop()

    try:
        objective = Objective(space, scorer, trainer, cond)
        try:
            st.optimize(objective, n_trials=shares[0], callbacks=[callback], catch=(SpaceError,))
        except ValueError as e:
            if 'dynamic value space' not in str(e):
                raise
            raise SpaceError(  # a parameter's choices changed under the same space text (an older explorer's rule)
                f'study {st.study_name!r} drew other values for a parameter than this space allows now ({e}); name a '
                "new study (--study), or write the choices (e.g. each stage's mlp_ratio) into the space"
            ) from None
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f'{len(bad)} search worker process(es) failed (exit status {bad})')
    return frontier(st, space, scorer.calibrated_on)


def _worker(source: dict, storage: str, name: str, sampler: str, trials: int, seed) -> None:
    """One more process on the same study (spawned: it imports what it needs afresh)."""
    from explorer.search.space import parse_space

    space = parse_space(source)
    scorer, trainer = Scorer(space), _trainer(space)
    cond = conditions(scorer, trainer)
    st = open_study(space, storage, name, sampler, seed, cond)
    st.optimize(Objective(space, scorer, trainer, cond), n_trials=trials, catch=(SpaceError,))


def _trainer(space: Space):
    if not space.needs_training:
        return None
    from explorer.search.accuracy import Trainer

    return Trainer(space)


def write_frontier(front: Frontier, out_dir: str | Path) -> list[str]:
    """Each frontier design as a spec file `<study>_t<number>.json` in out_dir (created), plus `frontier.csv`;
    the study's spec files of an earlier run that are off the frontier now are removed (the folder held 32 spec
    files beside a CSV of 23)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {spec_file_name(front, t) for t in front.frontier}
    earlier = re.compile(re.escape(_file_stem(front.study)) + r'_t\d+\.json')
    for old in out.iterdir():  # an earlier run's frontier designs that this frontier no longer holds
        if earlier.fullmatch(old.name) and old.name not in names and old.is_file():
            old.unlink()
    files = []
    for t in front.frontier:
        path = out / spec_file_name(front, t)
        path.write_text(json.dumps(t['spec'], indent=2) + '\n', encoding='utf-8')
        files.append(str(path))
    csv_path = out / 'frontier.csv'
    csv_path.write_text(frontier_csv(front), encoding='utf-8')
    files.append(str(csv_path))
    front.files = files
    return files


def other_study(out_dir: str | Path, study: str) -> str | None:
    """The file stem of another study whose frontier (frontier.csv and `<study>_t<number>.json` files) out_dir
    holds, else None: write_frontier would replace its CSV and leave its spec files beside the new ones."""
    out = Path(out_dir)
    if not (out / 'frontier.csv').is_file():
        return None
    ours = _file_stem(study)
    stems = {m.group(1) for p in out.iterdir() if (m := re.fullmatch(r'(.+)_t\d+\.json', p.name)) and p.is_file()}
    return next(iter(sorted(stems - {ours})), None)


def frontier_csv(front: Frontier) -> str:
    """The frontier as CSV: trial, pattern, every metric, the design in one line."""
    import csv
    import io

    keys = sorted({k for t in front.frontier for k in t['metrics']})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(['trial', 'pattern', *keys, 'design'])
    for t in front.frontier:
        w.writerow([t['number'], t['pattern'], *(_num(t['metrics'].get(k)) for k in keys), t['design']])
    return buf.getvalue()


def _num(v):
    return '' if v is None else (f'{v:.6g}' if isinstance(v, float) and math.isfinite(v) else v)


def spec_file_name(front: Frontier, trial: dict) -> str:
    """A frontier design's file name, '<study>_t<number>.json', in letters, digits, '-' and '_' only: the study
    is named after its space, which is request text on a server."""
    return f'{_file_stem(front.study)}_t{int(trial["number"])}.json'


def _file_stem(study: str) -> str:
    """At most 80 characters; a longer study name keeps its end, the space's hash (two long-named spaces were
    cut to one stem and wrote the same file names)."""
    stem = ''.join(c if c.isascii() and (c.isalnum() or c in '-_') else '_' for c in study) or 'study'
    return stem if len(stem) <= 80 else stem[:69] + stem[-11:]


def cpu_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1)
