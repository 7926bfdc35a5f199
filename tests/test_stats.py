"""Wilson score intervals against published values (Newcombe 1998, Table I, method 3)."""

from __future__ import annotations

import pytest

from eval.stats import wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_the_interval_matches_published_values(successes: int, trials: int, low: float, high: float) -> None:
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)


def test_a_wider_z_widens_the_interval_and_no_trials_say_nothing() -> None:
    low95, high95 = wilson_interval(40, 50)
    low99, high99 = wilson_interval(40, 50, z=2.5758)
    assert low99 < low95 < 0.8 < high95 < high99
    assert wilson_interval(0, 0) == (0.0, 1.0)
