"""TableBuilder's batched writing (table_builder.pyx): finished data blocks
wait in a pending batch and are compressed and appended together. Checked
here: the file's bytes do not depend on the batch size, every data block is
what compressing that block alone gives (stored raw when zstd does not make it
smaller), every entry reads back through the engine's TableReader, one append
per batch, and the size estimate compaction cuts files by."""
import random
import struct

import pytest
import zstandard
from format_readers import FOOTER

from engine._native.sequencer import encode as seq_encode
from engine._native.sstable_block import Block
from engine._native.table_builder import (
    COMPRESSION_RAW,
    COMPRESSION_ZSTD,
    DEFAULT_BATCH_BYTES,
    FOOTER_SIZE,
    TRAILER_SIZE,
    TableBuilder,
    block_trailer,
)
from engine.env_mem import MemEnv
from engine.sstable import TableReader

SEED = 0x7AB1E
MAX_LSN = 2**64 - 1
DELETE, VALUE = 0, 1
PREFIX = b"\x00\x00\x00\x01"


class RecordingFile:
    """A writable file that keeps every append separately."""

    def __init__(self):
        self.appends: list[bytes] = []

    def append(self, data: bytes) -> None:
        self.appends.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.appends)


def mixed_entries(rng: random.Random, n_keys: int) -> list[tuple]:
    """Sorted (key, lsn, kind, seq, value): compressible and random values,
    values larger than a block, a few of 1 MiB, tombstones, several versions."""
    keys = sorted({PREFIX + b"k%06d" % rng.randrange(10**6) + rng.randbytes(rng.randrange(0, 3))
                   for _ in range(n_keys)})
    big = set(rng.sample(range(len(keys)), 3))
    lsns = iter(rng.sample(range(1, 10**9), 3 * len(keys)))
    out = []
    for i, key in enumerate(keys):
        for lsn in sorted((next(lsns) for _ in range(rng.randrange(1, 4))), reverse=True):
            r = rng.random()
            if i in big:
                value = rng.randbytes(1 << 20) if i % 2 else (b"big-%d " % lsn * (1 << 17))[:1 << 20]
            elif r < 0.1:
                value = b""
            elif r < 0.5:
                value = b"value-%d-" % lsn * rng.randrange(1, 60)
            elif r < 0.85:
                value = rng.randbytes(rng.randrange(0, 1500))
            else:
                value = rng.randbytes(rng.randrange(4500, 20000))
            kind = DELETE if r < 0.1 else VALUE
            out.append((key, lsn, kind, seq_encode(lsn, lsn & 0xFFFFFFFF, 1), value))
    return out


@pytest.fixture(scope="module")
def entries():
    return mixed_entries(random.Random(SEED), 2500)


def build(entries, level, batch_bytes, estimates=None):
    f = RecordingFile()
    tb = TableBuilder(f, 4096, level, 10, batch_bytes)
    for e in entries:
        if estimates is not None:
            estimates.append(tb.file_size_estimate)
        tb.py_add(*e)
    props = tb.finish()
    return f, props


def data_blocks(data: bytes):
    """(offset, stored bytes, compression byte, trailer) of every data block, from the index."""
    index_off, index_size, *_ = FOOTER.unpack(data[-FOOTER_SIZE:])
    index = Block(data[index_off:index_off + index_size])
    out = []
    for i in range(index.count):
        off, size = index.handle(i)
        out.append((off, data[off:off + size], data[off + size], data[off + size:off + size + TRAILER_SIZE]))
    return out


def read_back(data: bytes, entries) -> None:
    env = MemEnv()
    env.mkdirs("/t")
    f = env.open_writable("/t/000001.sst")
    f.append(data)
    f.close()
    reader = TableReader(env, "/t/000001.sst", 1, None)
    try:
        c = reader.cursor()
        got = []
        e = c.py_seek_first()
        while e is not None:
            got.append(e)
            e = c.py_next()
        assert got == entries
        newest = {}
        for key, lsn, kind, seq, value in entries:
            newest.setdefault(key, (kind, seq, value))
            assert reader.get(key, lsn) == (kind, seq, value)
        for key, want in newest.items():
            assert reader.get(key, MAX_LSN) == want
    finally:
        reader.close()


