"""A local etcd cluster for tests and benchmarks: N members on loopback, started and stopped by us.

Usage:

    from server.meta.etcd_testing import EtcdCluster
    with EtcdCluster(members=3) as cluster:
        cluster.client_endpoints                   # ["127.0.0.1:41231", ...]

Purpose. The metadata manager's etcd backend is tested against a real etcd
(tests/server/test_meta_backends.py, tests/cluster/test_meta_failover.py),
and the replication benchmark (issue 3) compares a quorumkv replica group
with a 3-member etcd cluster on the same machine, in the same run
(bench/etcd_cluster.py re-exports this module). This module owns that
cluster's life: it installs etcd if needed (scripts/install-etcd: Debian's
etcd-server, etcd 3.4, without starting Debian's service), starts the members
as our child processes, waits until every member reports healthy, and on exit
ends exactly the processes it started and removes its directory.

Thread-safety: none; one thread starts and stops a cluster. The members are
separate processes and need no lock.

Invariants:
  1. Every process signalled is one this object started (a `Popen` we hold);
     nothing is looked up by name. Popen does not signal a child already reaped.
  2. After `stop()` (or leaving the `with` block, also on an exception) no member
     runs: one member at a time, SIGTERM, then SIGKILL after `stop_timeout_s`, then reaped.
  3. The cluster directory is a fresh temp dir made by `start()` (inside
     `base_dir` when given) and is the only thing removed.
  4. Members listen on 127.0.0.1 only; ports are picked free by the kernel.

Ownership and lifetime: members' stdout and stderr go to `<dir>/<name>.log`,
their data to `<dir>/<name>.etcd`; both go away with the dir at `stop()`, so a
start failure raises with the tail of every member's log. Members run in their
own session (a Ctrl-C in the terminal reaches only the harness, which then stops
them in order) and get SIGKILL from the kernel if the thread that started them
dies (PR_SET_PDEATHSIG), so even a killed harness leaves no etcd behind; hence
start the cluster from a thread that outlives it (the main thread, not a
short-lived executor thread).

fsync. etcd 3.4 has no flag to skip fsync (`--unsafe-no-fsync` came in 3.5).
`fsync=False` therefore puts the data dirs on tmpfs (/dev/shm), where fsync
returns at once; with `base_dir` given it must itself be on tmpfs.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL_SCRIPT = os.path.join(REPO, "scripts", "install-etcd")
TMPFS_DIR = "/dev/shm"
HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.1
LOG_TAIL_BYTES = 3_000
PORT_ATTEMPTS = 3            # a freshly picked port may be taken by someone else before etcd binds it
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdClusterError(RuntimeError):
    """The cluster could not be installed or did not become healthy in time."""


def etcd_binary(install: bool = True) -> str:
    """Path of the etcd binary; runs scripts/install-etcd first when there is none and `install` is set.
    Raises EtcdClusterError when etcd is still missing."""
    def find() -> str | None:
        return shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)

    path = find()
    if path is None and install:
        proc = subprocess.run([INSTALL_SCRIPT], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise EtcdClusterError(f"{INSTALL_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-LOG_TAIL_BYTES:]}")
        path = find()
    if path is None:
        raise EtcdClusterError(f"etcd is not installed; run {INSTALL_SCRIPT}")
    return path


def etcd_version(binary: str) -> str:
    """'3.4.23' from `etcd --version`, or the first line of its output if that does not parse."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else (out.splitlines() or ["?"])[0]


def _free_ports(n: int) -> list[int]:
    """n distinct ports that were free on HOST a moment ago (all held open together, so distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _fs_type(path: str) -> str:
    """File system type of the mount holding `path` (longest mount-point prefix in /proc/mounts)."""
    path = os.path.realpath(path)
    best, fstype = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, parts[2]
    return fstype


def _pdeathsig_preexec():
    """A preexec_fn asking the kernel to SIGKILL the child when its parent thread dies (Linux), or None.
    libc is resolved here, in the parent, so the child only makes one syscall before exec."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return preexec


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/<pid>/stat utime, stime); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: str, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log: {exc}>"


