"""The unsynced write path in one native call: frame a write batch for the
WAL, write() it to the segment's file descriptor, insert it into the memtable.

Used by engine/db.py (through UnsyncedFront, below) when nothing needs an
fsync and no other writer is queued, in place of four Python-level calls
(frame, LogWriter, file, os.write) and the memtable insert. The frame is the
one wal_frame.encode_wal_group writes (engine/wal.py specifies the payload),
its checksum seeded with its file offset, the WAL writer's size before the
write (wal_frame.pyx's docstring).
Requires of _commit: the caller holds the DB mutex; fd is the newest
WAL segment, opened for appending, with nothing buffered in front of it, and
`offset` is its size (where the write lands).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from engine._native.crc32c cimport qkv_crc32c_init, qkv_crc32c_mask
from engine._native.endian cimport put_u32_le, put_u64_le
from engine._native.sequencer cimport Sequencer, SEQ_SIZE
from engine._native.skiplist cimport Memtable
from engine._native.wal_frame cimport FRAME_HEADER_SIZE, FRAME_WRITE_BATCH, frame_crc

from engine._native.write_batch import encode_one

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t count)

qkv_crc32c_init()   # this module's copy of the tables (crc32c_impl.h)

cdef enum:
    STACK_FRAME = 1024


cdef size_t _commit(bytes rep, uint64_t lsn, Memtable mem, int fd, uint64_t offset) except? 0:
    """Writes rep's WAL frame to fd (when fd >= 0), framed for file offset
    `offset`, and applies rep to mem with first lsn `lsn`. Returns the bytes
    written. Raises OSError when the write fails, before the memtable is
    touched."""
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
            put_u32_le(frame, qkv_crc32c_mask(frame_crc(offset, frame + 4, 5 + 8 + rn)))
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


cdef class UnsyncedFront:
    """The unsynced write fast path of a DB, and the counters it moves, in C.

    A put used to cross three Python frames (DB.put, _write_one, _write) around
    four native calls; at about 2 us of a 7 us put, that was the largest cost
    after the memtable insert (bench/RESULTS.md). DB.put and DB.delete now make
    one call here (put), and every other write path tries commit() first.

    The DB keeps these fields here (its _last_lsn, _visible_lsn, _writes,
    _records_written, _wal_bytes, _mem_applied_index and _open_for_writes are
    properties over them) and sets mem and wal whenever it replaces them.
    commit() takes the DB mutex itself; everything else is the DB's to lock.
    """
    cdef public object mutex            # the DB's threading.Lock
    cdef public object queued           # the WriteQueue's writers: truthy while anyone waits
    cdef public object on_error         # DB._set_bg_error, called with the mutex held
    cdef public object slow_write       # DB._write: the general path, for put()
    cdef public Memtable mem
    cdef public object wal              # the WAL's LogWriter, or None without a WAL
    cdef public Sequencer sequencer
    cdef public bint enabled            # nothing to fsync: no group commit to join
    cdef public bint open_for_writes    # not closed and no background error
    cdef public uint64_t write_buffer_size
    cdef public uint64_t wal_segment_bytes
    cdef public uint64_t last_lsn
    cdef public uint64_t visible_lsn
    cdef public uint64_t writes
    cdef public uint64_t records_written
    cdef public uint64_t wal_bytes
    cdef public uint64_t mem_applied_index

    def put(self, int kind, uint32_t table_id, key, value):
        """Writes one record (kind VALUE or DELETE) with a fresh seq; returns
        the seq. Bad input raises before anything is written."""
        cdef uint8_t buf[SEQ_SIZE]
        self.sequencer.next_into(buf)
        cdef bytes seq = (<char *>buf)[:SEQ_SIZE]
        cdef bytes rep = encode_one(kind, table_id, key, value, seq)
        if not self.commit(rep, 1, None):
            self.slow_write(rep, 1, None)
        return seq

    cpdef bint commit(self, bytes rep, uint64_t count, object applied_index) except -1:
        """Commits rep here when nothing needs an fsync, no writer is queued,
        and the memtable and WAL segment have room; False (nothing done)
        otherwise. A failed write() raises, after recording it as the DB's
        background error: the WAL may hold part of the frame."""
        if not self.enabled:
            return False
        cdef int fd = -1
        cdef uint64_t offset = 0
        cdef size_t n
        cdef uint64_t lsn
        self.mutex.acquire()
        try:
            if self.queued or not self.open_for_writes or self.mem._memory >= self.write_buffer_size:
                return False
            wal = self.wal
            if wal is not None:
                fd = wal.fd
                offset = wal.size   # where this frame lands: its checksum covers it
                if fd < 0 or offset >= self.wal_segment_bytes:
                    return False
            lsn = self.last_lsn + 1
            try:
                n = _commit(rep, lsn, self.mem, fd, offset)
            except BaseException as exc:
                self.on_error(exc)
                raise
            if wal is not None:
                wal.size += n
                self.wal_bytes += n
            self.last_lsn = self.visible_lsn = lsn + count - 1
            self.writes += 1
            self.records_written += count
            if applied_index is not None and applied_index > self.mem_applied_index:
                self.mem_applied_index = applied_index
            return True
        finally:
            self.mutex.release()
