from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum:
    BLOCK_RESTART_INTERVAL = 16
    BLOCK_ENTRY_FIXED = 25      # lsn u64 + kind u8 + seq 16

# One decoded entry of a Block. Keys are materialized (prefix compression
# undone) into the Block's key buffer; values point into the block payload.
cdef struct BlockEntry:
    uint64_t lsn
    uint32_t key_off
    uint32_t key_len
    uint32_t value_off
    uint32_t value_len
    uint32_t seq_off
    uint8_t kind

cdef class BlockBuilder:
    cdef uint8_t *_buf
    cdef size_t _size
    cdef size_t _cap
    cdef uint32_t *_restarts
    cdef size_t _n_restarts
    cdef size_t _cap_restarts
    cdef uint8_t *_last_key
    cdef size_t _last_key_len
    cdef size_t _last_key_cap
    cdef readonly Py_ssize_t count
    cdef int _since_restart

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil
    cdef size_t estimated_size(self) noexcept nogil
    cdef size_t finish_into(self, uint8_t *out) noexcept nogil
    cdef bytes finish(self)
    cdef void reset(self) noexcept nogil

cdef class Block:
    cdef bytes _payload
    cdef const uint8_t *_data
    cdef uint8_t *_keys
    cdef BlockEntry *entries
    cdef uint64_t *_k0          # key bytes [0, 8) big-endian, zero padded, per entry
    cdef uint64_t *_k1          # key bytes [8, 16)
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t charge

    cdef const uint8_t *key_at(self, Py_ssize_t i) noexcept nogil
    cdef bint _build_prefixes(self) noexcept nogil
    cdef Py_ssize_t lower_bound(self, const uint8_t *key, size_t n, uint64_t lsn) noexcept nogil
