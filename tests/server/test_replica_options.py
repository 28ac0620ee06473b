"""ReplicaOptions rejects settings that make no sense, naming the field to fix."""
from __future__ import annotations

import pytest

from server.replication.options import ReplicaOptions


@pytest.mark.parametrize("field", ["idle_heartbeat_ticks", "trailing_batch_entries"])
def test_off_or_positive(field: str) -> None:
    ReplicaOptions(**{field: 0})
    ReplicaOptions(**{field: 3})
    with pytest.raises(ValueError, match=f"{field} must be 0 \\(off\\) or positive"):
        ReplicaOptions(**{field: -1})


@pytest.mark.parametrize("field", ["heartbeat_ticks", "max_inflight_appends", "follower_apply_batch"])
def test_at_least_one(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be at least 1"):
        ReplicaOptions(**{field: 0})


def test_lease_bounds() -> None:
    with pytest.raises(ValueError, match="lease_ns"):
        ReplicaOptions(lease_ns=-1)


def test_check_quorum_window_must_outlast_every_heartbeat_interval() -> None:
    ReplicaOptions(check_quorum_ticks=0)
    ReplicaOptions(idle_heartbeat_ticks=10, check_quorum_ticks=30)
    with pytest.raises(ValueError, match="check_quorum_ticks must be 0 \\(off\\) or positive"):
        ReplicaOptions(check_quorum_ticks=-1)
    with pytest.raises(ValueError, match="must exceed the longest heartbeat interval"):
        ReplicaOptions(idle_heartbeat_ticks=10, check_quorum_ticks=5)   # healthy idle leaders deposed
