"""The memtable: a skiplist of entries in internal order, memory from an arena.

Contract:
  1. Entries are ordered by (key ascending, lsn descending); (key, lsn) pairs
     are unique because every write gets a fresh lsn from the DB.
  2. Nodes live in arena blocks (a first block of 64 KiB, then 2 MiB-aligned
     huge pages when the kernel grants them, or one malloc'ed block for an
     entry larger than 512 KiB) and are never moved or freed until the
     Memtable is deallocated, so a node pointer held by a cursor stays valid
     as long as the cursor holds the Memtable: cursors stay valid while writes
     go on, and see the entries inserted after them in order.
  3. Thread-safety: every method runs with the GIL held and never releases it
     while the list is being modified, so one writer and any number of readers
     (threads or paused generators) are serialized by the GIL. Readers may
     drop the GIL (flush of an immutable memtable) only once no writer remains.
  4. `memory` counts the arena bytes handed out (entries and their links),
     the DB's flush trigger; the unused tail of the current block is not
     counted, so the true footprint exceeds it by at most one block.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE
from libc.string cimport memcmp, memcpy, memset

from engine._native.cursor cimport Cursor, compare_internal, compare_keys, KIND_VALUE, KIND_DELETE, QKV_MAX_LSN
from engine._native.write_batch cimport BatchRecord, batch_record_at, batch_count, BATCH_HEADER_SIZE

cdef enum:
    ARENA_BLOCK_SIZE = 1 << 21      # one 2 MiB huge page
    FIRST_BLOCK_SIZE = 1 << 16      # a memtable's first block: plain malloc, small
    NODE_ALIGN = 8


cdef extern from *:
    """
    #define qkv_prefetch(p) __builtin_prefetch((const void *)(p))
    """
    void _prefetch "qkv_prefetch"(const void *p) noexcept nogil


cdef inline SkipLink *_links(SkipNode *node) noexcept nogil:
    return <SkipLink *>(<uint8_t *>node + sizeof(SkipNode))


cdef inline uint8_t *_key(SkipNode *node) noexcept nogil:
    return <uint8_t *>node + sizeof(SkipNode) + node.height * sizeof(SkipLink)


cdef inline uint64_t _word(SkipNode *node) noexcept nogil:
    """The node's first 8 internal key bytes as a big-endian integer (SkipLink.word)."""
    return (<uint64_t>node.head << 32) | (node.prefix >> 32)


cdef inline void _link_to(SkipLink *link, SkipNode *node) noexcept nogil:
    link.next = node
    link.word = _word(node)


cdef inline uint8_t *_seq(SkipNode *node) noexcept nogil:
    return _key(node) + node.key_len


cdef inline uint8_t *_value(SkipNode *node) noexcept nogil:
    return _key(node) + node.key_len + 16


cdef struct KeyProbe:
    const uint8_t *key
    size_t n
    uint64_t lsn
    uint64_t prefix
    uint32_t head


cdef inline void _probe(KeyProbe *p, const uint8_t *key, size_t n, uint64_t lsn) noexcept nogil:
    cdef size_t i
    cdef uint64_t prefix = 0
    cdef uint32_t head = 0
    for i in range(4):
        head = (head << 8) | (key[i] if i < n else 0)
    for i in range(4, 12):
        prefix = (prefix << 8) | (key[i] if i < n else 0)
    p.key = key
    p.n = n
    p.lsn = lsn
    p.head = head
    p.prefix = prefix


cdef inline int _link_cmp(SkipLink *link, KeyProbe *p) noexcept nogil:
    """_node_cmp(link.next, p), reading link.next only when the link's
    copy of its first 8 key bytes ties with the probe's."""
    cdef uint64_t w = (<uint64_t>p.head << 32) | (p.prefix >> 32)
    if link.word != w:
        return -1 if link.word < w else 1
    return _node_cmp(link.next, p)


