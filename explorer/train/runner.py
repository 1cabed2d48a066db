"""Training as a background job: `train` runs in a worker thread and its progress events are handed to the
caller one by one, so a screen (the app's Train tab) can draw while the model learns and stop it between two
steps. The CLI calls `explorer.train.loop.train` directly; both train through that one function.
"""

from __future__ import annotations

import queue
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

from explorer.core.spec import ArchSpec, SpecError
from explorer.measure.analytic import analytic_cost
from explorer.measure.guard import Limits, ResourceError
from explorer.train import checkpoints
from explorer.train.data import DatasetNotFound

_STOP: dict[str, threading.Event] = {}  # run id -> stop flag


class Slot:
    """One CPU-heavy job at a time in this process (a training, a training search, a latency calibration: each
    would slow, or be timed with, the others), remembering what holds it so that a refusal can name it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holder = ''

    def acquire(self, blocking: bool = True, timeout: float = -1, holder: str = 'another training') -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self.holder = holder
        return True

    def release(self) -> None:
        self.holder = ''
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def holder_name(self) -> str:
        return self.holder or 'another training'  # read once: it may be released meanwhile

    def busy(self) -> str:
        """Why a job is refused now."""
        return (
            f'{self.holder_name()} is running on this server (one at a time: they share the CPU); try again when it '
            'has finished'
        )


_SLOT = Slot()  # held by the training's worker until it has finished
TRAINING_SLOT = _SLOT  # the same slot, for the Search tab's training searches and the Measure tab's calibration


class Busy(RuntimeError):
    """Another training is running on this server."""


def run_file_name(spec_name: str, seed: int) -> str:
    """A checkpoint file name made by the server: the spec's name reduced to letters, digits, '_', '-' and '.'
    (at most 40), a time stamp and a random suffix. Never a path: no separator, no leading dot."""
    stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', spec_name)[:40].strip('._-') or 'model'
    return f'{stem}-{time.strftime("%Y%m%d-%H%M%S")}-seed{seed}-{uuid.uuid4().hex[:8]}.safetensors'


DISK_RESERVE_BYTES = 2**30  # free space a training leaves on the disk of its runs folder


def checkpoint_bytes(spec: ArchSpec) -> int:
    """The size of the checkpoint a training of `spec` writes, from the spec alone: fp32 weights, plus a
    MiB for the metadata (a spec is at most 1,000,000 characters) and small buffers."""
    return analytic_cost(spec).params * 4 + 2**20


def _folder_usage(folder: Path) -> tuple[int, int]:
    """(bytes, files) of the files directly in `folder` ((0, 0) when it does not exist yet); links are not
    followed."""
    if not folder.is_dir():
        return 0, 0
    total = files = 0
    for f in folder.iterdir():
        try:
            st = f.lstat()
        except OSError:  # removed while we looked
            continue
        if not f.is_symlink() and f.is_file():
            total, files = total + st.st_size, files + 1
    return total, files


def check_room(folder: Path, spec: ArchSpec, limits: Limits) -> int:
    """Refuse a training whose checkpoint would take the runs folder past the server's quota (EXPLORER_MAX_RUNS_GB,
    EXPLORER_MAX_RUNS files) or leave its disk less than DISK_RESERVE_BYTES free; return the checkpoint's
    estimated size. Checked once the training slot is held, so no other training writes meanwhile."""
    need = checkpoint_bytes(spec)
    used, files = _folder_usage(folder)
    quota = limits.max_runs_gb * 2**30
    errors = []
    if files >= limits.max_runs:
        errors.append(
            (
                'runs',
                f"the runs folder holds {files:,} files, the server's limit is {limits.max_runs:,} trained models "
                '(delete runs from the folder, or set EXPLORER_MAX_RUNS to change it)',
            )
        )
    if used + need > quota:
        errors.append(
            (
                'runs',
                f"the runs folder holds {used / 2**30:,.2f} GiB of trained models and this training's checkpoint "
                f"needs {need / 2**30:,.2f} GiB: over the server's limit of {limits.max_runs_gb:,g} GiB (delete "
                'runs from the folder, or set EXPLORER_MAX_RUNS_GB to change it)',
            )
        )
    where = folder
    while not where.exists() and where != where.parent:  # the folder is made when the checkpoint is written
        where = where.parent
    free = shutil.disk_usage(where).free
    if free - need < DISK_RESERVE_BYTES:
        errors.append(
            (
                'disk',
                f"the disk of the runs folder has {free / 2**30:,.2f} GiB free and this training's checkpoint "
                f'needs {need / 2**30:,.2f} GiB, leaving less than the {DISK_RESERVE_BYTES / 2**30:g} GiB a '
                'training must leave free',
            )
        )
    if errors:
        raise ResourceError(errors)
    return need


def request_stop(run_id: str) -> bool:
    """Ask run `run_id` to stop after its current step (the checkpoint keeps the weights so far). False when
    no such run is going."""
    flag = _STOP.get(run_id)
    if flag is None:
        return False
    flag.set()
    return True


def training_events(
    spec: dict,
    epochs: float,
    time_budget: float | None,
    batch_size: int,
    seed: int,
    train_limit: int | None,
    run_id: str,
    out_dir: Path | None = None,
    data_dir: str | None = None,
    erase_prob: float = 0.0,
    compile: bool = False,
    heartbeat: float | None = None,
):
    """Run `train` in a worker thread; yield its progress events (dicts), then {'kind': 'done', 'result':
    TrainResult} or {'kind': 'error', 'message': str}; with `heartbeat` (seconds), also {'kind': 'wait'} when no
    event came for that long (see `background`).

    One training at a time server-wide: when another is running this yields an error at once ('busy': True). The
    run stops after its current step when `request_stop(run_id)` is called, when the consumer stops listening (a
    closed browser tab closes this generator). The server's time limit (EXPLORER_MAX_TRAIN_S; see
    explorer.measure.guard.Limits) is the run's deadline, counted from the request with loading and evaluations
    included: its learning-rate schedule is fitted to end before it (stopped_by 'time_limit'). The checkpoint
    goes to `out_dir` (default: the runs folder, explorer.train.checkpoints.USER_DIR) under a name the server
    makes (run_file_name), and only when it fits there (check_room: the server's quota for that folder and a
    free-space reserve on its disk).
    """
    from explorer.train.loop import Stopped, train  # torch: loaded when a training starts

    if not _SLOT.acquire(blocking=False):
        yield {'kind': 'error', 'message': _SLOT.busy(), 'busy': True}
        return
    stop = _STOP.setdefault(run_id, threading.Event())
    try:
        limits = Limits.from_env()
        limit = limits.max_train_s
        runs = Path(out_dir) if out_dir is not None else checkpoints.USER_DIR
        arch = ArchSpec.from_dict(spec)
        check_room(runs, arch, limits)
        out = runs / run_file_name(arch.name, seed)
    except (SpecError, ValueError) as e:
        _SLOT.release()
        _STOP.pop(run_id, None)
        yield {'kind': 'error', 'message': str(e)}
        return
    deadline = time.monotonic() + limit  # the whole run, loading and evaluations included

    def work(emit):
        def progress(ev):
            emit(ev)
            if stop.is_set():
                raise Stopped

        return train(
            spec,
            epochs=epochs,
            time_budget=time_budget,
            deadline=deadline,  # the schedule is fitted to end before it (stopped_by 'time_limit')
            batch_size=batch_size,
            seed=seed,
            out=out,
            progress=progress,
            should_stop=stop.is_set,  # asked after every step: progress is reported only every 1/20 epoch
            data_dir=data_dir,
            train_limit=train_limit,
            erase_prob=erase_prob,
            compile=compile,
        )

    def cleanup():
        _STOP.pop(run_id, None)
        _SLOT.release()

    expected = (DatasetNotFound, SpecError, ValueError)
    yield from background(work, stop, f'train-{run_id}', expected, cleanup, heartbeat)


HEARTBEAT_S = 0.5  # the app's `heartbeat`: a cancelled job's generator is closed within about this long


def background(job, stop: threading.Event, name: str, expected: tuple = (), cleanup=None, heartbeat=None):
    """Run `job(emit)` in a daemon thread and yield each event it emits, then {'kind': 'done', 'result': what it
    returned} or {'kind': 'error', 'message'} (the message of an `expected` exception, else its type and
    message: the screen must report, never hang). `cleanup()` runs in the thread when the job ends; closing
    this generator (done, or the page went away) sets `stop`, which the job checks between two steps.

    heartbeat: seconds; when no event came for that long, yield {'kind': 'wait'}. A generator can be closed only
    while it waits at a yield: Gradio, cancelling a job, retries closing it (up to 60 s) while it waits for the
    next event, and events of a training come every 1/20 epoch, minutes apart for a big design. A consumer that
    is itself closed by Gradio passes the heartbeat on (a yield that changes nothing)."""
    events: queue.Queue = queue.Queue()

    def work():
        try:
            events.put({'kind': 'done', 'result': job(events.put)})
        except expected as e:
            events.put({'kind': 'error', 'message': str(e)})
        except Exception as e:  # many types; all are reported
            events.put({'kind': 'error', 'message': f'{type(e).__name__}: {e}'})
        finally:
            if cleanup:
                cleanup()

    threading.Thread(target=work, daemon=True, name=name).start()
    try:
        while True:
            try:
                ev = events.get(timeout=heartbeat)
            except queue.Empty:  # only with a heartbeat
                yield {'kind': 'wait'}
                continue
            yield ev
            if ev['kind'] in ('done', 'error'):
                return
    finally:
        stop.set()
