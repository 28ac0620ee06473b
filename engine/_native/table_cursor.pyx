"""Cursors over one SSTable and over one sorted level of SSTables.

TableCursor walks the decoded index block and loads data blocks through its
reader (fill_cache=False for compaction: blocks read once to be rewritten
must not evict the blocks readers need, nor grow memory) (engine/sstable.py TableReader.data_block, which goes through the block
cache); loading takes the GIL, walking a loaded block does not.
LevelCursor concatenates the non-overlapping tables of one level (L1+),
opening one TableCursor at a time.
Contract: see cursor.pxd. A cursor holds its reader(s), so the files it reads
stay open while it lives, even after a compaction removed them from the
current version.
"""
from bisect import bisect_left

from libc.stdint cimport uint8_t
from engine._native.cursor cimport Cursor, QKV_MAX_LSN
from engine._native.sstable_block cimport Block, BlockEntry


cdef class TableCursor(Cursor):
    """A cursor over one table; reader provides .index (Block) and .data_block(i)."""

    def __init__(self, reader, bint fill_cache=True):
        self._reader = reader
        self._fill_cache = fill_cache
        self._index = reader.index
        self._block = None
        self._bi = -1
        self._ei = 0

    cdef bint _load_block(self, Py_ssize_t bi) noexcept nogil:
        with gil:
            try:
                self._block = self._reader.data_block(bi, self._fill_cache)
                self._bi = bi
                return True
            except BaseException as exc:
                self.error = exc
                self._block = None
                self.valid = False
                return False

    cdef void _set(self) noexcept nogil:
        cdef BlockEntry *e = &self._block.entries[self._ei]
        self.valid = True
        self.key = self._block.key_at(self._ei)
        self.key_len = e.key_len
        self.lsn = e.lsn
        self.kind = e.kind
        self.seq = self._block._data + e.seq_off
        self.value = self._block._data + e.value_off
        self.value_len = e.value_len

    cdef void _skip_forward(self) noexcept nogil:
        # Moves past exhausted blocks; stops valid or at the end.
        while self._ei >= self._block.count:
            if self._bi + 1 >= self._index.count or not self._load_block(self._bi + 1):
                self.valid = False
                return
            self._ei = 0
        self._set()

    cdef void _skip_backward(self) noexcept nogil:
        while self._ei < 0:
            if self._bi <= 0 or not self._load_block(self._bi - 1):
                self.valid = False
                return
            self._ei = self._block.count - 1
        self._set()

    cdef void seek_first(self) noexcept nogil:
        if self._index.count == 0 or not self._load_block(0):
            self.valid = False
            return
        self._ei = 0
        self._skip_forward()

    cdef void seek_last(self) noexcept nogil:
        if self._index.count == 0 or not self._load_block(self._index.count - 1):
            self.valid = False
            return
        self._ei = self._block.count - 1
        self._skip_backward()

    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil:
        cdef Py_ssize_t bi = self._index.lower_bound(key, n, QKV_MAX_LSN)
        if bi >= self._index.count or not self._load_block(bi):
            self.valid = False
            return
        self._ei = self._block.lower_bound(key, n, QKV_MAX_LSN)
        self._skip_forward()

    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil:
        if self._index.count == 0:
            self.valid = False
            return
        cdef Py_ssize_t bi = self._index.lower_bound(key, n, QKV_MAX_LSN)
        if bi >= self._index.count:
            bi = self._index.count - 1
        if not self._load_block(bi):
            return
        self._ei = self._block.lower_bound(key, n, QKV_MAX_LSN) - 1
        self._skip_backward()

    cdef void next(self) noexcept nogil:
        if not self.valid:
            return
        self._ei += 1
        self._skip_forward()

    cdef void prev(self) noexcept nogil:
        if not self.valid:
            return
        self._ei -= 1
        self._skip_backward()


cdef class LevelCursor(Cursor):
    """A cursor over sorted, non-overlapping tables (readers, with their
    largest keys in the same order)."""

    def __init__(self, list readers not None, list largest not None, bint fill_cache=True):
        self._readers = readers
        self._fill_cache = fill_cache
        self._largest = largest
        self._fi = -1
        self._cur = None

    cdef bint _open(self, Py_ssize_t fi) noexcept nogil:
        with gil:
            try:
                self._cur = TableCursor(self._readers[fi], self._fill_cache)
                self._fi = fi
                return True
            except BaseException as exc:
                self.error = exc
                self.valid = False
                return False

    cdef void _copy(self) noexcept nogil:
        if self._cur.error is not None:
            with gil:
                self.error = self._cur.error
        self.valid = self._cur.valid
        if self.valid:
            self.key = self._cur.key
            self.key_len = self._cur.key_len
            self.lsn = self._cur.lsn
            self.kind = self._cur.kind
            self.seq = self._cur.seq
            self.value = self._cur.value
            self.value_len = self._cur.value_len

    cdef void seek_first(self) noexcept nogil:
        cdef Py_ssize_t n
        with gil:
            n = len(self._readers)
        if n == 0 or not self._open(0):
            self.valid = False
            return
        self._cur.seek_first()
        self._copy()
        if not self.valid and self.error is None:
            self.next()

    cdef void seek_last(self) noexcept nogil:
        cdef Py_ssize_t n
        with gil:
            n = len(self._readers)
        if n == 0 or not self._open(n - 1):
            self.valid = False
            return
        self._cur.seek_last()
        self._copy()

    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil:
        cdef Py_ssize_t fi, count
        with gil:
            fi = bisect_left(self._largest, (<char *>key)[:n])
            count = len(self._readers)
        if fi >= count or not self._open(fi):
            self.valid = False
            return
        self._cur.seek_ge(key, n)
        self._copy()
        while not self.valid and self.error is None and self._fi + 1 < count:
            if not self._open(self._fi + 1):
                return
            self._cur.seek_first()
            self._copy()

    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil:
        cdef Py_ssize_t fi, count
        with gil:
            fi = bisect_left(self._largest, (<char *>key)[:n])
            count = len(self._readers)
        if count == 0:
            self.valid = False
            return
        if fi >= count:
            fi = count - 1
        if not self._open(fi):
            return
        self._cur.seek_lt(key, n)
        self._copy()
        while not self.valid and self.error is None and self._fi > 0:
            if not self._open(self._fi - 1):
                return
            self._cur.seek_last()
            self._copy()

    cdef void next(self) noexcept nogil:
        cdef Py_ssize_t count
        if not self.valid:
            return
        self._cur.next()
        self._copy()
        if self.valid or self.error is not None:
            return
        with gil:
            count = len(self._readers)
        while self._fi + 1 < count:
            if not self._open(self._fi + 1):
                return
            self._cur.seek_first()
            self._copy()
            if self.valid or self.error is not None:
                return

    cdef void prev(self) noexcept nogil:
        if not self.valid:
            return
        self._cur.prev()
        self._copy()
        while not self.valid and self.error is None and self._fi > 0:
            if not self._open(self._fi - 1):
                return
            self._cur.seek_last()
            self._copy()
