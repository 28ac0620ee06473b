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
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from engine._native.endian cimport get_u64_le, put_u32_le, put_u64_le
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from engine._native.cursor cimport KIND_DELETE, KIND_VALUE
from engine._native.sequencer cimport Sequencer
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


def validate(bytes rep not None) -> bool:
    """True when rep parses exactly into its declared record count."""
    cdef size_t size = <size_t>PyBytes_GET_SIZE(rep)
    if size < BATCH_HEADER_SIZE:
        return False
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(rep)
    cdef uint32_t n = batch_count(p)
    cdef size_t off = BATCH_HEADER_SIZE
    cdef BatchRecord r
    cdef uint32_t i
    for i in range(n):
        off = batch_record_at(p, size, off, &r)
        if off == 0 or r.key_len < TABLE_PREFIX_SIZE + 1:
            return False
    return off == size


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
