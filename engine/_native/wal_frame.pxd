from libc.stdint cimport uint8_t, uint32_t, uint64_t

from engine._native.crc32c cimport qkv_crc32c_extend
from engine._native.endian cimport put_u64_le

cdef enum:
    FRAME_HEADER_SIZE = 9

cdef enum FrameType:
    FRAME_WRITE_BATCH = 1
    FRAME_MANIFEST_EDIT = 2
    FRAME_FILE_HEADER = 3   # only as a file's first frame, checksummed the old way (wal_frame.pyx)

cdef enum FrameStatus:
    FRAME_OK = 0
    FRAME_TRUNCATED = 1     # header or payload runs past the end of the buffer
    FRAME_BAD_CRC = 2       # complete frame whose checksum does not match
    FRAME_BAD_TYPE = 3      # checksum matches but the type is unknown


cdef inline uint32_t frame_crc_seed(uint64_t offset) noexcept nogil:
    """CRC32C of a frame's file offset (u64 LE): where its checksum starts
    (wal_frame.pyx's docstring). The caller's module must have called
    qkv_crc32c_init()."""
    cdef uint8_t le[8]
    put_u64_le(le, offset)
    return qkv_crc32c_extend(0, le, 8)


cdef inline uint32_t frame_crc(uint64_t offset, const uint8_t *p, size_t n) noexcept nogil:
    """The unmasked checksum of a frame at file offset `offset` whose bytes
    [4, 9 + length) are p[0:n]."""
    return qkv_crc32c_extend(frame_crc_seed(offset), p, n)


cdef size_t frame_write(uint8_t *out, uint64_t offset, uint8_t rtype, const uint8_t *payload,
                        uint32_t n) noexcept nogil
cdef FrameStatus frame_check(const uint8_t *buf, size_t avail, uint64_t offset, uint32_t *length,
                             uint8_t *rtype) noexcept nogil
