"""The payload of a WRITE log entry: the clients' request ids and one engine
write batch, or a table drop.

Writes (type 1):

    0         1         5
    +---------+---------+------------------------------+----------------------+
    | version | n       | request * n                  | rep                  |
    | u8 = 1  | u32 LE  | id u64 | first u32 | count u32 | write_batch.pyx      |
    +---------+---------+------------------------------+----------------------+

  request   a client request whose records are rep's records first ..
            first + count - 1; id 0 is not recorded (no deduplication asked).
  rep       the merged, stamped write batch every replica applies as is.

Table drop (type 2): every replica drops the table from its engine (its
space is reclaimed; the id is never reused, server/meta/catalog.py).

    0          1
    +----------+-----------+
    | type = 2 | table id  |
    | u8       | u32 LE    |
    +----------+-----------+

Why the ids are in the log: a router retries a write whose outcome it does
not know (its leader stepped down) under the same request id; whichever member
leads then must know whether that id already committed, and only the log is
shared by all members. Every replica records the ids it applies
(ReplicaHost's dedup window) and answers such a retry from there.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

VERSION = 1        # the type byte of a write payload
DROP_TABLE = 2
_HEADER = struct.Struct("<BI")
_DROP = struct.Struct("<BI")
_REQUEST = struct.Struct("<QII")


def encode(requests: Sequence[tuple[int, int, int]], rep: bytes) -> bytes:
    """requests: (id, first record, count) for each id != 0."""
    parts = [_HEADER.pack(VERSION, len(requests))]
    parts.extend(_REQUEST.pack(*r) for r in requests)
    parts.append(rep)
    return b"".join(parts)


def encode_drop(table_id: int) -> bytes:
    return _DROP.pack(DROP_TABLE, table_id)


def dropped_table(payload: bytes) -> int | None:
    """The table id of a drop payload, None for a write payload."""
    if payload[:1] == b"\x02" and len(payload) == _DROP.size:
        return _DROP.unpack(payload)[1]
    return None


def decode(payload: bytes) -> tuple[list[tuple[int, int, int]], bytes]:
    """(requests, rep). Raises ValueError for a payload of another version or too short."""
    if len(payload) < _HEADER.size:
        raise ValueError("write entry payload shorter than its header")
    version, n = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise ValueError(f"write entry payload of version {version} (this node reads {VERSION})")
    end = _HEADER.size + n * _REQUEST.size
    if len(payload) < end:
        raise ValueError("write entry payload shorter than its request list")
    requests = [_REQUEST.unpack_from(payload, _HEADER.size + i * _REQUEST.size) for i in range(n)]
    return requests, payload[end:]


def rep_of(payload: bytes) -> bytes:
    """Just the write batch (no request list decoded)."""
    if len(payload) < _HEADER.size:
        raise ValueError("write entry payload shorter than its header")
    version, n = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise ValueError(f"write entry payload of version {version} (this node reads {VERSION})")
    return payload[_HEADER.size + n * _REQUEST.size:]
