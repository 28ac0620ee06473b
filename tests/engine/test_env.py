"""WritableFile.allocate on both Envs: reserved space reads as zeros, writes
land in it at the write position, and a power loss keeps a reservation only
once a sync followed it."""
from __future__ import annotations

import errno
import os

import pytest

from engine.env import PosixEnv
from engine.env_fault import FaultInjectionEnv
from engine.env_mem import MemEnv


@pytest.fixture(params=["posix", "mem"])
def env_and_dir(request, tmp_path):
    if request.param == "posix":
        return PosixEnv(), str(tmp_path)
    env = MemEnv()
    env.mkdirs("/d")
    return env, "/d"


def test_allocate_reserves_zeros_and_writes_continue_at_the_write_position(env_and_dir):
    env, d = env_and_dir
    path = os.path.join(d, "f")
    f = env.open_writable(path)
    f.write(b"abc")
    f.allocate(4096)
    assert f.size == 3                           # the write position did not move
    assert env.file_size(path) == 4096
    assert env.read_file(path) == b"abc" + bytes(4093)
    f.write(b"defg")
    f.sync()
    assert env.read_file(path) == b"abcdefg" + bytes(4089)
    f.allocate(100)                              # below the reservation: nothing changes
    assert env.file_size(path) == 4096
    f.write(b"x" * 5000)                         # past the reservation: the file grows as before
    f.sync()
    assert env.read_file(path) == b"abcdefg" + b"x" * 5000
    f.close()
    reader = env.open_random(path)
    assert reader.size == 5007 and reader.read(3, 4) == b"defg"
    reader.close()


def test_a_power_loss_keeps_a_reservation_only_after_a_sync():
    env = MemEnv()
    env.mkdirs("/d")
    f = env.open_writable("/d/f")
    f.write(b"abc")
    f.sync()
    env.sync_dir("/d")
    f.allocate(1000)
    f.write(b"def")
    env.crash()                                  # neither the reservation nor "def" was synced
    assert env.read_file("/d/f") == b"abc"
    f = env.open_writable("/d/g")
    f.write(b"abc")
    f.allocate(1000)
    f.sync()
    env.sync_dir("/d")
    f.write(b"def")                              # into reserved space, not synced
    env.crash()
    assert env.read_file("/d/g") == b"abc" + bytes(997)


def test_allocate_is_a_fault_injection_point():
    env = FaultInjectionEnv()
    env.mkdirs("/d")
    f = env.open_writable("/d/f")
    env.fail_after("allocate", 0)
    with pytest.raises(OSError) as exc:
        f.allocate(4096)
    assert exc.value.errno == errno.EIO
    assert env.op_counts["allocate"] == 1 and env.file_size("/d/f") == 0


def test_a_truncate_is_durable_only_once_the_file_is_synced():
    # As on ext4: a power loss before the next sync brings the cut bytes back.
    env = MemEnv()
    env.mkdirs("/d")
    f = env.open_writable("/d/f")
    f.write(b"abcdef")
    f.allocate(64)
    f.sync()
    env.sync_dir("/d")
    env.truncate("/d/f", 3)
    assert env.read_file("/d/f") == b"abc"
    env.crash()
    assert env.read_file("/d/f") == b"abcdef" + bytes(58)
    env.truncate("/d/f", 3)
    env.sync_file("/d/f")
    env.crash()
    assert env.read_file("/d/f") == b"abc"