cdef inline int _node_cmp(SkipNode *node, KeyProbe *p) noexcept nogil:
    """<0 when node sorts before the probe in internal order. Zero-padded
    big-endian prefixes order like the keys whenever they differ."""
    if node.head != p.head:
        return -1 if node.head < p.head else 1
    if node.prefix != p.prefix:
        return -1 if node.prefix < p.prefix else 1
    return compare_internal(_key(node), node.key_len, node.lsn, p.key, p.n, p.lsn)


cdef class Memtable:
    """An ordered in-memory table of versions; see the module contract."""

    def __cinit__(self):
        self._blocks = NULL
        self._alloc_ptr = NULL
        self._alloc_left = 0
        self._memory = 0
        self.count = 0
        self.max_lsn = 0
        memset(self._max_seq, 0, 16)
        self._height = 1
        self._rng = 0x9E3779B97F4A7C15ULL
        cdef size_t head_size = sizeof(SkipNode) + SKIPLIST_MAX_HEIGHT * sizeof(SkipLink)
        self._head = <SkipNode *>self._allocate(head_size)
        memset(self._head, 0, head_size)
        self._head.height = SKIPLIST_MAX_HEIGHT

    def __dealloc__(self):
        cdef ArenaBlock *b = self._blocks
        cdef ArenaBlock *p
        while b != NULL:
            p = b.prev
            free(b)
            b = p

    cdef uint8_t *_allocate(self, size_t n) except NULL:
        cdef ArenaBlock *b
        cdef uint8_t *out
        cdef size_t block_size
        n = (n + NODE_ALIGN - 1) & ~(<size_t>NODE_ALIGN - 1)
        self._memory += n
        if n > self._alloc_left:
            # Large entries get a block of their own so the current block's
            # remaining space is not wasted.
            if n > ARENA_BLOCK_SIZE // 4:
                block_size = n
                b = <ArenaBlock *>malloc(sizeof(ArenaBlock) + block_size)
            elif self._blocks == NULL:
                # The first block (the head node's) is small and plain: a node
                # keeps a memtable per replica, most of them idle or small, and
                # a huge page each would be 2 MiB of memory per replica held
                # from the start (bench/RESULTS.md, session 9).
                block_size = FIRST_BLOCK_SIZE - sizeof(ArenaBlock)
                b = <ArenaBlock *>malloc(FIRST_BLOCK_SIZE)
            else:
                # A standard block is one 2 MiB-aligned huge page where the
                # kernel allows it (THP "madvise" mode): a walk over a large
                # memtable then misses the TLB once per 2 MiB, not per 4 KiB,
                # which matters most inside a VM (two-level page walks).
                block_size = ARENA_BLOCK_SIZE - sizeof(ArenaBlock)
                b = NULL
                if posix_memalign(<void **>&b, ARENA_BLOCK_SIZE, ARENA_BLOCK_SIZE) != 0:
                    b = NULL
                elif b != NULL:
                    madvise(<void *>b, ARENA_BLOCK_SIZE, MADV_HUGEPAGE)
            if b == NULL:
                raise MemoryError("memtable arena")
            b.prev = self._blocks
            b.size = block_size
            self._blocks = b
            out = <uint8_t *>b + sizeof(ArenaBlock)
            if block_size == n:
                return out
            self._alloc_ptr = out + n
            self._alloc_left = block_size - n
            return out
        out = self._alloc_ptr
        self._alloc_ptr += n
        self._alloc_left -= n
        return out

    cdef int _random_height(self) noexcept nogil:
        # xorshift64*; branching factor 4 as in LevelDB.
        cdef int h = 1
        cdef uint64_t x
        while h < SKIPLIST_MAX_HEIGHT:
            x = self._rng
            x ^= x >> 12
            x ^= x << 25
            x ^= x >> 27
            self._rng = x
            if ((x * 0x2545F4914F6CDD1DULL) >> 32) & 3:
                break
            h += 1
        return h

    cdef SkipNode *_find_ge(self, const uint8_t *key, size_t n, uint64_t lsn, SkipNode **prev) noexcept nogil:
        cdef SkipNode *x = self._head
        cdef int level = self._height - 1
        cdef SkipLink *link
        cdef KeyProbe probe
        _probe(&probe, key, n, lsn)
        while True:
            link = &_links(x)[level]
            if link.next != NULL and _link_cmp(link, &probe) < 0:
                x = link.next
            else:
                if prev != NULL:
                    prev[level] = x
                if level == 0:
                    return link.next
                level -= 1

    cdef SkipNode *_find_lt(self, const uint8_t *key, size_t n, uint64_t lsn) noexcept nogil:
        """Last node before (key, lsn), or NULL: the level-0 predecessor that
        the search for (key, lsn) passes."""
        cdef SkipNode *prev[SKIPLIST_MAX_HEIGHT]
        self._find_ge(key, n, lsn, prev)
        return NULL if prev[0] == self._head else prev[0]

    cdef SkipNode *_find_last(self) noexcept nogil:
        cdef SkipNode *x = self._head
        cdef int level = self._height - 1
        cdef SkipNode *nxt
        while True:
            nxt = _links(x)[level].next
            if nxt != NULL:
                x = nxt
            else:
                if level == 0:
                    return NULL if x == self._head else x
                level -= 1

    cdef int _insert(self, uint8_t kind, const uint8_t *key, size_t kn, uint64_t lsn,
                     const uint8_t *seq, const uint8_t *value, size_t vn) except -1:
        cdef SkipNode *prev[SKIPLIST_MAX_HEIGHT]
        cdef int i
        cdef int height = self._random_height()
        self._find_ge(key, kn, lsn, prev)
        if height > self._height:
            for i in range(self._height, height):
                prev[i] = self._head
            self._height = height
        cdef SkipNode *node = <SkipNode *>self._allocate(
            sizeof(SkipNode) + height * sizeof(SkipLink) + kn + 16 + vn)
        cdef KeyProbe probe
        _probe(&probe, key, kn, lsn)
        node.head = probe.head
        node.prefix = probe.prefix
        node.lsn = lsn
        node.key_len = <uint32_t>kn
        node.value_len = <uint32_t>vn
        node.kind = kind
        node.height = <uint8_t>height
        memcpy(_key(node), key, kn)
        memcpy(_seq(node), seq, 16)
        if vn:
            memcpy(_value(node), value, vn)
        for i in range(height):
            _links(node)[i] = _links(prev[i])[i]
            _link_to(&_links(prev[i])[i], node)
        self.count += 1
        if lsn > self.max_lsn:
            self.max_lsn = lsn
        if memcmp(seq, self._max_seq, 16) > 0:
            memcpy(self._max_seq, seq, 16)
        return 0

    def apply_batch(self, bytes rep not None, uint64_t first_lsn) -> int:
        """Inserts every record of a write batch, the i-th with lsn first_lsn + i.

        Requires: rep was produced by write_batch.encode_* (or validated by
        write_batch.validate); the lsns are unused in this memtable.
        Returns the number of records inserted.
        """
        return self.apply_rep(<const uint8_t *>PyBytes_AS_STRING(rep), <size_t>PyBytes_GET_SIZE(rep), first_lsn)

    cdef Py_ssize_t apply_rep(self, const uint8_t *p, size_t size, uint64_t first_lsn) except -1:
        if size < BATCH_HEADER_SIZE:
            raise ValueError("write batch shorter than its header")
        cdef uint32_t n = batch_count(p)
        cdef size_t off = BATCH_HEADER_SIZE
        cdef BatchRecord r
        cdef uint32_t i
        for i in range(n):
            off = batch_record_at(p, size, off, &r)
            if off == 0:
                raise ValueError(f"malformed write batch at record {i}")
            self._insert(r.kind, r.key, r.key_len, first_lsn + i, r.seq, r.value, r.value_len)
        return n

    def add(self, int kind, bytes key not None, uint64_t lsn, bytes seq not None, bytes value=b""):
        """Inserts one entry (tests and tools; the DB uses apply_batch)."""
        if len(seq) != 16:
            raise ValueError("seq must be 16 bytes")
        self._insert(<uint8_t>kind, <const uint8_t *>PyBytes_AS_STRING(key), len(key), lsn,
                     <const uint8_t *>PyBytes_AS_STRING(seq),
                     <const uint8_t *>PyBytes_AS_STRING(value), len(value))

    def get(self, bytes key not None, uint64_t snapshot_lsn=QKV_MAX_LSN):
        """The newest version of key with lsn <= snapshot_lsn, as
        (kind, seq, value), or None when the memtable has no such version
        (a tombstone is returned as (KIND_DELETE, seq, b""): it hides older data).
        """
        cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(key)
        cdef size_t kn = <size_t>PyBytes_GET_SIZE(key)
        cdef SkipNode *node = self._find_ge(k, kn, snapshot_lsn, NULL)
        if node == NULL or compare_keys(_key(node), node.key_len, k, kn) != 0:
            return None
        return (node.kind, (<char *>_seq(node))[:16], (<char *>_value(node))[:node.value_len])

    @property
    def memory(self) -> int:
        return self._memory

    @property
    def arena_bytes(self) -> int:
        """Bytes of arena blocks allocated (what the memtable holds, handed out or not)."""
        cdef size_t total = 0
        cdef ArenaBlock *b = self._blocks
        while b != NULL:
            total += sizeof(ArenaBlock) + b.size
            b = b.prev
        return total

    @property
    def max_seq(self) -> bytes:
        """The highest record seq inserted (16 zero bytes when empty)."""
        return (<char *>self._max_seq)[:16]

    def cursor(self) -> MemtableCursor:
        cdef MemtableCursor c = MemtableCursor.__new__(MemtableCursor)
        c._mem = self
        c._node = NULL
        return c


