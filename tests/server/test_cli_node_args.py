"""`quorumkv node` refuses a --lease-ms, --trailing-batch or --block-cache-mib out of range before starting."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--lease-ms", "-5", "--lease-ms must be 0 (leases off) or positive, at most 500"),
    ("--lease-ms", "501", "--lease-ms must be 0 (leases off) or positive, at most 500"),
    ("--trailing-batch", "-1", "--trailing-batch must be 0 (every follower gets each write at once) or positive"),
    ("--block-cache-mib", "-1", "--block-cache-mib must be 0 (no cache) or positive"),
])
def test_a_setting_out_of_range_is_refused_with_a_clear_message(tmp_path, flag, value, message):
    out = subprocess.run([sys.executable, "-m", "server.cli", "node", "--id", "1", "--data", str(tmp_path / "d"),
                          "--meta", "127.0.0.1:1", flag, value],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert not (tmp_path / "d").exists()   # nothing was created


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    """A node holds a few descriptors per replica: it must not stop at a low soft limit."""
    code = ("import resource; from server.runtime import raise_open_files_limit; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
            "new = raise_open_files_limit(); "
            "now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; "
            "print(new == now, now > 256 or hard == 256)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr



def test_starting_a_local_cluster_twice_is_refused_and_orphans_nothing(tmp_path):
    # A test that called start() inside `with LocalCluster(...)` (which starts
    # it) once left the first metadata manager running with nothing to end it.
    import pytest

    from server.local_cluster import LocalCluster

    with LocalCluster(str(tmp_path / "c"), nodes=0) as cluster:
        first = cluster.meta.pid
        with pytest.raises(RuntimeError, match="already running"):
            cluster.start()
        assert cluster.meta.pid == first and cluster.meta.running()
    assert not cluster.meta.running()
