"""A small cache of loaded models, each with a lock (no torch here: a server creates it at start-up)."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable


class ModelCache:
    """The last `size` loaded models by key, each with a lock: attribution and mixing maps attach hooks and
    set gradients on a model, so concurrent requests for one model take turns (different models run side by
    side).

    Requests for a key that is being loaded wait for that load instead of building a second copy (two copies of a
    large preset doubled its memory and time). A model's lock lives as long as the model does, not as long as its
    cache entry: a request still holding an evicted model takes the same lock as the one using it already."""

    def __init__(self, size: int = 3):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its lock
        self._loading: dict = {}  # key -> the lock held while that key loads
        self._guard = threading.Lock()

    def get(self, key, load: Callable):
        with self._guard:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per key; the others wait for it, then find the entry
            with self._guard:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            try:
                entry = load()
            except BaseException:
                with self._guard:
                    self._forget_loading(key, loading)
                raise
            with self._guard:  # the entry is in before the key stops loading: no one loads it twice
                self._entries[key] = entry
                self._locks.setdefault(entry.model, threading.Lock())
                self._forget_loading(key, loading)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            return entry

    def _forget_loading(self, key, loading) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]

    def lock(self, model: object) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model, threading.Lock())
