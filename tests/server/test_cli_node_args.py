"""`quorumkv node` refuses a bad --lease-ms before it starts anything."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_negative_lease_is_refused_with_a_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "server.cli", "node", "--id", "1", "--data", str(tmp_path / "d"),
                          "--meta", "127.0.0.1:1", "--lease-ms", "-5"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--lease-ms must be 0 (leases off) or positive" in out.stderr
    assert not (tmp_path / "d").exists()   # nothing was created
