"""Write batch encoding: the unit of atomicity, of WAL framing and of replication.

A batch ("rep") is one contiguous buffer, written to the WAL as one frame and
applied to the memtable by one native call:

    0         4               12      13
    +---------+---------------+-------+----------------------------+
    | count   | applied_index | flags | record * count             |
    | u32 LE  | u64 LE        | u8    |                            |
    +---------+---------------+-------+----------------------------+

    record := kind u8 | key_len varint | key | seq (16 B) | [value_len varint | value]
              (value_len and value only when kind == VALUE)

  flags bit 0   applied_index is set (an opaque u64 the replication layer
                attaches: "every write up to this log index is in this batch
                or before it").
  key           internal key: table id (u32 BE) followed by the user key.
  kind          0 = delete (tombstone, keeps its seq), 1 = value.

Requires: user keys of 1..4096 bytes, values of at most 1 MiB, seqs of 16
bytes. encode_* validate every record before producing any output, so a bad
record rejects the whole batch and nothing is written.

Leader stamping (merge_stamped): the leader turns the client batches that
arrived together into one rep, the payload of one log entry, and restamps
seqs so they strictly increase in log order (issue 3's sequencer rule):

  1. Records keep their order: reps in list order, records in rep order.
  2. prev starts at last_seq (the last seq the leader proposed). Each record
     keeps its seq s when s > prev (16-byte big-endian order) and otherwise
     gets step(prev); either way that seq becomes the new prev. So the
     stamped seqs are strictly increasing and all above last_seq.
  3. step(seq) is the next (timestamp, counter) at the same node id: the
     counter plus one, or, when the counter is 0xffffffff, the timestamp plus
     one nanosecond and the counter 0 (the pair read as one 96-bit big-endian
     number, plus one). The node id is prev's. With timestamp and counter
     both at their maximum there is no step: OverflowError.
  4. Only the seq bytes change; every other record byte is copied as is. The
     output header carries the total count and the leader's applied_index;
     the inputs' headers are not carried over.

Thread-safety: module functions hold no state. merge_stamped, seqs and
table_ids release the GIL for their record loops; the bytes they read are
immutable and referenced for the whole call.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from engine._native.endian cimport get_u64_le, put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from engine._native.cursor cimport KIND_DELETE, KIND_VALUE
from engine._native.sequencer cimport SEQ_SIZE, Sequencer
from engine.errors import InvalidArgumentError, TableNotFoundError

HEADER_SIZE = BATCH_HEADER_SIZE
MAX_KEY = MAX_KEY_SIZE
MAX_VALUE = MAX_VALUE_SIZE
DELETE = KIND_DELETE
VALUE = KIND_VALUE


cdef size_t batch_record_at(const uint8_t *rep, size_t size, size_t off, BatchRecord *r) noexcept nogil:
    cdef uint64_t n = 0
    cdef size_t used
    if off >= size:
        return 0
    r.kind = rep[off]
    off += 1
    if r.kind != KIND_DELETE and r.kind != KIND_VALUE:
        return 0
    used = varint_get(rep + off, size - off, &n)
    if used == 0 or n > size - off - used:
        return 0
    off += used
    r.key = rep + off
    r.key_len = <size_t>n
    off += <size_t>n
    if size - off < 16:
        return 0
    r.seq = rep + off
    off += 16
    if r.kind == KIND_VALUE:
        used = varint_get(rep + off, size - off, &n)
        if used == 0 or n > size - off - used:
            return 0
        off += used
        r.value = rep + off
        r.value_len = <size_t>n
        off += <size_t>n
    else:
        r.value = NULL
        r.value_len = 0
    return off


cdef Py_ssize_t _check_record(int kind, object key, object value, object seq) except -1:
    """Validates one record; returns its encoded size (table prefix included)."""
    if not PyBytes_CheckExact(key):
        raise InvalidArgumentError(f"key must be bytes, got {type(key).__name__}")
    cdef Py_ssize_t kn = PyBytes_GET_SIZE(key)
    if kn < 1 or kn > MAX_KEY_SIZE:
        raise InvalidArgumentError(f"key must be 1 to {MAX_KEY_SIZE} bytes, got {kn}")
    if not PyBytes_CheckExact(seq) or PyBytes_GET_SIZE(seq) != 16:
        raise InvalidArgumentError("seq must be 16 bytes (timestamp, counter, node id)")
    cdef Py_ssize_t size = 1 + varint_len(kn + TABLE_PREFIX_SIZE) + kn + TABLE_PREFIX_SIZE + 16
    cdef Py_ssize_t vn
    if kind == KIND_VALUE:
        if not PyBytes_CheckExact(value):
            raise InvalidArgumentError(f"value must be bytes, got {type(value).__name__}")
        vn = PyBytes_GET_SIZE(value)
        if vn > MAX_VALUE_SIZE:
            raise InvalidArgumentError(f"value must be at most {MAX_VALUE_SIZE} bytes (1 MiB), got {vn}")
        size += varint_len(vn) + vn
    elif kind != KIND_DELETE:
        raise InvalidArgumentError(f"unknown record kind {kind}")
    return size


cdef size_t _write_record(uint8_t *p, int kind, uint32_t table_id, bytes key, object value, bytes seq) noexcept:
    cdef size_t kn = <size_t>PyBytes_GET_SIZE(key)
    cdef size_t off = 0
    cdef size_t vn
    p[0] = <uint8_t>kind
    off = 1 + varint_put(p + 1, kn + TABLE_PREFIX_SIZE)
    p[off] = <uint8_t>(table_id >> 24)
    p[off + 1] = <uint8_t>(table_id >> 16)
    p[off + 2] = <uint8_t>(table_id >> 8)
    p[off + 3] = <uint8_t>table_id
    off += TABLE_PREFIX_SIZE
    memcpy(p + off, PyBytes_AS_STRING(key), kn)
    off += kn
    memcpy(p + off, PyBytes_AS_STRING(seq), 16)
    off += 16
    if kind == KIND_VALUE:
        vn = <size_t>PyBytes_GET_SIZE(<bytes>value)
        off += varint_put(p + off, vn)
        if vn:
            memcpy(p + off, PyBytes_AS_STRING(<bytes>value), vn)
        off += vn
    return off


cdef int _check_applied_index(object applied_index) except -1:
    if applied_index is not None and (type(applied_index) is not int or not 0 <= applied_index < 2**64):
        raise InvalidArgumentError(f"applied_index must be an int in [0, 2**64) or None, got {applied_index!r}")
    return 0


cdef bytes _new_rep(Py_ssize_t body, uint32_t count, object applied_index):
    cdef bytes rep = PyBytes_FromStringAndSize(NULL, BATCH_HEADER_SIZE + body)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(rep)
    put_u32_le(p, count)
    if applied_index is None:
        put_u64_le(p + 4, 0)
        p[12] = 0
    else:
        put_u64_le(p + 4, <uint64_t>applied_index)
        p[12] = BATCH_FLAG_APPLIED_INDEX
    return rep


def encode_one(int kind, uint32_t table_id, key, value, seq, applied_index=None) -> bytes:
    """A batch of one record (the put/delete fast path)."""
    _check_applied_index(applied_index)
    cdef Py_ssize_t body = _check_record(kind, key, value, seq)
    cdef bytes rep = _new_rep(body, 1, applied_index)
    _write_record(<uint8_t *>PyBytes_AS_STRING(rep) + BATCH_HEADER_SIZE, kind, table_id, key, value, seq)
    return rep


def encode_many(list records not None, applied_index=None) -> bytes:
    """A batch of (kind, table_id, key, value, seq) records, all validated first."""
    cdef Py_ssize_t body = 0
    cdef tuple rec
    _check_applied_index(applied_index)
    if len(records) > 0xFFFFFFFF:
        raise InvalidArgumentError("too many records in one batch")
    for rec in records:
        body += _check_record(rec[0], rec[2], rec[3], rec[4])
    cdef bytes rep = _new_rep(body, <uint32_t>len(records), applied_index)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(rep) + BATCH_HEADER_SIZE
    for rec in records:
        p += _write_record(p, rec[0], rec[1], rec[2], rec[3], rec[4])
    return rep


def encode_ops(list ops not None, dict table_ids not None, Sequencer sequencer not None, applied_index=None):
    """The batch of user operations (kind, table name, key, value, seq or
    None), all resolved and validated in one C loop before any output:
    table names through table_ids (an unknown one raises TableNotFoundError),
    missing seqs issued by sequencer, given seqs observed by it.
    Returns (rep, seqs)."""
    cdef Py_ssize_t n = len(ops)
    if n > 0xFFFFFFFF:
        raise InvalidArgumentError("too many records in one batch")
    _check_applied_index(applied_index)
    cdef list records = [None] * n
    cdef list seqs = [None] * n
    cdef Py_ssize_t body = 0
    cdef Py_ssize_t i
    cdef tuple op
    cdef object tid, seq
    cdef uint8_t buf[16]
    for i in range(n):
        op = <tuple>ops[i]
        tid = table_ids.get(op[1]) if type(op[1]) is str else None
        if tid is None:
            raise TableNotFoundError(f"no table named {op[1]!r}")
        seq = op[4]
        body += _check_record(op[0], op[2], op[3], b"\x00" * 16 if seq is None else seq)
        records[i] = (op[0], tid, op[2], op[3])
        seqs[i] = seq
    # Every record is valid: only now touch the sequencer.
    for i in range(n):
        if seqs[i] is None:
            sequencer.next_into(buf)
            seqs[i] = (<char *>buf)[:16]
        else:
            sequencer._observe(<const uint8_t *>PyBytes_AS_STRING(<bytes>seqs[i]))
    cdef bytes rep = _new_rep(body, <uint32_t>n, applied_index)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(rep) + BATCH_HEADER_SIZE
    cdef tuple rec
    for i in range(n):
        rec = <tuple>records[i]
        p += _write_record(p, rec[0], rec[1], rec[2], rec[3], <bytes>seqs[i])
    return rep, seqs


def applied_index(bytes rep not None):
    """The batch's applied_index, or None when it carries none."""
    if PyBytes_GET_SIZE(rep) < BATCH_HEADER_SIZE:
        raise ValueError("batch shorter than its header")
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    if p[12] & BATCH_FLAG_APPLIED_INDEX:
        return get_u64_le(p + 4)
    return None


