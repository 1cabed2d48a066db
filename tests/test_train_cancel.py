"""A training in the app ends soon after its job is cancelled or its tab closes, and a second one is refused at once.

Gradio cancels a streaming job by closing its generator, retrying while the generator runs: it can be closed
only while it waits at a yield. Between two progress events of a training (every 1/20 epoch: minutes for a big
design) the generator used to wait for the next one, so the cancel reached the training minutes late."""

from __future__ import annotations

import functools
import threading
import time

import gradio as gr
import pytest

from tests.conftest import TINY


@pytest.fixture
def slow_steps(monkeypatch):
    """Every training step takes 0.2 s more; the list holds the time of each step's end."""
    from explorer.train import loop

    ends = []
    step = loop._Step.__call__

    def slow(self, *args, **kwargs):
        time.sleep(0.2)
        out = step(self, *args, **kwargs)
        ends.append(time.monotonic())
        return out

    monkeypatch.setattr(loop._Step, '__call__', slow)
    return ends


@pytest.fixture
def app_training(monkeypatch, tmp_path, fake_dir):
    """/train's trainings on the fake Fashion-MNIST, writing to tmp_path."""
    from explorer.app import train as train_app
    from explorer.train import runner

    monkeypatch.setattr(train_app, 'find_dataset', lambda *a, **k: None)
    events = functools.partial(runner.training_events, out_dir=tmp_path, data_dir=fake_dir)
    monkeypatch.setattr(train_app, 'training_events', events)
    return train_app


def _close_as_gradio_does(gen, deadline_s: float) -> float | None:
    """Gradio's cancel: the pending next() runs on in its thread while close() is retried every 50 ms. The
    seconds it took to close, or None if it could not be closed within `deadline_s`."""
    threading.Thread(target=lambda: next(gen, None), daemon=True).start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        try:
            gen.close()
            return time.monotonic() - t0
        except ValueError as e:  # generator already executing
            assert 'already executing' in str(e)
            time.sleep(0.05)
    return None


def test_a_cancelled_train_job_stops_the_training_after_its_current_step(app_training, slow_steps):
    """320 images at batch 1: a progress event every 16 steps (3 s here). The review's /train job, cancelled,
    trained on for 22 steps (3.5 minutes) and cancel() timed out."""
    from explorer.app.context import endpoint
    from explorer.train.runner import TRAINING_SLOT

    gen = endpoint(app_training.api_train)(TINY, epochs=1, batch_size=1, train_limit=0)
    first = next(ev for ev in gen if ev['kind'] == 'step')
    assert first['step'] == 16 and first['total_steps'] == 320
    took = _close_as_gradio_does(gen, deadline_s=2.5)
    assert took is not None, 'the job could not be cancelled within 2.5 s'
    at_close = len(slow_steps)
    t0 = time.monotonic()
    while TRAINING_SLOT.locked() and time.monotonic() - t0 < 30:  # its evaluation and checkpoint, then free
        time.sleep(0.05)
    assert not TRAINING_SLOT.locked()
    assert len(slow_steps) - at_close <= 2, f'{len(slow_steps) - at_close} steps after the cancel'


def test_a_second_training_is_refused_at_once_as_busy(app_training, slow_steps):
    """The review: a second /train waited in Gradio's queue for the whole first training, then was refused with
    'Training failed'; /search said 'Busy' at once."""
    from explorer.train.runner import TRAINING_SLOT

    first = app_training.api_train(TINY, epochs=1, batch_size=1, train_limit=0)
    try:
        assert next(ev for ev in first if ev['kind'] == 'step')
        with pytest.raises(gr.Error) as e:
            next(app_training.api_train(TINY, epochs=1, batch_size=32, train_limit=64))
        assert e.value.title == 'Busy' and 'another training is running on this server' in e.value.message
    finally:
        first.close()
        t0 = time.monotonic()
        while TRAINING_SLOT.locked() and time.monotonic() - t0 < 30:
            time.sleep(0.05)


def test_train_takes_a_second_request_to_its_slot_check_rather_than_queueing_it():
    """Gradio's queue ran one /train (and one Train tab run) at a time, so a second request waited for the first
    to end before anything refused it."""
    from explorer.app.main import build_demo

    demo = build_demo()
    train = [f for f in demo.fns.values() if f.concurrency_id == 'train']
    assert {f.api_name for f in train} >= {'train'} and len(train) == 2
    assert all(f.concurrency_limit >= 2 for f in train)
