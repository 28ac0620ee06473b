"""Model-based test: random sequences of operations against the engine and
against a plain dict must agree (Pebble's metamorphic idea, with hypothesis).

The DB runs on MemEnv with tiny buffers so that a few dozen writes already
flush, compact across levels and stall; `crash` simulates a power loss
(MemEnv.crash keeps only fsynced bytes) and, with sync="always", every
acknowledged write must survive it.
"""
from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import DB, WriteBatch
from engine.env_mem import MemEnv

PATH = "/model/db"
KEYS = st.one_of(st.sampled_from([b"a", b"ab", b"abc", b"b", b"ba", b"k1", b"k2", b"k10", b"\x00", b"\xff\xff"]),
                 st.binary(min_size=1, max_size=6))
VALUES = st.one_of(st.just(b""), st.binary(max_size=40), st.binary(min_size=300, max_size=600))
TABLES = st.sampled_from(["t", "u"])


def options(compression: int) -> dict:
    return dict(env=None, sync="always", write_buffer_size=1024, target_file_size=1024, block_size=128,
                level1_max_bytes=4096, l0_compaction_trigger=2, l0_stop_trigger=6, compression_level=compression,
                flush_compression_level=compression,
                block_cache_bytes=16 * 1024)


class EngineModel(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    @initialize(compression=st.sampled_from([0, 3]))
    def open_db(self, compression):
        self.env = MemEnv()
        self.opts = dict(options(compression), env=self.env)
        self.db = DB.open(PATH, **self.opts)
        self.db.create_table("t")
        self.db.create_table("u")
        self.model: dict[str, dict[bytes, tuple[bytes, bytes]]] = {"t": {}, "u": {}}
        self.live_snapshots = []

    def teardown(self):
        if hasattr(self, "db"):
            for snap, _ in self.live_snapshots:
                snap.release()
            self.db.close()

    @rule(table=TABLES, key=KEYS, value=VALUES)
    def put(self, table, key, value):
        seq = self.db.put(table, key, value)
        self.model[table][key] = (value, seq)

    @rule(table=TABLES, key=KEYS)
    def delete(self, table, key):
        self.db.delete(table, key)
        self.model[table].pop(key, None)

    @rule(ops=st.lists(st.tuples(TABLES, KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=8))
    def write_batch(self, ops):
        batch = WriteBatch()
        for table, key, value in ops:
            if value is None:
                batch.delete(table, key)
            else:
                batch.put(table, key, value)
        seqs = self.db.write(batch)
        for (table, key, value), seq in zip(ops, seqs):
            if value is None:
                self.model[table].pop(key, None)
            else:
                self.model[table][key] = (value, seq)

    @rule(table=TABLES, key=KEYS)
    def get(self, table, key):
        rec = self.db.get(table, key)
        want = self.model[table].get(key)
        assert (None if rec is None else tuple(rec)) == want

    @rule(table=TABLES, start=st.one_of(st.none(), KEYS), end=st.one_of(st.none(), KEYS),
          limit=st.one_of(st.none(), st.integers(0, 12)), reverse=st.booleans())
    def scan(self, table, start, end, limit, reverse):
        got = list(self.db.scan(table, start=start, end=end, limit=limit, reverse=reverse))
        want = sorted((k, v, s) for k, (v, s) in self.model[table].items()
                      if (start is None or k >= start) and (end is None or k < end))
        if reverse:
            want.reverse()
        if limit is not None:
            want = want[:limit]
        assert got == want

    @rule(target=snapshots)
    def take_snapshot(self):
        snap = self.db.snapshot()
        frozen = {t: dict(m) for t, m in self.model.items()}
        self.live_snapshots.append((snap, frozen))
        return len(self.live_snapshots) - 1

    @rule(i=snapshots, table=TABLES, key=KEYS)
    def read_snapshot(self, i, table, key):
        snap, frozen = self.live_snapshots[i]
        if snap._released:
            return
        rec = self.db.get(table, key, snapshot=snap)
        assert (None if rec is None else tuple(rec)) == frozen[table].get(key)
        got = list(self.db.scan(table, snapshot=snap))
        assert got == sorted((k, v, s) for k, (v, s) in frozen[table].items())

    @rule(i=snapshots)
    def release_snapshot(self, i):
        self.live_snapshots[i][0].release()

    @rule()
    def flush(self):
        self.db.flush()

    @rule(table=st.one_of(st.none(), TABLES))
    def compact(self, table):
        self.db.compact_range(table)

    def _forget_snapshots(self):
        for snap, _ in self.live_snapshots:
            snap._released = True
        # Snapshots do not survive a reopen; indices stay valid but are dead.

    @rule()
    def reopen(self):
        self._forget_snapshots()
        self.db.close()
        self.db = DB.open(PATH, **self.opts)

    @rule()
    def crash(self):
        self._forget_snapshots()
        self.db._kill()
        self.env.crash()
        self.db = DB.open(PATH, **self.opts)

    @precondition(lambda self: hasattr(self, "db"))
    @invariant()
    def tables_exist(self):
        assert self.db.tables() == ["t", "u"]


EngineModel.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestEngineModel = EngineModel.TestCase
