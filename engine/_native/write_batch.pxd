from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum:
    BATCH_HEADER_SIZE = 13
    BATCH_FLAG_APPLIED_INDEX = 1
    MAX_KEY_SIZE = 4096
    MAX_VALUE_SIZE = 1048576
    TABLE_PREFIX_SIZE = 4

cdef struct BatchRecord:
    uint8_t kind
    const uint8_t *key      # internal key: table id (u32 BE) + user key
    size_t key_len
    const uint8_t *seq      # 16 bytes
    const uint8_t *value
    size_t value_len

cdef inline size_t varint_put(uint8_t *p, uint64_t v) noexcept nogil:
    cdef size_t i = 0
    while v >= 0x80:
        p[i] = <uint8_t>(v | 0x80)
        v >>= 7
        i += 1
    p[i] = <uint8_t>v
    return i + 1

cdef inline size_t varint_len(uint64_t v) noexcept nogil:
    cdef size_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n

# Reads a varint from p[0..avail); returns bytes used, 0 if malformed.
cdef inline size_t varint_get(const uint8_t *p, size_t avail, uint64_t *out) noexcept nogil:
    cdef uint64_t v = 0
    cdef size_t i = 0
    cdef int shift = 0
    while i < avail and shift <= 63:
        v |= <uint64_t>(p[i] & 0x7f) << shift
        if p[i] < 0x80:
            out[0] = v
            return i + 1
        shift += 7
        i += 1
    return 0

cdef inline uint32_t batch_count(const uint8_t *rep) noexcept nogil:
    return rep[0] | (<uint32_t>rep[1] << 8) | (<uint32_t>rep[2] << 16) | (<uint32_t>rep[3] << 24)

# Parses the record at rep[off..size); returns the offset after it, 0 if malformed.
cdef size_t batch_record_at(const uint8_t *rep, size_t size, size_t off, BatchRecord *r) noexcept nogil

# True when rep[0..size) is a whole batch: a header, then exactly count records,
# each with an internal key of table id + at least one user-key byte. The one
# definition of "well formed" (validate, merge_stamped and table_ids use it).
cdef bint batch_valid(const uint8_t *rep, size_t size) noexcept nogil
