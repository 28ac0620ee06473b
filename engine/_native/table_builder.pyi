from typing import Any

TABLE_MAGIC: int
TABLE_VERSION: int
FOOTER_SIZE: int
TRAILER_SIZE: int
COMPRESSION_RAW: int
COMPRESSION_ZSTD: int
DEFAULT_BATCH_BYTES: int

def block_trailer(stored: bytes, compression: int) -> bytes: ...
def encode_footer(index_off: int, index_size: int, filter_off: int, filter_size: int, entries: int) -> bytes: ...

class TableBuilder:
    entries: int
    raw_bytes: int
    stored_bytes: int
    def __init__(self, file: Any, block_size: int = 4096, compression_level: int = 3,
                 bloom_bits_per_key: int = 10, batch_bytes: int = ...) -> None: ...
    def py_add(self, key: bytes, lsn: int, kind: int, seq: bytes, value: bytes) -> None: ...
    def finish(self) -> dict[str, Any]: ...
    @property
    def file_size_estimate(self) -> int: ...
