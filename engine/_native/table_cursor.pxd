from engine._native.cursor cimport Cursor
from engine._native.sstable_block cimport Block

cdef class TableCursor(Cursor):
    cdef object _reader
    cdef Block _index
    cdef Block _block
    cdef Py_ssize_t _bi
    cdef Py_ssize_t _ei
    cdef bint _fill_cache
    cdef bint _load_block(self, Py_ssize_t bi) noexcept nogil
    cdef void _set(self) noexcept nogil
    cdef void _skip_forward(self) noexcept nogil
    cdef void _skip_backward(self) noexcept nogil

cdef class LevelCursor(Cursor):
    cdef list _readers
    cdef list _largest
    cdef Py_ssize_t _fi
    cdef bint _fill_cache
    cdef TableCursor _cur
    cdef bint _open(self, Py_ssize_t fi) noexcept nogil
    cdef void _copy(self) noexcept nogil
