from libc.stdint cimport uint8_t, uint64_t
from engine._native.cursor cimport Cursor

cdef class MergingCursor(Cursor):
    cdef list _children
    cdef void **_kids
    cdef Py_ssize_t _n
    cdef Py_ssize_t _cur
    cdef void _take(self, Py_ssize_t i) noexcept nogil
    cdef bint _check_errors(self) noexcept nogil
    cdef void _pick(self, int sign) noexcept nogil
    cdef void _pick_smallest(self) noexcept nogil
    cdef void _pick_largest(self) noexcept nogil
