"""Running a server role as a process: event loop, signals, logging.

`run_service(start, stop)` runs `start()` on a fresh event loop (uvloop when
installed: it cuts the loop's per-callback cost, which every RPC pays), then
waits for SIGTERM or SIGINT and runs `stop()`, so `kill PID` and Ctrl-C end
a role cleanly. Also prints "READY <what>" on stdout once started, which
scripts and tests wait for instead of sleeping.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def fail_stop(log: logging.Logger, what: str, exc: BaseException | None = None) -> None:
    """Ends the process at once (exit 70) after logging why. For states a
    process must not linger in, e.g. a replica loop that died, or a protocol
    invariant broken: the cluster handles a crashed process, not a zombie."""
    log.critical("%s: stopping the process", what, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def raise_open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit and
    returns the new soft limit. A node holds a few descriptors per replica
    (its log segment, the engine's MANIFEST and lock files, open SSTables):
    about 4 per idle replica, so Debian's default soft limit of 1,024 would
    stop a node near 250 replicas while the hard limit allows far more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard or soft == resource.RLIM_INFINITY:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:   # e.g. above the kernel's nr_open: keep what we have
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def run_service(start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]]) -> int:
    async def main() -> None:
        ready = await start()
        print(f"READY {ready}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await stop()

    try:
        import uvloop
    except ImportError:  # optional: the stock loop works, slower
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
