"""Data-driven scenarios of the replication protocol (etcd raft's testdata style).

Each tests/server/testdata/*.txt script runs command by command against a
deterministic simulated cluster (sim/scenario_env.py lists the commands) and
compares every output with the expected text after `----`. Regenerate the
expectations with QUORUMKV_REWRITE=1, then review the diff: it is the
protocol's behaviour, step by step. The simulator's checker runs throughout,
so a script that breaks a safety property fails even when rewriting.
"""
from __future__ import annotations

import glob
import os

import pytest
from sim.scenario import run_script

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
SCRIPTS = sorted(glob.glob(os.path.join(TESTDATA, "*.txt")))


@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.basename(p)[:-4] for p in SCRIPTS])
def test_scenario(path: str) -> None:
    mismatches = run_script(path)
    assert not mismatches, "\n\n".join(mismatches)


def test_scripts_exist() -> None:
    names = {os.path.basename(p) for p in SCRIPTS}
    assert {"normal_commit.txt", "leader_change_truncation.txt", "deposed_leader_read.txt",
            "snapshot_catch_up.txt"} <= names
