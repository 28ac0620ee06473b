"""Record, and the rules the SDK applies to arguments before anything is sent.

Purpose: the value type `get`, `get_many` and `list` return, and one place
that turns the caller's table names, keys, values and seqs into what the wire
carries (server/proto/kv.proto).

Contract:
  1. Keys and values are bytes. A `str` key or value is accepted as a
     convenience and encoded as UTF-8; bytearray and memoryview are copied to
     bytes. Anything else raises TypeError.
  2. Table names are `str`.
  3. Sizes are checked here, before sending, with the server's limits (a key
     is 1 to MAX_KEY_SIZE bytes, a value at most MAX_VALUE_SIZE bytes, a seq
     SEQ_SIZE bytes): one oversized op must not break a stream that carries
     other callers' ops. A violation raises InvalidArgument.

Thread-safety: pure functions and an immutable dataclass.
"""
from __future__ import annotations

from dataclasses import dataclass

from server.client.errors import InvalidArgument

MAX_KEY_SIZE = 4096          # bytes; the engine's limit (README.md)
MAX_VALUE_SIZE = 1 << 20     # bytes
SEQ_SIZE = 16                # timestamp ns (8), counter (4), node id (4), big-endian


@dataclass(frozen=True, slots=True)
class Record:
    """One record: its key, its value (b"" when listed with keys_only) and its 16-byte seq.

    Seqs of one key increase with every write, so `seq` is what `if_seq=` takes."""
    key: bytes
    value: bytes
    seq: bytes


BytesLike = bytes | bytearray | memoryview | str


def as_table(table: str) -> str:
    if not isinstance(table, str):
        raise TypeError(f"a table name is a str, not {type(table).__name__}")
    return table


def as_bytes(data: BytesLike, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a {what} is bytes (or str, encoded as UTF-8), not {type(data).__name__}")


def as_key(key: BytesLike) -> bytes:
    b = as_bytes(key, "key")
    if not 1 <= len(b) <= MAX_KEY_SIZE:
        raise InvalidArgument(f"a key is 1 to {MAX_KEY_SIZE} bytes, this one is {len(b)}")
    return b


def as_value(value: BytesLike) -> bytes:
    b = as_bytes(value, "value")
    if len(b) > MAX_VALUE_SIZE:
        raise InvalidArgument(f"a value is at most {MAX_VALUE_SIZE} bytes, this one is {len(b)}")
    return b


def as_bound(bound: BytesLike | None) -> bytes:
    """A list range bound: None (open) is sent as b""."""
    return b"" if bound is None else as_bytes(bound, "range bound")


def as_seq(seq: bytes | None) -> bytes:
    """An `if_seq` condition: None (no condition) is sent as b""."""
    if seq is None:
        return b""
    if not isinstance(seq, (bytes, bytearray)) or len(seq) != SEQ_SIZE:
        raise InvalidArgument(f"if_seq is the {SEQ_SIZE}-byte seq of a record (from put, delete or get)")
    return bytes(seq)
