"""Heavy work holds its server-wide slot to its end. Gradio frees an event's concurrency slot when a job is
cancelled, but the thread doing the work runs on: submit-and-cancel ran any number of speed runs (timings
overlapped) or occlusion maps at once. The work itself now holds the slot (explorer.app.context.WorkSlots)."""

from __future__ import annotations

import threading
import time

import gradio as gr
import pytest

from explorer.app.context import WorkSlots


def test_a_slot_is_held_by_the_work_and_the_next_caller_waits_or_is_told_busy():
    slots = WorkSlots('tests', 1, 0.2)
    started, release = threading.Event(), threading.Event()

    @slots.held
    def work():
        started.set()
        release.wait(10)
        return 'done'

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(10)
    with pytest.raises(gr.Error, match=r'the server is busy with other tests \(one at a time, each to its end'):
        work()  # waited 0.2 s for the slot
    release.set()
    t.join(10)
    release.clear()
    threading.Timer(0.05, release.set).start()
    assert work() == 'done'  # free again


def test_a_streaming_handler_gives_its_slot_back_when_closed():
    slots = WorkSlots('tests', 1, 0.1)

    @slots.held
    def stream():
        yield 1
        yield 2

    first = stream()
    assert next(first) == 1
    with pytest.raises(gr.Error, match='busy'):
        next(stream())
    first.close()  # the page went away: gradio closes the generator
    assert list(stream()) == [1, 2]


def test_a_cancelled_api_speed_run_still_holds_the_speed_slot(client, monkeypatch):
    """/bench through gradio_client: the first job is cancelled while it measures; the second waits for the
    first's work to end instead of timing beside it."""
    pytest.importorskip('gradio_client')
    import explorer.measure.profile as prof

    spans, lock, started = [], threading.Lock(), threading.Event()

    def fake_bench(spec, *args, **kwargs):
        started.set()
        t0 = time.monotonic()
        time.sleep(1.5)
        with lock:
            spans.append((t0, time.monotonic()))
        return {'throughput': 1.0, 'name': 'fake'}

    monkeypatch.setattr(prof, 'bench', fake_bench)
    first = client.submit(spec='poolformer_s12', device='cpu', batch_size=1, api_name='/bench')
    assert started.wait(30)  # the first job's work has started
    first.cancel()
    second = client.predict(spec='poolformer_s12', device='cpu', batch_size=1, api_name='/bench')
    assert second['name'] == 'fake'
    t0 = time.monotonic()
    while len(spans) < 2:
        assert time.monotonic() - t0 < 30
        time.sleep(0.02)
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1  # never at the same time: before, the cancelled run went on beside the next one


def test_the_measure_tab_times_each_preset_once_and_at_most_eight(monkeypatch):
    """The Measure tab's handler took any list of presets: one preset 1,000 times held the speed slot for hours."""
    import explorer.measure.profile as prof
    from explorer.app.main import build_demo
    from explorer.core import catalog

    timed = []
    monkeypatch.setattr(prof, 'bench', lambda s, *a, **k: timed.append(s['name']) or {'name': s['name']})
    monkeypatch.setattr('explorer.app.panels.measure_message', lambda last, earlier=None: '')
    monkeypatch.setattr('explorer.app.panels.history_html', lambda h: '')
    monkeypatch.setattr('explorer.app.panels.bench_figure', lambda h: None)
    monkeypatch.setattr('explorer.app.panels.exportable', lambda fig, name: fig)
    demo = build_demo()
    measure = next(f.fn for f in demo.fns.values() if getattr(f.fn, '__qualname__', '').endswith('.measure'))
    spec = catalog.get_preset('poolformer_s12')
    args = ('cpu', 1, 'fp32', 1, False, False)
    out = measure(spec, *args, ['identityformer_s12'] * 3 + ['poolformer_s12'], [], progress=lambda *a, **k: None)
    assert timed == ['poolformer_s12', 'identityformer_s12', 'poolformer_s12'] and len(out[0]) == 3
    nine = [value for _, value in catalog.preset_choices()][:9]
    with pytest.raises(gr.Error, match='also measure presets: choose at most 8'):
        measure(spec, *args, nine, [], progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="also measure presets: preset: 'nope' is not a preset"):
        measure(spec, *args, ['nope'], [], progress=lambda *a, **k: None)
