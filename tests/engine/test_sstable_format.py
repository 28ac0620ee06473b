"""SSTable formats: blocks (sstable_block.pyx), bloom filters (bloom.pyx),
whole tables (table_builder.pyx -> engine/sstable.py TableReader) and table
cursors (table_cursor.pyx), checked against independent Python parsers of
the byte layouts specified in those files."""
import bisect
import os
import random
import struct

import numpy as np
import pytest
import zstandard
from format_readers import FOOTER, read_varint

from engine._native import bloom
from engine._native.crc32c import crc32c, unmask
from engine._native.sequencer import encode as seq_encode
from engine._native.sstable_block import RESTART_INTERVAL, Block, BlockBuilder, encode_handle
from engine._native.table_builder import (
    COMPRESSION_RAW,
    COMPRESSION_ZSTD,
    FOOTER_SIZE,
    TABLE_MAGIC,
    TABLE_VERSION,
    TRAILER_SIZE,
    TableBuilder,
)
from engine.env import PosixEnv
from engine.env_mem import MemEnv
from engine.errors import CorruptionError
from engine.sstable import TableReader

SEED = 0x55AB1E
MAX_LSN = 2**64 - 1
DELETE, VALUE = 0, 1


def seq_of(lsn: int) -> bytes:
    return seq_encode((10**18 + lsn) % 2**64, lsn & 0xFFFFFFFF, 3)


def order(e):
    return (e[0], -e[1])


def parse_block(payload: bytes):
    """Independent decoder of the block format in sstable_block.pyx.
    Returns (entries, entry_offsets, shared_lengths, restarts)."""
    (n_restarts,) = struct.unpack_from("<I", payload, len(payload) - 4)
    limit = len(payload) - 4 - 4 * n_restarts
    restarts = list(struct.unpack_from(f"<{n_restarts}I", payload, limit))
    entries, offsets, shareds = [], [], []
    off, prev = 0, b""
    while off < limit:
        offsets.append(off)
        shared, off = read_varint(payload, off)
        unshared, off = read_varint(payload, off)
        vlen, off = read_varint(payload, off)
        key = prev[:shared] + payload[off:off + unshared]
        off += unshared
        lsn, kind = struct.unpack_from("<QB", payload, off)
        seq = payload[off + 9:off + 25]
        off += 25
        value = payload[off:off + vlen]
        off += vlen
        entries.append((key, lsn, kind, seq, value))
        shareds.append(shared)
        prev = key
    assert off == limit
    return entries, offsets, shareds, restarts


