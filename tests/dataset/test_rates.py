"""Rates over rows: the Wilson interval a dataset case reports, the bound it asserts and the control test."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vsp_assert.checks.rates import Rate, rate_passes, two_proportion_p, wilson

counts = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n)))


@given(counts)
def test_the_interval_holds_the_rate_and_stays_in_unit_range(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert (low == 0.0) == (k == 0) and (high == 1.0) == (k == n)


@given(counts)
def test_more_rows_at_the_same_rate_narrow_the_interval(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson(k, n)
    low4, high4 = wilson(4 * k, 4 * n)
    assert high4 - low4 < high - low


def test_known_wilson_values() -> None:  # textbook: 81/263 → [0.2553, 0.3662]
    low, high = wilson(81, 263)
    assert round(low, 4) == 0.2553 and round(high, 4) == 0.3662


@given(counts, st.floats(0, 1))
def test_the_interval_bound_is_stricter_than_the_point_bound(kn: tuple[int, int], bound: float) -> None:
    rate = Rate(*kn)
    if rate_passes(rate, bound, None, on_interval=True):
        assert rate_passes(rate, bound, None)
    if rate_passes(rate, None, bound, on_interval=True):
        assert rate_passes(rate, None, bound)


def test_a_target_far_above_its_controls_is_significant_and_an_equal_one_is_not() -> None:
    assert two_proportion_p(90, 100, 40, 800) < 1e-10
    assert two_proportion_p(10, 100, 80, 800) > 0.4
    assert two_proportion_p(5, 100, 40, 800) >= 0.5  # below the controls: no evidence at all
