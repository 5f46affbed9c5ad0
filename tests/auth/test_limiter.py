from gateway.auth.limiter import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_max_failures_within_window_then_recovers():
    clock = Clock()
    limiter = FailureLimiter(3, 100, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("alice") is None
        limiter.record_failure("alice")
        clock.now += 10
    assert limiter.retry_after("alice") == 70  # failure at t=0 leaves the window at t=100; now t=30
    assert limiter.retry_after("bob") is None
    clock.now = 100.5
    assert limiter.retry_after("alice") is None


def test_old_failures_do_not_count():
    clock = Clock()
    limiter = FailureLimiter(2, 10, clock=clock)
    limiter.record_failure("a")
    clock.now = 20
    limiter.record_failure("a")
    assert limiter.retry_after("a") is None


def test_reset_clears_failures():
    limiter = FailureLimiter(1, 100)
    limiter.record_failure("a")
    assert limiter.retry_after("a") is not None
    limiter.reset("a")
    assert limiter.retry_after("a") is None


def test_remembered_keys_are_bounded():
    limiter = FailureLimiter(1, 100, max_keys=10)
    for i in range(100):
        limiter.record_failure(f"user{i}")
    assert len(limiter._failures) <= 10