def count(bytes rep not None) -> int:
    if PyBytes_GET_SIZE(rep) < BATCH_HEADER_SIZE:
        raise ValueError("batch shorter than its header")
    return batch_count(<const uint8_t *>PyBytes_AS_STRING(rep))


cdef bint batch_valid(const uint8_t *rep, size_t size) noexcept nogil:
    if size < BATCH_HEADER_SIZE:
        return False
    cdef uint32_t n = batch_count(rep)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef BatchRecord r
    cdef uint32_t i
    for i in range(n):
        off = batch_record_at(rep, size, off, &r)
        if off == 0 or r.key_len < TABLE_PREFIX_SIZE + 1:
            return False
    return off == size


def validate(bytes rep not None) -> bool:
    """True when rep parses exactly into its declared record count."""
    return batch_valid(<const uint8_t *>PyBytes_AS_STRING(rep), <size_t>PyBytes_GET_SIZE(rep))


def max_seq(bytes rep not None) -> bytes:
    """The highest seq of the batch's records (16 zero bytes when empty).
    Requires: validate(rep)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef BatchRecord r
    cdef uint8_t best[16]
    memset(best, 0, 16)
    for _ in range(batch_count(p)):
        off = batch_record_at(p, size, off, &r)
        if off == 0:
            raise ValueError("malformed write batch")
        if memcmp(r.seq, best, 16) > 0:
            memcpy(best, r.seq, 16)
    return (<char *>best)[:16]


def decode(bytes rep not None) -> list:
    """[(kind, table_id, user_key, value_or_None, seq)] for tests and tools."""
    if not validate(rep):
        raise ValueError("malformed write batch")
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef BatchRecord r
    cdef list out = []
    cdef uint32_t tid
    for _ in range(batch_count(p)):
        off = batch_record_at(p, size, off, &r)
        tid = (<uint32_t>r.key[0] << 24) | (<uint32_t>r.key[1] << 16) | (<uint32_t>r.key[2] << 8) | r.key[3]
        out.append((r.kind, tid, (<char *>r.key + 4)[:r.key_len - 4],
                    (<char *>r.value)[:r.value_len] if r.kind == KIND_VALUE else None,
                    (<char *>r.seq)[:16]))
    return out


cdef extern from *:
    """
    #define QKV_U32_MAX 0xffffffffu
    #define QKV_FIB_HASH 0x9e3779b97f4a7c15ull  /* 2**64 / golden ratio */
    """
    uint32_t QKV_U32_MAX
    uint64_t QKV_FIB_HASH


# ---------------------------------------------------------------------------
# Leader stamping (rules 1-4 at the top of this file) and the two reads the
# node needs around it: the seqs to answer clients with, the tables to create.

cdef enum MergeStatus:
    MERGE_OK = 0
    MERGE_BAD_REP = 1       # views[*bad] is not a well-formed batch
    MERGE_TOO_MANY = 2      # more than 2**32 - 1 records in all
    MERGE_EXHAUSTED = 3     # a record needed a step above the largest (timestamp, counter)


cdef struct RepView:
    const uint8_t *data     # NULL (size 0) for an element that is not bytes
    size_t size


cdef inline bint _seq_step(uint8_t *seq) noexcept nogil:
    """Rule 3: (timestamp, counter), bytes 0..12 read as one 96-bit
    big-endian number, plus one; the node id (bytes 12..16) is kept. Returns
    False, seq unchanged, when the twelve bytes are all 0xff."""
    cdef int i = 11
    while i >= 0 and seq[i] == 0xFF:
        i -= 1
    if i < 0:
        return False
    seq[i] += 1
    memset(seq + i + 1, 0, <size_t>(11 - i))
    return True


cdef MergeStatus _merge_c(const RepView *views, Py_ssize_t n, uint8_t *out, uint8_t *prev,
                          Py_ssize_t *bad) noexcept nogil:
    """Checks every view, then writes the total count into out's header and
    copies the views' bodies after it, restamping seqs (rules 1-4). prev holds
    last_seq on entry and the last stamped seq on return. Requires: out has
    room for the header plus every view's body."""
    cdef Py_ssize_t i
    cdef uint64_t total = 0
    cdef uint32_t j, k
    cdef size_t off, body
    cdef const uint8_t *src
    cdef uint8_t *dst = out + BATCH_HEADER_SIZE
    cdef BatchRecord r
    for i in range(n):
        if not batch_valid(views[i].data, views[i].size):
            bad[0] = i
            return MERGE_BAD_REP
        total += batch_count(views[i].data)
    if total > QKV_U32_MAX:
        return MERGE_TOO_MANY
    put_u32_le(out, <uint32_t>total)
    for i in range(n):
        src = views[i].data
        body = views[i].size - BATCH_HEADER_SIZE
        memcpy(dst, src + BATCH_HEADER_SIZE, body)
        off = BATCH_HEADER_SIZE
        k = batch_count(src)
        for j in range(k):
            off = batch_record_at(src, views[i].size, off, &r)
            if memcmp(r.seq, prev, SEQ_SIZE) > 0:
                memcpy(prev, r.seq, SEQ_SIZE)       # kept: already copied
            elif _seq_step(prev):
                memcpy(dst + (r.seq - src - BATCH_HEADER_SIZE), prev, SEQ_SIZE)
            else:
                return MERGE_EXHAUSTED
        dst += body
    return MERGE_OK


