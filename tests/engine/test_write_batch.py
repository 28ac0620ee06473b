"""Write batches (engine/_native/write_batch.pyx): byte layout, round trips,
validation that rejects a whole batch before producing output, applied_index,
and validate() on damaged reps; checked against a Python model of the format.
The leader's merge_stamped, and seqs()/table_ids(), are checked with hypothesis
against a Python model of the stamping rules in the module docstring."""
import random
import struct
import threading

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from engine._native import write_batch as wb
from engine._native.sequencer import ZERO
from engine._native.sequencer import decode as seq_decode
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


# ---------------------------------------------------------------------------
# merge_stamped, seqs, table_ids

TS_MAX = 2**64 - 1
CTR_MAX = 2**32 - 1
BASE_TS = 1_700_000_000_000_000_000
TOP = seq_encode(TS_MAX, CTR_MAX, 7)   # no step above it


def py_step(seq: bytes) -> bytes:
    """Rule 3 in the sequencer's terms: the counter plus one, or the timestamp
    plus one and the counter 0 when the counter wraps; the node id kept."""
    ts, ctr, node = seq_decode(seq)
    if ctr < CTR_MAX:
        return seq_encode(ts, ctr + 1, node)
    if ts < TS_MAX:
        return seq_encode(ts + 1, 0, node)
    raise OverflowError("no step above the largest timestamp and counter")


def py_merge_stamped(batches, last_seq):
    """Model of rules 1-2 over the records of each batch: (stamped records,
    last seq, offsets)."""
    out, offsets, prev = [], [], last_seq
    for records in batches:
        offsets.append(len(out))
        for kind, tid, key, value, seq in records:
            prev = seq if seq > prev else py_step(prev)
            out.append((kind, tid, key, value, prev))
    return out, prev, offsets


def seq_strategy(anchors):
    """Seqs near the anchors (below, equal, above, counter at its edges) and
    anywhere, including at the very top of the space."""
    near = st.builds(lambda a, dts, ctr, node: seq_encode(min(max(seq_decode(a)[0] + dts, 0), TS_MAX), ctr, node),
                     st.sampled_from(anchors), st.integers(-1, 1),
                     st.one_of(st.sampled_from([0, 1, CTR_MAX - 1, CTR_MAX]), st.integers(0, CTR_MAX)),
                     st.sampled_from([0, 1, 2, 0xFFFFFFFF]))
    anywhere = st.builds(seq_encode, st.one_of(st.just(TS_MAX), st.integers(0, TS_MAX)),
                         st.integers(0, CTR_MAX), st.integers(0, 0xFFFFFFFF))
    return st.one_of(st.sampled_from(anchors), near, anywhere)


LAST_SEQS = st.one_of(st.just(ZERO), st.just(TOP),
                      seq_strategy([seq_encode(BASE_TS, 5, 3), seq_encode(BASE_TS, CTR_MAX, 1)]))


@st.composite
def merge_inputs(draw):
    """(batches of records, last_seq, applied_index); records' seqs drawn below,
    at and above last_seq and each other, with duplicates."""
    last = draw(LAST_SEQS)
    pool = draw(st.lists(seq_strategy([last, seq_encode(BASE_TS, 0, 1)]), min_size=1, max_size=4))
    seqs = seq_strategy([last] + pool)
    record = st.builds(
        lambda kind, tid, key, value, seq: (kind, tid, key, value if kind == wb.VALUE else None, seq),
        st.sampled_from([wb.VALUE, wb.DELETE]), st.sampled_from([0, 1, 2, 0xFFFFFFFF]),
        st.one_of(st.binary(min_size=1, max_size=12), st.binary(min_size=124, max_size=130)),
        st.one_of(st.binary(max_size=20), st.binary(min_size=127, max_size=129)), seqs)
    batches = draw(st.lists(st.lists(record, max_size=8), max_size=6))
    ai = draw(st.one_of(st.none(), st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1)))
    return batches, last, ai


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(PROPERTY, max_examples=100)