cdef class MemtableCursor(Cursor):
    """A cursor over a Memtable; holds it alive (contract 2)."""

    cdef void _load(self) noexcept nogil:
        cdef SkipNode *n = self._node
        if n == NULL:
            self.valid = False
            return
        # Nodes sit wherever their insert put them: walking in key order is
        # a cache (and TLB) miss per node. Start fetching the next node now,
        # so the miss overlaps the work done on this one.
        cdef SkipNode *nxt = _links(n)[0].next
        if nxt != NULL:
            _prefetch(nxt)
            _prefetch(<uint8_t *>nxt + 64)
            _prefetch(<uint8_t *>nxt + 128)
        self.valid = True
        self.key = _key(n)
        self.key_len = n.key_len
        self.lsn = n.lsn
        self.kind = n.kind
        self.seq = _seq(n)
        self.value = _value(n)
        self.value_len = n.value_len

    cdef void seek_first(self) noexcept nogil:
        self._node = _links(self._mem._head)[0].next
        self._load()

    cdef void seek_last(self) noexcept nogil:
        self._node = self._mem._find_last()
        self._load()

    cdef void seek_ge(self, const uint8_t *key, size_t n) noexcept nogil:
        self._node = self._mem._find_ge(key, n, QKV_MAX_LSN, NULL)
        self._load()

    cdef void seek_lt(self, const uint8_t *key, size_t n) noexcept nogil:
        self._node = self._mem._find_lt(key, n, QKV_MAX_LSN)
        self._load()

    cdef void next(self) noexcept nogil:
        if self._node != NULL:
            self._node = _links(self._node)[0].next
        self._load()

    cdef void prev(self) noexcept nogil:
        if self._node != NULL:
            self._node = self._mem._find_lt(_key(self._node), self._node.key_len, self._node.lsn)
        self._load()
