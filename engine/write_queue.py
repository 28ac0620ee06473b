"""Group commit: concurrent writers share one WAL write and one fdatasync.

Protocol (LevelDB's writer queue), all under the DB mutex:
  1. A writer appends itself to the queue and waits until it is at the front
     (it is then the leader) or a leader has finished its write for it.
  2. The leader takes a group from the front of the queue (up to
     max_group_bytes), assigns lsns, and releases the mutex to write the group
     to the WAL with one write() and at most one fdatasync, then applies it to
     the memtable. Writers arriving meanwhile queue behind the group and form
     the next one: under load, one fsync covers many writes.
  3. The leader marks every member done (with the error, if the write failed)
     and wakes the next front writer, who leads the next group.
Each caller returns only once its own record is durable (or failed).
Thread-safety: every method requires the DB mutex held by the caller.
"""
from __future__ import annotations

import threading
from collections import deque


class Writer:
    __slots__ = ("rep", "count", "applied_index", "lsn", "done", "error", "cv", "control")

    def __init__(self, rep: bytes | None, count: int, applied_index: int | None, control: str | None = None):
        self.rep = rep
        self.count = count
        self.applied_index = applied_index
        self.lsn = 0
        self.done = False
        self.error: BaseException | None = None
        self.cv: threading.Condition | None = None
        self.control = control   # "rotate": a flush request, not a write


class WriteQueue:
    def __init__(self, mutex: threading.Lock):
        self._mutex = mutex
        self.writers: deque[Writer] = deque()
        self._arrivals = threading.Condition(mutex)

    def join(self, w: Writer) -> bool:
        """Queues w and waits; True when w must lead, False when it is done."""
        self.writers.append(w)
        if len(self.writers) > 1:
            self._arrivals.notify()
        while not w.done and self.writers[0] is not w:
            if w.cv is None:
                w.cv = threading.Condition(self._mutex)
            w.cv.wait()
        return not w.done

    def wait_for_company(self, timeout_s: float) -> None:
        """SYNC_BATCH: the leader gives others up to timeout_s to join."""
        if len(self.writers) == 1 and timeout_s > 0:
            self._arrivals.wait(timeout_s)

    def take_group(self, max_bytes: int) -> list[Writer]:
        """The front writers to commit together (the leader first); control
        requests travel alone."""
        group: list[Writer] = []
        size = 0
        for w in self.writers:
            if w.control is not None:
                if not group:
                    group.append(w)
                break
            group.append(w)
            size += len(w.rep)
            if size >= max_bytes:
                break
        return group

    def finish_group(self, group: list[Writer], error: BaseException | None) -> None:
        for w in group:
            popped = self.writers.popleft()
            assert popped is w, "group commit: queue order broken"
            w.done = True
            w.error = error
            if w.cv is not None:
                w.cv.notify()
        if self.writers:
            front = self.writers[0]
            if front.cv is not None:
                front.cv.notify()

    def __len__(self) -> int:
        return len(self.writers)
