"""Crash safety: no acknowledged write is lost, whatever the moment of death.

A child process (crash_child.py) writes with sync="always" from 4 threads and
prints each acknowledged operation; the parent kills it with SIGKILL, at a
random moment or at a named failpoint (mid-flush, mid-compaction, between a
MANIFEST append and its use, ...), then reopens the DB and checks that every
acknowledged write is there with its value and seq, that at most the one
in-flight operation per thread may additionally have landed, and that the DB
passes a full consistency check. Default run: 50 random kills plus every
failpoint; `-m soak` runs 500 random kills.
"""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from engine import DB

sys.path.insert(0, os.path.dirname(__file__))
import crash_child  # noqa: E402

CHILD = os.path.join(os.path.dirname(__file__), "crash_child.py")
THREADS = 4
OPS_PER_RUN = 4000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Model:
    """What the DB must hold: acknowledged operations, per key."""

    def __init__(self, seed: int):
        self.seed = seed
        self.state: dict[bytes, tuple[bytes | None, bytes]] = {}

    def verify_and_absorb(self, db: DB, start: int, end: int, acked: set[int]) -> None:
        # Per thread, acknowledged ops form a prefix of that thread's ops; the
        # first unacknowledged one may or may not have become durable.
        expected = dict(self.state)
        in_flight: dict[bytes, tuple[bytes | None, bytes]] = {}
        pending_threads: set[int] = set()
        for i in range(start, end):
            key, value, seq = crash_child.op(self.seed, i)
            t = crash_child.key_thread(key, THREADS)
            if t in pending_threads:
                continue
            if i in acked:
                expected[key] = (value, seq)
            else:
                pending_threads.add(t)
                in_flight[key] = (value, seq)
        for n in range(crash_child.KEYS):
            key = b"key%05d" % n
            rec = db.get(crash_child.TABLE, key)
            actual = None if rec is None else (rec.value, rec.seq)
            want = expected.get(key)
            want_visible = None if want is None or want[0] is None else want
            if actual == want_visible:
                if want is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = want
                continue
            alt = in_flight.get(key)
            alt_visible = None if alt is None or alt[0] is None else alt
            assert alt is not None and actual == alt_visible, (
                f"seed {self.seed}: key {key!r} holds {actual!r}, acknowledged state is {want_visible!r}"
                + (f", in-flight op would give {alt_visible!r}" if alt is not None else ""))
            self.state[key] = alt


def run_child(path: str, seed: int, start: int, count: int, kill_after: float | None,
              failpoints: str = "", sync: str = "always") -> tuple[set[int], int]:
    env = dict(os.environ, PYTHONPATH=ROOT, QUORUMKV_FAILPOINTS=failpoints, QUORUMKV_CRASH_SYNC=sync)
    proc = subprocess.Popen([sys.executable, CHILD, path, str(seed), str(start), str(count), str(THREADS)],
                            stdout=subprocess.PIPE, env=env)
    lines: list[bytes] = []
    buf = b""
    deadline = None
    try:
        fd = proc.stdout.fileno()
        hard_stop = time.monotonic() + 60
        while time.monotonic() < hard_stop:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], 1.0 if timeout is None else min(timeout, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\n")
                lines.extend(done)
                if deadline is None and kill_after is not None and b"ready" in lines:
                    deadline = time.monotonic() + kill_after
            if deadline is not None and time.monotonic() >= deadline:
                proc.send_signal(signal.SIGKILL)
                deadline = None
                kill_after = None
        # Whatever the child printed before dying is acknowledged.
        rest = proc.stdout.read()
        lines.extend((buf + rest).split(b"\n"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    acked = {int(x) for x in lines if x.strip().isdigit()}
    return acked, proc.returncode


def check_db(path: str, model: Model, start: int, end: int, acked: set[int]) -> None:
    with DB.open(path, **crash_child.DB_OPTIONS) as db:
        model.verify_and_absorb(db, start, end, acked)
        db.check()


def crash_loop(tmp_path, seed: int, rounds: int, sync: str = "always") -> None:
    path = str(tmp_path / "db")
    rng = random.Random(seed)
    model = Model(seed)
    start = 0
    kills = 0
    for _ in range(rounds):
        acked, rc = run_child(path, seed, start, OPS_PER_RUN, kill_after=rng.uniform(0.0, 0.25), sync=sync)
        kills += rc == -signal.SIGKILL
        check_db(path, model, start, start + OPS_PER_RUN, acked)
        start += OPS_PER_RUN
    assert kills >= rounds * 0.8, f"only {kills} of {rounds} runs were killed mid-write"


def test_sigkill_at_random_moments(tmp_path):
    crash_loop(tmp_path, seed=1234, rounds=50)


def test_sigkill_of_unsynced_writer(tmp_path):
    # sync="never" promises nothing against a power loss, but a killed
    # process must not lose what it acknowledged: the native write path
    # (engine/_native/commit.pyx) write()s before the put returns.
    crash_loop(tmp_path, seed=4321, rounds=10, sync="never")


@pytest.mark.soak
def test_sigkill_at_random_moments_soak(tmp_path):
    crash_loop(tmp_path, seed=99, rounds=500)


FAILPOINTS = [
    "wal.after_write=300",
    "flush.after_table=2",
    "compaction.mid_merge=1",
    "compaction.before_manifest=2",
    "manifest.after_append=5",
    "manifest.before_current=1",
    "obsolete.mid_delete=7",
]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_sigkill_at_failpoint(tmp_path, failpoint):
    path = str(tmp_path / "db")
    model = Model(seed=77)
    # A first run that completes gives every later failpoint data to work on.
    acked, rc = run_child(path, 77, 0, 1500, kill_after=None)
    assert rc == 0
    check_db(path, model, 0, 1500, acked)
    acked, rc = run_child(path, 77, 1500, OPS_PER_RUN, kill_after=None, failpoints=failpoint)
    assert rc == -signal.SIGKILL, f"failpoint {failpoint} was never reached"
    check_db(path, model, 1500, 1500 + OPS_PER_RUN, acked)
    # And the DB keeps working after recovery.
    acked, rc = run_child(path, 77, 1500 + OPS_PER_RUN, 500, kill_after=None)
    assert rc == 0
    check_db(path, model, 1500 + OPS_PER_RUN, 2000 + OPS_PER_RUN, acked)
