"""Every behaviour knob of the engine, with its default, in one place."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from engine._native.block_cache import BlockCache
from engine.env import DEFAULT_ENV, Env
from engine.errors import InvalidArgumentError

SYNC_ALWAYS = "always"   # a write returns once it is durable (fdatasync), shared by concurrent writers
SYNC_BATCH = "batch"     # like always, but the group leader waits up to batch_wait_us for company first
SYNC_NEVER = "never"     # the OS decides when bytes reach the disk; a power loss may lose recent writes
SYNC_MODES = (SYNC_ALWAYS, SYNC_BATCH, SYNC_NEVER)

KIB = 1024
MIB = 1024 * KIB
MAX_BACKGROUND_IDLE_SECONDS = 86_400.0   # a day: finite, so the idle wait's timeout stays valid


@dataclass(frozen=True)
class Options:
    create_if_missing: bool = True
    error_if_exists: bool = False
    env: Env = DEFAULT_ENV
    # Durability.
    wal: bool = True                    # False: the caller keeps its own log (replication) and
                                        # uses applied_index to know what to replay after a crash
    sync: str = SYNC_ALWAYS
    batch_wait_us: int = 200            # SYNC_BATCH: how long a group leader waits for more writers
    max_group_bytes: int = 4 * MIB      # one group commit carries at most this much
    wal_segment_bytes: int = 64 * MIB   # a WAL segment rolls over at this size
    # Memory.
    write_buffer_size: int = 64 * MIB   # memtable size that triggers a flush
    block_cache_bytes: int = 128 * MIB  # decoded data blocks kept in memory
    block_cache: BlockCache | None = None  # a cache shared with other DBs (then block_cache_bytes is
                                           # ignored): one memory bound for a process's many DBs
    # SSTables.
    block_size: int = 4 * KIB
    compression_level: int = 3          # zstd level of compaction outputs; 0 stores blocks raw
    flush_compression_level: int = 1    # zstd level of memtable flushes (L0): flushes are on the
                                        # write path's critical time, L0 data is rewritten soon
    bloom_bits_per_key: int = 10        # about 1% false positives
    target_file_size: int = 8 * MIB
    # Leveled compaction.
    num_levels: int = 7
    l0_compaction_trigger: int = 4      # L0 files that start a compaction
    l0_stop_trigger: int = 12           # L0 files at which writes stall until compaction catches up
    level1_max_bytes: int = 64 * MIB
    level_size_ratio: int = 10
    # Identity.
    node_id: int = 0                    # node id in the seqs this DB generates
    # Threads.
    background_idle_seconds: float = 10.0  # the background thread exits after this long without work
                                           # and starts again on demand: a node's idle replicas hold none

    def validate(self) -> "Options":
        if self.sync not in SYNC_MODES:
            raise InvalidArgumentError(f"sync must be one of {', '.join(SYNC_MODES)}, got {self.sync!r}")
        positive = ("write_buffer_size", "block_size", "target_file_size", "level1_max_bytes",
                    "wal_segment_bytes", "max_group_bytes", "num_levels", "l0_compaction_trigger")
        for name in positive:
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.background_idle_seconds <= MAX_BACKGROUND_IDLE_SECONDS:
            raise InvalidArgumentError(f"background_idle_seconds must be positive, at most "
                                       f"{MAX_BACKGROUND_IDLE_SECONDS}, got {self.background_idle_seconds}")
        if self.num_levels < 2:
            raise InvalidArgumentError("num_levels must be at least 2")
        if self.l0_stop_trigger < self.l0_compaction_trigger:
            raise InvalidArgumentError("l0_stop_trigger must be >= l0_compaction_trigger")
        if self.level_size_ratio < 2:
            raise InvalidArgumentError("level_size_ratio must be at least 2")
        if not 0 <= self.compression_level <= 22 or not 0 <= self.flush_compression_level <= 22:
            raise InvalidArgumentError("compression_level and flush_compression_level must be 0 (off) to 22")
        if not 0 <= self.node_id < 2**32:
            raise InvalidArgumentError("node_id must fit in 32 bits")
        if self.block_cache is not None and not isinstance(self.block_cache, BlockCache):
            raise InvalidArgumentError("block_cache must be an engine._native.block_cache.BlockCache (or None)")
        if self.batch_wait_us < 0 or self.block_cache_bytes < 0 or self.bloom_bits_per_key < 0:
            raise InvalidArgumentError("batch_wait_us, block_cache_bytes and bloom_bits_per_key must be >= 0")
        return self

    @classmethod
    def from_kwargs(cls, **kwargs) -> "Options":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown option(s): {', '.join(unknown)}")
        return replace(cls(), **kwargs).validate()

    def max_bytes_for_level(self, level: int) -> int:
        return self.level1_max_bytes * self.level_size_ratio ** max(0, level - 1)