@pytest.mark.parametrize("level", [0, 1, 3])
def test_batch_size_does_not_change_the_file(entries, level):
    per_block, props = build(entries, level, 0)
    data = per_block.data()
    blocks = data_blocks(data)
    assert len(blocks) > 300
    assert props["file_size"] == len(data) and props["entries"] == len(entries)
    for batch_bytes in (1, 4096, 64 * 1024, DEFAULT_BATCH_BYTES, 1 << 40):
        batched, batched_props = build(entries, level, batch_bytes)
        assert batched.data() == data, batch_bytes
        assert batched_props == props
    read_back(data, entries)


@pytest.mark.parametrize("level", [1, 3])
def test_each_block_is_compressed_alone_as_compress_does(entries, level):
    f, props = build(entries, level, DEFAULT_BATCH_BYTES)
    data = f.data()
    compressor = zstandard.ZstdCompressor(level=level)
    seen = set()
    pos = raw_total = 0
    for off, stored, ctype, trailer in data_blocks(data):
        assert off == pos   # contiguous from offset 0, in index order
        assert trailer == block_trailer(stored, ctype)
        if ctype == COMPRESSION_ZSTD:
            raw = zstandard.ZstdDecompressor().decompress(stored)
            assert compressor.compress(raw) == stored
        else:
            assert ctype == COMPRESSION_RAW
            raw = stored
            assert len(compressor.compress(raw)) >= len(raw)
        Block(raw)   # a well-formed block payload
        seen.add(ctype)
        raw_total += len(raw)
        pos = off + len(stored) + TRAILER_SIZE
    assert seen == {COMPRESSION_RAW, COMPRESSION_ZSTD}
    assert raw_total < props["raw_bytes"]   # which also counts the filter and index blocks


def test_one_append_per_batch(entries):
    per_block, _ = build(entries, 3, 0)
    batched, props = build(entries, 3, DEFAULT_BATCH_BYTES)
    n_blocks = len(data_blocks(per_block.data()))
    assert len(per_block.appends) == n_blocks + 3   # + filter, index, footer
    # A batch closes at the first block that takes it to DEFAULT_BATCH_BYTES,
    # so every batch but the last holds at least that many raw bytes.
    assert len(batched.appends) <= props["raw_bytes"] // DEFAULT_BATCH_BYTES + 1 + 3
    assert len(batched.appends) < n_blocks // 10


def test_size_estimate_counts_pending_blocks_raw(entries):
    exact, batched = [], []
    build(entries, 0, 0, exact)
    build(entries, 0, DEFAULT_BATCH_BYTES, batched)
    assert batched == exact   # raw blocks: pending or written, the same bytes
    per_block, compressed = [], []
    build(entries, 3, 0, per_block)
    build(entries, 3, DEFAULT_BATCH_BYTES, compressed)
    assert len(compressed) == len(per_block) == len(entries)
    for a, b in zip(per_block, compressed):
        # Pending blocks count raw, not compressed: never below the per-block
        # estimate, and above it by less than one batch (a batch is written
        # as soon as it reaches DEFAULT_BATCH_BYTES).
        assert a <= b < a + DEFAULT_BATCH_BYTES
    assert max(b - a for a, b in zip(per_block, compressed)) > 4096


def test_empty_and_single_entry_tables():
    f, props = build([], 3, DEFAULT_BATCH_BYTES)
    assert data_blocks(f.data()) == [] and props["entries"] == 0
    entry = (PREFIX + b"only", 7, VALUE, seq_encode(7, 7, 1), b"x" * 100)
    f, props = build([entry], 3, DEFAULT_BATCH_BYTES)
    (_, stored, ctype, _), = data_blocks(f.data())
    assert ctype == COMPRESSION_ZSTD and props["entries"] == 1
    read_back(f.data(), [entry])
    assert struct.unpack_from("<Q", f.data(), len(f.data()) - 8)[0] == 0x71756F72756D6B76


def test_fallback_without_the_batch_compressor(entries, monkeypatch):
    # python-zstandard's CFFI backend has no multi_compress_to_buffer: a batch
    # is then compressed block by block, to the same bytes.
    import engine._native.table_builder as table_builder

    want, _ = build(entries, 3, DEFAULT_BATCH_BYTES)
    monkeypatch.setattr(table_builder, "_MULTI_COMPRESS", False)
    got, _ = build(entries, 3, DEFAULT_BATCH_BYTES)
    assert got.data() == want.data()
