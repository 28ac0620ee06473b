"""Named failpoints: places where a test can make the process die on purpose.

Enabled only through the environment, read once at import:

    QUORUMKV_FAILPOINTS="flush.before_manifest=3,wal.after_write"

A listed point kills the process with SIGKILL at its n-th hit (1 when no
count is given), exactly as a power cut or kill -9 would at that instruction.
With the variable unset, hit() is one global lookup and a falsy test.
Points (grep for failpoints.hit to see where each sits):
  wal.after_write             WAL bytes written, not yet fsynced
  flush.after_table           flush output table durable, MANIFEST not yet updated
  compaction.mid_merge        a compaction output file has been started (second and later)
  compaction.before_manifest  compaction outputs durable, MANIFEST not yet updated
  manifest.after_append       an edit is durable in the MANIFEST, not yet installed
  manifest.before_current     a new MANIFEST is written, CURRENT still names the old one
  obsolete.mid_delete         between deletions of obsolete files
  snapshot.before_log         (server/node/replica_storage.py) the new DB is built and
                              durable, the replica's log does not name the snapshot yet
  snapshot.after_log          the log names the snapshot, the new DB is not in place
  snapshot.mid_swap           the old DB is renamed away, the new one not yet renamed in
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    points = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, n = item.partition("=")
        points[name] = int(n) if n else 1
    return points


_enabled = _parse(os.environ.get("QUORUMKV_FAILPOINTS", ""))


def hit(name: str) -> None:
    if not _enabled:
        return
    left = _enabled.get(name)
    if left is None:
        return
    left -= 1
    _enabled[name] = left
    if left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
