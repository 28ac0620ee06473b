"""CRC32C (Castagnoli) with a hardware path on x86-64 and slice-by-8 elsewhere.

Python surface: crc32c(data, crc=0), masked(crc), unmask(masked),
software_crc32c(data) (the table path, for cross-checking the hardware path).
Cython modules cimport the C functions from crc32c.pxd instead.
"""
from libc.stdint cimport uint32_t

qkv_crc32c_init()


def crc32c(const unsigned char[::1] data not None, uint32_t crc=0) -> int:
    """CRC32C of data, extending crc (0 to start a new checksum)."""
    cdef size_t n = data.shape[0]
    if n == 0:
        return crc
    with nogil:
        crc = qkv_crc32c_extend(crc, &data[0], n)
    return crc


def software_crc32c(const unsigned char[::1] data not None, uint32_t crc=0) -> int:
    """The table-driven path regardless of CPU features."""
    cdef size_t n = data.shape[0]
    if n == 0:
        return crc
    return qkv_crc32c_sw_only(crc, &data[0], n)


def masked(uint32_t crc) -> int:
    return qkv_crc32c_mask(crc)


def unmask(uint32_t masked_crc) -> int:
    return qkv_crc32c_unmask(masked_crc)
