"""The metadata manager's backup document: `quorumkv meta backup` and `restore`.

Format (UTF-8 JSON, one object; keys sorted, so equal states give equal bytes):

    {
      "format":  "quorumkv-meta-backup",
      "version": 1,
      "records": {"<kind>/<key>": <JSON value>, ...}
    }

`records` is the MetaBackend's whole map (server/meta/backend.py): node
addresses, groups (members, epoch, leader, config), tables and their ranges,
counters. The same document comes from either backend and restores into
either, so a backup also moves a cluster's metadata between them.

Backup is online (Meta.Backup, answered by the active MM from its loop: a
consistent state). Restore is offline: into a new embedded store directory
(refusing a non-empty one unless forced), or into etcd under the cluster's
prefix (refusing if records or an active MM are there unless forced); see
`restore_embedded` here and `EtcdStore.restore` (etcd_store.py).

Restoring moves the state past anything the lost MM may have handed out
after the backup (`for_restore`, applied by both restore paths): every
group's epoch goes up by EPOCH_GAP and its leader is forgotten, so the
restored MM elects each group anew in an epoch no earlier MM can have issued
(reissuing one could give an epoch two leaders: the nodes accept a promise
request for the epoch they promised, and log matching trusts (epoch, index));
the table id counter goes up by TABLE_ID_GAP, so a table created after the
backup, whose id the engines know (perhaps as dropped), is never named again.
A restore is meant for a lost MM state, not for undoing changes.

Thread-safety: pure functions; `restore_embedded` requires that no MM runs on
the directory.
"""
from __future__ import annotations

import json
import os
from typing import Any

from engine.env import DEFAULT_ENV, Env

FORMAT = "quorumkv-meta-backup"
VERSION = 1
EPOCH_GAP = 1 << 32      # more elections than any MM runs between a backup and its loss
TABLE_ID_GAP = 1 << 20   # more tables than any MM creates between a backup and its loss


class BackupError(ValueError):
    """The document is not a backup this version can read, or the target refuses it."""


def encode(records: dict[str, Any]) -> bytes:
    return json.dumps({"format": FORMAT, "version": VERSION, "records": records}, sort_keys=True).encode()


def decode(document: bytes) -> dict[str, Any]:
    """The records of a backup document. Raises BackupError for anything else."""
    try:
        doc = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"not a metadata backup (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError("not a metadata backup (no \"format\": \"quorumkv-meta-backup\")")
    if doc.get("version") != VERSION:
        raise BackupError(f"backup version {doc.get('version')!r} is not supported (this is version {VERSION})")
    records = doc.get("records")
    if not isinstance(records, dict) or not all(isinstance(k, str) and "/" in k for k in records):
        raise BackupError("malformed backup: \"records\" must map \"kind/key\" names to values")
    return records


def for_restore(records: dict[str, Any]) -> dict[str, Any]:
    """The records to restore from a backup's: epochs past EPOCH_GAP with no
    leader, the table id counter past TABLE_ID_GAP (see the module docstring).
    Raises BackupError if the table ids would run out."""
    from server.node.dedup import DEDUP_TABLE_ID

    out = dict(records)
    for name, rec in records.items():
        if name.startswith("group/") and isinstance(rec, dict):
            out[name] = dict(rec, epoch=int(rec.get("epoch", 0)) + EPOCH_GAP, leader=None,
                             established=bool(rec.get("established") or rec.get("leader")))
    counter = int(records.get("counter/table_id") or 0) + TABLE_ID_GAP
    if counter >= DEDUP_TABLE_ID:
        raise BackupError("table ids would run out: this state cannot be restored again")
    out["counter/table_id"] = counter
    return out


def restore_embedded(directory: str, records: dict[str, Any], force: bool = False, env: Env = DEFAULT_ENV) -> None:
    """Writes a new embedded store (server/meta/store.py) holding `records` into `directory`.
    Requires: no MM runs on `directory`. Raises BackupError when the directory holds
    anything and `force` is not set; with `force` the store's own files are replaced and
    anything else is left alone."""
    from server.meta.store import MetaStore

    if env.exists(directory) and env.list_dir(directory) and not force:
        raise BackupError(f"{directory} is not empty (use --force to replace the metadata store in it)")
    MetaStore.write_new(directory, for_restore(records), env)


def write_file_durably(path: str, data: bytes) -> None:
    """Writes `path` (a backup file) atomically: temp file, fsync, rename, fsync of the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
