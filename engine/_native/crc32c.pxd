# CRC32C for every checksum on disk (WAL frames, SSTable blocks, MANIFEST).
from libc.stdint cimport uint8_t, uint32_t

cdef extern from "crc32c_impl.h" nogil:
    void qkv_crc32c_init()
    uint32_t qkv_crc32c_extend(uint32_t crc, const uint8_t *p, size_t n)
    uint32_t qkv_crc32c_sw_only(uint32_t crc, const uint8_t *p, size_t n)
    uint32_t qkv_crc32c_mask(uint32_t crc)
    uint32_t qkv_crc32c_unmask(uint32_t masked)
