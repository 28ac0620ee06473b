"""Write batches (engine/_native/write_batch.pyx): byte layout, round trips,
validation that rejects a whole batch before producing output, applied_index,
and validate() on damaged reps; checked against a Python model of the format."""
import random
import struct

import pytest

from engine._native import write_batch as wb
from engine._native.sequencer import encode as seq_encode
from engine.errors import InvalidArgumentError

SEED = 0xBA7C4
SEQ = seq_encode(1_700_000_000_000_000_000, 1, 1)
MiB = 1 << 20


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def py_rep(records, applied_index=None) -> bytes:
    """The batch format as specified in write_batch.pyx's docstring."""
    flags = 0 if applied_index is None else 1
    out = bytearray(struct.pack("<IQB", len(records), applied_index or 0, flags))
    for kind, tid, key, value, seq in records:
        ikey = tid.to_bytes(4, "big") + key
        out += bytes([kind]) + varint(len(ikey)) + ikey + seq
        if kind == wb.VALUE:
            out += varint(len(value)) + value
    return bytes(out)


def random_records(rng, n):
    recs = []
    for _ in range(n):
        kind = rng.choice([wb.VALUE, wb.VALUE, wb.DELETE])
        key = rng.randbytes(rng.choice([1, 2, rng.randrange(1, 200), rng.choice([127, 128, 129, 4096])]))
        value = rng.randbytes(rng.choice([0, 1, rng.randrange(300), 127, 128, 16384])) if kind == wb.VALUE else None
        seq = seq_encode(rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(32))
        recs.append((kind, rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32)]), key, value, seq))
    return recs


def test_constants():
    assert wb.HEADER_SIZE == 13
    assert wb.MAX_KEY == 4096
    assert wb.MAX_VALUE == MiB
    assert (wb.DELETE, wb.VALUE) == (0, 1)


def test_encode_one_layout():
    rep = wb.encode_one(wb.VALUE, 5, b"key", b"value", SEQ)
    assert rep == py_rep([(wb.VALUE, 5, b"key", b"value", SEQ)])
    rep = wb.encode_one(wb.DELETE, 5, b"key", None, SEQ)
    assert rep == py_rep([(wb.DELETE, 5, b"key", None, SEQ)])


def test_delete_ignores_its_value_argument():
    assert wb.encode_one(wb.DELETE, 1, b"k", b"ignored", SEQ) == wb.encode_one(wb.DELETE, 1, b"k", None, SEQ)


def test_roundtrip_random_batches():
    rng = random.Random(SEED)
    for trial in range(60):
        recs = random_records(rng, rng.randrange(0, 30))
        ai = rng.choice([None, 0, 1, 2**64 - 1, rng.getrandbits(64)])
        rep = wb.encode_many(recs, ai)
        assert rep == py_rep(recs, ai), f"seed={SEED} trial={trial}"
        assert wb.validate(rep)
        assert wb.count(rep) == len(recs)
        assert wb.applied_index(rep) == ai
        assert wb.decode(rep) == recs


def test_encode_one_equals_encode_many_of_one():
    rng = random.Random(SEED + 1)
    for rec in random_records(rng, 50):
        for ai in (None, 17):
            assert wb.encode_one(*rec, ai) == wb.encode_many([rec], ai)


def test_limits_are_inclusive():
    rep = wb.encode_one(wb.VALUE, 1, b"k" * 4096, b"v" * MiB, SEQ)
    assert wb.decode(rep) == [(wb.VALUE, 1, b"k" * 4096, b"v" * MiB, SEQ)]
    rep = wb.encode_one(wb.VALUE, 1, b"k", b"", SEQ)
    assert wb.decode(rep) == [(wb.VALUE, 1, b"k", b"", SEQ)]


