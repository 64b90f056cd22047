"""approvals.hold.Wakeups: closing a hold always ends its listening task."""

import asyncio

import pytest

from approvals.hold import Wakeups

pytestmark = pytest.mark.asyncio


class SteppedLayer:
    """A channel layer whose group_add finishes when the test says so; receive waits for ever."""

    def __init__(self):
        self.joining: asyncio.Future | None = None
        self.receiving = 0

    async def new_channel(self, prefix):
        return prefix + "one"

    async def group_add(self, group, channel):
        self.joining = asyncio.get_running_loop().create_future()
        await self.joining

    async def group_discard(self, group, channel):
        return None

    async def receive(self, channel):
        self.receiving += 1
        await asyncio.Event().wait()


async def test_a_hold_closed_as_its_group_join_finishes_stops_listening(settings):
    settings.AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS = 5
    layer, background = SteppedLayer(), set()
    wakeups = Wakeups(layer, "review-1", background.add)
    wakeups.task = asyncio.get_running_loop().create_task(wakeups._receive())
    while layer.joining is None:
        await asyncio.sleep(0)
    layer.joining.set_result(None)  # the join finishes...
    wakeups.close()  # ...in the same loop turn the hold ends
    for _ in range(10):
        await asyncio.sleep(0)
    assert wakeups.task.done() and layer.receiving == 0
