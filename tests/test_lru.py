"""The one LRU cache: recency order, eviction, zero capacity, hit/miss counts."""

from __future__ import annotations

import pytest

from model.lru import LRUCache


def test_least_recently_used_goes_first_and_get_refreshes():
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.items() == [("a", 1), ("c", 3)]
    assert cache.get("b") is None and (cache.hits, cache.misses) == (1, 1)


def test_zero_capacity_keeps_nothing_and_negative_is_refused():
    cache: LRUCache[str, int] = LRUCache(0)
    assert cache.put_many([("a", 1)]) is False and len(cache) == 0
    with pytest.raises(ValueError, match="max_entries must be >= 0"):
        LRUCache(-1)
