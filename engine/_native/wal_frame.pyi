WRITE_BATCH: int
MANIFEST_EDIT: int
FRAME_TYPES: frozenset[int]
HEADER_SIZE: int
MAX_PAYLOAD: int
OK: int
TRUNCATED: int
BAD_CRC: int
BAD_TYPE: int

def encode_frames(rtype: int, payloads: list[bytes]) -> bytes: ...
def encode_wal_group(reps: list[bytes], first_lsns: list[int]) -> bytes: ...
def decode_frames(buf: bytes, start: int = 0) -> tuple[list[tuple[int, int, bytes]], int, int]: ...
def find_valid_frame(buf: bytes, start: int) -> int: ...
