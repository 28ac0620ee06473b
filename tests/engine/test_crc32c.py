"""CRC32C (engine/_native/crc32c.pyx): known vectors, hardware path against
the table path and a bitwise reference, masking, and extension."""
import random

import pytest

from engine._native.crc32c import crc32c, masked, software_crc32c, unmask

SEED = 0xC3C32


def reference_crc32c(data: bytes, crc: int = 0) -> int:
    """Bit-at-a-time CRC32C (reflected polynomial 0x82F63B78): slow, obviously right."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# RFC 3720 (iSCSI) appendix B.4 and the standard check value.
KNOWN_VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"", 0),
    (b"a", 0xC1D04330),
]


@pytest.mark.parametrize("data,want", KNOWN_VECTORS, ids=lambda v: v.hex()[:16] if isinstance(v, bytes) else hex(v))
def test_known_vectors(data, want):
    assert crc32c(data) == want
    assert software_crc32c(data) == want
    assert reference_crc32c(data) == want


def test_empty_input_returns_the_running_crc_unchanged():
    assert crc32c(b"", 0x12345678) == 0x12345678
    assert software_crc32c(b"", 0xDEADBEEF) == 0xDEADBEEF


def test_hardware_equals_software_and_reference_for_every_length_and_alignment():
    rng = random.Random(SEED)
    # Every length up to 80 (covers the unaligned head, the 8-byte body and
    # the tail of both implementations) at each of the 8 start alignments.
    buf = bytes(rng.getrandbits(8) for _ in range(80 + 8))
    view = memoryview(buf)
    for offset in range(8):
        for n in range(81):
            part = view[offset:offset + n]
            want = reference_crc32c(bytes(part))
            assert crc32c(part) == want, f"offset={offset} n={n}"
            assert software_crc32c(part) == want, f"offset={offset} n={n}"


def test_hardware_equals_software_on_large_random_buffers():
    rng = random.Random(SEED + 1)
    big = rng.randbytes(1 << 20)
    view = memoryview(big)
    for _ in range(200):
        offset = rng.randrange(8)
        n = rng.choice([rng.randrange(1, 64), rng.randrange(64, 5000), rng.randrange(5000, (1 << 20) - 8)])
        part = view[offset:offset + n]
        assert crc32c(part) == software_crc32c(part), f"seed={SEED + 1} offset={offset} n={n}"
    assert crc32c(big) == software_crc32c(big)


def test_accepts_bytes_bytearray_and_contiguous_memoryview_alike():
    data = b"quorumkv checksum input"
    assert crc32c(bytearray(data)) == crc32c(data) == crc32c(memoryview(data))


def test_rejects_non_contiguous_buffers():
    with pytest.raises((ValueError, BufferError)):
        crc32c(memoryview(b"abcdefgh")[::2])


def test_extend_matches_crc_of_concatenation():
    rng = random.Random(SEED + 2)
    for _ in range(300):
        a = rng.randbytes(rng.randrange(0, 300))
        b = rng.randbytes(rng.randrange(0, 300))
        whole = crc32c(a + b)
        assert crc32c(b, crc32c(a)) == whole
        assert software_crc32c(b, software_crc32c(a)) == whole
        # Mixed paths extend each other too.
        assert crc32c(b, software_crc32c(a)) == whole
        assert software_crc32c(b, crc32c(a)) == whole


def test_extend_over_many_pieces():
    rng = random.Random(SEED + 3)
    data = rng.randbytes(10_000)
    crc = 0
    pos = 0
    while pos < len(data):
        n = rng.randrange(0, 97)
        crc = crc32c(data[pos:pos + n], crc)
        pos += n
    assert crc == crc32c(data) == software_crc32c(data)


def test_every_single_bit_flip_changes_the_crc():
    data = bytearray(b"the quick brown fox jumps over the lazy dog")
    base = crc32c(data)
    for i in range(len(data) * 8):
        data[i // 8] ^= 1 << (i % 8)
        assert crc32c(data) != base, f"bit {i}"
        data[i // 8] ^= 1 << (i % 8)


def test_mask_unmask_roundtrip():
    rng = random.Random(SEED + 4)
    values = [0, 1, 0xFFFFFFFF, 0xA282EAD8, 0x80000000, 0x7FFFFFFF] + [rng.getrandbits(32) for _ in range(2000)]
    for v in values:
        m = masked(v)
        assert 0 <= m <= 0xFFFFFFFF
        assert unmask(m) == v
        assert masked(unmask(v)) == v


def test_mask_is_the_documented_rotate_and_offset():
    for v in (0, 1, 0x12345678, 0xFFFFFFFF, crc32c(b"123456789")):
        rot = ((v >> 15) | (v << 17)) & 0xFFFFFFFF
        assert masked(v) == (rot + 0xA282EAD8) & 0xFFFFFFFF


def test_mask_changes_the_value():
    # A masked crc must differ from the raw crc, or masking would be a no-op
    # for data that embeds its own checksum.
    rng = random.Random(SEED + 5)
    for _ in range(1000):
        data = rng.randbytes(rng.randrange(1, 100))
        c = crc32c(data)
        assert masked(c) != c