@PROPERTY
@given(merge_inputs())
def test_merge_stamped_matches_the_model(case):
    batches, last, ai = case
    reps = [py_rep(records, applied_index=7) for records in batches]
    try:
        expected, expected_last, expected_offsets = py_merge_stamped(batches, last)
    except OverflowError:
        with pytest.raises(OverflowError):
            wb.merge_stamped(reps, last, ai)
        return
    rep, last_out, offsets = wb.merge_stamped(reps, last, ai)
    # Byte-identical to the model: same records apart from seq, header count
    # and the leader's applied_index (the inputs' 7 is not carried over).
    assert rep == py_rep(expected, ai)
    assert wb.validate(rep) and wb.count(rep) == len(expected) and wb.applied_index(rep) == ai
    assert rep[12] == (0 if ai is None else 1)
    assert last_out == expected_last and offsets == expected_offsets
    # Strictly increasing from last_seq; a seq is kept exactly when it is above its predecessor.
    stamped = wb.seqs(rep, 0, len(expected))
    prev = last
    flat = [r for records in batches for r in records]
    for i, original in enumerate(flat):
        got = stamped[16 * i:16 * i + 16]
        assert got > prev
        assert (got == original[4]) == (original[4] > prev)
        assert seq_decode(got)[2] == seq_decode(original[4] if got == original[4] else prev)[2]
        prev = got
    assert prev == last_out
    # Each client's seqs, from its offset.
    for records, off in zip(batches, offsets):
        assert wb.seqs(rep, off, len(records)) == b"".join(r[4] for r in expected[off:off + len(records)])
    assert reps == [py_rep(records, applied_index=7) for records in batches]   # inputs untouched


@QUICK
@given(merge_inputs(), st.integers(0, 6))
def test_merge_stamped_in_two_calls_equals_one(case, cut):
    # The leader chains entries through `last`: splitting the reps over two
    # log entries stamps the same seqs as one entry.
    batches, last, ai = case
    reps = [py_rep(records) for records in batches]
    try:
        whole, whole_last, _ = wb.merge_stamped(reps, last, ai)
    except OverflowError:
        return
    first, mid, _ = wb.merge_stamped(reps[:cut], last, ai)
    second, second_last, _ = wb.merge_stamped(reps[cut:], mid, ai)
    assert second_last == whole_last
    assert first[13:] + second[13:] == whole[13:]


def test_merge_stamped_examples():
    a = seq_encode(BASE_TS, 10, 1)
    reps = [wb.encode_many([(wb.VALUE, 1, b"k", b"v", a), (wb.DELETE, 2, b"d", None, a)]),   # duplicate
            wb.encode_many([]),
            wb.encode_many([(wb.VALUE, 1, b"x", b"", seq_encode(BASE_TS - 5, 0, 2)),          # clock behind
                            (wb.VALUE, 1, b"y", b"", seq_encode(BASE_TS + 9, 0, 2))])]        # ahead: kept
    rep, last, offsets = wb.merge_stamped(reps, seq_encode(BASE_TS, 9, 4), 12)
    assert [seq_decode(r[4]) for r in wb.decode(rep)] == [
        (BASE_TS, 10, 1), (BASE_TS, 11, 1), (BASE_TS, 12, 1), (BASE_TS + 9, 0, 2)]
    assert last == seq_encode(BASE_TS + 9, 0, 2) and offsets == [0, 2, 2]
    assert wb.applied_index(rep) == 12 and wb.count(rep) == 4


def test_merge_stamped_steps_past_last_seq_keeping_its_node_id():
    rec = [(wb.VALUE, 1, b"k", b"v", seq_encode(BASE_TS, 0, 9))]
    for last, want in [(seq_encode(BASE_TS, 5, 3), (BASE_TS, 6, 3)),                 # below: counter + 1
                       (seq_encode(BASE_TS, 0, 9), (BASE_TS, 1, 9)),                 # equal
                       (seq_encode(BASE_TS, CTR_MAX, 3), (BASE_TS + 1, 0, 3)),       # counter wraps
                       (seq_encode(TS_MAX, CTR_MAX - 1, 3), (TS_MAX, CTR_MAX, 3)),   # one step left
                       (seq_encode(BASE_TS, 0, 8), (BASE_TS, 0, 9))]:                # above: kept
        rep, got, _ = wb.merge_stamped([wb.encode_many(rec)], last)
        assert seq_decode(got) == want and wb.max_seq(rep) == got


