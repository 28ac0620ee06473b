"""Bloom filter over the keys of one SSTable, blocked by cache line.

Filter block payload:

    +--------------------------------------------+-------+
    | L lines of 512 bits (64 B each), L >= 1     | k u8  |
    +--------------------------------------------+-------+

  For a key with 32-bit hash h (bloom.pxd's bloom_hash):
    line  = h mod L
    g     = h * 0x9E3779B9 mod 2**32          (a bijection: new bits for the line)
    d     = (g rotated right by 17) | 1
    probe j (0 <= j < k) tests bit ((g + j*d) mod 2**32) >> 23 of that line
    (the top 9 bits, the best mixed ones of the product).
  All k probes hit one cache line, so a lookup costs one cache miss instead
  of k (RocksDB's cache-local filter idea). L = ceil(n * bits_per_key / 512);
  k = round(bits_per_key * ln 2) clamped to [1, 30]: at 10 bits a key about
  1% false positives. A filter with k > 30 is treated as "may contain
  everything" (a future encoding), never as "contains nothing"; one whose
  size is not L * 64 + 1 likewise.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef enum:
    LINE_BYTES = 64
    LINE_BITS = 512


cdef inline bint _probe_line(const uint8_t *line, uint32_t h, uint8_t k, bint set_bits) noexcept nogil:
    cdef uint32_t g = h * 0x9E3779B9u
    cdef uint32_t d = ((g >> 17) | (g << 15)) | 1
    cdef uint8_t j
    cdef uint32_t pos
    for j in range(k):
        pos = g >> 23        # the top 9 bits: the best mixed ones of a product
        if set_bits:
            (<uint8_t *>line)[pos >> 3] |= <uint8_t>(1 << (pos & 7))
        elif (line[pos >> 3] & (1 << (pos & 7))) == 0:
            return False
        g += d
    return True


cdef bint bloom_may_contain(const uint8_t *filt, size_t n, uint32_t h) noexcept nogil:
    if n < 2:
        return False
    cdef uint8_t k = filt[n - 1]
    if k > 30 or (n - 1) % LINE_BYTES != 0:
        return True
    cdef size_t lines = (n - 1) // LINE_BYTES
    return _probe_line(filt + (h % lines) * LINE_BYTES, h, k, False)


def build_filter(const uint32_t[::1] hashes not None, int bits_per_key=10) -> bytes:
    """Filter bytes for the keys whose bloom hashes are given."""
    cdef size_t n = hashes.shape[0]
    cdef size_t bits = n * <size_t>(bits_per_key if bits_per_key > 0 else 1)
    cdef size_t lines = (bits + LINE_BITS - 1) // LINE_BITS
    if lines < 1:
        lines = 1
    cdef int k = <int>(bits_per_key * 0.69 + 0.5)
    if k < 1:
        k = 1
    if k > 30:
        k = 30
    cdef bytes out = PyBytes_FromStringAndSize(NULL, lines * LINE_BYTES + 1)
    cdef uint8_t *f = <uint8_t *>PyBytes_AS_STRING(out)
    memset(f, 0, lines * LINE_BYTES)
    f[lines * LINE_BYTES] = <uint8_t>k
    cdef size_t i
    cdef uint32_t h
    with nogil:
        for i in range(n):
            h = hashes[i]
            _probe_line(f + (h % lines) * LINE_BYTES, h, <uint8_t>k, True)
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
