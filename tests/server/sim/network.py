"""FakeNetwork: messages in flight between nodes and the MM, under the schedule's control.

Delivery order is the schedule's choice (any in-flight message may go next:
reordering and arbitrary delay); drop and duplicate act on any in-flight
message; a partition cuts links both ways (messages already in flight over a
cut link are lost when delivered).
"""
from __future__ import annotations

import random

from server.replication.messages import Message


class FakeNetwork:
    def __init__(self, rng: random.Random | None = None, duplicate_p: float = 0.0) -> None:
        self.rng = rng
        self.duplicate_p = duplicate_p
        self.in_flight: list[Message] = []
        self._cut: set[tuple[int, int]] = set()
        self.sent = 0
        self.delivered = 0

    def send(self, msg: Message) -> None:
        self.sent += 1
        if (msg.sender, msg.recipient) not in self._cut:
            self.in_flight.append(msg)
            if self.duplicate_p and self.rng is not None and self.rng.random() < self.duplicate_p:
                self.in_flight.append(msg)  # a retransmission the receiver sees twice, maybe much later

    def connected(self, a: int, b: int) -> bool:
        return (a, b) not in self._cut

    def take(self, rng: random.Random, fifo_bias: float = 0.7) -> Message | None:
        """Removes and returns a message to deliver: mostly one of the oldest,
        sometimes any (reordering). None when nothing is in flight or the link is cut."""
        n = len(self.in_flight)
        if not n:
            return None
        i = rng.randrange(min(n, 3)) if rng.random() < fifo_bias else rng.randrange(n)
        msg = self.in_flight.pop(i)
        if (msg.sender, msg.recipient) in self._cut:
            return None
        self.delivered += 1
        return msg

    def take_matching(self, sender: int | None = None, recipient: int | None = None) -> list[Message]:
        """Removes and returns (in order) every in-flight message on the given links."""
        keep, out = [], []
        for m in self.in_flight:
            if (sender is None or m.sender == sender) and (recipient is None or m.recipient == recipient):
                if (m.sender, m.recipient) not in self._cut:
                    out.append(m)
            else:
                keep.append(m)
        self.in_flight = keep
        self.delivered += len(out)
        return out

    def drop(self, rng: random.Random) -> Message | None:
        if not self.in_flight:
            return None
        return self.in_flight.pop(rng.randrange(len(self.in_flight)))

    def duplicate(self, rng: random.Random) -> Message | None:
        if not self.in_flight:
            return None
        msg = self.in_flight[rng.randrange(len(self.in_flight))]
        self.in_flight.append(msg)
        return msg

    def isolate(self, group: set[int], everyone: set[int]) -> None:
        """Cuts every link between `group` and the rest of `everyone`."""
        for a in group:
            for b in everyone - group:
                self._cut.add((a, b))
                self._cut.add((b, a))

    def cut(self, a: int, b: int) -> None:
        self._cut.add((a, b))

    def heal(self) -> None:
        self._cut.clear()
