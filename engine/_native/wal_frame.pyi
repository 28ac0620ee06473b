WRITE_BATCH: int
MANIFEST_EDIT: int
FRAME_TYPES: frozenset[int]
HEADER_SIZE: int
MAX_PAYLOAD: int
OK: int
TRUNCATED: int
BAD_CRC: int
BAD_TYPE: int
FORMAT_VERSION: int
MAGIC: bytes
FILE_HEADER: bytes
HEADER_OK: int
HEADER_OTHER_VERSION: int
HEADER_LEGACY: int
HEADER_NONE: int

# `offset` / `base_offset`: the file offset of the buffer's first byte, which
# every frame's checksum covers (wal_frame.pyx's docstring).
def encode_frames(rtype: int, payloads: list[bytes], offset: int = 0) -> bytes: ...
def encode_wal_group(reps: list[bytes], first_lsns: list[int], offset: int = 0) -> bytes: ...
def decode_frames(buf: bytes, start: int = 0,
                  base_offset: int = 0) -> tuple[list[tuple[int, int, bytes]], int, int]: ...
def find_valid_frame(buf: bytes, start: int, base_offset: int = 0, legacy: bool = False) -> int: ...
def read_file_header(buf: bytes) -> tuple[int, int]: ...
