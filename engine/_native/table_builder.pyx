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

Batched writing: add() runs without the GIL, and a finished data block is
queued in C memory (its raw payload, and its last key and lsn for the index)
until about `batch_bytes` (256 KiB) are pending, or finish(). Only then is the
GIL taken, once for the batch: one zstd call compresses every block (it
releases the GIL for all of them), the trailers are computed in C, one
file.append writes the batch, and the index entries are added. Taking the GIL
for every 4 KiB block instead (to compress, checksum and append it) made a
flush stall the foreground writer thread, which drops the GIL for every put's
write() and has to win it back each time. The bytes written do not depend on
the batch size: each block is compressed alone, exactly as compress() does,
and blocks are laid out in order (batch_bytes=0 writes each block as it
completes).
Thread-safety: one owner.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from engine._native.endian cimport put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ

import numpy as np
import zstandard

from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_extend, qkv_crc32c_mask
from engine._native.cursor cimport compare_keys, KIND_VALUE
from engine._native.bloom cimport bloom_hash
from engine._native.sstable_block cimport BlockBuilder
from engine._native.bloom import build_filter

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

cdef enum:
    C_TRAILER_SIZE = 5
    C_COMPRESSION_RAW = 0
    C_COMPRESSION_ZSTD = 1

TABLE_MAGIC = 0x71756F72756D6B76   # "quorumkv"
TABLE_VERSION = 1
FOOTER_SIZE = 48
TRAILER_SIZE = C_TRAILER_SIZE
COMPRESSION_RAW = C_COMPRESSION_RAW
COMPRESSION_ZSTD = C_COMPRESSION_ZSTD
DEFAULT_BATCH_BYTES = 256 * 1024
# The batch call needs python-zstandard's C backend (the CFFI one lacks it);
# without it a batch is compressed block by block, still in one GIL section.
_MULTI_COMPRESS = "multi_compress_to_buffer" in zstandard.backend_features
cdef uint8_t _ZERO_SEQ[16]   # static, so zero-filled: the seq of every index entry


cdef void *_grow(void *buf, size_t *cap, size_t need, size_t item) except NULL nogil:
    """buf (cap[0] > 0 items of `item` bytes), grown if needed to hold `need`
    items: the new pointer. On MemoryError buf is left as it was."""
    cdef size_t c = cap[0]
    cdef void *p
    if need <= c:
        return buf
    while c < need:
        c *= 2
    p = realloc(buf, c * item)
    if p == NULL:
        with gil:
            raise MemoryError()
    cap[0] = c
    return p


cdef inline void _put_trailer(uint8_t *t, const uint8_t *stored, size_t n, uint8_t compression) noexcept nogil:
    t[0] = compression
    cdef uint32_t crc = qkv_crc32c_extend(0, stored, n)
    crc = qkv_crc32c_extend(crc, t, 1)
    put_u32_le(t + 1, qkv_crc32c_mask(crc))


cdef inline size_t _put_block(uint8_t *out, const uint8_t *stored, size_t n, uint8_t compression) noexcept nogil:
    """Writes one block as the file stores it (payload, trailer) to `out`;
    returns the bytes written."""
    memcpy(out, stored, n)
    _put_trailer(out + n, stored, n, compression)
    return n + C_TRAILER_SIZE


