"""U64Map: a hash map from u64 keys to u64 values, 16 bytes a slot, no Python objects.

Why: a Python dict of int -> int costs about 100 bytes an item (the table,
and an int object for each key and value); the node's deduplication window
(server/node/dedup.py) holds 50,000 request ids per replica, and a node hosts
hundreds of replicas. The maintained alternatives were no fit: cykhash ships
only a source distribution and has had no release since 2023; pandas'
hashtables are not a public API.

Layout: open addressing with linear probing over a power-of-two array of
slots, each (key u64, value u64); key 0 marks an empty slot, so the map holds
key 0 apart (a flag and a value). The table doubles when it would pass 11/16
full (linear probing stays short below about 0.7) and never shrinks below MIN_SLOTS; removal shifts the following run back
(no tombstones), so lookups stay short after any mix of puts and removes.
Keys are mixed with a 64-bit finalizer (murmur3's) before taking the slot.

Thread-safety: none (the caller's event loop owns it).
"""
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

cdef enum:
    MIN_SLOTS = 16


cdef inline uint64_t _mix(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xFF51AFD7ED558CCDULL
    k ^= k >> 33
    k *= 0xC4CEB9FE1A85EC53ULL
    k ^= k >> 33
    return k


cdef class U64Map:
    cdef uint64_t *_keys
    cdef uint64_t *_values
    cdef size_t _mask          # slots - 1
    cdef size_t _count         # items in the table (key 0 not included)
    cdef bint _has_zero
    cdef uint64_t _zero_value

    def __cinit__(self):
        self._alloc(MIN_SLOTS)

    def __dealloc__(self):
        free(self._keys)
        free(self._values)

    cdef void _alloc(self, size_t slots) except *:
        self._keys = <uint64_t *>calloc(slots, sizeof(uint64_t))
        self._values = <uint64_t *>calloc(slots, sizeof(uint64_t))
        if self._keys == NULL or self._values == NULL:
            free(self._keys)
            free(self._values)
            self._keys = self._values = NULL
            raise MemoryError()
        self._mask = slots - 1
        self._count = 0

    cdef size_t _find(self, uint64_t key) noexcept nogil:
        """The slot holding `key`, or the empty slot where it would go."""
        cdef size_t i = _mix(key) & self._mask
        while self._keys[i] != 0 and self._keys[i] != key:
            i = (i + 1) & self._mask
        return i

    cdef void _grow(self) except *:
        cdef uint64_t *old_keys = self._keys
        cdef uint64_t *old_values = self._values
        cdef size_t old_slots = self._mask + 1
        cdef size_t i, j
        self._alloc(old_slots * 2)
        for i in range(old_slots):
            if old_keys[i] != 0:
                j = self._find(old_keys[i])
                self._keys[j] = old_keys[i]
                self._values[j] = old_values[i]
                self._count += 1
        free(old_keys)
        free(old_values)

    def get(self, uint64_t key, default=None):
        """The value of `key`, or `default`."""
        if key == 0:
            return self._zero_value if self._has_zero else default
        cdef size_t i = self._find(key)
        return self._values[i] if self._keys[i] != 0 else default

    def __contains__(self, key_object) -> bool:
        cdef uint64_t key = key_object
        if key == 0:
            return self._has_zero
        return self._keys[self._find(key)] != 0

    def __setitem__(self, key_object, uint64_t value):
        # The key comes as an object: a typed integer key would make Cython fill the
        # sequence slot, which converts through Py_ssize_t and refuses keys >= 2**63.
        cdef uint64_t key = key_object
        if key == 0:
            self._has_zero = True
            self._zero_value = value
            return
        cdef size_t i = self._find(key)
        if self._keys[i] == 0:
            if 16 * (self._count + 1) > 11 * (self._mask + 1):
                self._grow()
                i = self._find(key)
            self._keys[i] = key
            self._count += 1
        self._values[i] = value

    def pop(self, uint64_t key, default=None):
        """Removes `key` and returns its value, or returns `default` if absent."""
        cdef uint64_t value
        if key == 0:
            if not self._has_zero:
                return default
            self._has_zero = False
            return self._zero_value
        cdef size_t i = self._find(key)
        if self._keys[i] == 0:
            return default
        value = self._values[i]
        # Backward shift: move each later entry of the run into the hole when
        # its home slot does not lie cyclically in (hole, its slot].
        cdef size_t hole = i
        cdef size_t j = i
        cdef size_t home
        while True:
            j = (j + 1) & self._mask
            if self._keys[j] == 0:
                break
            home = _mix(self._keys[j]) & self._mask
            if (j > hole and (home <= hole or home > j)) or (j < hole and home <= hole and home > j):
                self._keys[hole] = self._keys[j]
                self._values[hole] = self._values[j]
                hole = j
        self._keys[hole] = 0
        self._values[hole] = 0
        self._count -= 1
        return value

    def __len__(self) -> int:
        return self._count + (1 if self._has_zero else 0)

    def clear(self) -> None:
        free(self._keys)
        free(self._values)
        self._keys = self._values = NULL
        self._has_zero = False
        self._alloc(MIN_SLOTS)

    @property
    def nbytes(self) -> int:
        """Bytes of the slot arrays."""
        return 2 * 8 * (self._mask + 1)
