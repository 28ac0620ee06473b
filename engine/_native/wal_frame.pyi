WRITE_BATCH: int
MANIFEST_EDIT: int
FRAME_TYPES: frozenset[int]
HEADER_SIZE: int
MAX_PAYLOAD: int
OK: int
TRUNCATED: int
BAD_CRC: int
BAD_TYPE: int

# `offset` / `base_offset`: the file offset of the buffer's first byte, which
# every frame's checksum covers (wal_frame.pyx's docstring).
def encode_frames(rtype: int, payloads: list[bytes], offset: int = 0) -> bytes: ...
def encode_wal_group(reps: list[bytes], first_lsns: list[int], offset: int = 0) -> bytes: ...
def decode_frames(buf: bytes, start: int = 0,
                  base_offset: int = 0) -> tuple[list[tuple[int, int, bytes]], int, int]: ...
def find_valid_frame(buf: bytes, start: int, base_offset: int = 0) -> int: ...
def is_legacy_frame(buf: bytes, start: int = 0) -> bool: ...
