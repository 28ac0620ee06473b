"""SSTable data and index blocks: prefix-compressed entries with restart points.

Block payload (before compression; see table_builder.pyx for the trailer):

    +---------+---------+-----+----------------------------+---------------+
    | entry 0 | entry 1 | ... | restart offsets u32 LE * R | R u32 LE      |
    +---------+---------+-----+----------------------------+---------------+

    entry := shared varint | unshared varint | value_len varint
             | key[shared:] (unshared bytes)
             | lsn u64 LE | kind u8 | seq (16 B)
             | value (value_len bytes)

  shared     bytes the key has in common with the previous entry's key; 0 at
             a restart point (every BLOCK_RESTART_INTERVAL = 16 entries), so
             a reader can start decoding at any restart.
  entries    in internal order (key asc, lsn desc).

Index blocks use the same encoding: one entry per data block, key and lsn of
the block's last entry, value = block offset u64 LE | payload size u32 LE.

Reading: Block(payload) decodes the whole block once (it is then kept, decoded,
in the block cache), so every lookup is a binary search over fixed-size
entries, with no prefix reconstruction on the hot path. The first 16 bytes of
every key are also kept as two dense arrays of big-endian integers: the
binary search compares those (a few cache lines for a whole index block) and
touches a key's bytes only when they tie.
Thread-safety: a BlockBuilder has one owner; a Block is immutable and shared.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from engine._native.endian cimport get_u32_le, get_u64_le, put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

from engine._native.cursor cimport compare_internal, compare_keys
from engine._native.write_batch cimport varint_put, varint_get
from engine.errors import CorruptionError

RESTART_INTERVAL = BLOCK_RESTART_INTERVAL


cdef inline void key_prefixes(const uint8_t *key, size_t n, uint64_t *k0, uint64_t *k1) noexcept nogil:
    """Key bytes [0, 8) and [8, 16) as big-endian integers, zero padded.
    Where two keys' pairs differ they order like the keys (memcmp, then
    length): the first differing byte decides, and a key that ended (0 pad)
    against a real byte > 0 is a prefix of the other, so it sorts first."""
    cdef uint64_t a = 0, b = 0
    cdef size_t i
    for i in range(8):
        a = (a << 8) | (key[i] if i < n else 0)
    for i in range(8, 16):
        b = (b << 8) | (key[i] if i < n else 0)
    k0[0] = a
    k1[0] = b


cdef class BlockBuilder:
    """Accumulates entries (in internal order) into one block payload."""

    def __cinit__(self):
        self._cap = 8192
        self._buf = <uint8_t *>malloc(self._cap)
        self._cap_restarts = 64
        self._restarts = <uint32_t *>malloc(self._cap_restarts * sizeof(uint32_t))
        self._last_key_cap = 256
        self._last_key = <uint8_t *>malloc(self._last_key_cap)
        if self._buf == NULL or self._restarts == NULL or self._last_key == NULL:
            raise MemoryError()
        self.reset()

    def __dealloc__(self):
        free(self._buf)
        free(self._restarts)
        free(self._last_key)

    cdef void reset(self) noexcept nogil:
        self._size = 0
        self._n_restarts = 0
        self._last_key_len = 0
        self.count = 0
        self._since_restart = 0

    cdef int add(self, const uint8_t *key, size_t kn, uint64_t lsn, uint8_t kind,
                 const uint8_t *seq, const uint8_t *value, size_t vn) except -1 nogil:
        cdef size_t shared = 0
        cdef size_t limit
        cdef size_t need
        cdef void *p
        if self._since_restart == BLOCK_RESTART_INTERVAL or self.count == 0:
            if self._n_restarts == self._cap_restarts:
                p = realloc(self._restarts, 2 * self._cap_restarts * sizeof(uint32_t))
                if p == NULL:
                    with gil:
                        raise MemoryError()
                self._restarts = <uint32_t *>p
                self._cap_restarts *= 2
            self._restarts[self._n_restarts] = <uint32_t>self._size
            self._n_restarts += 1
            self._since_restart = 0
        else:
            limit = kn if kn < self._last_key_len else self._last_key_len
            while shared < limit and key[shared] == self._last_key[shared]:
                shared += 1
        need = self._size + 30 + (kn - shared) + BLOCK_ENTRY_FIXED + vn
        if need > self._cap:
            while need > self._cap:
                self._cap *= 2
            p = realloc(self._buf, self._cap)
            if p == NULL:
                with gil:
                    raise MemoryError()
            self._buf = <uint8_t *>p
        cdef uint8_t *out = self._buf + self._size
        cdef size_t off = varint_put(out, shared)
        off += varint_put(out + off, kn - shared)
        off += varint_put(out + off, vn)
        memcpy(out + off, key + shared, kn - shared)
        off += kn - shared
        put_u64_le(out + off, lsn)
        out[off + 8] = kind
        memcpy(out + off + 9, seq, 16)
        off += BLOCK_ENTRY_FIXED
        if vn:
            memcpy(out + off, value, vn)
        off += vn
        self._size += off
        if kn > self._last_key_cap:
            p = realloc(self._last_key, kn)
            if p == NULL:
                with gil:
                    raise MemoryError()
            self._last_key = <uint8_t *>p
            self._last_key_cap = kn
        memcpy(self._last_key + shared, key + shared, kn - shared)
        self._last_key_len = kn
        self.count += 1
        self._since_restart += 1
        return 0

    cdef size_t estimated_size(self) noexcept nogil:
        return self._size + 4 * self._n_restarts + 4

    cdef size_t finish_into(self, uint8_t *out) noexcept nogil:
        """Writes the payload (estimated_size() bytes) to `out` and returns its
        size; the builder is reset for the next block. Needs no GIL, so the
        table builder can queue finished blocks in its own buffer."""
        cdef size_t total = self.estimated_size()
        memcpy(out, self._buf, self._size)
        cdef size_t i
        for i in range(self._n_restarts):
            put_u32_le(out + self._size + 4 * i, self._restarts[i])
        put_u32_le(out + total - 4, <uint32_t>self._n_restarts)
        self.reset()
        return total

    cdef bytes finish(self):
        """The payload; the builder is reset for the next block."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.estimated_size())
        self.finish_into(<uint8_t *>PyBytes_AS_STRING(out))
        return out

    # Python surface, for tests and the index block.
    def py_add(self, bytes key not None, uint64_t lsn, int kind, bytes seq not None, bytes value not None):
        if len(seq) != 16:
            raise ValueError("seq must be 16 bytes")
        self.add(<const uint8_t *>PyBytes_AS_STRING(key), len(key), lsn, <uint8_t>kind,
                 <const uint8_t *>PyBytes_AS_STRING(seq), <const uint8_t *>PyBytes_AS_STRING(value), len(value))

    def py_finish(self) -> bytes:
        return self.finish()

    @property
    def size_estimate(self) -> int:
        return self.estimated_size()


