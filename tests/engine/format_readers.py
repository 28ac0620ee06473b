"""Independent readers for pieces of the on-disk formats, shared by the
format and corruption tests: written from the format diagrams, not from the
engine's code, so a disagreement shows a bug on one side."""
from __future__ import annotations

import struct

# Table footer (table_builder.pyx): index_off, index_size, filter_off,
# filter_size, entries, version, crc, magic.
FOOTER = struct.Struct("<QIQIQIIQ")


def read_varint(buf: bytes, off: int) -> tuple[int, int]:
    """(value, offset after it) of the LEB128 varint at buf[off]."""
    v = shift = 0
    while True:
        b = buf[off]
        off += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, off
        shift += 7
