# The ordered-cursor interface shared by every source of entries: the memtable
# (skiplist.pyx), one SSTable (table_cursor.pyx), a level of SSTables and the
# merge of all of them (merge.pyx).
#
# Entry order ("internal order"): key bytes ascending (memcmp, a prefix sorts
# first), then lsn descending, so the newest version of a key comes first.
# Keys here are internal keys: 4-byte big-endian table id + user key.
#
# Contract for every subclass:
#   1. After any positioning call, `valid` says whether the fields describe an
#      entry; the pointers stay readable until the next positioning call.
#   2. A cursor is used in one direction after a seek: seek_first/seek_ge then
#      next(); seek_last/seek_lt then prev().
#   3. I/O errors and corruption do not raise inside these nogil methods: the
#      cursor becomes invalid and sets `error` (under the GIL); callers check
#      `error` when the loop ends (LevelDB's Status discipline).
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp

cdef enum EntryKind:
    KIND_DELETE = 0
    KIND_VALUE = 1

cdef extern from *:
    """
    #define QKV_MAX_LSN 0xffffffffffffffffULL
    """
    uint64_t QKV_MAX_LSN


cdef inline int compare_keys(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) noexcept nogil:
    cdef size_t n = an if an < bn else bn
    cdef int c = memcmp(a, b, n) if n else 0
    if c != 0:
        return c
    if an < bn:
        return -1
    if an > bn:
        return 1
    return 0


cdef inline int compare_internal(const uint8_t *a, size_t an, uint64_t alsn,
                                 const uint8_t *b, size_t bn, uint64_t blsn) noexcept nogil:
    """<0 if (a, alsn) sorts before (b, blsn) in internal order."""
    cdef int c = compare_keys(a, an, b, bn)
    if c != 0:
        return c
    if alsn > blsn:
        return -1
    if alsn < blsn:
        return 1
    return 0


cdef class Cursor:
    cdef public bint valid
    cdef const uint8_t *key
    cdef size_t key_len
    cdef uint64_t lsn
    cdef uint8_t kind
    cdef const uint8_t *seq
    cdef const uint8_t *value
    cdef size_t value_len
    cdef public object error

    cdef void seek_first(self) noexcept nogil
    cdef void seek_last(self) noexcept nogil
    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil
    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil
    cdef void next(self) noexcept nogil
    cdef void prev(self) noexcept nogil
