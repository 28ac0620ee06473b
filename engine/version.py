"""Versions: which SSTables make up the database, and the MANIFEST that
records every change to that set atomically.

A Version is an immutable snapshot of the file set per level. Every flush,
compaction and table create/drop is a VersionEdit, appended (and fsynced) to
the MANIFEST before it takes effect; a crash at any point reopens to the state
after the last edit whose append completed. CURRENT names the live MANIFEST
and is replaced atomically (temp file, fsync, rename, fsync of the directory).

MANIFEST frame payload (type MANIFEST_EDIT): one VersionEdit as UTF-8 JSON,
{"v": 1, ...fields below...}; keys are hex strings. JSON because edits are
rare and small, and a human debugging a broken store can read them.

  add             [[level, number, size, smallest_hex, largest_hex, entries], ...]
  delete          [[level, number], ...]
  log_number      WAL segments below this number are no longer needed
  next_file       next file number to use
  last_lsn        highest lsn in the SSTables after this edit
  applied_index   highest applied_index all of whose writes are in SSTables
  max_seq         highest record seq (hex) in the SSTables: a reopened DB's
                  sequencer starts above it, so new writes win over old ones
  create_table    [[name, id], ...];  drop_table [id, ...]
  next_table_id   next table id to hand out

Invariants:
  1. In L1 and deeper, files of one level do not overlap and are sorted by key.
  2. L0 files may overlap; a newer L0 file (higher number) holds newer data.
  3. One user key's versions are never split across files of one level.
"""
from __future__ import annotations

import json
import os
import threading
import weakref
from dataclasses import dataclass, field

from engine import failpoints
from engine._native import wal_frame
from engine.env import Env
from engine.errors import CorruptionError
from engine.wal import LogWriter, read_log

EDIT_VERSION = 1


@dataclass(frozen=True)
class FileMeta:
    number: int
    size: int
    smallest: bytes
    largest: bytes
    entries: int

    def overlaps(self, lo: bytes | None, hi: bytes | None) -> bool:
        """Overlap with the closed key range [lo, hi] (None: unbounded)."""
        return (hi is None or self.smallest <= hi) and (lo is None or self.largest >= lo)


