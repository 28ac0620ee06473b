"""_SnapshotSource (server/node/replica_host.py): the leader's side of one snapshot transfer."""
from __future__ import annotations

from server.node.replica_host import _SnapshotSource


def chunks(n: int, log: list[str]):
    try:
        for i in range(n):
            yield b"chunk%d" % i
    finally:
        log.append("released")     # the pinned engine snapshot is released here


def test_chunks_in_order_with_resends_and_the_end():
    log: list[str] = []
    src = _SnapshotSource(42, chunks(4, log))
    assert src.chunk(0) == b"chunk0"
    assert src.chunk(0) == b"chunk0"          # a resend of the chunk asked for
    assert src.chunk(1) == b"chunk1"
    assert src.chunk(2) == b"chunk2" and src.chunk(3) == b"chunk3"
    assert src.chunk(4) is None               # past the end: the last one was 3
    assert src.first_kept() >= 2              # acknowledged chunks are not kept
    del src
    assert log == ["released"]


def test_a_request_for_a_forgotten_chunk_is_detectable():
    src = _SnapshotSource(7, chunks(10, []))
    for i in range(6):
        src.chunk(i)
    assert 0 < src.first_kept() <= 5          # a restart at offset 0 must start a new snapshot
    assert src.chunk(9) == b"chunk9"          # skipping ahead reads through
    assert src.chunk(10) is None
