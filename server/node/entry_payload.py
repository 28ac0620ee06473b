"""The payload of a WRITE log entry: the clients' request ids, then one engine write batch.

    0         1         5
    +---------+---------+------------------------------+----------------------+
    | version | n       | request * n                  | rep                  |
    | u8 = 1  | u32 LE  | id u64 | first u32 | count u32 | write_batch.pyx      |
    +---------+---------+------------------------------+----------------------+

  request   a client request whose records are rep's records first ..
            first + count - 1; id 0 is not recorded (no deduplication asked).
  rep       the merged, stamped write batch every replica applies as is.

Why the ids are in the log: a router retries a write whose outcome it does
not know (its leader stepped down) under the same request id; whichever member
leads then must know whether that id already committed, and only the log is
shared by all members. Every replica records the ids it applies
(ReplicaHost's dedup window) and answers such a retry from there.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

VERSION = 1
_HEADER = struct.Struct("<BI")
_REQUEST = struct.Struct("<QII")


def encode(requests: Sequence[tuple[int, int, int]], rep: bytes) -> bytes:
    """requests: (id, first record, count) for each id != 0."""
    parts = [_HEADER.pack(VERSION, len(requests))]
    parts.extend(_REQUEST.pack(*r) for r in requests)
    parts.append(rep)
    return b"".join(parts)


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
