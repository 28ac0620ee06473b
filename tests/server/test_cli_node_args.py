"""`quorumkv node` refuses a --lease-ms, --trailing-batch or --block-cache-mib out of range before starting."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("lease", ["-5", "501"])
def test_a_lease_out_of_range_is_refused_with_a_clear_message(tmp_path, lease):
    out = subprocess.run([sys.executable, "-m", "server.cli", "node", "--id", "1", "--data", str(tmp_path / "d"),
                          "--meta", "127.0.0.1:1", "--lease-ms", lease],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--lease-ms must be 0 (leases off) or positive, at most 500" in out.stderr
    assert not (tmp_path / "d").exists()   # nothing was created


def test_a_negative_trailing_batch_is_refused_with_a_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "server.cli", "node", "--id", "1", "--data", str(tmp_path / "d"),
                          "--meta", "127.0.0.1:1", "--trailing-batch", "-1"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--trailing-batch must be 0 (every follower gets each write at once) or positive" in out.stderr
    assert not (tmp_path / "d").exists()


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


def test_a_negative_block_cache_is_refused_with_a_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "server.cli", "node", "--id", "1", "--data", str(tmp_path / "d"),
                          "--meta", "127.0.0.1:1", "--block-cache-mib", "-1"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--block-cache-mib must be 0 (no cache) or positive" in out.stderr
    assert not (tmp_path / "d").exists()