BAD_RECORDS = [
    pytest.param((wb.VALUE, 1, b"", b"v", SEQ), id="empty-key"),
    pytest.param((wb.DELETE, 1, b"", None, SEQ), id="empty-key-delete"),
    pytest.param((wb.VALUE, 1, b"k" * 4097, b"v", SEQ), id="key-4097"),
    pytest.param((wb.VALUE, 1, b"k", b"v" * (MiB + 1), SEQ), id="value-1MiB+1"),
    pytest.param((wb.VALUE, 1, "k", b"v", SEQ), id="str-key"),
    pytest.param((wb.VALUE, 1, bytearray(b"k"), b"v", SEQ), id="bytearray-key"),
    pytest.param((wb.VALUE, 1, None, b"v", SEQ), id="none-key"),
    pytest.param((wb.VALUE, 1, b"k", "v", SEQ), id="str-value"),
    pytest.param((wb.VALUE, 1, b"k", bytearray(b"v"), SEQ), id="bytearray-value"),
    pytest.param((wb.VALUE, 1, b"k", None, SEQ), id="none-value"),
    pytest.param((wb.VALUE, 1, b"k", b"v", SEQ[:15]), id="seq-15"),
    pytest.param((wb.VALUE, 1, b"k", b"v", SEQ + b"x"), id="seq-17"),
    pytest.param((wb.VALUE, 1, b"k", b"v", bytearray(SEQ)), id="bytearray-seq"),
    pytest.param((wb.DELETE, 1, b"k", None, None), id="none-seq"),
    pytest.param((2, 1, b"k", b"v", SEQ), id="unknown-kind"),
]


@pytest.mark.parametrize("rec", BAD_RECORDS)
def test_encode_one_rejects_bad_record(rec):
    with pytest.raises(InvalidArgumentError) as exc:
        wb.encode_one(*rec)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("rec", BAD_RECORDS)
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_bad_record_anywhere_in_encode_many_rejects_the_whole_batch(rec, position):
    good = [(wb.VALUE, 1, b"good%d" % i, b"value", SEQ) for i in range(5)]
    at = {"first": 0, "middle": 2, "last": 5}[position]
    records = good[:at] + [rec] + good[at:]
    out = None
    with pytest.raises(InvalidArgumentError):
        out = wb.encode_many(records, 9)
    assert out is None


def test_encode_many_rejects_non_tuple_records():
    with pytest.raises(TypeError):
        wb.encode_many([[wb.VALUE, 1, b"k", b"v", SEQ]])
    with pytest.raises(TypeError):
        wb.encode_many(None)


def test_out_of_range_table_id_raises():
    # The table id comes from the DB's own catalogue; out of range it cannot
    # be encoded, and nothing is produced.
    with pytest.raises(OverflowError):
        wb.encode_one(wb.VALUE, -1, b"k", b"v", SEQ)
    with pytest.raises(OverflowError):
        wb.encode_many([(wb.VALUE, 1, b"a", b"v", SEQ), (wb.VALUE, 2**32, b"k", b"v", SEQ)])


@pytest.mark.parametrize("ai", [-1, 2**64, "5", 1.0], ids=["negative", "2**64", "str", "float"])
def test_bad_applied_index_is_invalid_argument(ai):
    with pytest.raises(InvalidArgumentError):
        wb.encode_one(wb.VALUE, 1, b"k", b"v", SEQ, applied_index=ai)
    with pytest.raises(InvalidArgumentError):
        wb.encode_many([(wb.VALUE, 1, b"k", b"v", SEQ)], ai)


def test_applied_index_present_and_absent():
    absent = wb.encode_one(wb.VALUE, 1, b"k", b"v", SEQ)
    assert wb.applied_index(absent) is None
    assert absent[12] == 0
    zero = wb.encode_one(wb.VALUE, 1, b"k", b"v", SEQ, applied_index=0)
    assert wb.applied_index(zero) == 0   # present and zero is not absent
    assert zero[12] & 1
    top = wb.encode_many([(wb.DELETE, 1, b"k", None, SEQ)], 2**64 - 1)
    assert wb.applied_index(top) == 2**64 - 1
    empty = wb.encode_many([], 42)
    assert wb.applied_index(empty) == 42 and wb.count(empty) == 0 and wb.decode(empty) == []
    assert wb.validate(empty)


def test_header_helpers_reject_short_input():
    for n in range(wb.HEADER_SIZE):
        with pytest.raises(ValueError):
            wb.applied_index(bytes(n))
        with pytest.raises(ValueError):
            wb.count(bytes(n))


