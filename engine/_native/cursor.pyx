"""Base class of every ordered cursor; see cursor.pxd for the contract."""


cdef class Cursor:
    """Abstract: subclasses override every positioning method."""

    def __cinit__(self):
        self.valid = False
        self.error = None

    cdef void seek_first(self) noexcept nogil:
        self.valid = False

    cdef void seek_last(self) noexcept nogil:
        self.valid = False

    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil:
        self.valid = False

    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil:
        self.valid = False

    cdef void next(self) noexcept nogil:
        self.valid = False

    cdef void prev(self) noexcept nogil:
        self.valid = False

    # Python access, for tests and debugging; not used on hot paths.
    def py_seek_first(self):
        self.seek_first()
        return self._py_entry()

    def py_seek_last(self):
        self.seek_last()
        return self._py_entry()

    def py_seek_ge(self, bytes key):
        self.seek_ge(<const uint8_t *><char *>key, len(key))
        return self._py_entry()

    def py_seek_lt(self, bytes key):
        self.seek_lt(<const uint8_t *><char *>key, len(key))
        return self._py_entry()

    def py_next(self):
        self.next()
        return self._py_entry()

    def py_prev(self):
        self.prev()
        return self._py_entry()

    def _py_entry(self):
        if self.error is not None:
            raise self.error
        if not self.valid:
            return None
        return ((<char *>self.key)[:self.key_len], self.lsn, self.kind,
                (<char *>self.seq)[:16],
                (<char *>self.value)[:self.value_len] if self.value_len else b"")