class EtcdCluster:
    """N etcd members on loopback, as our child processes, for the duration of a `with` block.

    Options (defaults in the signature):
      members         cluster size (1 or more; 3 for the benchmark and the failover test)
      base_dir        where the cluster's temp dir is made (default: the system tmp dir,
                      or /dev/shm when fsync=False)
      fsync           False puts the data on tmpfs (etcd 3.4 cannot skip fsync itself)
      start_timeout_s bound on the wait for every member to report healthy
      stop_timeout_s  grace between SIGTERM and SIGKILL, per member, at stop
      extra_flags     more etcd flags for every member, e.g. ("--snapshot-count", "10000")
      install         run scripts/install-etcd when etcd is missing
    """

    def __init__(self, members: int = 3, base_dir: str | None = None, fsync: bool = True, *,
                 start_timeout_s: float = 30.0, stop_timeout_s: float = 10.0,
                 extra_flags: Sequence[str] = (), install: bool = True) -> None:
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if not fsync:
            if base_dir is None:
                base_dir = TMPFS_DIR
            elif _fs_type(base_dir) != "tmpfs":
                raise ValueError(f"fsync=False needs base_dir on tmpfs (etcd 3.4 always fsyncs); "
                                 f"{base_dir} is {_fs_type(base_dir)}")
        self.n_members = members
        self.base_dir = base_dir
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_flags = tuple(extra_flags)
        self.install = install
        self.binary: str | None = None
        self.version: str | None = None
        self.dir: str | None = None
        self.members: list[EtcdMember] = []
        self._procs: list[subprocess.Popen] = []
        self._logs: list = []

    # ------------------------------------------------------------------ public
    @property
    def client_endpoints(self) -> list[str]:
        """'127.0.0.1:port' of every member's client (gRPC) listener."""
        return [f"{HOST}:{m.client_port}" for m in self.members]

    def leader_endpoint(self) -> str:
        """'127.0.0.1:port' of the member that leads now, from each member's Maintenance.Status
        (etcd's JSON gateway; ids are uint64 strings there). A benchmark that compares with a
        system whose clients reach the leader directly sends etcd's load here too: a write sent
        to an etcd follower is forwarded to the leader and answered after the follower applied
        it, an extra hop and often an extra round. Raises EtcdClusterError if no member leads."""
        for m in self.members:
            req = urllib.request.Request(m.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=2.0) as resp:
                    status = json.loads(resp.read())
            except (OSError, urllib.error.URLError, ValueError):
                continue
            if status.get("leader") and status.get("header", {}).get("member_id") == status["leader"]:
                return f"{HOST}:{m.client_port}"
        raise EtcdClusterError("no etcd member reports itself as leader")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by all running members."""
        return sum(_cpu_seconds(p.pid) for p in self._procs if p.poll() is None)

    def start(self) -> None:
        """Starts the members and returns once each reports healthy.
        Requires: not started. Raises EtcdClusterError (with the members' log tails) on failure;
        nothing is left running or on disk then."""
        if self._procs:
            raise RuntimeError("cluster already started")
        self.binary = etcd_binary(self.install)
        self.version = etcd_version(self.binary)
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self.dir = tempfile.mkdtemp(prefix="etcd-", dir=self.base_dir)
                self._spawn_members()
                failure = self._wait_healthy()
                if failure is None:
                    return
                port_clash = any("address already in use" in _tail(m.log_path) for m in self.members)
                report = self._failure_report(failure)
                self.stop()
                if not port_clash or attempt == PORT_ATTEMPTS:
                    raise EtcdClusterError(report)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Ends the members we started (SIGTERM, SIGKILL after stop_timeout_s) and removes the cluster dir.
        Safe to call more than once, and after a failed start."""
        # One member at a time: a leader stopped while its followers are also stopping tries to hand
        # over leadership to a dying peer and waits out etcd's request timeout (7 s at default
        # settings). Stopped in turn, a leader hands over to a live follower at once, and the last
        # member finds no active peer and skips the hand-over.
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
            p.wait()
        for f in self._logs:
            f.close()
        self._procs, self._logs = [], []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ----------------------------------------------------------------- private
    def _spawn_members(self) -> None:
        assert self.dir is not None and self.binary is not None
        ports = _free_ports(2 * self.n_members)
        self.members = [EtcdMember(f"m{i}", ports[2 * i], ports[2 * i + 1],
                                   os.path.join(self.dir, f"m{i}.etcd"), os.path.join(self.dir, f"m{i}.log"))
                        for i in range(self.n_members)]
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"qkv-{os.getpid()}-{os.path.basename(self.dir)}"
        # etcd reads ETCD_* variables as flags and refuses a flag given both ways.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        preexec = _pdeathsig_preexec()
        for m in self.members:
            cmd = [self.binary, "--name", m.name, "--data-dir", m.data_dir,
                   "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                   "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                   "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
                   "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr",
                   *self.extra_flags]
            log = open(m.log_path, "wb")
            self._logs.append(log)
            self._procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                env=env, cwd=self.dir, start_new_session=True,
                                                preexec_fn=preexec))

    def _wait_healthy(self) -> str | None:
        """Polls every member's /health until all say true; returns None, or why it gave up."""
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(self.members)
        while True:
            for m, p in zip(self.members, self._procs):
                if p.poll() is not None:
                    return f"member {m.name} exited with status {p.returncode}"
            pending = [m for m in pending if not self._healthy(m)]
            if not pending:
                return None
            if time.monotonic() >= deadline:
                return (f"not healthy after {self.start_timeout_s:.0f} s: "
                        + ", ".join(m.name for m in pending))
            time.sleep(POLL_INTERVAL_S)

    @staticmethod
    def _healthy(m: EtcdMember) -> bool:
        """GET /health: true once the member has a leader and a quorum read went through."""
        try:
            with urllib.request.urlopen(m.client_url + "/health", timeout=1.0) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _failure_report(self, why: str) -> str:
        lines = [f"etcd cluster ({self.version}, {self.n_members} members in {self.dir}) failed to start: {why}"]
        for m in self.members:
            lines += [f"--- {m.name} (client {m.client_port}, peer {m.peer_port}) log tail:", _tail(m.log_path)]
        return "\n".join(lines)


if __name__ == "__main__":
    with EtcdCluster() as c:
        print(f"etcd {c.version}: {c.client_endpoints} pids {c.pids} in {c.dir}")
