from libc.stdint cimport uint64_t
from engine._native.block_cache cimport BlockCache
from engine._native.sstable_block cimport Block

cdef class TableReader:
    cdef readonly str path
    cdef readonly uint64_t number
    cdef readonly uint64_t entries
    cdef readonly Block index
    cdef bytes _filter
    cdef object _file
    cdef BlockCache _cache
    cdef object _cache_prefix
    cdef uint64_t _data_limit
    cdef bytes _read_block(self, uint64_t offset, uint64_t size)
    cpdef Block data_block(self, Py_ssize_t i, bint fill_cache=*)
    cpdef object get(self, bytes ikey, uint64_t snapshot_lsn)
