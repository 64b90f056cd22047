"""runtime.timeouts.wait_at_most: bounded waits that never swallow the caller's cancellation."""

import asyncio

import pytest

from runtime.timeouts import wait_at_most

pytestmark = pytest.mark.asyncio


async def test_the_result_or_a_timeout():
    assert await wait_at_most(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await wait_at_most(asyncio.Event().wait(), 0.05)
    queue = asyncio.Queue()
    with pytest.raises(TimeoutError):
        await wait_at_most(queue.get(), 0.01)
    queue.put_nowait("kept")  # a timed-out get took nothing
    assert await wait_at_most(queue.get(), None) == "kept"


@pytest.mark.parametrize("as_task", [False, True])
async def test_a_cancellation_that_lands_as_the_wait_finishes_is_not_swallowed(as_task):
    """The relay's case: a frame arrives in the loop turn the lease cut cancels the relay."""
    arrived = asyncio.get_running_loop().create_future()
    copied = []

    async def relay():
        copied.append(await wait_at_most(asyncio.ensure_future(arrived) if as_task else arrived, 5))
        await asyncio.sleep(0.5)  # the relay would go on copying

    task = asyncio.ensure_future(relay())
    await asyncio.sleep(0)
    arrived.set_result("frame")  # the frame arrives...
    task.cancel()  # ...and the cut cancels the relay in the same turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert copied == []


async def test_a_chunk_put_as_the_idle_deadline_fires_is_neither_lost_nor_doubled():
    """Red team of the stream relays' idle flush (gateway/responses.py): the cluster's chunk lands in
    the loop turn the flush deadline fires, over and over; every chunk is taken once, in order."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    taken, timeouts, sent = [], 0, 200

    async def producer():
        for i in range(sent):
            # Due at the very moment the consumer's deadline is (both 1 ms from now), or just after.
            loop.call_later(0.001 if i % 3 else 0.0011, queue.put_nowait, i)
            await asyncio.sleep(0.0011)
        loop.call_later(0.001, queue.put_nowait, None)

    feeding = asyncio.ensure_future(producer())
    while True:
        try:
            item = await wait_at_most(queue.get(), 0.001)
        except TimeoutError:
            timeouts += 1
            continue
        if item is None:
            break
        taken.append(item)
    await feeding
    assert taken == list(range(sent))
    assert timeouts > 0


async def test_no_time_left_gives_a_coroutine_no_turn_and_takes_a_result_already_there():
    """As wait_for (3.11 and 3.12): the recorder's shutdown anchor, its deadline passed, is not started."""
    started = []

    async def anchor():
        started.append(True)
        return "anchored"

    for seconds in (0, -1):
        with pytest.raises(TimeoutError):
            await wait_at_most(anchor(), seconds)
    assert started == []
    there = asyncio.get_running_loop().create_future()
    there.set_result("there")
    assert await wait_at_most(there, 0) == "there"


@pytest.mark.parametrize("below", ["swallowed", "turned into an error"])
async def test_a_cancellation_the_awaited_code_loses_still_raises(below):
    """redis-py sends a command under its own asyncio.wait_for (socket_timeout): on 3.11 a cancellation landing
    as the send completes is swallowed there, in the caller's task.  The caller is cancelled all the same."""
    sent = asyncio.get_running_loop().create_future()
    went_on = []

    async def send_command():
        if below == "swallowed":
            return await asyncio.wait_for(sent, 5)  # returns, the cancellation lost, on 3.11
        try:
            return await sent
        except asyncio.CancelledError:
            raise ConnectionError("the connection was closed") from None

    async def listener():
        try:
            await wait_at_most(send_command(), 5)
        except ConnectionError:
            pass
        went_on.append(True)
        await asyncio.sleep(0.5)

    task = asyncio.ensure_future(listener())
    await asyncio.sleep(0)
    sent.set_result("OK")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert went_on == []
