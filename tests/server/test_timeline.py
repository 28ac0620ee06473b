"""Timeline marks (server/timeline.py) and their line-up across processes (bench/write_timeline.py)."""
from __future__ import annotations

import os

from bench.write_timeline import _load, _timeline
from server import timeline


def test_marks_go_to_a_per_process_file_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "DIRECTORY", str(tmp_path))
    monkeypatch.setattr(timeline, "ENABLED", True)
    monkeypatch.setattr(timeline, "_out", None)
    for name in ("host.woke", "host.ready", "log.fsync_start"):
        timeline.mark(name)
    timeline.flush()
    marks = _load(os.path.join(tmp_path, f"{os.getpid()}.marks"))
    assert [name for _, name in marks] == ["host.woke", "host.ready", "log.fsync_start"]
    assert [t for t, _ in marks] == sorted(t for t, _ in marks)
    timeline._out.close()


def test_timeline_numbers_repeats_within_a_write_and_drops_rare_marks():
    us = 1000
    client, leader = [], []
    for i in range(20):
        t0 = i * 10_000 * us
        client += [(t0, "client.send"), (t0 + 900 * us, "client.answer")]
        leader += [(t0 + 100 * us, "host.woke"), (t0 + 200 * us + i * us, "host.ready"),
                   (t0 + 600 * us, "host.woke")]
        if i % 4 == 0:   # in a quarter of the writes only: left out
            leader.append((t0 + 700 * us, "host.applied"))
    rows = _timeline(client, {"leader": leader})
    # The first 10% of the writes (2 of 20) are warm-up; host.ready's offsets are 202..219 us.
    assert [(round(m, 1), key) for m, key, _ in rows] == [
        (100.0, "leader host.woke #1"), (210.5, "leader host.ready #1"), (600.0, "leader host.woke #2"),
        (900.0, "client client.answer #1")]
    assert all(share == 1.0 for _, _, share in rows)
