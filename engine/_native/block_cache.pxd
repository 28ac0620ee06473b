cdef class _CacheNode:
    cdef object key
    cdef object value
    cdef Py_ssize_t charge
    cdef _CacheNode prev
    cdef _CacheNode next

cdef class BlockCache:
    cdef dict _map
    cdef _CacheNode _ring
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t used
    cdef readonly Py_ssize_t hits
    cdef readonly Py_ssize_t misses
    cdef Py_ssize_t _owners
    cdef object lookup(self, object key)
    cdef int insert(self, object key, object value, Py_ssize_t charge) except -1
    cdef void _unlink(self, _CacheNode n) noexcept
    cdef void _push_front(self, _CacheNode n) noexcept
