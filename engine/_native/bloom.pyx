"""Bloom filter over the keys of one SSTable.

Filter block payload:

    +------------------------------+-------+
    | bit array (m bits, m/8 B)    | k u8  |
    +------------------------------+-------+

  k probes by double hashing (h, h + d, h + 2d, ... with d = h rotated by 15),
  k = round(bits_per_key * ln 2), clamped to [1, 30]. At 10 bits per key this
  gives about 1% false positives. A filter with k > 30 is treated as "may
  contain everything" (a future encoding), never as "contains nothing".
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef bint bloom_may_contain(const uint8_t *filt, size_t n, uint32_t h) noexcept nogil:
    if n < 2:
        return False
    cdef size_t bits = (n - 1) * 8
    cdef uint8_t k = filt[n - 1]
    if k > 30:
        return True
    cdef uint32_t delta = (h >> 17) | (h << 15)
    cdef uint8_t j
    cdef uint32_t pos
    for j in range(k):
        pos = <uint32_t>(h % bits)
        if (filt[pos >> 3] & (1 << (pos & 7))) == 0:
            return False
        h += delta
    return True


def build_filter(const uint32_t[::1] hashes not None, int bits_per_key=10) -> bytes:
    """Filter bytes for the keys whose bloom hashes are given."""
    cdef size_t n = hashes.shape[0]
    cdef size_t bits = n * <size_t>(bits_per_key if bits_per_key > 0 else 1)
    if bits < 64:
        bits = 64
    cdef size_t nbytes = (bits + 7) // 8
    bits = nbytes * 8
    cdef int k = <int>(bits_per_key * 0.69 + 0.5)
    if k < 1:
        k = 1
    if k > 30:
        k = 30
    cdef bytes out = PyBytes_FromStringAndSize(NULL, nbytes + 1)
    cdef uint8_t *f = <uint8_t *>PyBytes_AS_STRING(out)
    memset(f, 0, nbytes)
    f[nbytes] = <uint8_t>k
    cdef size_t i
    cdef uint32_t h, delta, pos
    cdef int j
    with nogil:
        for i in range(n):
            h = hashes[i]
            delta = (h >> 17) | (h << 15)
            for j in range(k):
                pos = <uint32_t>(h % bits)
                f[pos >> 3] |= <uint8_t>(1 << (pos & 7))
                h += delta
    return out


def key_hash(bytes key not None) -> int:
    return bloom_hash(<const uint8_t *>PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key))


def may_contain(bytes filt not None, bytes key not None) -> bool:
    """False only when key is certainly absent from the table."""
    return bloom_may_contain(<const uint8_t *>PyBytes_AS_STRING(filt), <size_t>PyBytes_GET_SIZE(filt),
                             bloom_hash(<const uint8_t *>PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key)))


def hashes_of(list keys not None):
    """numpy uint32 array of bloom hashes (tests and tools)."""
    cdef cnp.ndarray[cnp.uint32_t, ndim=1] out = np.empty(len(keys), dtype=np.uint32)
    cdef Py_ssize_t i
    for i in range(len(keys)):
        out[i] = key_hash(keys[i])
    return out
