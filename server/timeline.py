"""Timeline marks: when each step of a request happened, in every process.

Purpose: bench/write_timeline.py lines up a write's steps across the client,
the leader and the followers (one clock: CLOCK_MONOTONIC is the same for
every process of a machine) to show where the time of one write goes. Off
unless the environment variable QKV_TIMELINE names a directory; then every
process that imports this appends its marks to `<dir>/<pid>.marks`.

Call sites test `ENABLED` first, so a mark costs one module attribute lookup
and a branch when off:

    if timeline.ENABLED:
        timeline.mark("host.ready")

File format: one line per mark, `<monotonic ns> <name>`.

Thread-safety: any thread (the log's fsync marks also come from the I/O
thread during a snapshot install); one lock, taken only when enabled.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
from typing import TextIO

ENV_VAR = "QKV_TIMELINE"
DIRECTORY = os.environ.get(ENV_VAR) or None
ENABLED = DIRECTORY is not None

_out: TextIO | None = None
_lock = threading.Lock()


def mark(name: str) -> None:
    """Records that step `name` happens now. Requires: ENABLED."""
    global _out
    now = time.monotonic_ns()
    with _lock:
        if _out is None:
            assert DIRECTORY is not None
            _out = open(os.path.join(DIRECTORY, f"{os.getpid()}.marks"), "a", buffering=1 << 16)  # noqa: SIM115
            atexit.register(flush)
        _out.write(f"{now} {name}\n")


def flush() -> None:
    """Writes buffered marks out (at exit, and before a reader looks)."""
    with _lock:
        if _out is not None:
            _out.flush()
