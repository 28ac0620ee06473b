"""Offline consistency check of a Version (DB.check()).

Reads every block of every live SSTable (so every checksum is verified) and
checks, against the MANIFEST's FileMeta: entry counts, smallest and largest
keys, strictly increasing internal order inside each file, and that files of
L1 and deeper are sorted and disjoint. Slow by design (Python per entry):
a tool for tests and operators, never on a serving path.
"""
from __future__ import annotations

from engine.errors import CorruptionError


def _internal_before(a: tuple[bytes, int], b: tuple[bytes, int]) -> bool:
    return a[0] < b[0] or (a[0] == b[0] and a[1] > b[1])


def check_version(version, tables) -> dict:
    files = entries = 0
    for _level, f in version.files():
        reader = tables.get(f.number)
        cursor = reader.cursor()
        e = cursor.py_seek_first()
        count = 0
        prev = None
        first = None
        while e is not None:
            key, lsn = e[0], e[1]
            if e[2] not in (0, 1):
                raise CorruptionError(f"entry of unknown kind {e[2]}", reader.path)
            if prev is not None and not _internal_before(prev, (key, lsn)):
                raise CorruptionError(f"entries out of order after key {prev[0]!r}", reader.path)
            if first is None:
                first = key
            prev = (key, lsn)
            count += 1
            e = cursor.py_next()
        if count != f.entries or count != reader.entries:
            raise CorruptionError(f"table has {count} entries, MANIFEST says {f.entries}, "
                                  f"footer says {reader.entries}", reader.path)
        if count and (first != f.smallest or prev[0] != f.largest):
            raise CorruptionError("table key range differs from the MANIFEST", reader.path)
        files += 1
        entries += count
    for level in range(1, len(version.levels)):
        files_at = version.levels[level]
        for a, b in zip(files_at, files_at[1:]):
            if not a.largest < b.smallest:
                raise CorruptionError(f"L{level} files {a.number} and {b.number} overlap or are unsorted")
    return {"files": files, "entries": entries}
