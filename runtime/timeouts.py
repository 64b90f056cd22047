"""Waiting for an awaitable at most some seconds, without losing the caller's cancellation.

``asyncio.wait_for`` on Python 3.11 returns the awaited result, and swallows the cancellation,
when the waiting task is cancelled in the loop turn the awaitable finishes (fixed in 3.12, whose
wait_for is built on ``asyncio.timeout``).  The gateway cancels tasks to end things that must
end: a lease cut or drain stops a stream's relay, a hold ends when its agent goes away.  A
swallowed cancellation there keeps a relay copying cluster output after the cut, or a hold
polling until its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_at_most(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``; TimeoutError after ``seconds`` (None: no limit); a cancellation always raises."""
    async with asyncio.timeout(seconds):
        return await awaitable
