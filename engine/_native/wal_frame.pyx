"""Record framing shared by every log file: the engine's WAL and MANIFEST,
the replicated log's segments (server/node/log_store.py), the metadata
store's log and snapshot staging files.

A log file is a file header, then a sequence of frames, nothing else (no
block padding). The file header is itself a frame, at offset 0, of type
FILE_HEADER (3), whose checksum starts from 0 (the format before offsets
were covered: "Format history" below) and whose 7-byte payload is the magic
b"QKVLOG" and the format version (FORMAT_VERSION, 2):

    0        4          8      9                 15        16
    +--------+----------+------+-----------------+---------+
    | crc    | 7        | 3    | "QKVLOG"        | version |
    +--------+----------+------+-----------------+---------+

  Why a frame of the old kind: a build from before it reads the file header
  as a valid frame of a type it does not know, and refuses the file ("written
  by a newer version?") instead of reading frames it cannot check as a torn
  tail and deleting the file. And the version says what follows.

The frames after it:

    0        4          8      9
    +--------+----------+------+---------------------+
    | crc    | length   | type | payload             |
    | u32 LE | u32 LE   | u8   | `length` bytes      |
    +--------+----------+------+---------------------+

  crc    masked CRC32C of the frame's file offset followed by its bytes
         [4, 9 + length) (the length, the type and the payload):

             crc = mask(crc32c_extend(crc32c(offset as u64 LE),
                                      file[offset + 4 : offset + 9 + length]))

         offset is the position of the frame's first byte in its file (the
         first frame after the file header is at 16). Covering length, type and payload
         detects a flipped bit in any of them. Covering the offset ties a
         frame to the one position it was written at: bytes shaped like a
         frame anywhere else (inside a payload, e.g. a value that is a copy
         of a log file; or a frame shifted or copied elsewhere) do not
         validate, so the search for valid frames after a torn one (replay
         rules below) cannot mistake them for acknowledged data. Residual
         limit: bytes crafted for the exact offset they land at (by a writer
         who knows where its value will be framed) still validate; a torn
         frame whose landed payload holds them then reads as corruption (the
         open fails loudly; nothing is dropped silently).
  type   FRAME_TYPES below; 0 is never written (zero-filled space is not a frame).

Format history: version 1 (no file header, 2026-11-27 to 28) started every
CRC from 0 (crc32c_extend(0, bytes [4, 9 + length))). For a day after it,
commit 068e54b wrote this version's frames without the file header (from
offset 0); such files are refused too. This build does not
read such a file: engine/wal.py's read_log finds frames of that kind where
the file header should be (read_file_header, find_valid_frame(legacy=True))
and refuses the file with CorruptionError, rather than read it as a torn
tail and drop acknowledged data. A frame of type 0 is never valid, whatever
its checksum (nine zero bytes checksum correctly at one offset in 4 GiB).

Offsets: the Python functions index their buffer (start, the offsets and end
they return are positions in buf); `offset` / `base_offset` only say at which
file offset the buffer's first byte lies, for the checksums.

Replay rules (engine/wal.py applies them):
  * a frame cut by the end of the file is a torn tail: the write never
    completed, so it was never acknowledged; it is truncated and counted;
  * a frame with a bad checksum that is followed by a valid frame is
    corruption of acknowledged data: CorruptionError naming file and offset;
  * a bad frame with nothing valid after it is a torn tail as well.

Thread-safety: pure functions; the per-frame loops of decode_frames and
find_valid_frame run with the GIL released.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_CheckExact
from engine._native.endian cimport get_u32_le, put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_extend, qkv_crc32c_mask, qkv_crc32c_unmask

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

# Frame types. WRITE_BATCH carries an engine write batch (write_batch.pyx);
# MANIFEST_EDIT a version edit (manifest.py).
WRITE_BATCH = FRAME_WRITE_BATCH
MANIFEST_EDIT = FRAME_MANIFEST_EDIT
FRAME_TYPES = frozenset({WRITE_BATCH, MANIFEST_EDIT})
HEADER_SIZE = FRAME_HEADER_SIZE
MAX_PAYLOAD = 0xFFFFFFFF
FORMAT_VERSION = 2
MAGIC = b"QKVLOG"

OK = FRAME_OK
TRUNCATED = FRAME_TRUNCATED
BAD_CRC = FRAME_BAD_CRC
BAD_TYPE = FRAME_BAD_TYPE


cdef size_t frame_write(uint8_t *out, uint64_t offset, uint8_t rtype, const uint8_t *payload,
                        uint32_t n) noexcept nogil:
    put_u32_le(out + 4, n)
    out[8] = rtype
    if n:
        memcpy(out + FRAME_HEADER_SIZE, payload, n)
    put_u32_le(out, qkv_crc32c_mask(frame_crc(offset, out + 4, 5 + <size_t>n)))
    return FRAME_HEADER_SIZE + <size_t>n


cdef FrameStatus _check(const uint8_t *buf, size_t avail, uint64_t offset, bint legacy, uint32_t *length,
                        uint8_t *rtype) noexcept nogil:
    """frame_check; `legacy`: under the format before offsets were covered
    (the CRC started from 0, `offset` unused)."""
    if avail < FRAME_HEADER_SIZE:
        return FRAME_TRUNCATED
    cdef uint32_t n = get_u32_le(buf + 4)
    if <size_t>n > avail - FRAME_HEADER_SIZE:
        return FRAME_TRUNCATED
    if buf[8] == 0:
        return FRAME_BAD_CRC   # zeros are unwritten space, never a frame (module docstring)
    cdef uint32_t want = qkv_crc32c_unmask(get_u32_le(buf))
    cdef uint32_t seed = 0 if legacy else frame_crc_seed(offset)
    if qkv_crc32c_extend(seed, buf + 4, 5 + <size_t>n) != want:
        return FRAME_BAD_CRC
    length[0] = n
    rtype[0] = buf[8]
    if buf[8] != FRAME_WRITE_BATCH and buf[8] != FRAME_MANIFEST_EDIT:
        return FRAME_BAD_TYPE
    return FRAME_OK


cdef FrameStatus frame_check(const uint8_t *buf, size_t avail, uint64_t offset, uint32_t *length,
                             uint8_t *rtype) noexcept nogil:
    return _check(buf, avail, offset, False, length, rtype)


def encode_frames(int rtype, list payloads not None, uint64_t offset=0) -> bytes:
    """Frame every payload in one buffer, ready for a single write().

    Requires: `offset` is the file offset the buffer will be written at (the
    file's size before the write); the frames validate only there."""
    if rtype not in FRAME_TYPES:
        raise ValueError(f"unknown frame type {rtype}; known: {sorted(FRAME_TYPES)}")
    cdef Py_ssize_t total = 0
    cdef object p
    for p in payloads:
        if not PyBytes_CheckExact(p):
            raise TypeError(f"frame payloads must be bytes, got {type(p).__name__}")
        total += FRAME_HEADER_SIZE + len(<bytes>p)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef size_t off = 0
    cdef Py_ssize_t n
    for p in payloads:
        n = len(<bytes>p)
        if n > MAX_PAYLOAD:
            raise ValueError("frame payload over 4 GiB")
        off += frame_write(dst + off, offset + off, <uint8_t>rtype, <const uint8_t *>PyBytes_AS_STRING(<bytes>p),
                           <uint32_t>n)
    return out


def decode_frames(const unsigned char[::1] buf not None, Py_ssize_t start=0, uint64_t base_offset=0):
    """Parse frames from buf[start:], buf[0] being at file offset base_offset.

    Returns (frames, end, status): frames is a list of (offset, type, payload
    bytes) for the valid prefix, end the offset just past the last valid frame,
    status one of OK (the buffer ended exactly at a frame boundary), TRUNCATED,
    BAD_CRC or BAD_TYPE for the frame at `end`. Offsets are positions in buf.
    """
    cdef size_t size = buf.shape[0]
    if start < 0 or <size_t>start > size:
        raise ValueError(f"start {start} is outside the buffer of {size} bytes")
    cdef size_t off = <size_t>start
    cdef uint32_t n = 0
    cdef uint8_t rtype = 0
    cdef FrameStatus st = FRAME_OK
    cdef list frames = []
    cdef const uint8_t *base = &buf[0] if size else NULL
    while off < size:
        with nogil:
            st = frame_check(base + off, size - off, base_offset + off, &n, &rtype)
        if st != FRAME_OK:
            break
        frames.append((off, rtype, PyBytes_FromStringAndSize(<char *>base + off + FRAME_HEADER_SIZE, n)))
        off += FRAME_HEADER_SIZE + n
    return frames, off, st


def find_valid_frame(const unsigned char[::1] buf not None, Py_ssize_t start, uint64_t base_offset=0,
                     bint legacy=False) -> int:
    """Position in buf of the first valid frame at or after start, or -1;
    buf[0] is at file offset base_offset. `legacy`: valid under version 1
    (module docstring, "Format history") instead.

    Used after a bad frame to tell corruption (good data follows) from a torn
    tail (nothing valid follows). A candidate validates only at the offset it
    was encoded for (module docstring), so frame-shaped bytes inside a
    payload are not found. Costs O(remaining bytes) per candidate offset,
    which is paid only when a log is damaged.
    """
    cdef size_t size = buf.shape[0]
    cdef size_t off = <size_t>start
    cdef uint32_t n = 0
    cdef uint8_t rtype = 0
    cdef Py_ssize_t found = -1
    if size == 0:
        return -1
    cdef const uint8_t *base = &buf[0]
    with nogil:
        while off + FRAME_HEADER_SIZE <= size:
            # Only a known type can be a valid frame: the checksum is tried at
            # 2 offsets in 256 of random data, not all (this search is
            # quadratic in a damaged file's size).
            if ((base[off + 8] == FRAME_WRITE_BATCH or base[off + 8] == FRAME_MANIFEST_EDIT)
                    and _check(base + off, size - off, base_offset + off, legacy, &n, &rtype) == FRAME_OK):
                found = <Py_ssize_t>off
                break
            off += 1
    return found


cdef bytes _file_header():
    cdef bytes payload = MAGIC + bytes([FORMAT_VERSION])
    cdef bytearray out = bytearray(FRAME_HEADER_SIZE + len(payload))
    cdef uint8_t *p = out
    put_u32_le(p + 4, <uint32_t>len(payload))
    p[8] = FRAME_FILE_HEADER
    memcpy(p + FRAME_HEADER_SIZE, <const uint8_t *>PyBytes_AS_STRING(payload), len(payload))
    put_u32_le(p, qkv_crc32c_mask(qkv_crc32c_extend(0, p + 4, 5 + len(payload))))
    return bytes(out)


FILE_HEADER = _file_header()   # what every log file starts with (module docstring)

HEADER_OK = 0            # read_file_header: the file header of this version; value: its size
HEADER_OTHER_VERSION = 1 # ... a file header of another version; value: that version
HEADER_LEGACY = 2        # ... no file header but a whole version-1 frame of a known type (value 0)
HEADER_NONE = 3          # ... none of those: an empty, torn or damaged start (value 0)


def read_file_header(const unsigned char[::1] buf not None) -> tuple[int, int]:
    """What a log file's first bytes are: (HEADER_*, value), above."""
    cdef size_t size = buf.shape[0]
    cdef uint32_t n = 0
    cdef uint8_t rtype = 0
    cdef FrameStatus st
    if size == 0:
        return HEADER_NONE, 0
    with nogil:
        st = _check(&buf[0], size, 0, True, &n, &rtype)
    if st == FRAME_OK:
        return HEADER_LEGACY, 0
    if st != FRAME_BAD_TYPE or rtype != FRAME_FILE_HEADER or n < len(MAGIC) + 1:
        return HEADER_NONE, 0
    if bytes(buf[FRAME_HEADER_SIZE:FRAME_HEADER_SIZE + len(MAGIC)]) != MAGIC:
        return HEADER_NONE, 0
    cdef int version = buf[FRAME_HEADER_SIZE + len(MAGIC)]
    if version != FORMAT_VERSION:
        return HEADER_OTHER_VERSION, version
    if n != len(MAGIC) + 1:
        return HEADER_NONE, 0   # this version's header is 7 bytes of payload: not one
    return HEADER_OK, FRAME_HEADER_SIZE + n


def encode_wal_group(list reps not None, list first_lsns not None, uint64_t offset=0) -> bytes:
    """One buffer of WRITE_BATCH frames, frame i carrying
    first_lsns[i] (u64 LE) followed by reps[i] (engine/wal.py format).

    Requires: `offset` is the file offset the buffer will be written at."""
    cdef Py_ssize_t n = len(reps)
    if len(first_lsns) != n:
        raise ValueError("reps and first_lsns differ in length")
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t i
    for i in range(n):
        if not PyBytes_CheckExact(reps[i]):
            raise TypeError(f"write batches must be bytes, got {type(reps[i]).__name__}")
        total += FRAME_HEADER_SIZE + 8 + len(<bytes>reps[i])
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint8_t *frame
    cdef bytes rep
    cdef uint64_t lsn
    cdef size_t rn
    for i in range(n):
        rep = <bytes>reps[i]
        rn = <size_t>len(rep)
        if rn + 8 > MAX_PAYLOAD:
            raise ValueError("write batch over 4 GiB")
        lsn = first_lsns[i]
        frame = dst
        put_u32_le(frame + 4, <uint32_t>(rn + 8))
        frame[8] = FRAME_WRITE_BATCH
        put_u64_le(frame + FRAME_HEADER_SIZE, lsn)
        memcpy(frame + FRAME_HEADER_SIZE + 8, PyBytes_AS_STRING(rep), rn)
        put_u32_le(frame, qkv_crc32c_mask(frame_crc(offset, frame + 4, 5 + 8 + rn)))
        offset += FRAME_HEADER_SIZE + 8 + rn
        dst += FRAME_HEADER_SIZE + 8 + rn
    return out
