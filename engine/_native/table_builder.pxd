from libc.stdint cimport uint8_t, uint32_t, uint64_t
from engine._native.sstable_block cimport BlockBuilder

# One pending block's place in the pending payloads: the layout of
# zstandard.BufferWithSegments segments (two native u64), so the array is
# handed to the compressor as is.
cdef struct Segment:
    uint64_t offset
    uint64_t length

# What the index needs of a pending block: its last key (in the pending keys
# buffer) and lsn, and, once the batch is assembled, its stored size.
cdef struct PendingBlock:
    size_t key_off
    size_t key_len
    uint64_t lsn
    size_t stored

cdef class TableBuilder:
    cdef BlockBuilder _data
    cdef BlockBuilder _index
    cdef object _file
    cdef object _compressor
    cdef size_t _block_size
    cdef int _bits_per_key
    cdef uint64_t _offset
    cdef uint32_t *_hashes
    cdef size_t _n_hashes
    cdef size_t _cap_hashes
    cdef uint8_t *_last_key
    cdef size_t _last_key_len
    cdef size_t _last_key_cap
    cdef uint64_t _last_lsn
    cdef bytes _smallest
    cdef readonly uint64_t entries
    cdef readonly uint64_t raw_bytes
    cdef readonly uint64_t stored_bytes
    cdef bint _finished
    # The pending batch: finished data blocks not yet compressed or written.
    cdef size_t _batch_bytes
    cdef uint8_t *_pend           # raw payloads, back to back
    cdef size_t _pend_size
    cdef size_t _pend_cap
    cdef Segment *_segs           # per pending block, into _pend
    cdef size_t _cap_segs
    cdef PendingBlock *_blocks
    cdef size_t _cap_blocks
    cdef size_t _n_pend
    cdef uint8_t *_pend_keys      # last keys of the pending blocks, back to back
    cdef size_t _pend_keys_size
    cdef size_t _pend_keys_cap
    cdef uint8_t *_out            # the batch as stored: blocks and trailers
    cdef size_t _out_cap

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil
    cdef bint same_key_as_last(self, const uint8_t *key, size_t kn) noexcept nogil
    cdef uint64_t estimated_file_size(self) noexcept nogil
    cdef int _queue_block(self) except -1 nogil
    cdef int _write_pending(self) except -1
    cdef object _compress_pending(self)
    cdef Py_ssize_t _assemble(self, object packed) except -1
    cdef int _index_pending(self) except -1 nogil
    cdef int _write_raw_block(self, bytes payload) except -1
