"""One small thread-safe LRU cache (text features, class sets, captions share it)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most `max_entries` items; `get` marks an item most recently used; `put` evicts the least
    recently used beyond the limit (max_entries 0 keeps nothing). Counts hits and misses."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[K, V]]) -> bool:
        """Store items in order; True if any was stored."""
        stored = False
        with self._lock:
            for key, value in items:
                if self.max_entries == 0:
                    break
                self._data[key] = value
                self._data.move_to_end(key)
                stored = True
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return stored

    def items(self) -> list[tuple[K, V]]:
        """A snapshot, least recently used first."""
        with self._lock:
            return list(self._data.items())

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data
