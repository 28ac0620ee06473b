from libc.stdint cimport uint8_t, uint32_t, uint64_t
from engine._native.cursor cimport Cursor

cdef enum:
    SKIPLIST_MAX_HEIGHT = 12

# One memtable entry, allocated from the arena and never moved or freed while
# the memtable lives. Layout in memory: this 32-byte header, then `height`
# SkipLinks, then the key, the 16-byte seq and the value. The first 12
# key bytes are also kept in the header as two big-endian integers (zero
# padded), so most comparisons touch only the header: one cache line per
# node, not two.
cdef struct SkipNode:
    uint64_t prefix     # internal key bytes [4, 12)
    uint32_t head       # internal key bytes [0, 4): the table id
    uint32_t key_len
    uint64_t lsn
    uint32_t value_len
    uint8_t kind
    uint8_t height

# A link to the next node at one level, with that node's first 8 internal key
# bytes (table id, then 4 user key bytes; big endian, zero padded). A search
# compares against the copy in the link it already holds and touches the next
# node only to move onto it (or on a tie of those 8 bytes): the comparison
# that sends it down a level costs no cache miss.
cdef struct SkipLink:
    SkipNode *next
    uint64_t word

cdef struct ArenaBlock:
    ArenaBlock *prev
    size_t size

cdef class Memtable:
    cdef ArenaBlock *_blocks
    cdef uint8_t *_alloc_ptr
    cdef size_t _alloc_left
    cdef size_t _memory
    cdef SkipNode *_head
    cdef int _height
    cdef uint64_t _rng
    cdef readonly Py_ssize_t count
    cdef readonly uint64_t max_lsn
    cdef uint8_t _max_seq[16]

    cdef uint8_t *_allocate(self, size_t n) except NULL
    cdef int _random_height(self) noexcept nogil
    cdef SkipNode *_find_ge(self, const uint8_t *key, size_t n, uint64_t lsn, SkipNode **prev) noexcept nogil
    cdef SkipNode *_find_lt(self, const uint8_t *key, size_t n, uint64_t lsn) noexcept nogil
    cdef SkipNode *_find_last(self) noexcept nogil
    cdef Py_ssize_t apply_rep(self, const uint8_t *p, size_t size, uint64_t first_lsn) except -1
    cdef int _insert(self, uint8_t kind, const uint8_t *key, size_t kn, uint64_t lsn,
                     const uint8_t *seq, const uint8_t *value, size_t vn) except -1

cdef class MemtableCursor(Cursor):
    cdef Memtable _mem
    cdef SkipNode *_node
    cdef void _load(self) noexcept nogil