def common_prefix(a: bytes, b: bytes) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def random_entries(rng, n_keys, max_versions=3, value_len=(0, 200), prefix=b"\x00\x00\x00\x01", random_values=False):
    """Sorted (key, lsn, kind, seq, value) with unique lsns; keys share prefixes."""
    keys = set()
    stems = [rng.randbytes(rng.randrange(1, 6)) for _ in range(max(1, n_keys // 20))]
    while len(keys) < n_keys:
        keys.add(prefix + rng.choice(stems) + rng.randbytes(rng.randrange(0, 4)))
    lsns = iter(rng.sample(range(1, 100 * n_keys * max_versions), n_keys * max_versions))
    out = []
    for key in sorted(keys):   # a set's order follows PYTHONHASHSEED: the data would too
        for _ in range(rng.randrange(1, max_versions + 1)):
            lsn = next(lsns)
            kind = DELETE if rng.random() < 0.15 else VALUE
            if kind == DELETE:
                value = b""
            elif random_values:
                value = rng.randbytes(rng.randrange(*value_len))
            else:
                value = (b"value-%d-" % lsn) * (rng.randrange(*value_len) // 10 + 1)
            out.append((key, lsn, kind, seq_of(lsn), value))
    out.sort(key=order)
    return out


def build_block(entries) -> bytes:
    b = BlockBuilder()
    for key, lsn, kind, seq, value in entries:
        b.py_add(key, lsn, kind, seq, value)
    assert b.count == len(entries)
    return b.py_finish()


def block_entries(block: Block):
    return [block.entry(i) for i in range(len(block))]


# ---------------------------------------------------------------- blocks

def test_empty_block():
    payload = BlockBuilder().py_finish()
    assert payload == struct.pack("<I", 0)
    blk = Block(payload)
    assert len(blk) == 0
    assert blk.find(b"k", MAX_LSN) is None
    assert blk.index_lookup(b"k", MAX_LSN) == -1


@pytest.mark.parametrize("n", [1, 15, 16, 17, 32, 33, 100, 1000])
def test_block_roundtrip_restarts_and_prefix_compression(n):
    rng = random.Random(SEED + n)
    entries = random_entries(rng, n, max_versions=1)[:n]
    payload = build_block(entries)
    parsed, offsets, shareds, restarts = parse_block(payload)
    assert parsed == entries
    # A restart point every RESTART_INTERVAL entries, pointing at an entry
    # stored with no shared prefix.
    assert RESTART_INTERVAL == 16
    assert restarts == [offsets[i] for i in range(0, n, RESTART_INTERVAL)]
    for i in range(n):
        if i % RESTART_INTERVAL == 0:
            assert shareds[i] == 0, i
        else:
            assert shareds[i] == common_prefix(entries[i - 1][0], entries[i][0]), i
    blk = Block(payload)
    assert block_entries(blk) == entries
    assert blk.charge >= len(payload)


def test_prefix_compression_shrinks_shared_keys():
    long_prefix = b"\x00\x00\x00\x01" + b"p" * 200
    entries = [(long_prefix + b"%04d" % i, 10_000 - i, VALUE, seq_of(i), b"v") for i in range(64)]
    payload = build_block(entries)
    raw_keys = sum(len(e[0]) for e in entries)
    # Only restart entries carry the full key.
    assert len(payload) < raw_keys // 4
    assert block_entries(Block(payload)) == entries


def test_builder_resets_after_finish():
    b = BlockBuilder()
    b.py_add(b"a", 1, VALUE, seq_of(1), b"x")
    first = b.py_finish()
    assert b.count == 0
    b.py_add(b"b", 2, VALUE, seq_of(2), b"y")
    second = b.py_finish()
    assert block_entries(Block(first)) == [(b"a", 1, VALUE, seq_of(1), b"x")]
    assert block_entries(Block(second)) == [(b"b", 2, VALUE, seq_of(2), b"y")]


def test_block_with_large_keys_and_values():
    rng = random.Random(SEED + 1)
    entries = sorted([(b"\x00\x00\x00\x01" + rng.randbytes(4096), i + 1, VALUE, seq_of(i + 1), rng.randbytes(100_000))
                      for i in range(20)], key=order)
    blk = Block(build_block(entries))
    assert block_entries(blk) == entries


def test_block_find_and_lower_bound_match_model():
    rng = random.Random(SEED + 2)
    entries = random_entries(rng, 300, max_versions=4)
    blk = Block(build_block(entries))
    keys = sorted({e[0] for e in entries})
    for key in keys + [k + b"\x00" for k in keys[::10]] + [b"", b"\x00", b"\xff" * 8]:
        lsns = [e[1] for e in entries if e[0] == key]
        for snap in [0, MAX_LSN] + lsns + [x - 1 for x in lsns] + [x + 1 for x in lsns]:
            # lower_bound: first entry at or after (key, snap) in internal order.
            want_i = bisect.bisect_left(entries, (key, -snap), key=order)
            got_i = blk.index_lookup(key, snap)
            assert got_i == (want_i if want_i < len(entries) else -1), (key, snap)
            # find: newest version of key with lsn <= snap.
            want = None
            if want_i < len(entries) and entries[want_i][0] == key:
                _, _, kind, seq, value = entries[want_i]
                want = (kind, seq, value)
            assert blk.find(key, snap) == want, (key, snap)


def test_block_entry_index_errors():
    blk = Block(build_block([(b"a", 1, VALUE, seq_of(1), b"x")]))
    with pytest.raises(IndexError):
        blk.entry(1)
    with pytest.raises(IndexError):
        blk.entry(-1)


def test_index_handles_roundtrip():
    entries = []
    for i in range(40):
        entries.append((b"\x00\x00\x00\x01k%03d" % i, 5, VALUE, bytes(16), encode_handle(i * 5000, 4000 + i)))
    blk = Block(build_block(entries))
    for i in range(40):
        assert blk.handle(i) == (i * 5000, 4000 + i)
    assert encode_handle(2**64 - 1, 2**32 - 1) == struct.pack("<QI", 2**64 - 1, 2**32 - 1)
    with pytest.raises(IndexError):
        blk.handle(40)
    bad = Block(build_block([(b"k", 1, VALUE, bytes(16), b"short")]))
    with pytest.raises(CorruptionError):
        bad.handle(0)


def test_malformed_blocks_raise_corruption_never_crash():
    rng = random.Random(SEED + 3)
    entries = random_entries(rng, 60, max_versions=2)
    payload = build_block(entries)
    for cut in range(0, len(payload)):
        try:
            blk = Block(payload[:cut])
        except CorruptionError:
            continue
        # A cut that still parses must not invent entries.
        assert len(blk) <= len(entries)
    for _trial in range(500):
        bad = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(len(bad))] = rng.getrandbits(8)
        try:
            blk = Block(bytes(bad))
        except CorruptionError:
            continue
        for i in range(len(blk)):
            blk.entry(i)
    for bad in (b"", b"\x01", b"\x00\x00\x00", b"\xff\xff\xff\xff", b"abc" + struct.pack("<I", 0)):
        with pytest.raises(CorruptionError):
            Block(bad)


# ----------------------------------------------------------------- bloom

def test_bloom_no_false_negatives_and_about_one_percent_false_positives():
    rng = random.Random(SEED + 4)
    present = list({b"\x00\x00\x00\x01" + rng.randbytes(rng.randrange(1, 30)) for _ in range(10_000)})
    filt = bloom.build_filter(bloom.hashes_of(present), 10)
    assert filt[-1] == 7   # k = round(10 * ln 2)
    assert len(filt) == 64 * -(-len(present) * 10 // 512) + 1   # whole 512-bit lines, then k
    for key in present:
        assert bloom.may_contain(filt, key), key
    present_set = set(present)
    absent = []
    while len(absent) < 20_000:
        k = b"\x00\x00\x00\x01" + rng.randbytes(rng.randrange(1, 30))
        if k not in present_set:
            absent.append(k)
    fp = sum(bloom.may_contain(filt, k) for k in absent) / len(absent)
    assert fp < 0.02, f"false-positive rate {fp:.4f} at 10 bits/key (seed={SEED + 4})"


def test_bloom_on_sequential_keys():
    # Keys that differ only in their last bytes: a weak hash would collide.
    present = [b"\x00\x00\x00\x01user%08d" % i for i in range(0, 20_000, 2)]
    absent = [b"\x00\x00\x00\x01user%08d" % i for i in range(1, 40_000, 2)]
    filt = bloom.build_filter(bloom.hashes_of(present), 10)
    assert all(bloom.may_contain(filt, k) for k in present)
    fp = sum(bloom.may_contain(filt, k) for k in absent) / len(absent)
    assert fp < 0.02, fp


@pytest.mark.parametrize("bits", [1, 5, 20, 40, 100])
def test_bloom_other_densities_have_no_false_negatives(bits):
    rng = random.Random(SEED + bits)
    keys = [rng.randbytes(12) for _ in range(2000)]
    filt = bloom.build_filter(bloom.hashes_of(keys), bits)
    assert 1 <= filt[-1] <= 30
    assert all(bloom.may_contain(filt, k) for k in keys)


def test_bloom_edge_cases():
    empty = bloom.build_filter(np.empty(0, dtype=np.uint32), 10)
    assert len(empty) == 64 + 1   # one 512-bit line and k
    assert not bloom.may_contain(empty, b"anything")
    assert not bloom.may_contain(b"", b"k")
    # k > 30, or a size that is not whole lines, is a future encoding:
    # "may contain everything", never "nothing".
    assert bloom.may_contain(bytes(64) + bytes([31]), b"k")
    assert bloom.may_contain(bytes(8) + bytes([7]), b"k")
    one = bloom.build_filter(bloom.hashes_of([b"only"]), 10)
    assert bloom.may_contain(one, b"only")


M64 = 0xFFFFFFFFFFFFFFFF


def py_bloom_hash(key: bytes) -> int:
    """The filter hash as bloom.pxd describes it: 64-bit multiply-xorshift
    over 8-byte little-endian words, murmur3's finalizer, folded to 32 bits."""
    h = 0x9E3779B97F4A7C15 ^ ((len(key) * 0xC6A4A7935BD1E995) & M64)
    i = 0
    while i + 8 <= len(key):
        w = int.from_bytes(key[i:i + 8], "little")
        w = (w * 0xC6A4A7935BD1E995) & M64
        w ^= w >> 47
        w = (w * 0xC6A4A7935BD1E995) & M64
        h ^= w
        h = (h * 0xC6A4A7935BD1E995) & M64
        i += 8
    h ^= int.from_bytes(key[i:], "little")
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    h ^= h >> 33
    return (h ^ (h >> 32)) & 0xFFFFFFFF


def py_probe_bits(h: int, k: int) -> list[int]:
    """The in-line probe positions of bloom.pyx's docstring."""
    g = (h * 0x9E3779B9) & 0xFFFFFFFF
    d = (((g >> 17) | (g << 15)) & 0xFFFFFFFF) | 1
    out = []
    for _ in range(k):
        out.append(g >> 23)
        g = (g + d) & 0xFFFFFFFF
    return out


def py_may_contain(filt: bytes, key: bytes) -> bool:
    """The probe sequence of bloom.pyx's docstring (one 512-bit line per key)."""
    if len(filt) < 2:
        return False
    k = filt[-1]
    if k > 30 or (len(filt) - 1) % 64:
        return True
    h = py_bloom_hash(key)
    line = (h % ((len(filt) - 1) // 64)) * 64
    return all(filt[line + (pos >> 3)] & (1 << (pos & 7)) for pos in py_probe_bits(h, k))


def test_bloom_hash_matches_the_documented_function():
    # The hash is part of the on-disk format: a change would make existing
    # filters reject keys their tables hold.
    rng = random.Random(SEED + 5)
    keys = [b"", b"a", b"quorumkv", b"x" * 100] + [rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)]
    assert [bloom.key_hash(k) for k in keys] == [py_bloom_hash(k) for k in keys]
    assert bloom.key_hash(b"quorumkv") == 0xB30A736A
    assert bloom.key_hash(b"\x00") != bloom.key_hash(b"\x00\x00")
    hashes = bloom.hashes_of(keys[:50])
    assert hashes.dtype == np.uint32
    assert list(hashes) == [py_bloom_hash(k) for k in keys[:50]]


def test_bloom_filter_bits_match_the_documented_probe_sequence():
    rng = random.Random(SEED + 6)
    keys = [rng.randbytes(rng.randrange(1, 20)) for _ in range(500)]
    filt = bloom.build_filter(bloom.hashes_of(keys), 10)
    probes = keys + [rng.randbytes(rng.randrange(1, 20)) for _ in range(3000)]
    assert [bloom.may_contain(filt, k) for k in probes] == [py_may_contain(filt, k) for k in probes]
    # Every set bit is explained by some key's probes (nothing else is set).
    lines = (len(filt) - 1) // 64
    want = bytearray(len(filt) - 1)
    for key in keys:
        h = py_bloom_hash(key)
        line = (h % lines) * 64
        for pos in py_probe_bits(h, filt[-1]):
            want[line + (pos >> 3)] |= 1 << (pos & 7)
    assert bytes(want) == filt[:-1]


# ---------------------------------------------------------------- tables

def parse_table(data: bytes):
    """Independent walk of the table layout in table_builder.pyx. Returns
    (data_block_handles, compression_bytes, footer fields)."""
    assert len(data) >= FOOTER_SIZE
    footer = data[-FOOTER_SIZE:]
    index_off, index_size, filter_off, filter_size, entries, version, crc, magic = FOOTER.unpack(footer)
    assert magic == TABLE_MAGIC and version == TABLE_VERSION
    assert unmask(crc) == crc32c(footer[:36])

    def block(off, size):
        stored = data[off:off + size]
        ctype, bcrc = struct.unpack_from("<BI", data, off + size)
        assert unmask(bcrc) == crc32c(data[off:off + size + 1])
        return stored, ctype

    index_payload, index_ctype = block(index_off, index_size)
    assert index_ctype == COMPRESSION_RAW
    filter_payload, filter_ctype = block(filter_off, filter_size)
    assert filter_ctype == COMPRESSION_RAW
    index_entries, _, _, _ = parse_block(index_payload)
    handles = [struct.unpack("<QI", e[4]) for e in index_entries]
    ctypes = []
    pos = 0
    for off, size in handles:
        assert off == pos   # data blocks are contiguous from offset 0
        ctypes.append(block(off, size)[1])
        pos = off + size + TRAILER_SIZE
    assert filter_off == pos
    assert index_off == filter_off + filter_size + TRAILER_SIZE
    assert index_off + index_size + TRAILER_SIZE == len(data) - FOOTER_SIZE
    return handles, ctypes, {"entries": entries, "index": index_entries, "filter": filter_payload}


def write_table(env, path, entries, **kw):
    f = env.open_writable(path)
    tb = TableBuilder(f, **kw)
    for e in entries:
        tb.py_add(e[0], e[1], e[2], e[3], e[4])
    props = tb.finish()
    f.sync()
    f.close()
    return props


def cursor_forward(c):
    out = []
    e = c.py_seek_first()
    while e is not None:
        out.append(e)
        e = c.py_next()
    return out


def cursor_backward(c):
    out = []
    e = c.py_seek_last()
    while e is not None:
        out.append(e)
        e = c.py_prev()
    return out


def check_table(env, path, entries, props, data):
    assert props["entries"] == len(entries)
    assert props["file_size"] == len(data)
    assert props["smallest"] == (entries[0][0] if entries else None)
    assert props["largest"] == (entries[-1][0] if entries else None)
    reader = TableReader(env, path, 1, None)
    try:
        assert reader.entries == len(entries)
        c = reader.cursor()
        assert cursor_forward(c) == entries
        assert cursor_backward(c) == entries[::-1]
        # Point reads at several snapshots, against the sorted model.
        rng = random.Random(len(entries))
        keys = sorted({e[0] for e in entries})
        for key in rng.sample(keys, min(len(keys), 300)):
            lsns = [e[1] for e in entries if e[0] == key]
            for snap in [MAX_LSN, min(lsns) - 1] + lsns:
                i = bisect.bisect_left(entries, (key, -snap), key=order)
                want = None
                if i < len(entries) and entries[i][0] == key:
                    want = (entries[i][2], entries[i][3], entries[i][4])
                assert reader.get(key, snap) == want, (key, snap)
            assert reader.may_contain(key)
        for key in (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"\xff" * 6):
            assert reader.get(key, MAX_LSN) is None
    finally:
        reader.close()


@pytest.mark.parametrize("level", [0, 3], ids=["raw", "zstd"])
def test_table_roundtrip_memenv(level):
    rng = random.Random(SEED + 10 + level)
    entries = random_entries(rng, 2000, max_versions=3)
    env = MemEnv()
    env.mkdirs("/t")
    props = write_table(env, "/t/000001.sst", entries, block_size=4096, compression_level=level)
    data = env.read_file("/t/000001.sst")
    handles, ctypes, meta = parse_table(data)
    assert meta["entries"] == len(entries)
    assert len(handles) > 10
    if level == 0:
        assert set(ctypes) == {COMPRESSION_RAW}
        assert props["stored_bytes"] == props["raw_bytes"]
    else:
        # Repetitive values compress; a block is stored raw only where its zstd
        # form would not be smaller (a short last block, say).
        for (off, size), ctype in zip(handles, ctypes):
            if ctype == COMPRESSION_RAW:
                raw = data[off:off + size]
                assert len(zstandard.ZstdCompressor(level=level).compress(raw)) >= len(raw)
            else:
                assert ctype == COMPRESSION_ZSTD
        assert ctypes.count(COMPRESSION_ZSTD) >= len(ctypes) - 1
        assert props["stored_bytes"] < props["raw_bytes"] // 2
    check_table(env, "/t/000001.sst", entries, props, data)


@pytest.mark.parametrize("level", [0, 3], ids=["raw", "zstd"])
def test_table_roundtrip_posix(tmp_path, level):
    rng = random.Random(SEED + 20 + level)
    entries = random_entries(rng, 1500, max_versions=2)
    env = PosixEnv()
    path = str(tmp_path / "000001.sst")
    props = write_table(env, path, entries, block_size=4096, compression_level=level)
    with open(path, "rb") as f:
        data = f.read()
    assert os.path.getsize(path) == props["file_size"]
    handles, ctypes, _ = parse_table(data)
    assert set(ctypes) == ({COMPRESSION_RAW} if level == 0 else {COMPRESSION_ZSTD})
    check_table(env, path, entries, props, data)


def test_incompressible_blocks_are_stored_raw():
    rng = random.Random(SEED + 30)
    # Values of random bytes larger than a block: a block's only structure
    # is one entry's key, lsn and seq, so zstd cannot make it smaller.
    entries = random_entries(rng, 200, max_versions=1, value_len=(4000, 9000), random_values=True)
    entries = [(k, lsn, kind, rng.randbytes(16), v) for k, lsn, kind, _, v in entries]
    env = MemEnv()
    env.mkdirs("/t")
    props = write_table(env, "/t/000001.sst", entries, block_size=4096, compression_level=3)
    data = env.read_file("/t/000001.sst")
    _, ctypes, _ = parse_table(data)
    assert ctypes and set(ctypes) == {COMPRESSION_RAW}
    assert props["stored_bytes"] == props["raw_bytes"]
    check_table(env, "/t/000001.sst", entries, props, data)


def test_mixed_compressible_and_incompressible_blocks():
    rng = random.Random(SEED + 31)
    entries = []
    lsn = 1
    for i in range(400):
        value = rng.randbytes(5000) if (i // 40) % 2 else b"z" * 300
        entries.append((b"\x00\x00\x00\x01k%05d" % i, lsn, VALUE, seq_of(lsn), value))
        lsn += 1
    env = MemEnv()
    env.mkdirs("/t")
    props = write_table(env, "/t/000001.sst", entries, block_size=4096, compression_level=1)
    data = env.read_file("/t/000001.sst")
    _, ctypes, _ = parse_table(data)
    assert set(ctypes) == {COMPRESSION_RAW, COMPRESSION_ZSTD}
    check_table(env, "/t/000001.sst", entries, props, data)


def test_versions_of_one_key_spanning_many_blocks():
    # One user key whose versions fill several data blocks, between two
    # neighbours: point reads at every snapshot must find the right version.
    key = b"\x00\x00\x00\x01middle"
    entries = [(b"\x00\x00\x00\x01aaa", 1000, VALUE, seq_of(1000), b"a")]
    entries += [(key, lsn, VALUE, seq_of(lsn), b"v%d-" % lsn * 60) for lsn in range(900, 100, -2)]
    entries += [(b"\x00\x00\x00\x01zzz", 999, VALUE, seq_of(999), b"z")]
    env = MemEnv()
    env.mkdirs("/t")
    props = write_table(env, "/t/000001.sst", entries, block_size=1024, compression_level=0)
    data = env.read_file("/t/000001.sst")
    handles, _, _ = parse_table(data)
    assert len(handles) > 10
    reader = TableReader(env, "/t/000001.sst", 1, None)
    for snap in range(0, 1002):
        i = bisect.bisect_left(entries, (key, -snap), key=order)
        want = (entries[i][2], entries[i][3], entries[i][4]) if entries[i][0] == key else None
        assert reader.get(key, snap) == want, snap
    check_table(env, "/t/000001.sst", entries, props, data)


def test_empty_table():
    env = MemEnv()
    env.mkdirs("/t")
    props = write_table(env, "/t/000001.sst", [])
    data = env.read_file("/t/000001.sst")
    handles, _, meta = parse_table(data)
    assert handles == [] and meta["entries"] == 0
    assert props["smallest"] is None and props["largest"] is None
    reader = TableReader(env, "/t/000001.sst", 1, None)
    c = reader.cursor()
    assert c.py_seek_first() is None and c.py_seek_last() is None
    assert c.py_seek_ge(b"a") is None and c.py_seek_lt(b"z") is None
    assert reader.get(b"\x00\x00\x00\x01a", MAX_LSN) is None


def test_finish_twice_is_an_error():
    env = MemEnv()
    env.mkdirs("/t")
    f = env.open_writable("/t/000001.sst")
    tb = TableBuilder(f)
    tb.py_add(b"\x00\x00\x00\x01a", 1, VALUE, seq_of(1), b"v")
    tb.finish()
    with pytest.raises(RuntimeError):
        tb.finish()


def test_index_entries_are_last_key_of_each_block():
    rng = random.Random(SEED + 40)
    entries = random_entries(rng, 1000, max_versions=2)
    env = MemEnv()
    env.mkdirs("/t")
    write_table(env, "/t/000001.sst", entries, block_size=2048, compression_level=0)
    data = env.read_file("/t/000001.sst")
    handles, _, meta = parse_table(data)
    walked = []
    for (off, size), idx in zip(handles, meta["index"]):
        blk_entries, _, _, _ = parse_block(data[off:off + size])
        assert (blk_entries[-1][0], blk_entries[-1][1]) == (idx[0], idx[1])
        walked.extend(blk_entries)
    assert walked == entries


def test_filter_block_covers_every_key():
    rng = random.Random(SEED + 41)
    entries = random_entries(rng, 3000, max_versions=2)
    env = MemEnv()
    env.mkdirs("/t")
    write_table(env, "/t/000001.sst", entries, compression_level=0, bloom_bits_per_key=10)
    _, _, meta = parse_table(env.read_file("/t/000001.sst"))
    filt = meta["filter"]
    keys = {e[0] for e in entries}
    # One hash per distinct key, 10 bits each, in whole 512-bit lines.
    assert len(filt) == 64 * -(-len(keys) * 10 // 512) + 1
    assert all(bloom.may_contain(filt, k) for k in keys)
    reader = TableReader(env, "/t/000001.sst", 1, None)
    absent = [b"\x00\x00\x00\x02" + rng.randbytes(6) for _ in range(5000)]
    assert sum(reader.may_contain(k) for k in absent) < 0.02 * len(absent)


@pytest.mark.parametrize("trial", range(3))
def test_table_cursor_seeks_match_model(trial):
    rng = random.Random(SEED + 50 + trial)
    entries = random_entries(rng, 800, max_versions=3)
    env = MemEnv()
    env.mkdirs("/t")
    write_table(env, "/t/000001.sst", entries, block_size=1024, compression_level=trial)
    reader = TableReader(env, "/t/000001.sst", 1, None)
    c = reader.cursor()
    ekeys = [e[0] for e in entries]
    probes = [e[0] for e in entries[::37]] + [rng.randbytes(rng.randrange(1, 8)) for _ in range(40)]
    probes += [b"\x00\x00\x00\x01" + rng.randbytes(rng.randrange(0, 6)) for _ in range(60)]
    for probe in probes:
        i = bisect.bisect_left(ekeys, probe)
        e = c.py_seek_ge(probe)
        got = []
        while e is not None and len(got) < 40:
            got.append(e)
            e = c.py_next()
        assert got == entries[i:i + 40], (probe, f"seed={SEED + 50 + trial}")
        e = c.py_seek_lt(probe)
        got = []
        while e is not None and len(got) < 40:
            got.append(e)
            e = c.py_prev()
        assert got == entries[max(0, i - 40):i][::-1], (probe, f"seed={SEED + 50 + trial}")


def test_reader_rejects_short_and_foreign_files(tmp_path):
    env = MemEnv()
    env.mkdirs("/t")
    for name, content in (("short", b"x" * 47), ("zeros", bytes(100)), ("text", b"not a table" * 10)):
        f = env.open_writable(f"/t/{name}")
        f.append(content)
        f.close()
        with pytest.raises(CorruptionError) as exc:
            TableReader(env, f"/t/{name}", 1, None)
        assert f"/t/{name}" in str(exc.value)
