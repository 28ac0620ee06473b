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
import signal
import sys
from collections.abc import Awaitable, Callable


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
