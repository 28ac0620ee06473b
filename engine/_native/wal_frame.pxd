from libc.stdint cimport uint8_t, uint32_t

cdef enum:
    FRAME_HEADER_SIZE = 9

cdef enum FrameType:
    FRAME_WRITE_BATCH = 1
    FRAME_MANIFEST_EDIT = 2

cdef enum FrameStatus:
    FRAME_OK = 0
    FRAME_TRUNCATED = 1     # header or payload runs past the end of the buffer
    FRAME_BAD_CRC = 2       # complete frame whose checksum does not match
    FRAME_BAD_TYPE = 3      # checksum matches but the type is unknown

cdef size_t frame_write(uint8_t *out, uint8_t rtype, const uint8_t *payload, uint32_t n) noexcept nogil
cdef FrameStatus frame_check(const uint8_t *buf, size_t avail, uint32_t *length, uint8_t *rtype) noexcept nogil
