from collections.abc import Callable
from threading import Lock
from typing import Any

from engine._native.sequencer import Sequencer
from engine._native.skiplist import Memtable

class UnsyncedFront:
    mutex: Lock
    queued: Any
    on_error: Callable[[BaseException], None]
    slow_write: Callable[[bytes, int, int | None], None]
    mem: Memtable
    wal: Any
    sequencer: Sequencer
    enabled: bool
    open_for_writes: bool
    write_buffer_size: int
    wal_segment_bytes: int
    last_lsn: int
    visible_lsn: int
    writes: int
    records_written: int
    wal_bytes: int
    mem_applied_index: int
    def put(self, kind: int, table_id: int, key: bytes, value: bytes | None) -> bytes: ...
    def commit(self, rep: bytes, count: int, applied_index: int | None) -> bool: ...