def block_trailer(bytes stored not None, int compression) -> bytes:
    cdef uint8_t t[5]
    _put_trailer(t, <const uint8_t *>PyBytes_AS_STRING(stored), len(stored), <uint8_t>compression)
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
    """Builds one table into `file` (an Env writable file: .append(bytes)).
    batch_bytes: raw data-block bytes queued before a batch is compressed and
    written (module docstring); 0 writes every block as it completes."""

    def __cinit__(self):
        self._hashes = NULL
        self._last_key = NULL
        self._pend = NULL
        self._segs = NULL
        self._blocks = NULL
        self._pend_keys = NULL
        self._out = NULL

    def __init__(self, file, size_t block_size=4096, int compression_level=3, int bloom_bits_per_key=10,
                 size_t batch_bytes=DEFAULT_BATCH_BYTES):
        self._data = BlockBuilder()
        self._index = BlockBuilder()
        self._file = file
        self._compressor = zstandard.ZstdCompressor(level=compression_level) if compression_level > 0 else None
        self._block_size = block_size
        self._bits_per_key = bloom_bits_per_key
        self._offset = 0
        self._n_hashes = 0
        self._last_key_len = 0
        self._last_lsn = 0
        self._smallest = None
        self.entries = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self._finished = False
        self._batch_bytes = batch_bytes
        self._pend_size = 0
        self._n_pend = 0
        self._pend_keys_size = 0
        # Every buffer starts small (capacity > 0, as _grow needs) and grows on
        # demand; realloc, so that running __init__ again does not leak.
        self._cap_hashes = 1024
        self._last_key_cap = 256
        self._pend_cap = 16384
        self._cap_segs = 64
        self._cap_blocks = 64
        self._pend_keys_cap = 4096
        self._out_cap = 16384
        self._hashes = <uint32_t *>realloc(self._hashes, self._cap_hashes * sizeof(uint32_t))
        self._last_key = <uint8_t *>realloc(self._last_key, self._last_key_cap)
        self._pend = <uint8_t *>realloc(self._pend, self._pend_cap)
        self._segs = <Segment *>realloc(self._segs, self._cap_segs * sizeof(Segment))
        self._blocks = <PendingBlock *>realloc(self._blocks, self._cap_blocks * sizeof(PendingBlock))
        self._pend_keys = <uint8_t *>realloc(self._pend_keys, self._pend_keys_cap)
        self._out = <uint8_t *>realloc(self._out, self._out_cap)
        if self._hashes == NULL or self._last_key == NULL or self._pend == NULL or self._segs == NULL \
                or self._blocks == NULL or self._pend_keys == NULL or self._out == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._hashes)
        free(self._last_key)
        free(self._pend)
        free(self._segs)
        free(self._blocks)
        free(self._pend_keys)
        free(self._out)

    cdef bint same_key_as_last(self, const uint8_t *key, size_t kn) noexcept nogil:
        return self.entries > 0 and compare_keys(key, kn, self._last_key, self._last_key_len) == 0

    cdef uint64_t estimated_file_size(self) noexcept nogil:
        # Pending blocks count raw, like the open block: their stored size is
        # not known before the batch is compressed.
        return self._offset + self._pend_size + C_TRAILER_SIZE * self._n_pend + self._data.estimated_size()

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil:
        cdef bint new_key = not self.same_key_as_last(key, kn)
        if self._data.count > 0 and self._data.estimated_size() >= self._block_size:
            self._queue_block()
            if self._pend_size >= self._batch_bytes:
                with gil:
                    self._write_pending()
        if self.entries == 0:
            with gil:
                self._smallest = (<char *>key)[:kn]
        self._data.add(key, kn, lsn, kind, seq, value, vn)
        if new_key:
            self._hashes = <uint32_t *>_grow(self._hashes, &self._cap_hashes, self._n_hashes + 1, sizeof(uint32_t))
            self._hashes[self._n_hashes] = bloom_hash(key, kn)
            self._n_hashes += 1
            self._last_key = <uint8_t *>_grow(self._last_key, &self._last_key_cap, kn, 1)
            memcpy(self._last_key, key, kn)
            self._last_key_len = kn
        self._last_lsn = lsn
        self.entries += 1
        return 0

    cdef int _queue_block(self) except -1 nogil:
        """Moves the open data block to the pending batch, with its index key
        (the key and lsn of its last entry, the last one added)."""
        cdef size_t n = self._data.estimated_size()
        cdef size_t i = self._n_pend
        self._pend = <uint8_t *>_grow(self._pend, &self._pend_cap, self._pend_size + n, 1)
        self._segs = <Segment *>_grow(self._segs, &self._cap_segs, i + 1, sizeof(Segment))
        self._blocks = <PendingBlock *>_grow(self._blocks, &self._cap_blocks, i + 1, sizeof(PendingBlock))
        self._pend_keys = <uint8_t *>_grow(self._pend_keys, &self._pend_keys_cap,
                                           self._pend_keys_size + self._last_key_len, 1)
        self._data.finish_into(self._pend + self._pend_size)
        self._segs[i].offset = self._pend_size
        self._segs[i].length = n
        memcpy(self._pend_keys + self._pend_keys_size, self._last_key, self._last_key_len)
        self._blocks[i].key_off = self._pend_keys_size
        self._blocks[i].key_len = self._last_key_len
        self._blocks[i].lsn = self._last_lsn
        self._pend_size += n
        self._pend_keys_size += self._last_key_len
        self._n_pend = i + 1
        return 0

    cdef int _write_pending(self) except -1:
        """Compresses, lays out and appends the pending blocks with one
        compressor call and one file.append, then indexes them."""
        if self._n_pend == 0:
            return 0
        cdef Py_ssize_t size = self._assemble(self._compress_pending())
        self._file.append(PyBytes_FromStringAndSize(<char *>self._out, size))
        self._index_pending()   # the offsets start at the batch's, so before moving _offset
        self.raw_bytes += self._pend_size
        self.stored_bytes += <uint64_t>size - C_TRAILER_SIZE * self._n_pend
        self._offset += <uint64_t>size
        self._pend_size = 0
        self._pend_keys_size = 0
        self._n_pend = 0
        return 0

    cdef object _compress_pending(self):
        """The pending blocks, each compressed on its own as compress() would
        (same compressor parameters, one frame per block): item i supports the
        buffer protocol. None without a compressor."""
        if self._compressor is None:
            return None
        if not _MULTI_COMPRESS:
            return [self._compressor.compress(self._pend[self._segs[i].offset:self._segs[i].offset +
                                                         self._segs[i].length])
                    for i in range(self._n_pend)]
        # Views of the C buffers, not copies; they live only for this call,
        # which is all the compressor reads them in (nothing else touches them:
        # one owner).
        payloads = PyMemoryView_FromMemory(<char *>self._pend, self._pend_size, PyBUF_READ)
        segments = PyMemoryView_FromMemory(<char *>self._segs, self._n_pend * sizeof(Segment), PyBUF_READ)
        return self._compressor.multi_compress_to_buffer(zstandard.BufferWithSegments(payloads, segments),
                                                         threads=0)

    cdef Py_ssize_t _assemble(self, object packed) except -1:
        """Lays the pending blocks out in _out as the file stores them, each
        followed by its trailer: the compressed form only where it is smaller
        than the raw payload. Records each block's stored size; returns the
        batch's size."""
        cdef size_t i
        cdef size_t pos = 0
        cdef const uint8_t *raw
        cdef size_t rn
        cdef Py_buffer view
        self._out = <uint8_t *>_grow(self._out, &self._out_cap, self._pend_size + C_TRAILER_SIZE * self._n_pend, 1)
        for i in range(self._n_pend):
            raw = self._pend + self._segs[i].offset
            rn = self._segs[i].length
            if packed is None:
                self._blocks[i].stored = rn
                pos += _put_block(self._out + pos, raw, rn, C_COMPRESSION_RAW)
                continue
            PyObject_GetBuffer(packed[i], &view, PyBUF_SIMPLE)
            if <size_t>view.len < rn:
                self._blocks[i].stored = view.len
                pos += _put_block(self._out + pos, <const uint8_t *>view.buf, view.len, C_COMPRESSION_ZSTD)
            else:
                self._blocks[i].stored = rn
                pos += _put_block(self._out + pos, raw, rn, C_COMPRESSION_RAW)
            PyBuffer_Release(&view)
        return pos

    cdef int _index_pending(self) except -1 nogil:
        """One index entry per pending block: its last key and lsn, and its
        handle (offset u64 LE | stored size u32 LE). Blocks are contiguous
        from the batch's offset."""
        cdef uint8_t handle[12]
        cdef uint64_t off = self._offset
        cdef size_t i
        for i in range(self._n_pend):
            put_u64_le(handle, off)
            put_u32_le(handle + 8, <uint32_t>self._blocks[i].stored)
            self._index.add(self._pend_keys + self._blocks[i].key_off, self._blocks[i].key_len,
                            self._blocks[i].lsn, KIND_VALUE, _ZERO_SEQ, handle, 12)
            off += self._blocks[i].stored + C_TRAILER_SIZE
        return 0

    cdef int _write_raw_block(self, bytes payload) except -1:
        """Appends one uncompressed block (filter, index) with its trailer."""
        self._file.append(payload + block_trailer(payload, C_COMPRESSION_RAW))
        self.raw_bytes += len(payload)
        self.stored_bytes += len(payload)
        self._offset += len(payload) + C_TRAILER_SIZE
        return 0

    def py_add(self, bytes key not None, uint64_t lsn, int kind, bytes seq not None, bytes value not None):
        """Adds one entry (tests and tools; flush and compaction add from C)."""
        if len(seq) != 16:
            raise ValueError("seq must be 16 bytes")
        self.add(<const uint8_t *>PyBytes_AS_STRING(key), len(key), lsn, <uint8_t>kind,
                 <const uint8_t *>PyBytes_AS_STRING(seq), <const uint8_t *>PyBytes_AS_STRING(value), len(value))

    def finish(self) -> dict:
        """Writes the pending blocks, the filter, index and footer. Returns the
        table's properties: entries, file_size, smallest and largest key (None
        for an empty table)."""
        if self._finished:
            raise RuntimeError("table already finished")
        self._finished = True
        if self._data.count > 0:
            self._queue_block()
        self._write_pending()
        hashes = np.frombuffer((<char *>self._hashes)[:self._n_hashes * sizeof(uint32_t)], dtype=np.uint32)
        filt = build_filter(hashes, self._bits_per_key)
        filter_off = self._offset
        self._write_raw_block(filt)
        index_payload = self._index.finish()
        index_off = self._offset
        self._write_raw_block(index_payload)
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
