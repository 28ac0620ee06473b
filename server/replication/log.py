"""ReplicatedLog: one replica's in-memory view of its replicated log.

Purpose: the entries after a base position, which part of them is durable,
the commit and applied indexes, and the log-matching rules (README L1-L4).
The node's storage holds the durable copy; this view tells it what to write.

Invariants (checked by `check()`; InvariantViolation names the number):
  1. Entries are contiguous from base.index + 1 and their epochs never decrease.
  2. base.index <= applied_index <= commit_index <= last_index.
  3. stable_index (entries up to it are durable and identical to this view)
     lies in [base.index, last_index].
  4. commit_index never decreases; no entry at or below it is ever truncated (L3).

Thread-safety: none; owned by one Replica.
"""
from __future__ import annotations

from server.replication.errors import InvariantViolation
from server.replication.messages import ZERO_POSITION, Entry, LogPosition


class ReplicatedLog:
    """Entries base.index+1 .. last_index, plus commit/applied/stable marks."""

    # last_index and stable_index are attributes (read-only outside this class),
    # not properties: the leader reads them dozens of times per write. check()
    # verifies that last_index follows the entries.
    __slots__ = ("_base", "_entries", "stable_index", "commit_index", "applied_index", "last_index")

    def __init__(self, base: LogPosition = ZERO_POSITION, entries: list[Entry] | None = None,
                 commit_index: int = 0, applied_index: int | None = None):
        """Restores a durable log. Requires: entries follow `base` contiguously;
        applied_index <= commit_index <= the last index (the Ready contract
        persists entries before the hard state, so a durable commit index is
        never past the durable log)."""
        self._base = base
        self._entries: list[Entry] = list(entries or ())
        self.last_index = base.index + len(self._entries)
        self.stable_index = self.last_index
        self.applied_index = base.index if applied_index is None else max(applied_index, base.index)
        self.commit_index = max(commit_index, self.applied_index)  # applied entries are committed
        self.check()

    # ---------------------------------------------------------------- reading
    @property
    def base(self) -> LogPosition:
        return self._base

    @property
    def first_index(self) -> int:
        return self._base.index + 1

    def last_position(self) -> LogPosition:
        if self._entries:
            e = self._entries[-1]
            return LogPosition(e.epoch, e.index)
        return self._base

    def last_epoch(self) -> int:
        """last_position().epoch without building the position (invariant checks run it every step)."""
        return self._entries[-1].epoch if self._entries else self._base.epoch

    def epoch_at(self, index: int) -> int | None:
        """The epoch of the entry at `index`; None when compacted away or past the end."""
        if index == self._base.index:
            return self._base.epoch
        if index < self._base.index or index > self.last_index:
            return None
        return self._entries[index - self._base.index - 1].epoch

    def entry(self, index: int) -> Entry:
        """Requires: first_index <= index <= last_index."""
        return self._entries[index - self._base.index - 1]

    def entries(self, lo: int, hi: int, max_count: int | None = None, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo..hi inclusive, cut after max_count entries or once max_bytes
        of payload are reached (always at least one). Requires: lo >= first_index."""
        if lo > hi:
            return []
        if lo < self.first_index:
            raise InvariantViolation(f"entries({lo}) below the first index {self.first_index}")
        start = lo - self._base.index - 1
        stop = hi - self._base.index
        if max_count is not None:
            stop = min(stop, start + max_count)
        out = self._entries[start:stop]
        if max_bytes is not None and len(out) > 1:
            total = 0
            for i, e in enumerate(out):
                total += len(e.payload)
                if total > max_bytes and i > 0:
                    return out[:i]
        return out

    def unstable_entries(self) -> list[Entry]:
        """Entries not yet durable: what the next Ready asks the node to write."""
        return self._entries[self.stable_index - self._base.index:]

    def committed_unapplied(self, max_count: int | None = None) -> list[Entry]:
        """Entries applied_index+1 .. commit_index, in order."""
        lo = self.applied_index + 1
        hi = self.commit_index if max_count is None else min(self.commit_index, self.applied_index + max_count)
        return self.entries(lo, hi) if lo <= hi else []

    def is_up_to_date(self, other: LogPosition) -> bool:
        """Raft's election comparison: is this log at least as up to date as `other`?"""
        return self.last_position() >= other

    def conflict_hint(self, prev_index: int) -> int:
        """For a rejected Append at prev_index: the prev index the leader should try
        next. The end of this log if it is shorter, else the entry before the
        first entry of the conflicting epoch (at least the commit index, which
        matches every leader's log)."""
        if prev_index > self.last_index:
            return self.last_index
        epoch = self.epoch_at(prev_index)
        index = prev_index - 1
        while index > self.commit_index and self.epoch_at(index) == epoch:
            index -= 1
        return index

    # --------------------------------------------------------------- changing
    def append_own(self, entries: list[Entry]) -> None:
        """A leader appends entries of its epoch (L1). Requires: contiguous, epochs >= the last."""
        last = self.last_position()
        for e in entries:
            if e.index != last.index + 1 or e.epoch < last.epoch:
                raise InvariantViolation(f"L1: entry {e.epoch}.{e.index} does not follow {last}")
            last = LogPosition(e.epoch, e.index)
        self._entries.extend(entries)
        self.last_index = self._base.index + len(self._entries)

    def accept(self, prev: LogPosition, entries: tuple[Entry, ...] | list[Entry]) -> int | None:
        """L2: a follower takes entries following prev. Returns the last index known
        to match the leader's log, or None when prev does not match.
        Raises InvariantViolation instead of truncating a committed entry (L3)."""
        if prev.index < self._base.index:
            # Entries up to the base are committed here, so they match every
            # leader's log: skip them (and check the one at the base).
            skip = self._base.index - prev.index
            if len(entries) <= skip:
                return prev.index + len(entries)
            if entries[skip - 1].epoch != self._base.epoch:
                raise InvariantViolation(f"L3: leader's entry {entries[skip - 1].position} differs from the "
                                         f"compacted base {self._base}")
            entries = entries[skip:]
            prev = self._base
        elif self.epoch_at(prev.index) != prev.epoch:
            return None
        match = prev.index
        for i, e in enumerate(entries):
            have = self.epoch_at(e.index)
            if have == e.epoch:
                match = e.index
                continue
            if have is not None:
                self._truncate_from(e.index)
            self._entries.extend(entries[i:])
            self.last_index = self._base.index + len(self._entries)
            return entries[-1].index
        return match

    def _truncate_from(self, index: int) -> None:
        if index <= self.commit_index:
            raise InvariantViolation(f"L3: truncating entry {index} at or below commit index {self.commit_index}")
        del self._entries[index - self._base.index - 1:]
        self.last_index = index - 1
        if self.stable_index >= index:
            self.stable_index = index - 1

    def commit_to(self, index: int) -> bool:
        """Raises the commit index (never lowers it). Returns True if it moved."""
        if index <= self.commit_index:
            return False
        if index > self.last_index:
            raise InvariantViolation(f"2: commit index {index} past the last index {self.last_index}")
        self.commit_index = index
        return True

    def stable_to(self, position: LogPosition) -> None:
        """The node made entries up to `position` durable (advance()); ignored if
        the entry at that index has since been replaced."""
        if self.epoch_at(position.index) == position.epoch and position.index > self.stable_index:
            self.stable_index = position.index

    def applied_to(self, index: int) -> None:
        if index < self.applied_index or index > self.commit_index:
            raise InvariantViolation(f"2: applied index {self.applied_index} -> {index}, commit {self.commit_index}")
        self.applied_index = index

    def compact(self, index: int) -> None:
        """Drops entries up to `index` (S5). Requires: index <= applied_index and
        index <= stable_index; a no-op at or below the base."""
        if index <= self._base.index:
            return
        if index > self.applied_index or index > self.stable_index:
            raise InvariantViolation(f"S5: compacting to {index} past applied {self.applied_index} "
                                     f"or stable {self.stable_index}")
        epoch = self.epoch_at(index)
        assert epoch is not None
        del self._entries[:index - self._base.index]
        self._base = LogPosition(epoch, index)

    def restore(self, snapshot: LogPosition) -> None:
        """Replaces the whole log by a snapshot's base position (S4). The node
        installs the data; applied, commit and stable all move to the snapshot.
        Requires: the log does not hold the snapshot's position (then the entries
        after it could be acknowledged ones, and must not be dropped)."""
        if snapshot.index < self.commit_index:
            raise InvariantViolation(f"S4: snapshot {snapshot} below commit index {self.commit_index}")
        if self.epoch_at(snapshot.index) == snapshot.epoch:
            raise InvariantViolation(f"S4: restoring snapshot {snapshot} over a log that holds it")
        self._base = snapshot
        self._entries = []
        self.last_index = snapshot.index
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        self.stable_index = snapshot.index

    # -------------------------------------------------------------- checking
    def check(self) -> None:
        """Invariants 1-3, O(1): contiguity is checked where entries are added."""
        b = self._base.index
        if not (b <= self.applied_index <= self.commit_index <= self.last_index):
            raise InvariantViolation(f"2: base {b} applied {self.applied_index} commit {self.commit_index} "
                                     f"last {self.last_index}")
        if not (b <= self.stable_index <= self.last_index):
            raise InvariantViolation(f"3: stable {self.stable_index} outside [{b}, {self.last_index}]")
        if self._entries and self._entries[0].index != b + 1:
            raise InvariantViolation(f"1: first entry {self._entries[0].index} after base {b}")
        if self.last_index != b + len(self._entries):
            raise InvariantViolation(f"1: last index {self.last_index} but {len(self._entries)} entries after {b}")

    def check_full(self) -> None:
        """Invariant 1 over every entry, O(n): for tests."""
        self.check()
        prev = self._base
        for e in self._entries:
            if e.index != prev.index + 1 or e.epoch < prev.epoch:
                raise InvariantViolation(f"1: entry {e.epoch}.{e.index} after {prev}")
            prev = LogPosition(e.epoch, e.index)
