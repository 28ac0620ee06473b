"""Log framing (engine/_native/wal_frame.pyx): the byte layout, round trips,
decode status for truncated / bad-checksum / unknown-type frames,
find_valid_frame, the checksum's file offset (a frame validates only where it
was encoded for) and the older format's frames, checked against an independent
Python model of the format."""
import random
import struct

import pytest

from engine._native import wal_frame
from engine._native.crc32c import crc32c, masked, unmask

SEED = 0xF4A3E
HDR = wal_frame.HEADER_SIZE


def py_frame(rtype: int, payload: bytes, offset: int = 0) -> bytes:
    """The frame format as specified in wal_frame.pyx's docstring: a frame at
    file offset `offset`, its CRC started from the CRC32C of the offset (u64 LE)."""
    body = struct.pack("<IB", len(payload), rtype) + payload
    return struct.pack("<I", masked(crc32c(body, crc32c(struct.pack("<Q", offset))))) + body


def py_legacy_frame(rtype: int, payload: bytes) -> bytes:
    """A frame of the format before offsets were covered (CRC started from 0)."""
    body = struct.pack("<IB", len(payload), rtype) + payload
    return struct.pack("<I", masked(crc32c(body))) + body


def py_frames(rtype: int, payloads: list[bytes], offset: int = 0) -> bytes:
    """Frames laid out one after another from file offset `offset`."""
    out = b""
    for p in payloads:
        out += py_frame(rtype, p, offset + len(out))
    return out


def random_payloads(rng, n, max_len=300):
    return [rng.randbytes(rng.choice([0, 1, rng.randrange(max_len)])) for _ in range(n)]


def test_constants():
    assert HDR == 9
    assert wal_frame.WRITE_BATCH == 1
    assert wal_frame.MANIFEST_EDIT == 2
    assert wal_frame.FRAME_TYPES == {1, 2}
    assert len({wal_frame.OK, wal_frame.TRUNCATED, wal_frame.BAD_CRC, wal_frame.BAD_TYPE}) == 4
    assert wal_frame.OK == 0


OFFSETS = [0, 1, 9, 4096, 2**32 - 1, 2**32 + 5, 2**64 - 1]


def test_layout_matches_the_spec():
    rng = random.Random(SEED)
    for rtype in sorted(wal_frame.FRAME_TYPES):
        for p in random_payloads(rng, 50) + [b"", b"x"]:
            offset = rng.choice(OFFSETS)
            framed = wal_frame.encode_frames(rtype, [p], offset)
            assert framed == py_frame(rtype, p, offset)
            crc, length, t = struct.unpack_from("<IIB", framed)
            assert length == len(p) and t == rtype
            assert unmask(crc) == crc32c(framed[4:], crc32c(offset.to_bytes(8, "little")))
    payloads = random_payloads(rng, 20)
    for offset in OFFSETS[:-1]:   # a run of frames from `offset`, each at its own offset
        assert wal_frame.encode_frames(wal_frame.WRITE_BATCH, payloads, offset) == py_frames(1, payloads, offset)


def test_roundtrip_many_frames():
    rng = random.Random(SEED + 1)
    for _ in range(50):
        payloads = random_payloads(rng, rng.randrange(0, 40))
        rtype = rng.choice(sorted(wal_frame.FRAME_TYPES))
        buf = wal_frame.encode_frames(rtype, payloads)
        assert len(buf) == sum(HDR + len(p) for p in payloads)
        frames, end, status = wal_frame.decode_frames(buf)
        assert status == wal_frame.OK
        assert end == len(buf)
        assert [f[2] for f in frames] == payloads
        assert all(f[1] == rtype for f in frames)
        offsets = [0]
        for p in payloads[:-1]:
            offsets.append(offsets[-1] + HDR + len(p))
        assert [f[0] for f in frames] == (offsets if payloads else [])


def test_decode_from_a_start_offset():
    payloads = [b"a" * 5, b"", b"b" * 7]
    buf = wal_frame.encode_frames(wal_frame.WRITE_BATCH, payloads)
    second = HDR + 5
    frames, end, status = wal_frame.decode_frames(buf, second)
    assert status == wal_frame.OK and end == len(buf)
    assert frames == [(second, 1, b""), (second + HDR, 1, b"b" * 7)]
    # Decoding from inside a frame sees garbage, never a frame from nowhere.
    frames, end, status = wal_frame.decode_frames(buf, 1)
    assert frames == [] and end == 1 and status != wal_frame.OK