cdef class Block:
    """A decoded, immutable block. Raises CorruptionError on a malformed payload."""

    def __cinit__(self, bytes payload not None):
        self._payload = payload
        self._data = <const uint8_t *>PyBytes_AS_STRING(payload)
        self._keys = NULL
        self.entries = NULL
        self._k0 = NULL
        self._k1 = NULL
        cdef size_t size = <size_t>PyBytes_GET_SIZE(payload)
        if size < 4:
            raise CorruptionError("block shorter than its restart count")
        cdef uint32_t n_restarts = get_u32_le(self._data + size - 4)
        if n_restarts == 0 and size != 4:
            raise CorruptionError("block with data but no restart points")
        if <size_t>n_restarts > (size - 4) // 4:
            raise CorruptionError("block restart count exceeds its size")
        cdef size_t limit = size - 4 - 4 * <size_t>n_restarts
        # Count entries and the key buffer size in one pass, then fill.
        cdef size_t cap = 64
        cdef size_t keys_cap = 4096
        cdef size_t keys_size = 0
        cdef Py_ssize_t n = 0
        cdef size_t off = 0
        cdef uint64_t shared, unshared, vlen
        cdef size_t used
        cdef uint32_t prev_off = 0
        cdef uint32_t prev_len = 0
        cdef void *p
        cdef BlockEntry *e
        self.entries = <BlockEntry *>malloc(cap * sizeof(BlockEntry))
        self._keys = <uint8_t *>malloc(keys_cap)
        if self.entries == NULL or self._keys == NULL:
            raise MemoryError()
        while off < limit:
            used = varint_get(self._data + off, limit - off, &shared)
            if used == 0:
                raise CorruptionError(f"bad varint at block offset {off}")
            off += used
            used = varint_get(self._data + off, limit - off, &unshared)
            if used == 0:
                raise CorruptionError(f"bad varint at block offset {off}")
            off += used
            used = varint_get(self._data + off, limit - off, &vlen)
            if used == 0:
                raise CorruptionError(f"bad varint at block offset {off}")
            off += used
            if shared > prev_len or unshared > limit - off or \
                    vlen > limit - off - unshared or limit - off - unshared - vlen < BLOCK_ENTRY_FIXED:
                raise CorruptionError(f"entry at block offset {off} overruns the block")
            if <size_t>n == cap:
                cap *= 2
                p = realloc(self.entries, cap * sizeof(BlockEntry))
                if p == NULL:
                    raise MemoryError()
                self.entries = <BlockEntry *>p
            if keys_size + shared + unshared > keys_cap:
                while keys_size + shared + unshared > keys_cap:
                    keys_cap *= 2
                p = realloc(self._keys, keys_cap)
                if p == NULL:
                    raise MemoryError()
                self._keys = <uint8_t *>p
            e = &self.entries[n]
            e.key_off = <uint32_t>keys_size
            e.key_len = <uint32_t>(shared + unshared)
            if shared:
                memcpy(self._keys + keys_size, self._keys + prev_off, shared)
            memcpy(self._keys + keys_size + shared, self._data + off, unshared)
            keys_size += shared + unshared
            off += unshared
            e.lsn = get_u64_le(self._data + off)
            e.kind = self._data[off + 8]
            e.seq_off = <uint32_t>(off + 9)
            off += BLOCK_ENTRY_FIXED
            e.value_off = <uint32_t>off
            e.value_len = <uint32_t>vlen
            off += vlen
            prev_off = e.key_off
            prev_len = e.key_len
            n += 1
        if off != limit:
            raise CorruptionError("block entries do not end at the restart array")
        self.count = n
        self.charge = <Py_ssize_t>(size + keys_size + n * (sizeof(BlockEntry) + 16) + 128)

    def __dealloc__(self):
        free(self.entries)
        free(self._keys)
        free(self._k0)
        free(self._k1)

    cdef const uint8_t *key_at(self, Py_ssize_t i) noexcept nogil:
        return self._keys + self.entries[i].key_off

    cdef bint _build_prefixes(self) noexcept nogil:
        # Built on the first search, not at decode: a block read by a scan
        # or a compaction is walked in order and never searched. Searches
        # run with the GIL held (readers, scans); compaction only walks, so
        # two threads never build the arrays of one Block at once.
        cdef Py_ssize_t i
        self._k0 = <uint64_t *>malloc((self.count + 1) * sizeof(uint64_t))
        self._k1 = <uint64_t *>malloc((self.count + 1) * sizeof(uint64_t))
        if self._k0 == NULL or self._k1 == NULL:
            free(self._k0)
            free(self._k1)
            self._k0 = self._k1 = NULL
            return False
        for i in range(self.count):
            key_prefixes(self._keys + self.entries[i].key_off, self.entries[i].key_len, &self._k0[i], &self._k1[i])
        return True

    cdef Py_ssize_t lower_bound(self, const uint8_t *key, size_t n, uint64_t lsn) noexcept nogil:
        """Index of the first entry at or after (key, lsn); count if none."""
        cdef Py_ssize_t lo = 0
        cdef Py_ssize_t hi = self.count
        cdef Py_ssize_t mid
        cdef BlockEntry *e
        cdef uint64_t t0, t1
        cdef bint before
        if self._k1 == NULL and not self._build_prefixes():
            while lo < hi:   # out of memory: search on the keys themselves
                mid = (lo + hi) >> 1
                e = &self.entries[mid]
                if compare_internal(self._keys + e.key_off, e.key_len, e.lsn, key, n, lsn) < 0:
                    lo = mid + 1
                else:
                    hi = mid
            return lo
        key_prefixes(key, n, &t0, &t1)
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._k0[mid] != t0:
                before = self._k0[mid] < t0
            elif self._k1[mid] != t1:
                before = self._k1[mid] < t1
            else:
                e = &self.entries[mid]
                before = compare_internal(self._keys + e.key_off, e.key_len, e.lsn, key, n, lsn) < 0
            if before:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def entry(self, Py_ssize_t i) -> tuple:
        """(key, lsn, kind, seq, value) of entry i (tests and tools)."""
        if i < 0 or i >= self.count:
            raise IndexError(i)
        cdef BlockEntry *e = &self.entries[i]
        return ((<char *>self._keys + e.key_off)[:e.key_len], e.lsn, e.kind,
                (<char *>self._data + e.seq_off)[:16],
                (<char *>self._data + e.value_off)[:e.value_len])

    def find(self, bytes key not None, uint64_t snapshot_lsn):
        """The newest entry for key with lsn <= snapshot_lsn as
        (kind, seq, value), or None when this block holds no such entry."""
        cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(key)
        cdef size_t kn = <size_t>PyBytes_GET_SIZE(key)
        cdef Py_ssize_t i = self.lower_bound(k, kn, snapshot_lsn)
        if i >= self.count:
            return None
        cdef BlockEntry *e = &self.entries[i]
        if compare_keys(self._keys + e.key_off, e.key_len, k, kn) != 0:
            return None
        return (e.kind, (<char *>self._data + e.seq_off)[:16],
                (<char *>self._data + e.value_off)[:e.value_len])

    def index_lookup(self, bytes key not None, uint64_t lsn):
        """For an index block: position of the first data block whose last
        entry is at or after (key, lsn), or -1 past the end."""
        cdef Py_ssize_t i = self.lower_bound(<const uint8_t *>PyBytes_AS_STRING(key), len(key), lsn)
        return -1 if i >= self.count else i

    def handle(self, Py_ssize_t i) -> tuple:
        """For an index block: (offset, size) of data block i."""
        if i < 0 or i >= self.count:
            raise IndexError(i)
        cdef BlockEntry *e = &self.entries[i]
        if e.value_len != 12:
            raise CorruptionError(f"index entry {i} has a {e.value_len}-byte handle, want 12")
        return (get_u64_le(self._data + e.value_off), get_u32_le(self._data + e.value_off + 8))

    def __len__(self):
        return self.count


def encode_handle(uint64_t offset, uint32_t size) -> bytes:
    cdef uint8_t buf[12]
    put_u64_le(buf, offset)
    put_u32_le(buf + 8, size)
    return (<char *>buf)[:12]
