"""Reads one SSTable (format: table_builder.pyx).

Opening validates the footer (magic, checksum, version, offsets) and reads
the filter and index blocks once. Data blocks are read through the block
cache; a block read from disk has its checksum verified before it is decoded.
get() is the point-lookup path, in C but for a cache miss: bloom filter,
binary search of the index, one decoded block, binary search in it.
Thread-safety: immutable after open; shared by every reader thread.
"""
import threading

import zstandard

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from engine._native.bloom cimport bloom_hash, bloom_may_contain
from engine._native.block_cache cimport BlockCache
from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_extend, qkv_crc32c_unmask
from engine._native.endian cimport get_u32_le, get_u64_le
from engine._native.sstable_block cimport Block, BlockEntry
from engine._native.table_builder import (COMPRESSION_RAW, COMPRESSION_ZSTD, FOOTER_SIZE, TABLE_MAGIC,
                                          TABLE_VERSION, TRAILER_SIZE)
from engine._native.table_cursor import TableCursor
from engine.errors import CorruptionError

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

_local = threading.local()


cdef object _decompress(bytes data):
    # ZstdDecompressor objects are not thread-safe: one per thread.
    d = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = zstandard.ZstdDecompressor()
    return d.decompress(data)


cdef class TableReader:
    def __init__(self, env, str path, uint64_t number, BlockCache cache=None, object cache_prefix=0):
        self.path = path
        self.number = number
        self._cache = cache
        self._cache_prefix = cache_prefix   # a shared cache's owner prefix (BlockCache.new_owner_prefix)
        self._file = env.open_random(path)
        cdef uint64_t size = self._file.size
        if size < FOOTER_SIZE:
            raise CorruptionError(f"table shorter than its {FOOTER_SIZE}-byte footer", path)
        cdef bytes footer = self._file.read(size - FOOTER_SIZE, FOOTER_SIZE)
        cdef const uint8_t *f = <const uint8_t *>PyBytes_AS_STRING(footer)
        if get_u64_le(f + 40) != TABLE_MAGIC:
            raise CorruptionError("bad table magic: not a quorumkv table", path, size - FOOTER_SIZE)
        if qkv_crc32c_unmask(get_u32_le(f + 36)) != qkv_crc32c_extend(0, f, 36):
            raise CorruptionError("table footer checksum mismatch", path, size - FOOTER_SIZE)
        if get_u32_le(f + 32) != TABLE_VERSION:
            raise CorruptionError(f"table format version {get_u32_le(f + 32)}, this build reads {TABLE_VERSION}",
                                  path)
        cdef uint64_t index_off = get_u64_le(f), index_size = get_u32_le(f + 8)
        cdef uint64_t filter_off = get_u64_le(f + 12), filter_size = get_u32_le(f + 20)
        self.entries = get_u64_le(f + 24)
        cdef uint64_t limit = size - FOOTER_SIZE
        if filter_off + filter_size + TRAILER_SIZE > limit or index_off + index_size + TRAILER_SIZE > limit:
            raise CorruptionError("table footer points past the end of the file", path)
        self._filter = self._read_block(filter_off, filter_size)
        self.index = Block(self._read_block(index_off, index_size))
        self._data_limit = filter_off

    cdef bytes _read_block(self, uint64_t offset, uint64_t size):
        cdef bytes raw = self._file.read(offset, size + TRAILER_SIZE)
        if <uint64_t>PyBytes_GET_SIZE(raw) != size + TRAILER_SIZE:
            raise CorruptionError("block runs past the end of the file", self.path, offset)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(raw)
        cdef uint8_t ctype = p[size]
        if qkv_crc32c_unmask(get_u32_le(p + size + 1)) != qkv_crc32c_extend(0, p, size + 1):
            raise CorruptionError("block checksum mismatch", self.path, offset)
        cdef bytes stored = raw[:size]
        if ctype == COMPRESSION_RAW:
            return stored
        if ctype == COMPRESSION_ZSTD:
            try:
                return _decompress(stored)
            except zstandard.ZstdError as exc:
                raise CorruptionError(f"block does not decompress: {exc}", self.path, offset) from None
        raise CorruptionError(f"unknown block compression {ctype}", self.path, offset)

    cpdef Block data_block(self, Py_ssize_t i, bint fill_cache=True):
        """Decoded data block i: from the cache when there, else read (and
        cached unless fill_cache is False)."""
        if i < 0 or i >= self.index.count:
            raise IndexError(i)
        cdef BlockEntry *e = &self.index.entries[i]
        if e.value_len != 12:
            raise CorruptionError(f"index entry {i} has a {e.value_len}-byte handle, want 12", self.path)
        cdef const uint8_t *h = self.index._data + e.value_off
        cdef uint64_t offset = get_u64_le(h)
        cdef uint64_t size = get_u32_le(h + 8)
        cdef object key = None
        cdef Block block
        if self._cache is not None:
            key = (<object>self.number << 40) | offset   # block_cache.block_key, as a Python int: no wrap
            if self._cache_prefix:
                key = self._cache_prefix | key
            cached = self._cache.lookup(key)
            if cached is not None:
                return <Block>cached
        if offset + size + TRAILER_SIZE > self._data_limit:
            raise CorruptionError("index points past the data blocks", self.path, offset)
        try:
            block = Block(self._read_block(offset, size))
        except CorruptionError as exc:
            if exc.path is None:
                raise CorruptionError(str(exc), self.path, offset) from None
            raise
        if self._cache is not None and fill_cache:
            self._cache.insert(key, block, block.charge)
        return block

    cpdef object get(self, bytes ikey, uint64_t snapshot_lsn):
        """(kind, seq, value) of the newest version of ikey at the snapshot,
        or None when this table has none."""
        cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(ikey)
        cdef size_t kn = <size_t>PyBytes_GET_SIZE(ikey)
        if not bloom_may_contain(<const uint8_t *>PyBytes_AS_STRING(self._filter),
                                 <size_t>PyBytes_GET_SIZE(self._filter), bloom_hash(k, kn)):
            return None
        cdef Py_ssize_t i = self.index.lower_bound(k, kn, snapshot_lsn)
        if i >= self.index.count:
            return None
        return self.data_block(i).find(ikey, snapshot_lsn)

    def may_contain(self, bytes ikey) -> bool:
        return bloom_may_contain(<const uint8_t *>PyBytes_AS_STRING(self._filter),
                                 <size_t>PyBytes_GET_SIZE(self._filter),
                                 bloom_hash(<const uint8_t *>PyBytes_AS_STRING(ikey), len(ikey)))

    def cursor(self, bint fill_cache=True):
        return TableCursor(self, fill_cache)

    def close(self) -> None:
        self._file.close()