def test_concatenated_buffers_of_both_types_decode_in_order():
    # Each buffer encoded for the offset it is written at, as a LogWriter does.
    a = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"one", b"two"])
    b = wal_frame.encode_frames(wal_frame.MANIFEST_EDIT, [b"three"], len(a))
    c = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"one", b"two"], len(a + b))
    frames, end, status = wal_frame.decode_frames(a + b + c)
    assert status == wal_frame.OK and end == len(a + b + c)
    assert [(t, p) for _, t, p in frames] == [(1, b"one"), (1, b"two"), (2, b"three"), (1, b"one"), (1, b"two")]
    # The same bytes as `a`, written again after b: not valid there.
    frames, end, status = wal_frame.decode_frames(a + b + a)
    assert len(frames) == 3 and end == len(a + b) and status == wal_frame.BAD_CRC


def test_empty_buffer_and_empty_list():
    assert wal_frame.encode_frames(wal_frame.WRITE_BATCH, []) == b""
    assert wal_frame.decode_frames(b"") == ([], 0, wal_frame.OK)
    assert wal_frame.find_valid_frame(b"", 0) == -1


def test_decode_accepts_bytearray_and_memoryview():
    buf = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"xyz", b"w"])
    want = wal_frame.decode_frames(buf)
    assert wal_frame.decode_frames(bytearray(buf)) == want
    assert wal_frame.decode_frames(memoryview(buf)) == want


def test_every_truncation_point_reports_truncated_after_the_complete_frames():
    payloads = [b"p" * 20, b"", b"q" * 33]
    buf = wal_frame.encode_frames(wal_frame.WRITE_BATCH, payloads)
    ends = [HDR + 20, 2 * HDR + 20, len(buf)]
    for cut in range(len(buf) + 1):
        frames, end, status = wal_frame.decode_frames(buf[:cut])
        complete = [e for e in ends if e <= cut]
        assert len(frames) == len(complete), cut
        assert end == (complete[-1] if complete else 0), cut
        if cut in ends or cut == 0:
            assert status == wal_frame.OK, cut
        else:
            assert status == wal_frame.TRUNCATED, cut


def test_every_bit_flip_is_detected():
    # Bit flips anywhere in a frame: crc, length, type or payload. A flip in
    # the length can make the frame look longer than the buffer (TRUNCATED);
    # any other flip is a checksum mismatch. Never OK, never a wrong payload.
    payload = bytes(range(40))
    frame = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [payload])
    tail = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"next"], len(frame))
    for bit in range(len(frame) * 8):
        bad = bytearray(frame + tail)
        bad[bit // 8] ^= 1 << (bit % 8)
        frames, end, status = wal_frame.decode_frames(bytes(bad))
        assert frames == [] and end == 0, bit
        assert status in (wal_frame.TRUNCATED, wal_frame.BAD_CRC), bit
        if not 4 <= bit // 8 < 8:
            assert status == wal_frame.BAD_CRC, bit


def test_bad_crc_in_the_middle_stops_there():
    frames_in = [b"first", b"second", b"third"]
    buf = bytearray(wal_frame.encode_frames(wal_frame.WRITE_BATCH, frames_in))
    second = HDR + len(b"first")
    buf[second + HDR + 2] ^= 0x40   # payload byte of the second frame
    frames, end, status = wal_frame.decode_frames(bytes(buf))
    assert [f[2] for f in frames] == [b"first"]
    assert end == second
    assert status == wal_frame.BAD_CRC


def test_unknown_type_with_good_crc_is_bad_type():
    good = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"ok"])
    for rtype in (0, 3, 0x7F, 0xFF):
        bad = py_frame(rtype, b"payload", len(good))
        after = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"ok"], len(good + bad))
        frames, end, status = wal_frame.decode_frames(good + bad + after)
        assert [f[2] for f in frames] == [b"ok"]
        assert end == len(good)
        # Type 0 is never a frame, whatever its checksum: zeros are unwritten space.
        assert status == (wal_frame.BAD_CRC if rtype == 0 else wal_frame.BAD_TYPE)


def test_zero_filled_space_is_not_a_frame():
    # Preallocated / zeroed tails must never decode as an (empty) frame.
    for n in (HDR, HDR + 1, 64, 4096):
        frames, end, status = wal_frame.decode_frames(bytes(n))
        assert frames == [] and end == 0 and status != wal_frame.OK
        assert wal_frame.find_valid_frame(bytes(n), 0) == -1
    good = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"data"])
    frames, end, status = wal_frame.decode_frames(good + bytes(100))
    assert len(frames) == 1 and end == len(good) and status != wal_frame.OK


