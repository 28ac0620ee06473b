"""MetaStore: the metadata manager's durable state, embedded backend.

Purpose: the MM's small, critical state (design section 4: back it up on
every change) as a map of records, each change appended and fsynced before
the MM acts on it. Implements MetaBackend (server/meta/backend.py); the etcd
backend (etcd_store.py) keeps the same records in etcd instead.

On-disk layout in the MM's data directory:

    meta.log        frames (engine/_native/wal_frame.pyx framing, CRC32C), each
                    payload one JSON object: {"kind": K, "key": KEY, "value": V}
                    (value null deletes the record), or {"changes": [such
                    objects]}: several records changed at once (put_many;
                    an MM older than this frame cannot replay a log that
                    holds one: roll back only after a clean open, which
                    folds the log into the snapshot)
    meta.snapshot   {"records": {"K/KEY": V, ...}} written atomically
                    (write, fsync, rename, fsync dir) every SNAPSHOT_EVERY
                    changes; meta.log then starts over empty

Durability per change: put() appends one frame and fsyncs it before it
returns (a new meta.log's directory entry is fsynced too), so every change
the MM acted on survives a crash or power loss. A write or fsync that fails
raises MetaStoreError and the store refuses every later change (a frame
written after a torn one would be lost on replay); the embedded MM then ends
its process (server/cli.py), and a restart replays what is durable. One MM
per directory: the store flocks LOCK. Periodic snapshots bound the
log and the replay: every SNAPSHOT_EVERY changes, and at every open (the
replayed state goes into a fresh snapshot before the log starts over, since
opening a log file for writing truncates it).

Replay: snapshot, then the log, with the WAL's rules (engine/wal.py
read_log): a torn tail is dropped, damage before valid frames raises
CorruptionError. A crash between a snapshot's rename and the log's reset
replays changes the snapshot already holds; each frame sets a whole record,
so that is harmless.

Backup: `backup()` gives the document of server/meta/backup.py; `write_new`
makes a store from one (`quorumkv meta restore`).

Thread-safety: none; the MM's loop owns it.
"""
from __future__ import annotations

import json
import os
from typing import Any

from engine._native import wal_frame
from engine.env import DEFAULT_ENV, Env
from engine.wal import LogWriter, read_log
from server.meta import backup as backup_format
from server.meta.backend import MetaStoreError, RecordMap

SNAPSHOT_EVERY = 1000
LOCK_NAME = "LOCK"


class MetaStore(RecordMap):
    def __init__(self, directory: str, env: Env = DEFAULT_ENV):
        self.directory = directory
        self.env = env
        env.mkdirs(directory)
        # One MM per directory: a second opener would truncate the log under
        # the first and both would issue epochs (DBLockedError instead).
        self._lock = env.lock(os.path.join(directory, LOCK_NAME))
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise

    def _open(self) -> None:
        env, directory = self.env, self.directory
        self._failure: BaseException | None = None
        self._log_path = os.path.join(directory, "meta.log")
        self._snapshot_path = os.path.join(directory, "meta.snapshot")
        self.records: dict[str, Any] = {}
        if env.exists(self._snapshot_path):
            self.records = json.loads(env.read_file(self._snapshot_path))["records"]
        replayed = 0
        if env.exists(self._log_path):
            contents = read_log(env, self._log_path)
            for _offset, _ftype, payload in contents.frames:
                self._apply(json.loads(payload))
                replayed += 1
        if replayed:
            # Opening the log for writing truncates it: what it held goes into the snapshot first.
            env.write_file_atomic(self._snapshot_path, self._snapshot_document())
        self._writer = LogWriter(env, self._log_path)
        # The log's name must survive a crash: a new file's needs this; a
        # truncated one keeps its directory entry on POSIX file systems, but
        # the Env contract promises no more than a new file's (MemEnv models
        # it so), and one fsync per open is nothing.
        env.sync_dir(directory)
        self._changes = 0
        self.fsyncs = 0

    @classmethod
    def write_new(cls, directory: str, records: dict[str, Any], env: Env = DEFAULT_ENV) -> None:
        """Makes `directory` hold a store of exactly `records` (a restore): the snapshot is
        written atomically, then any old log is removed. Requires: no MetaStore is open on it."""
        env.mkdirs(directory)
        lock = env.lock(os.path.join(directory, LOCK_NAME))   # DBLockedError while an MM runs on it
        try:
            snapshot = os.path.join(directory, "meta.snapshot")
            env.write_file_atomic(snapshot, json.dumps({"records": records}).encode())
            log = os.path.join(directory, "meta.log")
            if env.exists(log):
                env.remove(log)
                env.sync_dir(directory)
        finally:
            lock.release()

    def put(self, kind: str, key: str | int, value: Any) -> None:
        """Durably sets (value None: deletes) one record; returns once fsynced.
        Raises MetaStoreError if it could not, and refuses every later change:
        a failed write may leave a torn frame that only a reopen (which drops a
        torn tail) can take away, and a frame written after it would be lost."""
        self._append({"kind": kind, "key": str(key), "value": value})

    def put_many(self, changes: list[tuple[str, str | int, Any]]) -> None:
        """Several records in one frame, so one fsync, and all or none after a crash."""
        self._append({"changes": [{"kind": k, "key": str(key), "value": v} for k, key, v in changes]})

    def _append(self, change: dict) -> None:
        if self._failure is not None:
            raise MetaStoreError(f"the metadata store refuses changes after an I/O error ({self._failure}): "
                                 "restart the metadata manager")
        try:
            self._writer.add(wal_frame.WRITE_BATCH, [json.dumps(change, separators=(",", ":")).encode()], True)
        except OSError as exc:
            self._failure = exc
            raise MetaStoreError(f"a metadata change could not be made durable: {exc}") from exc
        self.fsyncs += 1
        self._apply(change)
        self._changes += 1
        if self._changes >= SNAPSHOT_EVERY:
            try:
                self._snapshot()
            except OSError as exc:   # the change is durable; the store is not fit for the next one
                self._failure = exc
                raise MetaStoreError(f"the metadata store's snapshot failed: {exc}") from exc

    def _apply(self, change: dict) -> None:
        if "changes" in change:
            for one in change["changes"]:
                self._apply(one)
            return
        name = f"{change['kind']}/{change['key']}"
        if change["value"] is None:
            self.records.pop(name, None)
        else:
            self.records[name] = change["value"]

    def _snapshot_document(self) -> bytes:
        return json.dumps({"records": self.records}).encode()

    def _snapshot(self) -> None:
        self.env.write_file_atomic(self._snapshot_path, self._snapshot_document())
        self._writer.close()
        self.env.remove(self._log_path)
        self._writer = LogWriter(self.env, self._log_path)
        self.env.sync_dir(self.directory)
        self._changes = 0

    def backup(self) -> bytes:
        """The whole state as one backup document (server/meta/backup.py)."""
        return backup_format.encode(self.records)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._lock.release()
