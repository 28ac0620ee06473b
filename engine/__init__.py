"""quorumkv's embedded storage engine: an LSM tree with a Cython hot path.

    from engine import DB
    with DB.open("/tmp/db") as db:
        db.create_table("stocks")
        db.put("stocks", b"a", b"120")
        db.get("stocks", b"a")          # Record(value=b"120", seq=b"...")
        list(db.scan("stocks"))         # [(b"a", b"120", seq)]
"""
from engine.db import DB, Entry, Record, Snapshot, WriteBatch
from engine.errors import (
                           CorruptionError,
                           DBClosedError,
                           DBLockedError,
                           InvalidArgumentError,
                           QuorumKVError,
                           TableExistsError,
                           TableNotFoundError,
)
from engine.options import Options

__all__ = ["DB", "Entry", "Record", "Snapshot", "WriteBatch", "Options", "QuorumKVError", "InvalidArgumentError",
           "TableNotFoundError", "TableExistsError", "CorruptionError", "DBLockedError", "DBClosedError"]
