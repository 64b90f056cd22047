"""The job queue a dedicated thread works through: calls submitted from the event loop, run in order.

The database pool's threads (:mod:`runtime.db`) and the audit recorder's writer
(``audit.recorder``) both take ``(future, fn, args)`` jobs from a queue until a ``None`` arrives.
"""

import concurrent.futures
import queue


def submit(jobs: queue.SimpleQueue, fn, *args) -> concurrent.futures.Future:
    """Queue ``fn(*args)``; its Future is resolved by the thread working through ``jobs``."""
    future = concurrent.futures.Future()
    jobs.put((future, fn, args))
    return future


def work(jobs: queue.SimpleQueue) -> None:
    """Run the queued calls in order until a ``None`` arrives; one abandoned while queued is skipped."""
    while (job := jobs.get()) is not None:
        future, fn, args = job
        if not future.set_running_or_notify_cancel():
            continue  # abandoned while queued
        try:
            result = fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
