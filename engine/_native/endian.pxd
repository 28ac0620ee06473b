# Fixed-width little-endian integers, as every on-disk format here stores
# them (the seq, big-endian by design, has its own helpers in sequencer.pxd).
# memcpy of a host integer would do on little-endian hosts; byte-wise code is
# endian-independent and compiles to the same single load/store.
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef inline void put_u32_le(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)
    p[2] = <uint8_t>(v >> 16)
    p[3] = <uint8_t>(v >> 24)


cdef inline uint32_t get_u32_le(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void put_u64_le(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(v >> (8 * i))


cdef inline uint64_t get_u64_le(const uint8_t *p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= <uint64_t>p[i] << (8 * i)
    return v
