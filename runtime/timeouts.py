"""Waiting for an awaitable at most some seconds, without losing the caller's cancellation.

``asyncio.wait_for`` on Python 3.11 returns the awaited result, and swallows the cancellation,
when the waiting task is cancelled in the loop turn the awaitable finishes (fixed in 3.12, whose
wait_for is built on ``asyncio.timeout``).  The gateway cancels tasks to end things that must
end: a lease cut or drain stops a stream's relay, a hold ends when its agent goes away, an agent
gone stops a write before it is forwarded.  A swallowed cancellation there keeps a relay copying
cluster output after the cut, a hold polling until its timeout, or forwards the write.

:func:`wait_at_most` is 3.12's wait_for (the awaitable runs in the caller's task under
``asyncio.timeout``; an awaited Task is cancelled, and waited for, at the deadline; a limit of 0
or less gives a coroutine no turn), with one thing more.  wait_for ran the awaitable in a task of
its own and raised the caller's cancellation whatever that task did; run in the caller's task,
code below that swallows a cancellation, or turns it into an error, would do it to the caller's.
redis-py does: it sends each command under its own 3.11 wait_for (``socket_timeout``), and a
cache-invalidation listener stopped as a send completed went on listening, holding the shutdown.
The cancellation is raised here then, as wait_for did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_at_most(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``; TimeoutError after ``seconds`` (None: no limit); a cancellation always raises."""
    if seconds is not None and seconds <= 0:  # no time left: the result if it is already there
        future = asyncio.ensure_future(awaitable)
        if not future.done():
            future.cancel()
            await asyncio.wait([future])
        if future.cancelled():
            raise TimeoutError
        return future.result()
    task = asyncio.current_task()
    cancelling = task.cancelling()
    try:
        async with asyncio.timeout(seconds):
            result = await awaitable
    except Exception as exc:
        if task.cancelling() > cancelling:  # the cancellation was turned into an error below
            raise asyncio.CancelledError from exc
        raise
    if task.cancelling() > cancelling:  # the cancellation was swallowed below
        raise asyncio.CancelledError
    return result
