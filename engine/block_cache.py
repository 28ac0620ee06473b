"""LRU cache of decoded blocks, bounded in bytes (each Block's `charge`).

Keys are (file number, block offset); file numbers are never reused, so an
entry can never describe the wrong file. Thread-safety: one lock.
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class BlockCache:
    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self._map: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.used = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        with self._lock:
            block = self._map.get(key)
            if block is None:
                self.misses += 1
                return None
            self._map.move_to_end(key)
            self.hits += 1
            return block

    def put(self, key, block) -> None:
        charge = block.charge
        if charge > self.capacity:
            return
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self.used -= old.charge
            self._map[key] = block
            self.used += charge
            while self.used > self.capacity:
                _, evicted = self._map.popitem(last=False)
                self.used -= evicted.charge

    def evict_file(self, number: int) -> None:
        with self._lock:
            for key in [k for k in self._map if k[0] == number]:
                self.used -= self._map.pop(key).charge
