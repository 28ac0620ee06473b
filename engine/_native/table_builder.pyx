"""Writes one SSTable. The file format is specified here, once.

    +------------+------------+-----+--------------+-------------+--------+
    | data blk 0 | data blk 1 | ... | filter block | index block | footer |
    +------------+------------+-----+--------------+-------------+--------+

  every block := stored payload | compression u8 | crc u32 LE      (5-B trailer)
    compression  0 = raw, 1 = zstd (level from options; a block whose zstd
                 form is not smaller than the raw payload is stored raw)
    crc          masked CRC32C of the stored payload and the compression byte
  data block     sstable_block.pyx, about `block_size` (4 KiB) before compression
  filter block   bloom.pyx, over the internal keys (table id + user key)
  index block    sstable_block.pyx encoding, one entry per data block: the key
                 and lsn of the block's last entry, value = offset u64 LE | size u32 LE
                 (size of the stored payload, trailer excluded)

  footer (48 B, at the end of the file):
    0          8            12          20            24        32         36     40       48
    | index_off | index_size | filter_off | filter_size | entries | version | crc  | magic  |
    | u64 LE    | u32 LE     | u64 LE     | u32 LE      | u64 LE  | u32 LE  | u32  | u64 LE |
    crc    masked CRC32C of footer bytes [0, 36)
    magic  TABLE_MAGIC; version TABLE_VERSION (1)

Contract: entries are added in strictly increasing internal order; one user
key's versions never span two tables of one level (the compaction cuts files
only between user keys; same_key_as_last tells it where it may cut).
Thread-safety: one owner. add() runs without the GIL and takes it only to
compress and write a full block.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from engine._native.endian cimport put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

import numpy as np
import zstandard

from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_extend, qkv_crc32c_mask
from engine._native.cursor cimport compare_keys, KIND_VALUE
from engine._native.bloom cimport bloom_hash
from engine._native.sstable_block cimport BlockBuilder
from engine._native.sstable_block import encode_handle
from engine._native.bloom import build_filter

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

TABLE_MAGIC = 0x71756F72756D6B76   # "quorumkv"
TABLE_VERSION = 1
FOOTER_SIZE = 48
TRAILER_SIZE = 5
COMPRESSION_RAW = 0
COMPRESSION_ZSTD = 1
_ZERO_SEQ = b"\x00" * 16


def block_trailer(bytes stored not None, int compression) -> bytes:
    cdef uint8_t t[5]
    t[0] = <uint8_t>compression
    cdef uint32_t crc = qkv_crc32c_extend(0, <const uint8_t *>PyBytes_AS_STRING(stored), len(stored))
    crc = qkv_crc32c_extend(crc, t, 1)
    put_u32_le(t + 1, qkv_crc32c_mask(crc))
    return (<char *>t)[:5]


def encode_footer(uint64_t index_off, uint32_t index_size, uint64_t filter_off, uint32_t filter_size,
                  uint64_t entries) -> bytes:
    cdef uint8_t f[48]
    put_u64_le(f, index_off)
    put_u32_le(f + 8, index_size)
    put_u64_le(f + 12, filter_off)
    put_u32_le(f + 20, filter_size)
    put_u64_le(f + 24, entries)
    put_u32_le(f + 32, TABLE_VERSION)
    put_u32_le(f + 36, qkv_crc32c_mask(qkv_crc32c_extend(0, f, 36)))
    put_u64_le(f + 40, TABLE_MAGIC)
    return (<char *>f)[:48]


cdef class TableBuilder:
    """Builds one table into `file` (an Env writable file: .append(bytes))."""

    def __cinit__(self):
        self._hashes = NULL
        self._last_key = NULL

    def __init__(self, file, size_t block_size=4096, int compression_level=3, int bloom_bits_per_key=10):
        self._data = BlockBuilder()
        self._index = BlockBuilder()
        self._file = file
        self._compressor = zstandard.ZstdCompressor(level=compression_level) if compression_level > 0 else None
        self._block_size = block_size
        self._bits_per_key = bloom_bits_per_key
        self._offset = 0
        self._cap_hashes = 1024
        self._hashes = <uint32_t *>malloc(self._cap_hashes * sizeof(uint32_t))
        self._n_hashes = 0
        self._last_key_cap = 256
        self._last_key = <uint8_t *>malloc(self._last_key_cap)
        self._last_key_len = 0
        self._last_lsn = 0
        self._smallest = None
        self.entries = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self._finished = False
        if self._hashes == NULL or self._last_key == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._hashes)
        free(self._last_key)

    cdef bint same_key_as_last(self, const uint8_t *key, size_t kn) noexcept nogil:
        return self.entries > 0 and compare_keys(key, kn, self._last_key, self._last_key_len) == 0

    cdef uint64_t estimated_file_size(self) noexcept nogil:
        return self._offset + self._data.estimated_size()

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil:
        cdef void *p
        cdef bint new_key = not self.same_key_as_last(key, kn)
        if self._data.count > 0 and self._data.estimated_size() >= self._block_size:
            with gil:
                self._flush_block()
        if self.entries == 0:
            with gil:
                self._smallest = (<char *>key)[:kn]
        self._data.add(key, kn, lsn, kind, seq, value, vn)
        if new_key:
            if self._n_hashes == self._cap_hashes:
                p = realloc(self._hashes, 2 * self._cap_hashes * sizeof(uint32_t))
                if p == NULL:
                    with gil:
                        raise MemoryError()
                self._hashes = <uint32_t *>p
                self._cap_hashes *= 2
            self._hashes[self._n_hashes] = bloom_hash(key, kn)
            self._n_hashes += 1
            if kn > self._last_key_cap:
                p = realloc(self._last_key, kn)
                if p == NULL:
                    with gil:
                        raise MemoryError()
                self._last_key = <uint8_t *>p
                self._last_key_cap = kn
            memcpy(self._last_key, key, kn)
            self._last_key_len = kn
        self._last_lsn = lsn
        self.entries += 1
        return 0

    cdef int _flush_block(self) except -1:
        cdef bytes payload = self._data.finish()
        cdef bytes handle = self._write_block(payload, True)
        self._index.add(self._last_key, self._last_key_len, self._last_lsn, KIND_VALUE,
                        <const uint8_t *>PyBytes_AS_STRING(_ZERO_SEQ),
                        <const uint8_t *>PyBytes_AS_STRING(handle), 12)
        return 0

    def _write_block(self, bytes payload, bint compress):
        """Writes one block with its trailer; returns its 12-byte handle."""
        cdef int compression = COMPRESSION_RAW
        cdef bytes stored = payload
        if compress and self._compressor is not None:
            packed = self._compressor.compress(payload)
            if len(packed) < len(payload):
                stored = packed
                compression = COMPRESSION_ZSTD
        handle = encode_handle(self._offset, len(stored))
        self._file.append(stored + block_trailer(stored, compression))
        self.raw_bytes += len(payload)
        self.stored_bytes += len(stored)
        self._offset += len(stored) + TRAILER_SIZE
        return handle

    def py_add(self, bytes key not None, uint64_t lsn, int kind, bytes seq not None, bytes value not None):
        """Adds one entry (tests and tools; flush and compaction add from C)."""
        if len(seq) != 16:
            raise ValueError("seq must be 16 bytes")
        self.add(<const uint8_t *>PyBytes_AS_STRING(key), len(key), lsn, <uint8_t>kind,
                 <const uint8_t *>PyBytes_AS_STRING(seq), <const uint8_t *>PyBytes_AS_STRING(value), len(value))

    def finish(self) -> dict:
        """Writes the filter, index and footer. Returns the table's properties:
        entries, file_size, smallest and largest key (None for an empty table)."""
        if self._finished:
            raise RuntimeError("table already finished")
        self._finished = True
        if self._data.count > 0:
            self._flush_block()
        hashes = np.frombuffer((<char *>self._hashes)[:self._n_hashes * sizeof(uint32_t)], dtype=np.uint32)
        filt = build_filter(hashes, self._bits_per_key)
        filter_off = self._offset
        self._write_block(filt, False)
        index_payload = self._index.finish()
        index_off = self._offset
        self._write_block(index_payload, False)
        self._file.append(encode_footer(index_off, len(index_payload), filter_off, len(filt), self.entries))
        self._offset += FOOTER_SIZE
        return {
            "entries": self.entries,
            "file_size": self._offset,
            "smallest": self._smallest,
            "largest": (<char *>self._last_key)[:self._last_key_len] if self.entries else None,
            "raw_bytes": self.raw_bytes,
            "stored_bytes": self.stored_bytes,
        }

    @property
    def file_size_estimate(self) -> int:
        return self.estimated_file_size()
