from libc.stdint cimport uint8_t, uint32_t, uint64_t
from engine._native.sstable_block cimport BlockBuilder

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

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil
    cdef bint same_key_as_last(self, const uint8_t *key, size_t kn) noexcept nogil
    cdef uint64_t estimated_file_size(self) noexcept nogil
    cdef int _flush_block(self) except -1