def test_find_valid_frame_positions():
    payloads = [b"aaaa", b"bbbbbbbb", b"", b"cc"]
    buf = wal_frame.encode_frames(wal_frame.WRITE_BATCH, payloads)
    starts = [0]
    for p in payloads[:-1]:
        starts.append(starts[-1] + HDR + len(p))
    for start in range(len(buf) + 2):
        want = next((s for s in starts if s >= start), -1)
        assert wal_frame.find_valid_frame(buf, start) == want, start


def test_find_valid_frame_skips_garbage_and_damaged_frames():
    rng = random.Random(SEED + 2)
    damaged = bytearray(wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"victim" * 3]))
    damaged[HDR + 1] ^= 1
    for _ in range(50):
        garbage = rng.randbytes(rng.randrange(0, 200))
        good = wal_frame.encode_frames(wal_frame.MANIFEST_EDIT, [b"survivor"], len(garbage) + len(damaged))
        buf = garbage + bytes(damaged) + good
        assert wal_frame.find_valid_frame(buf, 0) == len(garbage) + len(damaged)


def test_find_valid_frame_ignores_unknown_types_and_truncated_frames():
    bad_type = py_frame(9, b"abc")
    assert wal_frame.find_valid_frame(bad_type, 0) == -1
    good = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"abcdef"])
    assert wal_frame.find_valid_frame(good[:-1], 0) == -1
    good = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"abcdef"], len(bad_type))
    assert wal_frame.find_valid_frame(bad_type + good, 0) == len(bad_type)


def test_random_corruption_never_yields_a_frame_that_was_not_written():
    rng = random.Random(SEED + 3)
    for trial in range(200):
        payloads = random_payloads(rng, rng.randrange(1, 10), 100)
        buf = bytearray(wal_frame.encode_frames(wal_frame.WRITE_BATCH, payloads))
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        frames, end, status = wal_frame.decode_frames(bytes(buf))
        # The valid prefix is a prefix of what was written.
        assert [f[2] for f in frames] == payloads[:len(frames)], f"seed={SEED + 3} trial={trial}"


@pytest.mark.parametrize("offset", [0, 77, 2**40 + 3])
def test_encode_wal_group_layout(offset):
    reps = [b"rep-one", b"", b"rep-three" * 10]
    lsns = [1, 8, 2**64 - 1]
    buf = wal_frame.encode_wal_group(reps, lsns, offset)
    want = py_frames(wal_frame.WRITE_BATCH, [struct.pack("<Q", lsn) + rep for rep, lsn in zip(reps, lsns)], offset)
    assert buf == want
    frames, end, status = wal_frame.decode_frames(buf, 0, offset)
    assert status == wal_frame.OK and end == len(buf)
    assert [(struct.unpack_from("<Q", p)[0], p[8:]) for _, _, p in frames] == list(zip(lsns, reps))


def test_encode_wal_group_rejects_mismatched_lists_and_bad_lsns():
    assert wal_frame.encode_wal_group([], []) == b""
    with pytest.raises(ValueError):
        wal_frame.encode_wal_group([b"a", b"b"], [1])
    with pytest.raises(OverflowError):
        wal_frame.encode_wal_group([b"a"], [-1])
    with pytest.raises(OverflowError):
        wal_frame.encode_wal_group([b"a"], [2**64])


def test_a_frame_validates_only_at_the_offset_it_was_encoded_for():
    # A frame moved (or copied) to another offset, or read as if its buffer
    # started elsewhere in the file, fails its checksum: BAD_CRC, and
    # find_valid_frame does not find it.
    rng = random.Random(SEED + 4)
    payload = b"moved frame"
    for _ in range(200):
        at = rng.randrange(0, 1 << 20)
        frame = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [payload], at)
        assert wal_frame.decode_frames(frame, 0, at) == ([(0, 1, payload)], len(frame), wal_frame.OK)
        assert wal_frame.find_valid_frame(frame, 0, at) == 0
        elsewhere = at ^ (1 << rng.randrange(40))
        assert wal_frame.decode_frames(frame, 0, elsewhere) == ([], 0, wal_frame.BAD_CRC), (at, elsewhere)
        assert wal_frame.find_valid_frame(frame, 0, elsewhere) == -1, (at, elsewhere)
        # In a buffer: valid at position p only when base_offset + p == at.
        pad = rng.randrange(1, 64)
        buf = bytes(pad) + frame
        if at >= pad:
            assert wal_frame.find_valid_frame(buf, 0, at - pad) == pad
        assert wal_frame.find_valid_frame(buf, 0, at) == -1