def test_validate_rejects_every_truncation():
    rng = random.Random(SEED + 2)
    recs = random_records(rng, 6) + [(wb.VALUE, 3, b"k" * 200, b"v" * 200, SEQ)]
    rep = wb.encode_many(recs, 5)
    for cut in range(len(rep)):
        assert not wb.validate(rep[:cut]), cut
        with pytest.raises(ValueError):
            wb.decode(rep[:cut])
    assert wb.validate(rep)


def test_validate_rejects_trailing_bytes_and_wrong_count():
    rep = wb.encode_many([(wb.VALUE, 1, b"a", b"b", SEQ), (wb.DELETE, 1, b"c", None, SEQ)])
    assert not wb.validate(rep + b"\x00")
    more = struct.pack("<I", 3) + rep[4:]
    fewer = struct.pack("<I", 1) + rep[4:]
    assert not wb.validate(more)
    assert not wb.validate(fewer)
    huge = struct.pack("<I", 0xFFFFFFFF) + rep[4:]
    assert not wb.validate(huge)


def test_validate_rejects_malformed_records():
    base = py_rep([(wb.VALUE, 1, b"key", b"val", SEQ)])
    body = wb.HEADER_SIZE
    # Unknown kind.
    bad = bytearray(base)
    bad[body] = 7
    assert not wb.validate(bytes(bad))
    # Internal key shorter than table id + 1 byte of user key.
    short_key = (bytes(struct.pack("<IQB", 1, 0, 0)) + bytes([wb.VALUE]) + varint(4) + b"\x00\x00\x00\x01"
                 + SEQ + varint(0))
    assert not wb.validate(short_key)
    # A varint that never ends.
    endless = bytes(struct.pack("<IQB", 1, 0, 0)) + bytes([wb.VALUE]) + b"\xff" * 12
    assert not wb.validate(endless)
    # Key length pointing past the end.
    long_len = bytes(struct.pack("<IQB", 1, 0, 0)) + bytes([wb.DELETE]) + varint(1000) + b"\x00" * 30
    assert not wb.validate(long_len)
    # Value length pointing past the end.
    bad = bytearray(base)
    bad[-4] = 0x7F   # value_len varint (3) -> 127
    assert not wb.validate(bytes(bad))


def test_validate_random_garbage_never_crashes_and_decodes_consistently():
    rng = random.Random(SEED + 3)
    good = wb.encode_many(random_records(rng, 8), 1)
    for trial in range(2000):
        bad = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(len(bad))] = rng.getrandbits(8)
        bad = bytes(bad)
        if wb.validate(bad):
            recs = wb.decode(bad)
            assert len(recs) == wb.count(bad), f"seed={SEED + 3} trial={trial}"
            for kind, _tid, key, value, seq in recs:
                assert kind in (wb.DELETE, wb.VALUE) and len(key) >= 1 and len(seq) == 16
                assert (value is None) == (kind == wb.DELETE)
        else:
            with pytest.raises(ValueError):
                wb.decode(bad)


def test_none_rep_is_rejected():
    for f in (wb.validate, wb.decode, wb.count, wb.applied_index):
        with pytest.raises(TypeError):
            f(None)


@pytest.mark.parametrize("ai", [-1, 2**64], ids=["negative", "2**64"])
def test_db_rejects_out_of_range_applied_index_as_invalid_argument(ai):
    # DB._write checks the range of applied_index, but put/delete/write call
    # write_batch.encode_* first, whose uint64 conversion raises OverflowError,
    # so callers (and the server's error mapping) see the wrong exception type.
    from engine.db import DB, WriteBatch
    from engine.env_mem import MemEnv

    db = DB.open("/db", env=MemEnv())
    try:
        db.create_table("t")
        with pytest.raises(InvalidArgumentError):
            db.put("t", b"k", b"v", applied_index=ai)
        with pytest.raises(InvalidArgumentError):
            db.delete("t", b"k", applied_index=ai)
        with pytest.raises(InvalidArgumentError):
            db.write(WriteBatch(ai).put("t", b"k", b"v"))
        assert db.get("t", b"k") is None
    finally:
        db.close()
