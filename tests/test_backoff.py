from __future__ import annotations

import random

import pytest

from orchestrator.backoff import JITTER, Backoff, jittered, retry_after_seconds


def test_waits_double_up_to_the_cap_each_within_the_jitter_band() -> None:
    random.seed(1)
    backoff = Backoff(0.2, 2.0)
    delays = [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    for delay in delays:
        wait = backoff.next()
        assert delay * (1 - JITTER) <= wait <= min(delay * (1 + JITTER), 2.0)


def test_no_wait_is_over_the_cap() -> None:
    backoff = Backoff(1.0, 1.0)
    assert max(backoff.next() for _ in range(500)) <= 1.0


def test_jitter_spreads_the_waits() -> None:
    waits = {round(jittered(1.0), 6) for _ in range(50)}
    assert len(waits) > 40
    assert min(waits) >= 1 - JITTER and max(waits) < 1 + JITTER


def test_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(0.1, 10.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.1 * (1 + JITTER)


def test_a_steady_pace_with_factor_one() -> None:
    backoff = Backoff(0.5, 5.0, factor=1.0)
    for _ in range(10):
        assert 0.5 * (1 - JITTER) <= backoff.next() <= 0.5 * (1 + JITTER)


def test_retry_after_wins_within_its_cap_and_the_delay_still_grows() -> None:
    backoff = Backoff(1.0, 4.0)
    assert backoff.next(retry_after=3.0) == 3.0
    assert backoff.next(retry_after=100.0) == 4.0
    assert backoff.next(retry_after=-1.0) == 0.0
    assert backoff.delay == 4.0  # 1 -> 2 -> 4, capped
    assert Backoff(0.2, 10.0, retry_after_cap=60.0).next(retry_after=30.0) == 30.0


@pytest.mark.parametrize(
    ("header", "seconds"), [(None, None), ("", None), ("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None)]
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_refuses_a_shrinking_backoff() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(1.0, 2.0, factor=0.5)
