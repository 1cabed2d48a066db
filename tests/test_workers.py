"""The app's helper process: the fvcore verification runs there (not in the server, where it held the GIL against
the next edit's recount), with its answers and errors exactly as in-process, and a dead helper is replaced."""

from __future__ import annotations

import os

import pytest

from explorer.app.workers import Helper
from explorer.core.spec import SpecError
from explorer.measure import profile as prof

TINY = {
    'name': 'tiny_helper',
    'img_size': 32,
    'num_classes': 10,
    'stem': {'kernel_size': 4, 'stride': 4, 'padding': 0},
    'stages': [{'mixer': 'pooling', 'depth': 1, 'dim': 16}, {'mixer': 'attention', 'depth': 1, 'dim': 32}],
}


def _pid_and_nice() -> tuple[int, int]:
    return os.getpid(), os.nice(0)


@pytest.fixture(scope='module')
def helper():
    h = Helper()
    yield h
    h.close()


def test_verify_in_the_helper_equals_in_process(helper):
    assert helper.call(prof.verify, TINY) == prof.verify(TINY)


def test_the_helper_is_another_process_at_lower_priority(helper):
    pid, nice = helper.call(_pid_and_nice)
    assert pid != os.getpid()
    assert nice >= os.nice(0)  # +10 where the system allows it


def test_errors_come_back_as_they_are(helper):
    bad = {**TINY, 'stages': [{'mixer': 'pooling', 'depth': 0, 'dim': 16}]}
    with pytest.raises(SpecError) as e:
        helper.call(prof.verify, bad)
    assert any('depth' in path for path, _ in e.value.errors)


def test_a_dead_helper_is_replaced(helper):
    pid, _ = helper.call(_pid_and_nice)
    os.kill(pid, 9)
    pid2, _ = helper.call(_pid_and_nice)
    assert pid2 != pid and pid2 != os.getpid()


PARENT = """
import os, sys
sys.path.insert(0, {root!r})
from explorer.app.workers import Helper
h = Helper()
print(h.call(os.getpid), flush=True)
os._exit(0)  # the server dies without closing anything
"""


def test_the_helper_exits_when_the_server_dies():
    """A server killed (or crashed) must not leave its helper running, holding memory and a CPU share."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, '-c', PARENT.format(root=root)], capture_output=True, text=True, timeout=120, check=True
    )
    pid = int(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, 9)
    raise AssertionError(f'the helper {pid} outlived its server by 20 s')


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_a_call_past_its_time_limit_stops_the_helper_and_the_next_call_gets_a_new_one():
    """A slow verification held the one helper, and every visitor's composer check behind it, for as long as it
    took. Past its limit the helper is killed, and the calls after it run in a new one."""
    import time

    from explorer.app.workers import HelperTimeout

    h = Helper(warm=(_sleep, 0.0))  # these calls need no torch: nothing to import first
    try:
        pid, _ = h.call(_pid_and_nice)
        t0 = time.monotonic()
        with pytest.raises(HelperTimeout, match=r'it took more than 0\.5 s and was stopped'):
            h.call(_sleep, 30, timeout=0.5)
        assert time.monotonic() - t0 < 10
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # the killed helper is gone (reaped by its pool)
                os.kill(pid, 0)
                time.sleep(0.05)
        assert h.call(_sleep, 0.01, timeout=60) == 0.01
        assert h.call(_pid_and_nice)[0] not in (pid, os.getpid())
    finally:
        h.close()


def test_verify_past_the_servers_limit_is_refused_naming_it(client, monkeypatch):
    """/verify and the composer's check run in the helper, stopped past EXPLORER_MAX_VERIFY_S."""
    pytest.importorskip('gradio_client')
    from explorer.app.compose import verify_in_helper
    from explorer.measure.guard import ResourceError

    monkeypatch.setenv('EXPLORER_MAX_VERIFY_S', '0.01')
    with pytest.raises(ResourceError, match=r'took more than 0\.01 s here and was stopped \(EXPLORER_MAX_VERIFY_S\)'):
        verify_in_helper({**TINY, 'name': 'slow_to_verify'})
    with pytest.raises(Exception, match='EXPLORER_MAX_VERIFY_S'):
        client.predict(spec={**TINY, 'name': 'slow_api'}, api_name='/verify')
    monkeypatch.delenv('EXPLORER_MAX_VERIFY_S')
    assert verify_in_helper(TINY) == prof.verify(TINY)


def test_a_call_waiting_for_the_helper_is_not_stopped_for_the_wait():
    """Red team: a call's time limit counted its wait behind other calls, so a tiny design queued behind slow ones
    was reported as 'took more than 30 s' and killed the helper. The limit is the call's own run; a call waits at
    most as long for the helper, then is told it is busy."""
    import threading

    from explorer.app.workers import HelperBusy

    h = Helper(warm=(_sleep, 0.0))
    try:
        h.call(_sleep, 0.0)  # started
        first = []
        t = threading.Thread(target=lambda: first.append(h.call(_sleep, 1.0, timeout=5)))
        t.start()
        import time

        time.sleep(0.2)
        assert h.call(_sleep, 0.5, timeout=1.2) == 0.5  # waited ~0.8 s, ran 0.5 s: within its own 1.2 s
        t.join(10)
        assert first == [1.0]
        t = threading.Thread(target=lambda: h.call(_sleep, 2.0, timeout=5))
        t.start()
        time.sleep(0.2)
        with pytest.raises(HelperBusy, match='busy with other calls for 0.5 s'):
            h.call(_sleep, 0.1, timeout=0.5)
        t.join(10)
    finally:
        h.close()


def test_a_helper_still_starting_does_not_count_against_a_calls_limit():
    """The first call after a start (or after a call past its limit killed the helper) waited for the new helper
    to import torch, timm and fvcore at nice +10, inside its own limit: on a busy CPU a tiny design's check was
    reported as 'took more than 30 s' and killed the helper, so the next call started from nothing again. The
    limit is the call's own run; the start-up has its own (STARTUP_S)."""
    h = Helper(warm=(_sleep, 3.0))  # a start-up slower than the call's limit
    try:
        assert h.call(_sleep, 0.01, timeout=1.0) == 0.01
        pid, _ = h.call(_pid_and_nice)
        with pytest.raises(Exception, match='took more than 0.5 s'):
            h.call(_sleep, 30, timeout=0.5)  # killed: the next call starts a new helper, which warms up again
        assert h.call(_sleep, 0.01, timeout=1.0) == 0.01
        assert h.call(_pid_and_nice)[0] != pid
    finally:
        h.close()
