"""A small cache of loaded models, each with a lock (no torch here: a server creates it at start-up)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class ModelCache:
    """The last `size` loaded models by key, each with a lock: attribution and mixing maps attach hooks and
    set gradients on a model, so concurrent requests for one model take turns (different models run side by
    side)."""

    def __init__(self, size: int = 3):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key, load: Callable):
        with self._guard:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        entry = load()
        with self._guard:
            self._entries[key] = entry
            self._locks.setdefault(id(entry.model), threading.Lock())
            while len(self._entries) > self.size:
                old = self._entries.popitem(last=False)[1]
                self._locks.pop(id(old.model), None)
        return entry

    def lock(self, model: object) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(id(model), threading.Lock())
