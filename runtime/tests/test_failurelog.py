import logging

from runtime.failurelog import FailureLog


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_one_line_per_interval_with_the_count_left_out_and_never_the_message(caplog):
    clock = Clock()
    failures = FailureLog(logging.getLogger("test.failurelog"), "cache invalidation", 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.failurelog"):
        failures.failed("publish", ConnectionError("redis://:hunter2@redis:6379/0 refused"))
        for _ in range(3):
            clock.now += 2
            failures.failed("publish", ConnectionError("again"))
        clock.now += 10
        failures.failed("listener", TimeoutError())
    assert [r.getMessage() for r in caplog.records] == [
        "cache invalidation publish failed: ConnectionError",
        "cache invalidation listener failed: TimeoutError (3 more since the last report)",
    ]
    assert "hunter2" not in caplog.text