def merge_stamped(list reps not None, last_seq, applied_index=None) -> tuple:
    """One rep holding the records of all reps, in order, with every seq
    restamped above the one before it, starting above last_seq (rules 1-4 at
    the top of this file), and applied_index in its header (flag set iff not
    None). The payload of one log entry.

    Returns (rep, last, offsets): last is the last stamped seq (last_seq
    itself when there are no records), the next call's last_seq; offsets[i]
    is the index in rep of reps[i]'s first record, so reps[i]'s records are
    offsets[i] .. offsets[i] + count(reps[i]) - 1 (see seqs()).

    Requires: last_seq is 16 bytes (sequencer.ZERO when there is none);
    applied_index as for encode_*. Every rep is checked as validate() does
    before anything is produced: the first that is not bytes or not well
    formed raises InvalidArgumentError naming its index. More than
    2**32 - 1 records in all raise InvalidArgumentError. OverflowError when a
    record would need a seq above timestamp and counter both at their
    maximum, which no real clock reaches.
    """
    _check_applied_index(applied_index)
    if not PyBytes_CheckExact(last_seq) or PyBytes_GET_SIZE(last_seq) != SEQ_SIZE:
        raise InvalidArgumentError("last_seq must be 16 bytes (timestamp, counter, node id)")
    cdef tuple held = tuple(reps)   # our own references while the GIL is released
    cdef Py_ssize_t n = len(held)
    cdef Py_ssize_t i
    cdef Py_ssize_t bad = -1
    cdef Py_ssize_t body = 0
    cdef Py_ssize_t first = 0
    cdef object rep
    cdef bytes out
    cdef list offsets
    cdef MergeStatus status
    cdef uint8_t prev[SEQ_SIZE]
    cdef uint8_t *dst
    cdef RepView *views = <RepView *>malloc(<size_t>(n if n > 0 else 1) * sizeof(RepView))
    if views == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            rep = held[i]
            if PyBytes_CheckExact(rep):
                views[i].data = <const uint8_t *>PyBytes_AS_STRING(rep)
                views[i].size = <size_t>PyBytes_GET_SIZE(rep)
                if views[i].size > BATCH_HEADER_SIZE:
                    body += PyBytes_GET_SIZE(rep) - BATCH_HEADER_SIZE
            else:   # reported in index order with the malformed ones
                views[i].data = NULL
                views[i].size = 0
        out = _new_rep(body, 0, applied_index)
        memcpy(prev, PyBytes_AS_STRING(last_seq), SEQ_SIZE)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        with nogil:
            status = _merge_c(views, n, dst, prev, &bad)
        if status == MERGE_BAD_REP:
            rep = held[bad]
            if not PyBytes_CheckExact(rep):
                raise InvalidArgumentError(f"rep {bad} must be bytes, got {type(rep).__name__}")
            raise InvalidArgumentError(f"rep {bad} is not a well-formed write batch")
        if status == MERGE_TOO_MANY:
            raise InvalidArgumentError("too many records in one batch (more than 2**32 - 1)")
        if status == MERGE_EXHAUSTED:
            raise OverflowError("no seq above the previous one: its timestamp and counter are at their maximum")
        offsets = [None] * n
        for i in range(n):
            offsets[i] = first
            first += batch_count(views[i].data)
    finally:
        free(views)
    return out, (<char *>prev)[:SEQ_SIZE], offsets


