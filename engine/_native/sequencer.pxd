from libc.stdint cimport uint8_t, uint32_t, uint64_t
cimport cython

cdef enum:
    SEQ_SIZE = 16

cdef inline void seq_pack(uint8_t *out, uint64_t ts, uint32_t counter, uint32_t node) noexcept nogil:
    cdef int i
    for i in range(8):
        out[i] = <uint8_t>(ts >> (56 - 8 * i))
    for i in range(4):
        out[8 + i] = <uint8_t>(counter >> (24 - 8 * i))
        out[12 + i] = <uint8_t>(node >> (24 - 8 * i))

cdef inline uint64_t seq_ts(const uint8_t *p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v

cdef inline uint32_t seq_u32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef class Sequencer:
    cdef readonly uint32_t node_id
    cdef uint64_t _last_ts
    cdef uint32_t _last_counter
    cdef object _clock
    cdef cython.pymutex _lock
    cdef int next_into(self, uint8_t *out) except -1
    cdef void _observe(self, const uint8_t *seq) noexcept
