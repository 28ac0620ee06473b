"""Reading SSTables (format: engine/_native/table_builder.pyx) and keeping
them open.

TableReader validates the footer, reads the index and filter blocks once, and
serves data blocks through the block cache, verifying every block's checksum
when it is read from disk. TableCache keeps one reader per live file.
Thread-safety: readers are shared and immutable apart from the cache.
"""
from __future__ import annotations

import struct
import threading

import zstandard

from engine._native import bloom
from engine._native.crc32c import crc32c, unmask
from engine._native.sstable_block import Block
from engine._native.table_builder import (COMPRESSION_RAW, COMPRESSION_ZSTD, FOOTER_SIZE, TABLE_MAGIC,
                                          TABLE_VERSION, TRAILER_SIZE)
from engine._native.table_cursor import TableCursor
from engine.block_cache import BlockCache
from engine.env import Env
from engine.errors import CorruptionError

_FOOTER = struct.Struct("<QIQIQIIQ")
_TRAILER = struct.Struct("<BI")
_decompressor = threading.local()


def _zstd() -> zstandard.ZstdDecompressor:
    d = getattr(_decompressor, "d", None)
    if d is None:
        d = _decompressor.d = zstandard.ZstdDecompressor()
    return d


class TableReader:
    def __init__(self, env: Env, path: str, number: int, cache: BlockCache | None):
        self.path = path
        self.number = number
        self._cache = cache
        self._file = env.open_random(path)
        size = self._file.size
        if size < FOOTER_SIZE:
            raise CorruptionError(f"table shorter than its {FOOTER_SIZE}-byte footer", path)
        footer = self._file.read(size - FOOTER_SIZE, FOOTER_SIZE)
        (index_off, index_size, filter_off, filter_size, self.entries, version, crc,
         magic) = _FOOTER.unpack(footer)
        if magic != TABLE_MAGIC:
            raise CorruptionError("bad table magic: not a quorumkv table", path, size - FOOTER_SIZE)
        if unmask(crc) != crc32c(footer[:36]):
            raise CorruptionError("table footer checksum mismatch", path, size - FOOTER_SIZE)
        if version != TABLE_VERSION:
            raise CorruptionError(f"table format version {version}, this build reads {TABLE_VERSION}", path)
        limit = size - FOOTER_SIZE
        if filter_off + filter_size + TRAILER_SIZE > limit or index_off + index_size + TRAILER_SIZE > limit:
            raise CorruptionError("table footer points past the end of the file", path)
        self._filter = self._read_block(filter_off, filter_size)
        self.index = Block(self._read_block(index_off, index_size))
        self._data_limit = filter_off

    def _read_block(self, offset: int, size: int) -> bytes:
        raw = self._file.read(offset, size + TRAILER_SIZE)
        if len(raw) != size + TRAILER_SIZE:
            raise CorruptionError("block runs past the end of the file", self.path, offset)
        stored = raw[:size]
        ctype, crc = _TRAILER.unpack_from(raw, size)
        if unmask(crc) != crc32c(raw[:size + 1]):
            raise CorruptionError("block checksum mismatch", self.path, offset)
        if ctype == COMPRESSION_RAW:
            return stored
        if ctype == COMPRESSION_ZSTD:
            try:
                return _zstd().decompress(stored)
            except zstandard.ZstdError as exc:
                raise CorruptionError(f"block does not decompress: {exc}", self.path, offset) from None
        raise CorruptionError(f"unknown block compression {ctype}", self.path, offset)

    def data_block(self, i: int) -> Block:
        offset, size = self.index.handle(i)
        key = (self.number, offset)
        cache = self._cache
        if cache is not None:
            block = cache.get(key)
            if block is not None:
                return block
        if offset + size + TRAILER_SIZE > self._data_limit:
            raise CorruptionError("index points past the data blocks", self.path, offset)
        try:
            block = Block(self._read_block(offset, size))
        except CorruptionError as exc:
            if exc.path is None:
                raise CorruptionError(str(exc), self.path, offset) from None
            raise
        if cache is not None:
            cache.put(key, block)
        return block

    def may_contain(self, ikey: bytes) -> bool:
        return bloom.may_contain(self._filter, ikey)

    def get(self, ikey: bytes, snapshot_lsn: int):
        """(kind, seq, value) of the newest version of ikey at the snapshot, or None."""
        if not bloom.may_contain(self._filter, ikey):
            return None
        i = self.index.index_lookup(ikey, snapshot_lsn)
        if i < 0:
            return None
        return self.data_block(i).find(ikey, snapshot_lsn)

    def cursor(self) -> TableCursor:
        return TableCursor(self)

    def close(self) -> None:
        self._file.close()


class TableCache:
    """One open TableReader per live file number."""

    def __init__(self, env: Env, path_of, block_cache: BlockCache | None):
        self._env = env
        self._path_of = path_of
        self._block_cache = block_cache
        self._readers: dict[int, TableReader] = {}
        self._lock = threading.Lock()

    def get(self, number: int) -> TableReader:
        reader = self._readers.get(number)
        if reader is not None:
            return reader
        with self._lock:
            reader = self._readers.get(number)
            if reader is None:
                reader = TableReader(self._env, self._path_of("sst", number), number, self._block_cache)
                self._readers[number] = reader
            return reader

    def evict(self, number: int) -> None:
        with self._lock:
            reader = self._readers.pop(number, None)
        if self._block_cache is not None:
            self._block_cache.evict_file(number)
        # The reader's file closes when the last cursor using it is gone.
        del reader

    def close(self) -> None:
        with self._lock:
            self._readers.clear()
