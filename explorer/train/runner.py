"""Training as a background job: `train` runs in a worker thread and its progress events are handed to the
caller one by one, so a screen (the app's Train tab) can draw while the model learns and stop it between two
steps. The CLI calls `explorer.train.loop.train` directly; both train through that one function.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from explorer.core.spec import ArchSpec, SpecError
from explorer.train.checkpoints import USER_DIR
from explorer.train.data import DatasetNotFound
from explorer.train.loop import Stopped, train

_STOP: dict[str, threading.Event] = {}  # run id -> stop flag


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
    out_dir: Path = USER_DIR,
    data_dir: str | None = None,
    erase_prob: float = 0.0,
):
    """Run `train` in a thread; yield its progress events (dicts), then {'kind': 'done', 'result': TrainResult}
    or {'kind': 'error', 'message': str}. The run stops early when _STOP[run_id] is set."""
    stop = _STOP.setdefault(run_id, threading.Event())
    events: queue.Queue = queue.Queue()
    name = ArchSpec.from_dict(spec).name
    out = Path(out_dir) / f'{name}-{time.strftime("%Y%m%d-%H%M%S")}-seed{seed}.safetensors'

    def progress(ev):
        events.put(ev)
        if stop.is_set():
            raise Stopped

    def work():
        try:
            res = train(
                spec,
                epochs=epochs,
                time_budget=time_budget,
                batch_size=batch_size,
                seed=seed,
                out=out,
                progress=progress,
                data_dir=data_dir,
                train_limit=train_limit,
                erase_prob=erase_prob,
            )
            events.put({'kind': 'done', 'result': res})
        except (DatasetNotFound, SpecError, ValueError) as e:
            events.put({'kind': 'error', 'message': str(e)})
        except Exception as e:  # the UI must report, not hang
            events.put({'kind': 'error', 'message': f'{type(e).__name__}: {e}'})

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            ev = events.get()
            yield ev
            if ev['kind'] in ('done', 'error'):
                return
    finally:
        _STOP.pop(run_id, None)