def test_frames_inside_a_payload_are_not_found_by_the_search():
    # The case the offset is for: a torn last frame whose payload (a value
    # holding a copy of a log file) contains complete frames. They were
    # encoded for the copy's offsets, so no search position validates them.
    log = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"a" * 30, b"b" * 5, b""])
    first = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"first"])
    torn = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [b"value:" + log + b"rest" * 10], len(first))
    data = first + torn[:-20]
    frames, end, status = wal_frame.decode_frames(data)
    assert [p for _, _, p in frames] == [b"first"] and status == wal_frame.TRUNCATED
    assert wal_frame.find_valid_frame(data, end + 1) == -1
    # In the older format (no offset) a frame inside the payload was valid
    # wherever it landed, so that search found it: the false CorruptionError.
    old = py_legacy_frame(1, b"first")
    old_data = old + py_legacy_frame(1, b"value:" + py_legacy_frame(1, b"a" * 30) + b"rest" * 10)[:-20]
    inner = old_data.index(b"value:") + 6
    assert wal_frame.find_valid_frame(old_data, len(old), legacy=True) == inner


def test_read_file_header_tells_this_version_another_version_version_1_and_none():
    h = wal_frame.FILE_HEADER
    body = wal_frame.MAGIC + bytes([wal_frame.FORMAT_VERSION])
    assert h == py_legacy_frame(3, body)   # a frame a build of version 1 checks and refuses (unknown type)
    assert wal_frame.read_file_header(h) == (wal_frame.HEADER_OK, len(h))
    assert wal_frame.read_file_header(h + wal_frame.encode_frames(1, [b"x"], len(h)))[0] == wal_frame.HEADER_OK
    newer = py_legacy_frame(3, wal_frame.MAGIC + bytes([wal_frame.FORMAT_VERSION + 1]))
    assert wal_frame.read_file_header(newer) == (wal_frame.HEADER_OTHER_VERSION, wal_frame.FORMAT_VERSION + 1)
    for rtype in sorted(wal_frame.FRAME_TYPES):
        for payload in (b"", b"x", b"legacy" * 20):
            old = py_legacy_frame(rtype, payload)
            assert wal_frame.read_file_header(old) == (wal_frame.HEADER_LEGACY, 0)
            assert wal_frame.read_file_header(old[:-1])[0] == wal_frame.HEADER_NONE   # incomplete
            assert wal_frame.find_valid_frame(b"junk" + old, 0, legacy=True) == 4
            assert wal_frame.find_valid_frame(b"junk" + old, 0) == -1                 # not of this format
    for none in (b"", h[:-1], bytes(64), py_legacy_frame(3, b"OTHERS\x02"), py_legacy_frame(9, b"abc"),
                 wal_frame.encode_frames(1, [b"x"]), b"\x01" + h[1:]):
        assert wal_frame.read_file_header(none) == (wal_frame.HEADER_NONE, 0), none


# Payloads are kept tiny: today these calls read the object's internals, and
# a large one would read past the object.
NON_BYTES = [
    (bytearray(b"abc"), b"abc"),
    ("abc", None),
    (None, None),
]
NON_BYTES_IDS = ["bytearray", "str", "None"]


@pytest.mark.parametrize("payload,content", NON_BYTES, ids=NON_BYTES_IDS)
def test_encode_frames_rejects_or_correctly_frames_non_bytes_payloads(payload, content):
    # encode_frames casts each payload to bytes without checking, so a
    # bytearray, memoryview, str or int is read through PyBytes_AS_STRING:
    # the frame carries bytes of the object's internals, with a valid
    # checksum. Acceptable outcomes: TypeError, or a frame of the real bytes.
    try:
        out = wal_frame.encode_frames(wal_frame.WRITE_BATCH, [payload])
    except TypeError:
        return
    assert content is not None, f"{type(payload).__name__} payload was framed instead of rejected"
    assert wal_frame.decode_frames(out)[0][0][2] == content


@pytest.mark.parametrize("rep,content", NON_BYTES, ids=NON_BYTES_IDS)
def test_encode_wal_group_rejects_or_correctly_frames_non_bytes_reps(rep, content):
    try:
        out = wal_frame.encode_wal_group([rep], [1])
    except TypeError:
        return
    assert content is not None, f"{type(rep).__name__} rep was framed instead of rejected"
    assert wal_frame.decode_frames(out)[0][0][2] == struct.pack("<Q", 1) + content


@pytest.mark.parametrize("rtype", [0, 3, 256 + wal_frame.WRITE_BATCH])
def test_encode_frames_rejects_unknown_types(rtype):
    # The format says type 0 is never written and only FRAME_TYPES exist; an
    # encoder that writes other types produces frames every reader rejects
    # (or, for 257, silently a WRITE_BATCH frame).
    with pytest.raises((ValueError, OverflowError)):
        wal_frame.encode_frames(rtype, [b"x"])
