"""Flush and leveled compaction: what to compact, and doing it.

Picking (pick_compaction), LevelDB-style leveled:
  * L0 scores len(L0) / l0_compaction_trigger; level i >= 1 scores its bytes
    over max_bytes_for_level(i) (level1_max_bytes * ratio**(i-1)). The highest
    score >= 1 is compacted.
  * L0: all L0 files (they overlap) plus every overlapping L1 file.
  * Li: one file, taken round-robin after the last key compacted at that
    level, plus every overlapping file of Li+1.
  * A single input file with nothing to merge below it is moved, not rewritten.
Running (run_merge): the native merge loop (merge.compact) reads the inputs
without the GIL, drops what no snapshot can see, and writes output files of
about target_file_size, cut only between user keys. Outputs are fsynced and
their directory entries made durable before the VersionEdit naming them is
logged, so the MANIFEST never names a file a crash could lose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import failpoints
from engine._native import merge
from engine._native.table_builder import TableBuilder
from engine._native.table_cursor import LevelCursor
from engine.options import Options
from engine.version import FileMeta, Version, VersionEdit, VersionSet

FLUSH_FILE_SIZE = 2**62   # no memtable reaches it: one L0 file per flush


@dataclass
class Compaction:
    level: int
    inputs: list[FileMeta]
    next_inputs: list[FileMeta]
    bottommost: bool = False
    rewrite: bool = False   # output to `level` itself (manual compaction of the last level)

    @property
    def output_level(self) -> int:
        return self.level if self.rewrite else self.level + 1

    def is_trivial_move(self) -> bool:
        return not self.rewrite and len(self.inputs) == 1 and not self.next_inputs

    def key_range(self) -> tuple[bytes, bytes]:
        files = self.inputs + self.next_inputs
        return min(f.smallest for f in files), max(f.largest for f in files)


def _key_range(files: list[FileMeta]) -> tuple[bytes, bytes]:
    return min(f.smallest for f in files), max(f.largest for f in files)


def _is_bottommost(version: Version, output_level: int, lo: bytes, hi: bytes) -> bool:
    return all(not version.overlapping(lvl, lo, hi) for lvl in range(output_level + 1, len(version.levels)))


def _with_next_level(version: Version, level: int, inputs: list[FileMeta]) -> Compaction:
    # L0 compactions take every L0 file: L0 files overlap, and leaving an
    # older one behind could put an older version of a key above a newer one.
    lo, hi = _key_range(inputs)
    next_inputs = version.overlapping(level + 1, lo, hi)
    c = Compaction(level, inputs, next_inputs)
    c.bottommost = _is_bottommost(version, c.output_level, *c.key_range())
    return c


def pick_compaction(version: Version, options: Options, compact_pointer: dict[int, bytes]) -> Compaction | None:
    last = len(version.levels) - 1
    best_level, best_score = -1, 1.0
    for level in range(last):
        if level == 0:
            score = len(version.levels[0]) / options.l0_compaction_trigger
        else:
            score = version.level_bytes(level) / options.max_bytes_for_level(level)
        if score >= best_score:
            best_level, best_score = level, score
    if best_level < 0:
        return None
    if best_level == 0:
        return _with_next_level(version, 0, list(version.levels[0]))
    files = version.levels[best_level]
    pointer = compact_pointer.get(best_level)
    chosen = next((f for f in files if pointer is None or f.largest > pointer), files[0])
    return _with_next_level(version, best_level, [chosen])


def range_compaction(version: Version, level: int, lo: bytes | None, hi: bytes | None) -> Compaction | None:
    """The manual compaction of [lo, hi] from level into level + 1, or None."""
    inputs = version.overlapping(level, lo, hi)
    if not inputs:
        return None
    if level == 0:
        inputs = list(version.levels[0])
    return _with_next_level(version, level, inputs)


def rewrite_compaction(version: Version, level: int, lo: bytes | None, hi: bytes | None) -> Compaction | None:
    """Rewrites, in place, the files of `level` (>= 1) overlapping [lo, hi]:
    how a manual compaction reclaims overwritten versions, tombstones and
    dropped tables at the deepest level, which no compaction from above touches.
    The overlapping files are contiguous, so outputs cannot overlap others."""
    inputs = version.overlapping(level, lo, hi)
    if not inputs or level == 0:
        return None
    c = Compaction(level, inputs, [], rewrite=True)
    c.bottommost = _is_bottommost(version, level, *c.key_range())
    return c


class TableSink:
    """Creates the output tables of one flush or compaction."""

    def __init__(self, versions: VersionSet, options: Options, compression_level: int):
        self._versions = versions
        self._options = options
        self._compression_level = compression_level
        self._open: dict[int, tuple[object, int]] = {}
        self.outputs: list[FileMeta] = []
        self.bytes_written = 0

    def new_table(self) -> TableBuilder:
        if self._open or self.outputs:
            failpoints.hit("compaction.mid_merge")
        number = self._versions.new_file_number()
        f = self._versions.env.open_writable(self._versions.path_of("sst", number))
        o = self._options
        builder = TableBuilder(f, o.block_size, self._compression_level, o.bloom_bits_per_key)
        self._open[id(builder)] = (f, number)
        return builder

    def finish_table(self, builder: TableBuilder) -> None:
        f, number = self._open.pop(id(builder))
        env = self._versions.env
        if builder.entries == 0:
            f.close()
            env.remove(self._versions.path_of("sst", number))
            return
        props = builder.finish()
        f.sync()
        f.close()
        self.bytes_written += props["file_size"]
        self.outputs.append(FileMeta(number, props["file_size"], props["smallest"], props["largest"],
                                     props["entries"]))

    def abandon(self) -> None:
        """After a failure: closes and removes every output (none is in a Version)."""
        env = self._versions.env
        for f, _number in self._open.values():
            f.close()
        for number in [n for _, n in self._open.values()] + [m.number for m in self.outputs]:
            try:
                env.remove(self._versions.path_of("sst", number))
            except OSError:
                pass
        self._open.clear()
        self.outputs.clear()


@dataclass
class MergeResult:
    outputs: list[FileMeta] = field(default_factory=list)
    dropped_entries: int = 0
    bytes_written: int = 0


def run_merge(cursors: list, versions: VersionSet, options: Options, smallest_snapshot: int,
              drop_tombstones: bool, dropped_tables: set[int], flush: bool = False) -> MergeResult:
    """Merges sources (all immutable) into new durable tables of about
    options.target_file_size. A flush (flush=True) makes exactly one L0 file,
    compressed at options.flush_compression_level."""
    target_file_size = FLUSH_FILE_SIZE if flush else options.target_file_size
    sink = TableSink(versions, options, options.flush_compression_level if flush else options.compression_level)
    dropped = np.array(sorted(dropped_tables), dtype=np.uint32)
    try:
        n = merge.compact(merge.MergingCursor(cursors), sink, smallest_snapshot, drop_tombstones, dropped,
                          target_file_size, True)
        if sink.outputs:
            versions.env.sync_dir(versions.dbpath)
    except BaseException:
        sink.abandon()
        raise
    return MergeResult(sink.outputs, n, sink.bytes_written)


def compaction_cursors(c: Compaction, table_cache) -> list:
    if c.level == 0:
        cursors = [table_cache.get(f.number).cursor(fill_cache=False) for f in c.inputs]
    else:
        cursors = [LevelCursor([table_cache.get(f.number) for f in c.inputs], [f.largest for f in c.inputs], False)]
    if c.next_inputs:
        cursors.append(LevelCursor([table_cache.get(f.number) for f in c.next_inputs],
                                   [f.largest for f in c.next_inputs], False))
    return cursors


def compaction_edit(c: Compaction, result: MergeResult) -> VersionEdit:
    edit = VersionEdit()
    edit.delete = [(c.level, f.number) for f in c.inputs] + [(c.output_level, f.number) for f in c.next_inputs]
    edit.add = [(c.output_level, f) for f in result.outputs]
    return edit


def move_edit(c: Compaction) -> VersionEdit:
    f = c.inputs[0]
    return VersionEdit(delete=[(c.level, f.number)], add=[(c.output_level, f)])
