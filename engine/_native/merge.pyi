from typing import Any

import numpy as np

from engine._native.cursor import Cursor

class MergingCursor(Cursor):
    def __init__(self, children: list[Cursor]) -> None: ...

class VisibleScanner:
    def __init__(self, merged: MergingCursor, lo: bytes, hi: bytes, snapshot_lsn: int, prefix_len: int,
                 reverse: bool = False, keys_only: bool = False) -> None: ...
    def next_chunk(self, limit: int) -> list[tuple[bytes, bytes | None, bytes]]: ...

def compact(merged: MergingCursor, sink: Any, smallest_snapshot: int, drop_tombstones: bool,
            dropped_tables: np.ndarray, target_file_size: int, release_gil: bool) -> int: ...
