"""LRU cache of decoded blocks, bounded in bytes (each value's charge).

Keys are Python ints, block_key(file number, offset) = number << 40 | offset,
computed without wrapping (a C uint64 would make file 2**24 + n collide with
file n); file numbers are never reused within a DB, so an entry can never
describe the wrong file. DBs that share one cache (Options.block_cache) each
add their own owner prefix (new_owner_prefix(), above bit 128, past any
block_key of a 64-bit file number) to their keys, since their file numbers
collide. A dict finds the node; a
circular doubly linked list keeps recency (the ring's next is the most
recently used, its prev the least).
Thread-safety: every method runs start to finish holding the GIL and calls
no Python code (int keys hash in C; freeing a Block runs no Python), so
concurrent callers are serialized by the GIL without a lock.
"""


def block_key(unsigned long long number, unsigned long long offset) -> int:
    return (<object>number << 40) | offset


cdef class _CacheNode:
    pass


cdef class BlockCache:
    def __init__(self, Py_ssize_t capacity_bytes):
        self._map = {}
        self._ring = _CacheNode()
        self._ring.prev = self._ring
        self._ring.next = self._ring
        self.capacity = capacity_bytes
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._owners = 0

    def new_owner_prefix(self) -> int:
        """A key prefix no other user of this cache has: OR it into every key
        (1 << 128, 2 << 128, ...; a private cache's keys use 0)."""
        self._owners += 1
        return int(self._owners) << 128   # Python ints: a C shift this far would be undefined

    cdef void _unlink(self, _CacheNode n) noexcept:
        n.prev.next = n.next
        n.next.prev = n.prev

    cdef void _push_front(self, _CacheNode n) noexcept:
        n.next = self._ring.next
        n.prev = self._ring
        self._ring.next.prev = n
        self._ring.next = n

    cdef object lookup(self, object key):
        cdef _CacheNode n = self._map.get(key)
        if n is None:
            self.misses += 1
            return None
        self.hits += 1
        if self._ring.next is not n:
            self._unlink(n)
            self._push_front(n)
        return n.value

    cdef int insert(self, object key, object value, Py_ssize_t charge) except -1:
        if charge > self.capacity:
            return 0
        cdef _CacheNode old = self._map.get(key)
        if old is not None:
            self._unlink(old)
            self.used -= old.charge
        cdef _CacheNode n = _CacheNode()
        n.key = key
        n.value = value
        n.charge = charge
        self._map[key] = n
        self._push_front(n)
        self.used += charge
        cdef _CacheNode victim
        while self.used > self.capacity:
            victim = self._ring.prev
            self._unlink(victim)
            del self._map[victim.key]
            self.used -= victim.charge
        return 0

    def get(self, key):
        """The cached value for key, or None (counts a hit or a miss)."""
        return self.lookup(key)

    def put(self, key, value, Py_ssize_t charge=-1) -> None:
        """Caches value (charge defaults to value.charge); evicts the least
        recently used entries past capacity. A value larger than the whole
        cache is not cached."""
        self.insert(key, value, value.charge if charge < 0 else charge)

    def evict_file(self, unsigned long long number) -> None:
        """Drops every block of one file (its file was deleted)."""
        cdef _CacheNode n
        for key in [k for k in self._map if (k >> 40) == number]:
            n = self._map.pop(key)
            self._unlink(n)
            self.used -= n.charge

    def __len__(self) -> int:
        return len(self._map)
