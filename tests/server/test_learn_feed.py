"""LearnFeed (server/node/learn_feed.py): what a Learn subscriber is sent, without a network."""
from __future__ import annotations

import asyncio

from server.node.learn_feed import LearnFeed, unpack

RG = 1


def test_the_first_message_holds_the_last_acknowledgements_and_later_ones_the_new():
    async def go():
        feed = LearnFeed(2)
        sent = []

        async def write(message):
            sent.append(message)

        server = asyncio.get_running_loop().create_task(feed.serve([(RG, 3, 10), (RG + 1, 4, 0)], write))
        await asyncio.sleep(0)
        assert sent[0].node == 2 and list(unpack(sent[0].acks)) == [(RG, 3, 10), (RG + 1, 4, 0)]
        feed.publish(RG, 3, 12)
        feed.publish(RG, 3, 11)   # a lower re-acknowledgement: the highest stands
        feed.publish(RG, 5, 0)    # a promise of a later epoch
        while len(sent) < 2:
            await asyncio.sleep(0)
        assert list(unpack(sent[1].acks)) == [(RG, 3, 12), (RG, 5, 0)]
        assert feed.subscribers == 1
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        assert feed.subscribers == 0
        feed.publish(RG, 5, 1)   # nobody listens: nothing kept
    asyncio.run(go())


# A review's repro: a subscriber whose sends stall must not hold every
# acknowledgement published meanwhile.
def test_a_stalled_learn_subscriber_backlog_is_bounded():
    async def go():
        feed = LearnFeed(2)
        stall = asyncio.get_running_loop().create_future()
        sent = []

        async def write(message):
            sent.append(message)
            if len(sent) == 1:
                await stall   # HTTP/2 flow control: the client does not read

        server = asyncio.get_running_loop().create_task(feed.serve([], write))
        await asyncio.sleep(0)
        assert len(sent) == 1   # the first (empty) message, whose send hangs
        for match in range(1, 200_001):   # a busy follower: one acknowledgement per write
            feed.publish(RG, 7, match)
        stall.set_result(None)   # the client reads again
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        backlog = list(unpack(sent[1].acks))
        assert backlog[-1] == (RG, 7, 200_000)
        assert len(backlog) <= 16, (f"the subscriber held {len(backlog)} acknowledgements "
                                    f"({len(sent[1].acks)} bytes) for one replica and one epoch")
    asyncio.run(go())