def test_merge_stamped_at_the_top_of_the_seq_space():
    below = wb.encode_many([(wb.VALUE, 1, b"k", b"v", seq_encode(1, 0, 0))])
    with pytest.raises(OverflowError):
        wb.merge_stamped([below], TOP)
    with pytest.raises(OverflowError):
        wb.merge_stamped([below], seq_encode(TS_MAX, CTR_MAX, 0xFFFFFFFF))
    # Above TOP only by node id: kept; then nothing more fits.
    top_node = seq_encode(TS_MAX, CTR_MAX, 8)
    above = wb.encode_many([(wb.VALUE, 1, b"k", b"v", top_node)])
    assert wb.merge_stamped([above], TOP)[1] == top_node
    with pytest.raises(OverflowError):
        wb.merge_stamped([above, below], TOP)
    # No records: nothing to stamp, even at the top.
    assert wb.merge_stamped([wb.encode_many([])], TOP)[1:] == (TOP, [0])


def test_merge_stamped_of_nothing():
    rep, last, offsets = wb.merge_stamped([], ZERO)
    assert rep == py_rep([]) and last == ZERO and offsets == []
    rep, last, offsets = wb.merge_stamped([], SEQ, 5)
    assert rep == py_rep([], 5) and last == SEQ and offsets == []


def _damaged(good: bytes, how: str):
    return {
        "truncated": good[:-1],
        "trailing-byte": good + b"\x00",
        "count+1": struct.pack("<I", wb.count(good) + 1) + good[4:],
        "count-1": struct.pack("<I", wb.count(good) - 1) + good[4:],
        "short-header": good[:wb.HEADER_SIZE - 1],
        "empty": b"",
        "bad-kind": good[:wb.HEADER_SIZE] + b"\x07" + good[wb.HEADER_SIZE + 1:],
        "str": "not bytes",
        "bytearray": bytearray(good),
        "memoryview": memoryview(good),
        "none": None,
    }[how]


@pytest.mark.parametrize("how", ["truncated", "trailing-byte", "count+1", "count-1", "short-header", "empty",
                                 "bad-kind", "str", "bytearray", "memoryview", "none"])
@pytest.mark.parametrize("at", [0, 2, 4])
def test_merge_stamped_names_the_first_malformed_rep(how, at):
    rng = random.Random(SEED + 10)
    reps = [wb.encode_many(random_records(rng, 3)) for _ in range(5)]
    reps[at] = _damaged(reps[at], how)
    reps.append(b"junk after the first bad one")
    out = None
    with pytest.raises(InvalidArgumentError, match=rf"^rep {at} "):
        out = wb.merge_stamped(reps, ZERO, 1)
    assert out is None


def test_a_malformed_rep_wins_over_overflow():
    below = wb.encode_many([(wb.VALUE, 1, b"k", b"v", seq_encode(1, 0, 0))])
    with pytest.raises(InvalidArgumentError, match="^rep 1 "):
        wb.merge_stamped([below, below[:-1]], TOP)


def test_merge_stamped_random_damage_agrees_with_validate():
    rng = random.Random(SEED + 11)
    good = [wb.encode_many(random_records(rng, 4)) for _ in range(3)]
    for trial in range(500):
        at = rng.randrange(3)
        bad = bytearray(good[at])
        for _ in range(rng.randrange(1, 3)):
            bad[rng.randrange(len(bad))] = rng.getrandbits(8)
        reps = list(good)
        reps[at] = bytes(bad)
        if wb.validate(reps[at]):
            rep, _, _ = wb.merge_stamped(reps, ZERO)
            assert wb.validate(rep), f"seed={SEED + 11} trial={trial}"
        else:
            with pytest.raises(InvalidArgumentError, match=f"^rep {at} "):
                wb.merge_stamped(reps, ZERO)


@pytest.mark.parametrize("last", [SEQ[:15], SEQ + b"x", bytearray(SEQ), None, "0" * 16],
                         ids=["15", "17", "bytearray", "none", "str"])
