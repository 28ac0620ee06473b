"""Keeping SSTables open: one TableReader (engine/_native/table_reader.pyx)
per live file, opened on first use.
Thread-safety: get() may race to open the same file; a lock makes one win.
"""
from __future__ import annotations

import threading

from engine._native.block_cache import BlockCache
from engine._native.table_reader import TableReader
from engine.env import Env

__all__ = ["TableCache", "TableReader"]


class TableCache:
    """One open TableReader per live file number."""

    def __init__(self, env: Env, path_of, block_cache: BlockCache | None, shared: bool = False):
        """shared: block_cache is shared with other DBs: keys get this table
        cache's own prefix, and a deleted file's blocks are left to age out
        (finding them would scan the whole shared cache)."""
        self._env = env
        self._path_of = path_of
        self._block_cache = block_cache
        self._shared = shared
        self._cache_prefix = block_cache.new_owner_prefix() if shared and block_cache is not None else 0
        self.readers: dict[int, TableReader] = {}
        self._lock = threading.Lock()

    def get(self, number: int) -> TableReader:
        reader = self.readers.get(number)
        if reader is not None:
            return reader
        with self._lock:
            reader = self.readers.get(number)
            if reader is None:
                reader = TableReader(self._env, self._path_of("sst", number), number, self._block_cache,
                                     self._cache_prefix)
                self.readers[number] = reader
            return reader

    def evict(self, number: int) -> None:
        with self._lock:
            reader = self.readers.pop(number, None)
        if self._block_cache is not None and not self._shared:
            self._block_cache.evict_file(number)
        # The reader's file closes when the last cursor using it is gone.
        del reader

    def close(self) -> None:
        with self._lock:
            self.readers.clear()
