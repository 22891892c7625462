"""Student's t CDF and Welch's t-test (significance.py) against closed forms, t tables and
a textbook example."""

from __future__ import annotations

import math

import pytest

from lem.coordinator.results.significance import (
    regularized_incomplete_beta,
    student_t_cdf,
    two_sided_p,
    welch_t_test,
)
from lem.coordinator.results.stats import _T95


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 63.657])
def test_t_cdf_matches_closed_forms_for_1_and_2_degrees_of_freedom(t: float) -> None:
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


@pytest.mark.parametrize("df", range(1, 31))
def test_two_sided_p_at_the_published_95_percent_critical_values_is_5_percent(df: int) -> None:
    # The table (stats.py, three decimals as printed in t tables) rounds t: p within 2e-4.
    assert two_sided_p(_T95[df - 1], df) == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize(
    ("t", "df", "one_sided_p"),
    # Published one-sided critical values: t_{0.005, 10} = 3.169, t_{0.025, 5} = 2.571,
    # t_{0.10, 20} = 1.325, t_{0.05, 120} = 1.658.
    [(3.169, 10, 0.005), (2.571, 5, 0.025), (1.325, 20, 0.10), (1.658, 120, 0.05)],
)
def test_t_cdf_at_published_one_sided_values(t: float, df: int, one_sided_p: float) -> None:
    assert 1 - student_t_cdf(t, df) == pytest.approx(one_sided_p, rel=2e-3)


@pytest.mark.parametrize(
    ("t", "df", "cdf"),
    # Non-integer degrees of freedom (Welch's df are real), values from scipy.stats.t.cdf.
    [
        (0.5, 3.7, 0.6773321833400341),
        (1.0, 25.3, 0.8366102760301443),
        (3.0, 4.5, 0.9828095660556202),
        (-1.5, 7.0, 0.088649243494985),
        (10.0, 2.2, 0.9964477681448708),
        (0.1, 100.0, 0.5397277344520743),
    ],
)
def test_t_cdf_at_real_degrees_of_freedom(t: float, df: float, cdf: float) -> None:
    assert student_t_cdf(t, df) == pytest.approx(cdf, rel=1e-12)


def test_t_cdf_is_symmetric_and_bounded() -> None:
    assert student_t_cdf(0.0, 3.3) == 0.5
    assert student_t_cdf(1.7, 6.0) + student_t_cdf(-1.7, 6.0) == pytest.approx(1.0, abs=1e-15)
    assert student_t_cdf(math.inf, 4) == 1.0 and student_t_cdf(-math.inf, 4) == 0.0


def test_incomplete_beta_edges_and_a_closed_form() -> None:
    assert regularized_incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert regularized_incomplete_beta(2.0, 3.0, 1.0) == 1.0
    x = 0.3  # I_x(1, b) = 1 - (1 - x)^b
    assert regularized_incomplete_beta(1.0, 4.0, x) == pytest.approx(1 - (1 - x) ** 4, rel=1e-13)
    with pytest.raises(ValueError):
        regularized_incomplete_beta(0.0, 1.0, 0.5)


# Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 25.0, p = 0.021 (A1 against A2);
# the full-precision values are scipy.stats.ttest_ind(a1, a2, equal_var=False)'s.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
B1 = [17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8]
B2 = [21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6,
      21.5, 22.5, 23.5, 21.5, 21.8]  # fmt: skip


def test_welch_on_the_textbook_examples() -> None:
    one = welch_t_test(A2, A1)  # mean(A1) - mean(A2): the example's sign
    assert one.t == pytest.approx(-2.455356398286006, rel=1e-12)
    assert one.df == pytest.approx(24.988529290231416, rel=1e-12)
    assert one.p == pytest.approx(0.021378001462866992, rel=1e-9)
    two = welch_t_test(B2, B1)
    assert two.t == pytest.approx(-1.5654335235985037, rel=1e-12)
    assert two.df == pytest.approx(9.904741248650831, rel=1e-12)
    assert two.p == pytest.approx(0.14884169660532817, rel=1e-9)


def test_welch_sign_follows_b_minus_a() -> None:
    assert welch_t_test([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]).t > 0
    assert welch_t_test([2.0, 2.1, 1.9], [1.0, 1.1, 0.9]).t < 0


def test_welch_without_variance() -> None:
    same = welch_t_test([3.0, 3.0], [3.0, 3.0, 3.0])
    assert same.p == 1.0 and same.t == 0.0 and same.df is None
    apart = welch_t_test([3.0, 3.0], [4.0, 4.0])
    assert apart.p == 0.0 and apart.t == math.inf


def test_welch_needs_two_values_a_side() -> None:
    with pytest.raises(ValueError, match=">= 2 values"):
        welch_t_test([1.0], [1.0, 2.0])


def test_sample_variance_is_exactly_statistics_variance() -> None:
    """The fast variance (floats where that is exact, integers otherwise) gives the very
    float ``statistics.variance`` gives, for pairs and longer samples of any magnitude."""
    import random
    import statistics

    from lem.coordinator.results.significance import sample_variance

    rng = random.Random(16)
    samples: list[list[float]] = [[1.0, 1.0], [0.0, -0.0], [5e-324, 1e-323], [1e308, -1e308]]
    for _ in range(20_000):
        x = rng.choice([rng.gauss(0.004, 1e-4), 10 ** rng.uniform(-320, 308), -rng.random()])
        n = rng.choice([2, 2, 2, 3, 5])
        samples.append([x * rng.uniform(0.3, 3.0) for _ in range(n - 1)] + [x])
        samples.append([x, math.nextafter(x, math.inf)])
    for values in samples:
        try:
            want: float | str = statistics.variance(values)
        except OverflowError:
            want = "overflow"
        try:
            got: float | str = sample_variance(values)
        except OverflowError:
            got = "overflow"
        assert got == want or (got != got and want != want), values  # NaN: both NaN