def test_merge_stamped_rejects_a_bad_last_seq(last):
    with pytest.raises(InvalidArgumentError):
        wb.merge_stamped([wb.encode_many([])], last)


@pytest.mark.parametrize("ai", [-1, 2**64, "5", 1.0], ids=["negative", "2**64", "str", "float"])
def test_merge_stamped_rejects_a_bad_applied_index(ai):
    with pytest.raises(InvalidArgumentError):
        wb.merge_stamped([wb.encode_many([])], ZERO, ai)


def test_merge_stamped_wants_a_list():
    rep = wb.encode_many([])
    for reps in (None, (rep,), iter([rep])):
        with pytest.raises(TypeError):
            wb.merge_stamped(reps, ZERO)


def test_merge_stamped_from_many_threads():
    # The stamping loop runs without the GIL; concurrent calls on shared input
    # must each give the single-threaded answer.
    rng = random.Random(SEED + 12)
    reps = [wb.encode_many(random_records(rng, 50)) for _ in range(20)]
    want = wb.merge_stamped(reps, SEQ, 3)
    results, errors = [], []

    def run():
        try:
            for _ in range(20):
                results.append(wb.merge_stamped(reps, SEQ, 3))
        except Exception as exc:   # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 80 and all(r == want for r in results)


@QUICK
@given(st.lists(st.tuples(st.sampled_from([wb.VALUE, wb.DELETE]), st.integers(0, 0xFFFFFFFF),
                          st.binary(min_size=1, max_size=4), st.binary(min_size=16, max_size=16)),
                max_size=12),
       st.data())
def test_seqs_agree_with_decode(raw, data):
    records = [(kind, tid, key, b"v" if kind == wb.VALUE else None, seq) for kind, tid, key, seq in raw]
    rep = wb.encode_many(records)
    start = data.draw(st.integers(0, len(records)))
    n = data.draw(st.integers(0, len(records) - start))
    assert wb.seqs(rep, start, n) == b"".join(r[4] for r in wb.decode(rep)[start:start + n])


def test_seqs_rejects_out_of_range_and_malformed():
    rep = wb.encode_many([(wb.VALUE, 1, b"k%d" % i, b"v", SEQ) for i in range(3)])
    assert wb.seqs(rep, 3, 0) == b"" and wb.seqs(rep, 0, 3) == SEQ * 3
    for start, n in [(-1, 1), (0, 4), (3, 1), (4, 0), (1, -1), (2**62, 2**62)]:
        with pytest.raises(IndexError):
            wb.seqs(rep, start, n)
    with pytest.raises(ValueError):
        wb.seqs(rep[:-3], 0, 3)
    with pytest.raises(ValueError):
        wb.seqs(rep[:5], 0, 0)
    with pytest.raises(TypeError):
        wb.seqs(None, 0, 0)


@QUICK
@given(st.lists(st.tuples(st.one_of(st.sampled_from([0, 1, 2, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF)),
                          st.sampled_from([wb.VALUE, wb.DELETE])), max_size=40))
def test_table_ids_agree_with_decode(tids):
    rep = wb.encode_many([(kind, tid, b"k", b"v" if kind == wb.VALUE else None, SEQ) for tid, kind in tids])
    assert wb.table_ids(rep) == list(dict.fromkeys(r[1] for r in wb.decode(rep)))


def test_table_ids_of_many_tables_in_first_seen_order():
    rng = random.Random(SEED + 13)
    tids = [rng.getrandbits(32) for _ in range(3000)] + list(range(0, 5000, 7))
    rng.shuffle(tids)
    records = [(wb.DELETE, tid, b"k", None, SEQ) for tid in tids + tids[::3]]
    rep = wb.encode_many(records)
    assert wb.table_ids(rep) == list(dict.fromkeys(tids))
    assert wb.table_ids(wb.encode_many([])) == []


def test_table_ids_rejects_malformed():
    rep = wb.encode_many([(wb.VALUE, 1, b"k", b"v", SEQ)])
    for bad in (rep[:-1], rep + b"\x00", rep[:3], b""):
        with pytest.raises(ValueError):
            wb.table_ids(bad)
    with pytest.raises(TypeError):
        wb.table_ids(None)
