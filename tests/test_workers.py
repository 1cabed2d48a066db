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
