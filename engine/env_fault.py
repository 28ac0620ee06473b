"""FaultInjectionEnv: a MemEnv that fails chosen operations on demand.

fail_after(op, n): the (n+1)-th call of op ("append", "allocate", "sync",
"sync_dir", "rename", "remove", "truncate", "open_writable", "read") from now
raises OSError(EIO), and
so does every later one until clear_faults(). Together with MemEnv.crash()
this lets tests stop the engine at any I/O step and check what a reopen sees.
"""
from __future__ import annotations

import errno

from engine.env_mem import MemEnv


class FaultInjectionEnv(MemEnv):
    def __init__(self) -> None:
        super().__init__()
        self._countdown: dict[str, int] = {}
        self.op_counts: dict[str, int] = {}

    def fail_after(self, op: str, n: int) -> None:
        self._countdown[op] = n

    def clear_faults(self) -> None:
        self._countdown.clear()

    def _before(self, op: str, path: str) -> None:
        self.op_counts[op] = self.op_counts.get(op, 0) + 1
        left = self._countdown.get(op)
        if left is None:
            return
        if left <= 0:
            raise OSError(errno.EIO, f"injected {op} failure", path)
        self._countdown[op] = left - 1