@dataclass
class VersionEdit:
    add: list[tuple[int, FileMeta]] = field(default_factory=list)
    delete: list[tuple[int, int]] = field(default_factory=list)
    log_number: int | None = None
    next_file: int | None = None
    last_lsn: int | None = None
    applied_index: int | None = None
    create_table: list[tuple[str, int]] = field(default_factory=list)
    drop_table: list[int] = field(default_factory=list)
    next_table_id: int | None = None
    max_seq: bytes | None = None

    def encode(self) -> bytes:
        d: dict = {"v": EDIT_VERSION}
        if self.add:
            d["add"] = [[lvl, f.number, f.size, f.smallest.hex(), f.largest.hex(), f.entries] for lvl, f in self.add]
        if self.delete:
            d["delete"] = [list(x) for x in self.delete]
        for name in ("log_number", "next_file", "last_lsn", "applied_index", "next_table_id"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.create_table:
            d["create_table"] = [list(x) for x in self.create_table]
        if self.drop_table:
            d["drop_table"] = list(self.drop_table)
        if self.max_seq is not None:
            d["max_seq"] = self.max_seq.hex()
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "VersionEdit":
        try:
            d = json.loads(payload)
            if d.get("v") != EDIT_VERSION:
                raise CorruptionError(f"version edit of unknown version {d.get('v')}")
            e = cls()
            e.add = [(lvl, FileMeta(num, size, bytes.fromhex(lo), bytes.fromhex(hi), n))
                     for lvl, num, size, lo, hi, n in d.get("add", [])]
            e.delete = [(lvl, num) for lvl, num in d.get("delete", [])]
            for name in ("log_number", "next_file", "last_lsn", "applied_index", "next_table_id"):
                setattr(e, name, d.get(name))
            e.create_table = [(n, i) for n, i in d.get("create_table", [])]
            e.drop_table = list(d.get("drop_table", []))
            if "max_seq" in d:
                e.max_seq = bytes.fromhex(d["max_seq"])
                if len(e.max_seq) != 16:
                    raise ValueError("max_seq is not 16 bytes")
            return e
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptionError(f"malformed version edit: {exc}") from None


class Version:
    """An immutable file set. levels[0] is newest first; deeper levels are
    sorted by smallest key."""

    def __init__(self, levels: list[list[FileMeta]]):
        self.levels = levels
        self._largest = [[f.largest for f in files] for files in levels]
        # Precomputed for point reads: L0 ranges newest first, then the
        # non-empty deeper levels with their largest keys for bisection.
        self.l0_ranges = [(f.smallest, f.largest, f.number) for f in levels[0]]
        self.deep_levels = [(self._largest[i], levels[i]) for i in range(1, len(levels)) if levels[i]]

    def files(self):
        for level, files in enumerate(self.levels):
            for f in files:
                yield level, f

    def level_bytes(self, level: int) -> int:
        return sum(f.size for f in self.levels[level])

    def overlapping(self, level: int, lo: bytes | None, hi: bytes | None) -> list[FileMeta]:
        return [f for f in self.levels[level] if f.overlaps(lo, hi)]

    def largest_keys(self, level: int) -> list[bytes]:
        return self._largest[level]


def _apply(levels: list[list[FileMeta]], edit: VersionEdit) -> list[list[FileMeta]]:
    out = [list(files) for files in levels]
    for lvl, num in edit.delete:
        out[lvl] = [f for f in out[lvl] if f.number != num]
    for lvl, f in edit.add:
        out[lvl].append(f)
    out[0].sort(key=lambda f: -f.number)
    for lvl in range(1, len(out)):
        out[lvl].sort(key=lambda f: f.smallest)
    return out


class VersionSet:
    """The current Version and the counters that go with it, made durable
    through the MANIFEST. Callers serialize log_and_apply (the DB mutex)."""

    def __init__(self, env: Env, dbpath: str, num_levels: int):
        self.env = env
        self.dbpath = dbpath
        self.num_levels = num_levels
        self.current = Version([[] for _ in range(num_levels)])
        self._live: weakref.WeakSet[Version] = weakref.WeakSet()
        self.next_file = 2
        self.log_number = 0
        self.last_lsn = 0
        self.applied_index = 0
        self.tables: dict[str, int] = {}
        self.dropped_tables: set[int] = set()
        self.next_table_id = 1
        self.max_seq = bytes(16)
        self.manifest_number = 0
        self._manifest: LogWriter | None = None
        self._number_lock = threading.Lock()
        self._failed: BaseException | None = None

    # --- files ---
    def new_file_number(self) -> int:
        with self._number_lock:
            n = self.next_file
            self.next_file += 1
            return n

    def path_of(self, kind: str, number: int) -> str:
        return os.path.join(self.dbpath, f"{number:06d}.{kind}")

    def live_files(self) -> set[int]:
        live = {f.number for _, f in self.current.files()}
        for v in list(self._live):
            live.update(f.number for _, f in v.files())
        return live

    # --- recovery ---
    def recover(self) -> None:
        current_path = os.path.join(self.dbpath, "CURRENT")
        name = self.env.read_file(current_path).decode().strip()
        if not name.startswith("MANIFEST-"):
            raise CorruptionError(f"CURRENT names {name!r}, not a MANIFEST", current_path)
        path = os.path.join(self.dbpath, name)
        if not self.env.exists(path):
            raise CorruptionError(f"CURRENT names {name}, which does not exist", current_path)
        contents = read_log(self.env, path)
        levels = [[] for _ in range(self.num_levels)]
        for offset, ftype, payload in contents.frames:
            if ftype != wal_frame.MANIFEST_EDIT:
                raise CorruptionError("non-edit frame in MANIFEST", path, offset)
            edit = VersionEdit.decode(payload)
            if any(lvl >= self.num_levels for lvl, _ in edit.add):
                raise CorruptionError(f"MANIFEST has files deeper than num_levels={self.num_levels}", path, offset)
            levels = _apply(levels, edit)
            self._absorb_counters(edit)
        self.current = Version(levels)
        self.manifest_number = int(name.split("-")[1])
        self.next_file = max(self.next_file, self.manifest_number + 1)

    def _absorb_counters(self, edit: VersionEdit) -> None:
        if edit.log_number is not None:
            self.log_number = edit.log_number
        if edit.next_file is not None:
            self.next_file = max(self.next_file, edit.next_file)
        if edit.last_lsn is not None:
            self.last_lsn = max(self.last_lsn, edit.last_lsn)
        if edit.applied_index is not None:
            self.applied_index = max(self.applied_index, edit.applied_index)
        for name, tid in edit.create_table:
            self.tables[name] = tid
        for tid in edit.drop_table:
            self.dropped_tables.add(tid)
            for name in [n for n, i in self.tables.items() if i == tid]:
                del self.tables[name]
        if edit.next_table_id is not None:
            self.next_table_id = max(self.next_table_id, edit.next_table_id)
        if edit.max_seq is not None:
            self.max_seq = max(self.max_seq, edit.max_seq)

    def _snapshot_edit(self) -> VersionEdit:
        return VersionEdit(
            add=[(lvl, f) for lvl, f in self.current.files()],
            log_number=self.log_number, next_file=self.next_file, last_lsn=self.last_lsn,
            applied_index=self.applied_index, create_table=sorted(self.tables.items()),
            drop_table=sorted(self.dropped_tables), next_table_id=self.next_table_id, max_seq=self.max_seq)

    def start_new_manifest(self) -> None:
        """Writes the whole state into a fresh MANIFEST and points CURRENT at it
        (on open: keeps the MANIFEST from growing without bound)."""
        number = self.new_file_number()
        name = f"MANIFEST-{number:06d}"
        writer = LogWriter(self.env, os.path.join(self.dbpath, name), number)
        writer.add(wal_frame.MANIFEST_EDIT, [self._snapshot_edit().encode()], sync=True)
        failpoints.hit("manifest.before_current")
        self.env.write_file_atomic(os.path.join(self.dbpath, "CURRENT"), (name + "\n").encode())
        old, self._manifest = self._manifest, writer
        if old is not None:
            old.close()
        self.manifest_number = number

    # --- changes ---
    def log_and_apply(self, edit: VersionEdit) -> Version:
        """Makes edit durable in the MANIFEST, then installs the new Version."""
        edit.next_file = self.next_file
        if edit.last_lsn is None:
            edit.last_lsn = self.last_lsn
        assert self._manifest is not None, "start_new_manifest() first"
        if self._failed is not None:
            raise self._failed
        try:
            self._manifest.add(wal_frame.MANIFEST_EDIT, [edit.encode()], sync=True)
        except BaseException as exc:
            # The MANIFEST may now end in a partial frame; appending after it
            # would turn a torn tail into mid-file corruption. Refuse all
            # further edits: reopening the DB starts a fresh MANIFEST.
            self._failed = exc
            raise
        failpoints.hit("manifest.after_append")
        self._absorb_counters(edit)
        self._live.add(self.current)
        self.current = Version(_apply(self.current.levels, edit))
        return self.current

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
