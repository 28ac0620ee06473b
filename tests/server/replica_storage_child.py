"""Child process of test_replica_storage.py: installs a snapshot into a replica
directory that already holds older data, under QUORUMKV_FAILPOINTS (which
may kill it at any step of the install)."""
from __future__ import annotations

import sys

from engine._native import write_batch
from server.node import entry_payload
from server.node.replica_storage import ReplicaStorage
from server.replication.messages import Entry, EntryKind, LogPosition
from server.replication.ready import HardState, StagedChunk


def seq(i: int) -> bytes:
    return (i + 1).to_bytes(8, "big") + bytes(8)


def entries(first: int, n: int, value: bytes) -> list[Entry]:
    return [Entry(1, i, EntryKind.WRITE, entry_payload.encode([], write_batch.encode_one(
                  write_batch.VALUE, 7, b"key-%04d" % i, value, seq(i), applied_index=i)))
            for i in range(first, first + n)]


def apply(storage: ReplicaStorage, es: list[Entry]) -> None:
    storage.apply([entry_payload.rep_of(e.payload) for e in es])


def main(source_dir: str, target_dir: str) -> None:
    source = ReplicaStorage(source_dir, node_id=1)
    es = entries(1, 50, b"new")
    source.log.persist(HardState(1, 50), es)
    apply(source, es)
    source.apply([write_batch.encode_one(write_batch.VALUE, 8, b"gone", b"x", seq(99))])
    source.drop_table(8)                               # the snapshot carries the dropped id
    chunks = list(source.snapshot_chunks(50))
    target = ReplicaStorage(target_dir, node_id=2)
    old = entries(1, 10, b"old")
    target.log.persist(HardState(1, 10), old)
    apply(target, old)
    target.db.flush()
    print("PREPARED", flush=True)
    staged = [StagedChunk(LogPosition(1, 50), i, c, i == len(chunks) - 1) for i, c in enumerate(chunks)]
    target.persist(staged, LogPosition(1, 50), (), None)
    print("INSTALLED", flush=True)
    target.close()
    source.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