def seqs(bytes rep not None, Py_ssize_t start, Py_ssize_t count) -> bytes:
    """The seqs of records start .. start + count - 1, concatenated (16 bytes
    each): what the leader answers a client with after merge_stamped. Each
    call walks the rep from its first record; to answer every client of one
    rep, take seqs(rep, 0, count(rep)) once and slice it at 16 * offsets[i].

    Requires: validate(rep). IndexError when the range is not within the
    batch's records; ValueError when the records up to its end do not parse.
    """
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    if size < BATCH_HEADER_SIZE:
        raise ValueError("batch shorter than its header")
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef Py_ssize_t n = batch_count(p)
    if start < 0 or count < 0 or start > n or count > n - start:
        raise IndexError(f"{count} records from {start} are not within the batch's {n}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, count * SEQ_SIZE)
    cdef uint8_t *q = <uint8_t *>PyBytes_AS_STRING(out)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef Py_ssize_t i
    cdef BatchRecord r
    with nogil:
        for i in range(start + count):
            off = batch_record_at(p, size, off, &r)
            if off == 0:
                break
            if i >= start:
                memcpy(q + (i - start) * SEQ_SIZE, r.seq, SEQ_SIZE)
    if off == 0:
        raise ValueError("malformed write batch")
    return out


cdef struct IdSet:
    uint64_t *slots     # open addressing, 1 << bits slots, at most half used; table id + 1, 0 = empty
    uint32_t *order     # the distinct ids in first-seen order; room for (1 << bits) / 2
    size_t n
    int bits


cdef inline size_t _idset_slot(const IdSet *s, uint32_t tid) noexcept nogil:
    """The slot holding tid, or the empty slot where it belongs."""
    cdef size_t mask = (<size_t>1 << s.bits) - 1
    cdef size_t h = <size_t>((<uint64_t>tid * QKV_FIB_HASH) >> (64 - s.bits))
    while s.slots[h] != 0 and s.slots[h] != <uint64_t>tid + 1:
        h = (h + 1) & mask
    return h


cdef bint _idset_grow(IdSet *s) noexcept nogil:
    """Doubles the slots (the first call makes the first ones); False, the set
    unchanged and still valid, when memory runs out."""
    cdef int bits = s.bits + 1
    cdef size_t cap = <size_t>1 << bits
    cdef size_t i
    cdef uint32_t *order = <uint32_t *>realloc(s.order, (cap >> 1) * sizeof(uint32_t))
    if order == NULL:
        return False
    s.order = order
    cdef uint64_t *slots = <uint64_t *>malloc(cap * sizeof(uint64_t))
    if slots == NULL:
        return False
    memset(slots, 0, cap * sizeof(uint64_t))
    free(s.slots)
    s.slots = slots
    s.bits = bits
    for i in range(s.n):
        s.slots[_idset_slot(s, s.order[i])] = <uint64_t>s.order[i] + 1
    return True


cdef bint _idset_add(IdSet *s, uint32_t tid) noexcept nogil:
    """Adds tid unless present; False only when memory runs out."""
    cdef size_t h = _idset_slot(s, tid)
    if s.slots[h] != 0:
        return True
    if (s.n + 1) * 2 > (<size_t>1 << s.bits):
        if not _idset_grow(s):
            return False
        h = _idset_slot(s, tid)
    s.slots[h] = <uint64_t>tid + 1
    s.order[s.n] = tid
    s.n += 1
    return True


def internal_keys(bytes rep not None) -> list:
    """The internal key (table id, 4 bytes big endian, then the user key) of
    each record of the batch, in record order: what the node tracks of the
    writes a learner may know committed (server/node/write_path.py).
    ValueError when rep is not well formed (see validate)."""
    if not validate(rep):
        raise ValueError("malformed write batch")
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef BatchRecord r
    cdef list out = []
    for _ in range(batch_count(p)):
        off = batch_record_at(p, size, off, &r)
        out.append(PyBytes_FromStringAndSize(<const char *>r.key, r.key_len))
    return out


def table_ids(bytes rep not None) -> list:
    """The distinct table ids of the batch's records (the first 4 bytes, big
    endian, of each internal key) in first-seen order, so the node can create
    missing tables before applying the batch. An empty batch has none.
    ValueError when rep is not well formed (see validate)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef uint32_t i, n, tid
    cdef uint32_t last = 0
    cdef BatchRecord r
    cdef IdSet s
    cdef int status = 0     # 0 ok, 1 malformed, 2 out of memory
    s.slots = NULL
    s.order = NULL
    s.n = 0
    s.bits = 2
    try:
        with nogil:
            if not batch_valid(p, size):
                status = 1
            elif not _idset_grow(&s):
                status = 2
            else:
                n = batch_count(p)
                for i in range(n):
                    off = batch_record_at(p, size, off, &r)
                    tid = ((<uint32_t>r.key[0] << 24) | (<uint32_t>r.key[1] << 16)
                           | (<uint32_t>r.key[2] << 8) | r.key[3])
                    if s.n > 0 and tid == last:     # runs of one table: no probe
                        continue
                    last = tid
                    if not _idset_add(&s, tid):
                        status = 2
                        break
        if status == 1:
            raise ValueError("malformed write batch")
        if status == 2:
            raise MemoryError()
        return [s.order[i] for i in range(s.n)]
    finally:
        free(s.slots)
        free(s.order)
