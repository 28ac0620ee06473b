from libc.stdint cimport uint8_t, uint32_t, uint64_t

# 32-bit hash of a key for the bloom filter: 64-bit multiply-xorshift over
# 8-byte words (murmur3's finalizer), folded to 32 bits.
cdef inline uint32_t bloom_hash(const uint8_t *p, size_t n) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ (<uint64_t>n * 0xC6A4A7935BD1E995ULL)
    cdef uint64_t w
    cdef size_t i = 0
    cdef int j
    while i + 8 <= n:
        w = 0
        for j in range(8):
            w |= <uint64_t>p[i + j] << (8 * j)
        w *= 0xC6A4A7935BD1E995ULL
        w ^= w >> 47
        w *= 0xC6A4A7935BD1E995ULL
        h ^= w
        h *= 0xC6A4A7935BD1E995ULL
        i += 8
    w = 0
    j = 0
    while i < n:
        w |= <uint64_t>p[i] << (8 * j)
        i += 1
        j += 1
    h ^= w
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return <uint32_t>(h ^ (h >> 32))

cdef bint bloom_may_contain(const uint8_t *filt, size_t n, uint32_t h) noexcept nogil
