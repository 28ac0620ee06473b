"""Merging of sorted sources, for reads (visible versions) and for compaction.

MergingCursor merges child cursors (memtables, L0 tables, one LevelCursor per
deeper level) into one cursor in internal order. Children are few (about a
dozen), so a linear scan for the smallest beats a heap.

VisibleScanner turns the merged stream of versions into what a reader at a
snapshot sees: for each user key, the newest version with lsn <= snapshot,
skipped when it is a tombstone; forward or reverse, in chunks.

compact() is the flush and compaction merge loop: it drops versions no reader
can see and writes the rest through TableBuilders, cutting output files only
between user keys. It runs without the GIL when the caller says every source is
immutable (SSTables, an immutable memtable), taking the GIL only to read or
write a block.

Version-dropping rule (LevelDB's): walking one user key's versions newest
first, a version is dropped when a newer version of the same key has
lsn <= smallest_snapshot (every reader sees that newer one instead); a
tombstone with lsn <= smallest_snapshot is dropped too when the output is the
bottommost level for its key range (nothing older can be hiding below it).
Entries of dropped tables are removed outright.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

from engine._native.cursor cimport Cursor, compare_internal, compare_keys, KIND_VALUE, KIND_DELETE, QKV_MAX_LSN
from engine._native.table_builder cimport TableBuilder


cdef inline int _order(void *a, void *b) noexcept nogil:
    return compare_internal((<Cursor>a).key, (<Cursor>a).key_len, (<Cursor>a).lsn,
                            (<Cursor>b).key, (<Cursor>b).key_len, (<Cursor>b).lsn)


cdef class MergingCursor(Cursor):
    """Merges child cursors; one direction per seek (cursor.pxd contract 2)."""

    def __cinit__(self):
        self._kids = NULL

    def __init__(self, list children not None):
        self._children = list(children)
        self._n = len(self._children)
        self._kids = <void **>malloc((self._n + 1) * sizeof(void *))
        if self._kids == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(self._n):
            if not isinstance(self._children[i], Cursor):
                raise TypeError("MergingCursor children must be Cursors")
            self._kids[i] = <void *>self._children[i]
        self._cur = -1

    def __dealloc__(self):
        free(self._kids)

    cdef void _take(self, Py_ssize_t i) noexcept nogil:
        self._cur = i
        self.valid = True
        self.key = (<Cursor>self._kids[i]).key
        self.key_len = (<Cursor>self._kids[i]).key_len
        self.lsn = (<Cursor>self._kids[i]).lsn
        self.kind = (<Cursor>self._kids[i]).kind
        self.seq = (<Cursor>self._kids[i]).seq
        self.value = (<Cursor>self._kids[i]).value
        self.value_len = (<Cursor>self._kids[i]).value_len

    cdef bint _check_errors(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self._n):
            if (<Cursor>self._kids[i]).error is not None:
                with gil:
                    self.error = (<Cursor>self._kids[i]).error
                self.valid = False
                return True
        return False

    cdef void _pick(self, int sign) noexcept nogil:
        # sign -1: the smallest child wins (forward); +1: the largest (reverse).
        cdef Py_ssize_t i
        cdef Py_ssize_t best = -1
        if self._check_errors():
            return
        for i in range(self._n):
            if not (<Cursor>self._kids[i]).valid:
                continue
            if best < 0 or _order(self._kids[i], self._kids[best]) * sign > 0:
                best = i
        if best < 0:
            self.valid = False
            self._cur = -1
        else:
            self._take(best)

    cdef void _pick_smallest(self) noexcept nogil:
        self._pick(-1)

    cdef void _pick_largest(self) noexcept nogil:
        self._pick(1)

    cdef void seek_first(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self._n):
            (<Cursor>self._kids[i]).seek_first()
        self._pick_smallest()

    cdef void seek_last(self) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self._n):
            (<Cursor>self._kids[i]).seek_last()
        self._pick_largest()

    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self._n):
            (<Cursor>self._kids[i]).seek_ge(key, n)
        self._pick_smallest()

    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(self._n):
            (<Cursor>self._kids[i]).seek_lt(key, n)
        self._pick_largest()

    cdef void next(self) noexcept nogil:
        if self._cur < 0:
            self.valid = False
            return
        (<Cursor>self._kids[self._cur]).next()
        self._pick_smallest()

    cdef void prev(self) noexcept nogil:
        if self._cur < 0:
            self.valid = False
            return
        (<Cursor>self._kids[self._cur]).prev()
        self._pick_largest()


cdef class KeyBuffer:
    """A growable copy of one key, kept across cursor moves."""
    cdef uint8_t *data
    cdef size_t size
    cdef size_t cap

    def __cinit__(self):
        self.cap = 256
        self.size = 0
        self.data = <uint8_t *>malloc(self.cap)
        if self.data == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.data)

    cdef int assign(self, const uint8_t *p, size_t n) except -1 nogil:
        cdef void *q
        if n > self.cap:
            q = realloc(self.data, n)
            if q == NULL:
                with gil:
                    raise MemoryError()
            self.data = <uint8_t *>q
            self.cap = n
        memcpy(self.data, p, n)
        self.size = n
        return 0


cdef class VisibleScanner:
    """What a reader at `snapshot_lsn` sees between internal keys lo
    (inclusive) and hi (exclusive), returned in chunks of
    (user key, value, seq) tuples with the first `prefix_len` bytes of each
    key (the table id) removed. keys_only returns values as None.
    Runs with the GIL held: the active memtable may be among the sources."""
    cdef MergingCursor _m
    cdef bytes _lo
    cdef bytes _hi
    cdef uint64_t _snapshot
    cdef Py_ssize_t _prefix
    cdef bint _reverse
    cdef bint _keys_only
    cdef bint _started
    cdef bint _done
    cdef KeyBuffer _skip
    cdef object _cand

    def __init__(self, MergingCursor merged not None, bytes lo not None, bytes hi not None,
                 uint64_t snapshot_lsn, Py_ssize_t prefix_len, bint reverse=False, bint keys_only=False):
        self._m = merged
        self._lo = lo
        self._hi = hi
        self._snapshot = snapshot_lsn
        self._prefix = prefix_len
        self._reverse = reverse
        self._keys_only = keys_only
        self._started = False
        self._done = False
        self._skip = KeyBuffer()
        self._cand = None

    def next_chunk(self, Py_ssize_t limit) -> list:
        """Up to limit visible records; an empty list once the range is exhausted."""
        cdef list out = []
        if self._done or limit <= 0:
            return out
        if self._reverse:
            self._reverse_chunk(out, limit)
        else:
            self._forward_chunk(out, limit)
        if self._m.error is not None:
            self._done = True
            raise self._m.error
        return out

    cdef object _record(self, Cursor m):
        cdef object key = PyBytes_FromStringAndSize(<char *>m.key + self._prefix, m.key_len - self._prefix)
        cdef object value = None if self._keys_only else PyBytes_FromStringAndSize(<char *>m.value, m.value_len)
        cdef object seq = PyBytes_FromStringAndSize(<char *>m.seq, 16)
        cdef tuple rec = PyTuple_New(3)
        Py_INCREF(key)
        PyTuple_SET_ITEM(rec, 0, key)
        Py_INCREF(value)
        PyTuple_SET_ITEM(rec, 1, value)
        Py_INCREF(seq)
        PyTuple_SET_ITEM(rec, 2, seq)
        # Holding only bytes and None, the tuple cannot be part of a cycle:
        # untracked, the millions a scan makes cost the cyclic GC nothing.
        PyObject_GC_UnTrack(<void *>rec)
        return rec

    cdef void _forward_chunk(self, list out, Py_ssize_t limit):
        cdef MergingCursor m = self._m
        cdef const uint8_t *hi = <const uint8_t *>PyBytes_AS_STRING(self._hi)
        cdef size_t hn = <size_t>PyBytes_GET_SIZE(self._hi)
        if not self._started:
            self._started = True
            m.seek_ge(<const uint8_t *>PyBytes_AS_STRING(self._lo), <size_t>PyBytes_GET_SIZE(self._lo))
        while m.valid:
            if compare_keys(m.key, m.key_len, hi, hn) >= 0:
                self._done = True
                return
            if m.lsn > self._snapshot:
                m.next()
                continue
            if m.kind == KIND_VALUE:
                out.append(self._record(m))
            self._skip.assign(m.key, m.key_len)
            m.next()
            while m.valid and compare_keys(m.key, m.key_len, self._skip.data, self._skip.size) == 0:
                m.next()
            if len(out) >= limit:
                return
        self._done = True

    cdef void _reverse_chunk(self, list out, Py_ssize_t limit):
        # Versions of one key arrive oldest first; the candidate is the newest
        # one seen so far with lsn <= snapshot, emitted when the key changes.
        cdef MergingCursor m = self._m
        cdef const uint8_t *lo = <const uint8_t *>PyBytes_AS_STRING(self._lo)
        cdef size_t ln = <size_t>PyBytes_GET_SIZE(self._lo)
        if not self._started:
            self._started = True
            m.seek_lt(<const uint8_t *>PyBytes_AS_STRING(self._hi), <size_t>PyBytes_GET_SIZE(self._hi))
        while m.valid and compare_keys(m.key, m.key_len, lo, ln) >= 0:
            if self._cand is not None and compare_keys(m.key, m.key_len, self._skip.data, self._skip.size) != 0:
                if self._cand[0] == KIND_VALUE:
                    out.append(self._cand[1])
                self._cand = None
                if len(out) >= limit:
                    return
            if m.lsn <= self._snapshot:
                self._skip.assign(m.key, m.key_len)
                self._cand = (m.kind, self._record(m))
            m.prev()
        if self._cand is not None and self._cand[0] == KIND_VALUE:
            out.append(self._cand[1])
        self._cand = None
        self._done = True


cdef class _CompactionOutput:
    """The table being written, and the sink that starts and completes tables."""
    cdef object sink
    cdef TableBuilder builder

    cdef int roll(self) except -1:
        self.sink.finish_table(self.builder)
        self.builder = self.sink.new_table()
        return 0


cdef Py_ssize_t _compact_loop(MergingCursor merged, _CompactionOutput out, KeyBuffer last,
                              uint64_t smallest_snapshot, bint drop_tombstones,
                              const uint32_t *dropped, Py_ssize_t n_dropped_tables,
                              uint64_t target_file_size) except -1 nogil:
    cdef bint have_last = False
    cdef uint64_t last_lsn_for_key = QKV_MAX_LSN
    cdef bint drop
    cdef uint32_t tid
    cdef Py_ssize_t i
    cdef Py_ssize_t dropped_count = 0
    merged.seek_first()
    while merged.valid:
        if not have_last or compare_keys(merged.key, merged.key_len, last.data, last.size) != 0:
            last.assign(merged.key, merged.key_len)
            have_last = True
            last_lsn_for_key = QKV_MAX_LSN
        drop = False
        if n_dropped_tables and merged.key_len >= 4:
            tid = (<uint32_t>merged.key[0] << 24) | (<uint32_t>merged.key[1] << 16) | \
                  (<uint32_t>merged.key[2] << 8) | merged.key[3]
            for i in range(n_dropped_tables):
                if dropped[i] == tid:
                    drop = True
                    break
        if not drop:
            if last_lsn_for_key <= smallest_snapshot:
                drop = True
            elif merged.kind == KIND_DELETE and merged.lsn <= smallest_snapshot and drop_tombstones:
                drop = True
        last_lsn_for_key = merged.lsn
        if drop:
            dropped_count += 1
        else:
            if out.builder.entries > 0 and out.builder.estimated_file_size() >= target_file_size \
                    and not out.builder.same_key_as_last(merged.key, merged.key_len):
                with gil:
                    out.roll()
            out.builder.add(merged.key, merged.key_len, merged.lsn, merged.kind,
                            merged.seq, merged.value, merged.value_len)
        merged.next()
    return dropped_count


def compact(MergingCursor merged not None, sink, uint64_t smallest_snapshot, bint drop_tombstones,
            const uint32_t[::1] dropped_tables not None, uint64_t target_file_size, bint release_gil) -> int:
    """Merges every entry of `merged` into new tables, dropping what no reader
    can see (module docstring). sink.new_table() -> TableBuilder starts an
    output file, sink.finish_table(builder) completes one (also the last,
    possibly empty, one: the sink decides whether to keep it).
    Returns the number of entries dropped. Raises the first source error.
    release_gil: only when every source is immutable."""
    cdef _CompactionOutput out = _CompactionOutput()
    out.sink = sink
    out.builder = sink.new_table()
    cdef KeyBuffer last = KeyBuffer()
    cdef Py_ssize_t nd = dropped_tables.shape[0]
    cdef const uint32_t *dropped = &dropped_tables[0] if nd else NULL
    cdef Py_ssize_t dropped_count
    if release_gil:
        with nogil:
            dropped_count = _compact_loop(merged, out, last, smallest_snapshot, drop_tombstones,
                                          dropped, nd, target_file_size)
    else:
        dropped_count = _compact_loop(merged, out, last, smallest_snapshot, drop_tombstones,
                                      dropped, nd, target_file_size)
    if merged.error is not None:
        raise merged.error
    sink.finish_table(out.builder)
    return dropped_count
