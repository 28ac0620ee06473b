"""The unsynced write path in one native call: frame a write batch for the
WAL, write() it to the segment's file descriptor, insert it into the memtable.

Used by engine/db.py when nothing needs an fsync and no other writer is
queued, in place of four Python-level calls (frame, LogWriter, file, os.write)
and the memtable insert. The frame is the one wal_frame.encode_wal_group
writes (engine/wal.py specifies the payload).
Requires: the caller holds the DB mutex; fd is the newest WAL segment,
opened for appending, with nothing buffered in front of it.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_extend, qkv_crc32c_mask
from engine._native.endian cimport put_u32_le, put_u64_le
from engine._native.skiplist cimport Memtable
from engine._native.wal_frame cimport FRAME_HEADER_SIZE, FRAME_WRITE_BATCH

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t count)

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

cdef enum:
    STACK_FRAME = 1024


def commit_unsynced(bytes rep not None, uint64_t lsn, Memtable mem not None, int fd) -> int:
    """Writes rep's WAL frame to fd (when fd >= 0) and applies rep to mem
    with first lsn `lsn`. Returns the bytes written. Raises OSError when the
    write fails, before the memtable is touched."""
    cdef size_t rn = <size_t>PyBytes_GET_SIZE(rep)
    cdef const uint8_t *r = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef size_t total = FRAME_HEADER_SIZE + 8 + rn
    cdef uint8_t stack[STACK_FRAME]
    cdef uint8_t *frame = stack
    cdef size_t done = 0
    cdef ssize_t w = 0
    cdef int err = 0
    if fd >= 0:
        if total > STACK_FRAME:
            frame = <uint8_t *>malloc(total)
            if frame == NULL:
                raise MemoryError()
        try:
            put_u32_le(frame + 4, <uint32_t>(rn + 8))
            frame[8] = FRAME_WRITE_BATCH
            put_u64_le(frame + FRAME_HEADER_SIZE, lsn)
            memcpy(frame + FRAME_HEADER_SIZE + 8, r, rn)
            put_u32_le(frame, qkv_crc32c_mask(qkv_crc32c_extend(0, frame + 4, 5 + 8 + rn)))
            with nogil:
                while done < total:
                    w = write(fd, frame + done, total - done)
                    if w < 0:
                        if errno == EINTR:
                            continue
                        err = errno
                        break
                    done += <size_t>w
        finally:
            if frame != stack:
                free(frame)
        if err:
            raise OSError(err, "WAL write failed")
    mem.apply_rep(r, rn, lsn)
    return total if fd >= 0 else 0
