"""A helper process for the server's slow, CPU-bound follow-ups, so they never slow the page down.

The fvcore verification that follows every composer change builds the whole model and traces it: for a 224 px
preset that is a second or more of CPU, most of it holding the GIL. Run in the server's own process it made the
recount of the *next* edit wait for the GIL and for both cores. Here it runs in one helper process at a lower CPU
priority (nice +10) with one torch thread: the server and the browser get the CPU first, and the count arrives
when the machine has time. The helper is started once (spawn: a fork of a threaded server is not safe) and is
started again if it dies; where no process can be started, the work runs in the calling thread as before.

This module imports neither gradio nor torch: the helper imports only what the function it runs needs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

NICE = 10
PARENT_POLL_S = 1.0  # how often the helper checks that the server is still there
# how long a new helper may take to import torch, timm and fvcore (at nice +10: on a busy 2-core CPU, a minute and
# more); not counted in any call's own time limit
STARTUP_S = 300.0


def _lower_priority() -> None:
    """The helper's initializer: a lower CPU priority, one torch thread (set before torch is imported), and a
    watch on the server: when the server process is gone (killed, crashed), the helper exits too. It would not
    notice otherwise: it holds both ends of its own task queue, so the server's death closes nothing it reads."""
    try:
        os.nice(NICE)
    except OSError:  # not permitted on this system: run at the same priority
        pass
    os.environ['OMP_NUM_THREADS'] = '1'
    os.environ['MKL_NUM_THREADS'] = '1'
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:  # re-parented: the server has died
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name='watch-server').start()


def _warm() -> bool:
    """Import the model code in the helper before the first real call."""
    import fvcore.nn  # noqa: F401

    import explorer.core.build  # noqa: F401 - torch and timm

    return True


class HelperTimeout(RuntimeError):
    """A call ran past its time limit: the helper was stopped (the next call starts a new one)."""


class HelperBusy(RuntimeError):
    """The helper was busy with other calls for longer than a call would wait."""


class Helper:
    """One helper process; `call(fn, *args)` runs a picklable module-level function there and returns its result
    (or raises its exception). Thread-safe; calls run one at a time in the helper."""

    def __init__(self, warm: tuple = (_warm,)) -> None:
        self._lock = threading.Lock()
        self._one = threading.Lock()  # one call in the helper at a time: a call's time limit is its own running time
        self._pool: ProcessPoolExecutor | None = None
        self._disabled = False
        self._warm = warm  # (fn, *args): what a new helper runs first
        self._warming: tuple[ProcessPoolExecutor, Future] | None = None  # that run, for the current pool

    def _get(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None and not self._disabled:
                try:
                    ctx = multiprocessing.get_context('spawn')
                    self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_lower_priority)
                # OSError: the system refuses a new process; NotImplementedError: the platform lacks semaphores
                except (OSError, ValueError, NotImplementedError) as e:
                    logging.getLogger('explorer').warning('no helper process (%s): verifying in the server', e)
                    self._disabled = True
            return self._pool

    def start(self) -> None:
        """Start the helper and import the model code there, without waiting for it."""
        pool = self._get()
        if pool is not None:
            try:
                self._warming_of(pool)
            except (BrokenProcessPool, RuntimeError):
                self._reset(pool)

    def _warming_of(self, pool: ProcessPoolExecutor) -> Future:
        """The warm-up run of this pool, submitted the first time it is asked for."""
        with self._lock:
            if self._warming is None or self._warming[0] is not pool:
                self._warming = (pool, pool.submit(*self._warm))
            return self._warming[1]

    def _ready(self, pool: ProcessPoolExecutor) -> None:
        """Wait for a new helper's imports (up to STARTUP_S), so that they never count in a call's own limit."""
        try:
            self._warming_of(pool).result(timeout=STARTUP_S)
        except FutureTimeout:
            self._kill(pool)
            raise HelperTimeout(f'the helper process did not start within {STARTUP_S:g} s') from None
        except BrokenProcessPool:
            raise
        except Exception:  # noqa: BLE001 - an import that failed: the call itself will say what is missing
            pass

    def _reset(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        """Stop the helper at once, whatever it is running (a call past its time limit cannot be interrupted)."""
        kill = getattr(pool, 'kill_workers', None)  # Python 3.14
        if kill is not None:
            kill()
        else:
            for proc in list((getattr(pool, '_processes', None) or {}).values()):
                proc.kill()
        self._reset(pool)

    def call(self, fn: Callable, *args, timeout: float | None = None):
        """fn(*args) in the helper, one call at a time. `timeout` (seconds of the call's own run): past it the
        helper is killed and HelperTimeout raised (a slow verification held the one helper, and with it every
        visitor's composer check, for as long as it took: 23 s for a design of 64 pooling blocks at 1024 px); a
        call waits at most as long for the calls before it, then HelperBusy. Without a helper process (the system
        refuses one) fn runs here; with a timeout, never after the helper has failed."""
        if not self._one.acquire(timeout=-1 if timeout is None else timeout):
            raise HelperBusy(f'the helper was busy with other calls for {timeout:g} s')
        try:
            for _ in range(2):  # a helper that died (killed, out of memory) is replaced once
                pool = self._get()
                if pool is None:
                    return fn(*args)
                try:
                    self._ready(pool)  # a new helper imports first: its start-up is not this call's running time
                    return pool.submit(fn, *args).result(timeout=timeout)
                except FutureTimeout:
                    self._kill(pool)
                    raise HelperTimeout(f'it took more than {timeout:g} s and was stopped') from None
                except BrokenProcessPool:
                    self._reset(pool)
            if timeout is not None:  # not in the server, where nothing could stop it
                raise HelperTimeout('the helper process failed twice')
            return fn(*args)
        finally:
            self._one.release()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


HELPER = Helper()
