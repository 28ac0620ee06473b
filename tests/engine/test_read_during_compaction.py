"""A read without a registered snapshot against a compaction that finishes in the middle of it.

A point read or scan takes the visible lsn, then the SuperVersion (memtables
and files). A compaction that drops versions below the smallest snapshot,
the visible lsn if none is registered, could install its result between the
two: the read then looked for its lsn in files where the version visible at
that lsn was gone, with only a newer one left, and answered "absent" for a
key that had a value all along. The read now takes the SuperVersion first:
the files of a version a reader holds stay (Version live set), and what it
sees is the state at that moment, within the read. Found by a review
(session 10); here the compaction is run at the exact point, through the
DB's visible-lsn property.
"""
from __future__ import annotations

import pytest

from engine import DB
from engine.env_mem import MemEnv


@pytest.mark.parametrize("read", ["get", "scan"])
def test_a_compaction_between_a_reads_lsn_and_its_files_changes_nothing(monkeypatch, read):
    db = DB.open("/r/db", env=MemEnv(), sync="never")
    try:
        db.create_table("t")
        db.put("t", b"k", b"v1")
        db.flush()
        read_lsn = db.stats()["last_lsn"]
        db.put("t", b"k", b"v2")            # written after the read took its lsn (below)
        db.flush()
        fired = []
        real = DB._visible_lsn

        def visible(self):
            if not fired:
                fired.append(True)
                self.compact_range("t")      # a background compaction, finished right now
                return read_lsn             # the lsn the read took: before v2
            return real.fget(self)

        monkeypatch.setattr(DB, "_visible_lsn", property(visible, real.fset))
        if read == "get":
            got = db.get("t", b"k")
            value = None if got is None else got.value
        else:
            value = [r[1] for r in db.scan("t")]
            value = value[0] if value else None
        monkeypatch.undo()
        assert fired
        assert value == b"v1", f"the read at lsn {read_lsn} saw {value!r}"
    finally:
        db.close()
