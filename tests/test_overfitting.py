"""Deflated Sharpe ratio, probability of backtest overfitting (CSCV) and combinatorial purged CV splits.

Sharpe ratios here are per period (mean / std, ddof=1, not annualized); kurtosis is raw (normal = 3).
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from embedtune.backtest.overfitting import (
    EULER_GAMMA, deflated_sharpe_ratio, dsr_from_returns, expected_max_sharpe, probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting, select_with_overfitting_checks,
)
from embedtune.backtest.splits import combinatorial_purged_folds, cpcv_paths

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------- DSR / PSR


def test_dsr_hand_computed_case() -> None:
    """SR = 0.1 per bar, N = 100 trials, V = 0.0025, T = 1250, skew = -0.3, raw kurtosis = 5."""
    sr, n, v, t, skew, kurt = 0.1, 100, 0.0025, 1250, -0.3, 5.0
    q1 = stats.norm.ppf(1 - 1 / n)  # Z^-1(0.99) = 2.326348
    q2 = stats.norm.ppf(1 - 1 / (n * math.e))  # Z^-1(0.996321) = 2.680210
    assert q1 == pytest.approx(2.326348, abs=1e-6) and q2 == pytest.approx(2.680210, abs=1e-6)
    sr0 = math.sqrt(v) * ((1 - EULER_GAMMA) * q1 + EULER_GAMMA * q2)  # 0.05 * 2.530603 = 0.126530
    assert sr0 == pytest.approx(0.1265301, abs=1e-7)
    denominator = math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2)  # sqrt(1 + 0.03 + 0.01) = 1.019804
    z = (sr - sr0) * math.sqrt(t - 1) / denominator  # -0.026530 * 35.341194 / 1.019804 = -0.919399
    assert z == pytest.approx(-0.919399, abs=1e-6)
    dsr = stats.norm.cdf(z)  # 0.178943
    assert dsr == pytest.approx(0.178943, abs=1e-6)

    result = deflated_sharpe_ratio(sr, n, v, t, skew, kurt)
    assert result.expected_max_sharpe == pytest.approx(sr0, rel=1e-12)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.probability == pytest.approx(dsr, rel=1e-12)
    assert result.pvalue == pytest.approx(1 - dsr, rel=1e-12)
    assert expected_max_sharpe(n, v) == pytest.approx(sr0, rel=1e-12)
    assert probabilistic_sharpe_ratio(sr, sr0, t, skew, kurt) == pytest.approx(dsr, rel=1e-12)


def test_psr_for_normal_returns_with_zero_benchmark() -> None:
    """Normal returns (skew 0, raw kurtosis 3): PSR = Phi(SR sqrt(T-1) / sqrt(1 + SR^2/2)) ~ Phi(SR sqrt(T-1))."""
    sr, t = 0.05, 500
    psr = probabilistic_sharpe_ratio(sr, 0.0, t, 0.0, 3.0)
    assert psr == pytest.approx(stats.norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(1 + sr ** 2 / 2)), rel=1e-12)
    assert psr == pytest.approx(stats.norm.cdf(sr * math.sqrt(t - 1)), abs=5e-4)
    assert probabilistic_sharpe_ratio(0.0, 0.0, t, 0.0, 3.0) == pytest.approx(0.5)


def test_dsr_single_trial_is_psr_and_more_trials_deflate() -> None:
    assert expected_max_sharpe(1, 0.01) == 0.0
    single = deflated_sharpe_ratio(0.08, 1, 0.0, 750, 0.1, 4.0)
    assert single.probability == pytest.approx(probabilistic_sharpe_ratio(0.08, 0.0, 750, 0.1, 4.0), rel=1e-12)
    probabilities = [deflated_sharpe_ratio(0.08, n, 0.001, 750, 0.1, 4.0).probability for n in (2, 10, 100, 1000)]
    assert all(a > b for a, b in zip(probabilities, probabilities[1:]))


def test_dsr_from_returns_uses_the_documented_moments() -> None:
    rng = np.random.default_rng(3)
    best = rng.standard_t(5, size=800) * 0.01 + 0.001
    sharpes = rng.normal(0.0, 0.03, size=20)
    result = dsr_from_returns(best, sharpes)
    assert result.sharpe == pytest.approx(best.mean() / best.std(ddof=1), rel=1e-12)
    assert result.skew == pytest.approx(stats.skew(best), rel=1e-12)
    assert result.kurtosis == pytest.approx(stats.kurtosis(best) + 3.0, rel=1e-12)
    assert result.sharpe_variance == pytest.approx(np.var(sharpes, ddof=1), rel=1e-12)
    assert (result.n_trials, result.n_obs) == (20, 800)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.1, 0, 0.01, 100, 0.0, 3.0), "n_trials"),
        ((0.1, 10, -0.01, 100, 0.0, 3.0), "sharpe_variance"),
        ((0.1, 10, 0.01, 1, 0.0, 3.0), "n_obs"),
        ((0.5, 10, 0.01, 100, 5.0, 1.0), "kurtosis must be the raw"),
        ((math.nan, 10, 0.01, 100, 0.0, 3.0), "sharpe must be finite"),
    ],
)
def test_dsr_rejects_impossible_inputs(args: tuple[float, int, float, int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deflated_sharpe_ratio(*args)


def test_dsr_from_returns_rejects_flat_or_missing_returns() -> None:
    with pytest.raises(ValueError, match="zero variance"):
        dsr_from_returns(np.zeros(50), np.array([0.0, 0.1]))
    with pytest.raises(ValueError, match="finite"):
        dsr_from_returns(np.array([0.1, np.nan, 0.2]), np.array([0.0, 0.1]))


# ----------------------------------------------------------------------------------------------- PBO (CSCV)


def _reference_pbo(returns: np.ndarray, n_splits: int) -> tuple[float, np.ndarray, np.ndarray]:
    """CSCV from the paper's definition, one combination at a time (scipy average ranks, numpy Sharpe)."""
    n_rows, n_trials = returns.shape
    block = n_rows // n_splits
    blocks = np.split(returns[n_rows - block * n_splits:], n_splits)
    logits, best = [], []
    for in_sample in combinations(range(n_splits), n_splits // 2):
        is_rows = np.concatenate([blocks[j] for j in in_sample])
        oos_rows = np.concatenate([blocks[j] for j in range(n_splits) if j not in in_sample])
        is_sharpe = is_rows.mean(0) / is_rows.std(0, ddof=1)
        oos_sharpe = oos_rows.mean(0) / oos_rows.std(0, ddof=1)
        chosen = int(np.argmax(is_sharpe))
        w = stats.rankdata(oos_sharpe)[chosen] / (n_trials + 1)
        logits.append(math.log(w / (1 - w)))
        best.append(chosen)
    logits_arr = np.array(logits)
    return float(np.mean(logits_arr <= 0)), logits_arr, np.array(best)


def test_pbo_hand_case_two_blocks_sharpe() -> None:
    """T = 4, S = 2 (blocks rows 0-1 and 2-3), N = 4; the Sharpe of [a, b] is (a + b) / (sqrt2 |a - b|).

    Block 0 Sharpe x sqrt2: A 2, B -2, C 1, D 5/3   -> best A, worst B.
    Block 1 Sharpe x sqrt2: A 3, B 5,  C 1, D 0     -> best B, A second.
    IS = block 0: choose A, OOS rank 3 of 4 -> w = 3/5, lambda = ln(1.5) > 0.
    IS = block 1: choose B, OOS rank 1 of 4 -> w = 1/5, lambda = ln(0.25) <= 0.   PBO = 1/2.
    """
    returns = np.array([[1, -3, 0, 1], [3, -1, 1, 4], [1, 2, 0, -1], [2, 3, 1, 1]], dtype=float)
    result = probability_of_backtest_overfitting(returns, n_splits=2)
    assert result.pbo == 0.5
    np.testing.assert_array_equal(result.in_sample_blocks, [[0], [1]])
    np.testing.assert_array_equal(result.best_trial, [0, 1])
    np.testing.assert_allclose(result.logits, [math.log(1.5), math.log(0.25)], rtol=1e-12)
    np.testing.assert_allclose(result.is_performance, [2 / SQRT2, 5 / SQRT2], rtol=1e-12)
    np.testing.assert_allclose(result.oos_performance, [3 / SQRT2, -2 / SQRT2], rtol=1e-12)


def test_pbo_hand_case_four_blocks_mean_with_ties() -> None:
    """T = 4, S = 4 (one row per block), N = 2, metric = mean. A = 1 everywhere, B = [4, 0, 2, 0].

    IS (0,1): B 2 > A 1 -> B; OOS (2,3): B 1 = A 1, tie -> average rank 1.5, w = 1/2, lambda = 0.
    IS (0,2): B 3 -> OOS (1,3): B 0 < 1 -> rank 1, lambda = ln(1/2).   IS (0,3): B 2 -> OOS (1,2): tie, lambda = 0.
    IS (1,2), (2,3): tie 1 = 1 -> first trial A; IS (1,3): A. Each time B beats A out of sample -> lambda = ln(1/2).
    Every lambda <= 0: PBO = 1.
    """
    returns = np.array([[1, 4], [1, 0], [1, 2], [1, 0]], dtype=float)
    result = probability_of_backtest_overfitting(returns, n_splits=4, metric="mean")
    half = math.log(0.5)
    np.testing.assert_array_equal(result.best_trial, [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(result.logits, [0.0, half, 0.0, half, half, half], atol=1e-12)
    np.testing.assert_allclose(result.is_performance, [2, 3, 2, 1, 1, 1])
    np.testing.assert_allclose(result.oos_performance, [1, 0, 1, 1, 1, 1])
    assert result.pbo == 1.0


def test_pbo_matches_the_definition_on_random_data() -> None:
    """T = 37 rows, S = 6: the first 37 - 36 = 1 row is dropped; C(6, 3) = 20 combinations."""
    returns = np.random.default_rng(5).normal(0.0, 0.01, size=(37, 5))
    result = probability_of_backtest_overfitting(returns, n_splits=6)
    pbo, logits, best = _reference_pbo(returns, 6)
    assert result.n_rows_used == 36 and len(result.logits) == math.comb(6, 3)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(result.best_trial, best)
    assert result.pbo == pbo


def test_pbo_near_zero_for_a_planted_drift() -> None:
    """Trial 0 = noise + 1 per bar (per-bar Sharpe ~1 vs ~0): best in every half, so every lambda = ln(10) > 0."""
    rng = np.random.default_rng(7)
    returns = rng.standard_normal((1600, 10))
    returns[:, 0] += 1.0
    result = probability_of_backtest_overfitting(returns, n_splits=16)
    assert len(result.logits) == math.comb(16, 8)
    assert result.pbo == 0.0
    assert (result.best_trial == 0).all()
    np.testing.assert_allclose(result.logits, math.log(10.0))


def test_null_random_walks_are_not_significant_and_overfit() -> None:
    """50 trials of iid noise (random-walk increments), T = 1000, seed 11: the best trial's DSR < 0.95 (not
    significant at 5%) though its naive PSR against 0 is > 0.95, and PBO > 0.3 (about 0.5 expected under the null)."""
    returns = np.random.default_rng(11).normal(0.0, 0.01, size=(1000, 50))
    sharpes = returns.mean(0) / returns.std(0, ddof=1)
    best = int(np.argmax(sharpes))
    dsr = dsr_from_returns(returns[:, best], sharpes)
    naive = probabilistic_sharpe_ratio(dsr.sharpe, 0.0, dsr.n_obs, dsr.skew, dsr.kurtosis)
    assert dsr.probability < 0.95
    assert naive > 0.95 > dsr.probability  # naive PSR vs 0 calls the luckiest of 50 significant (0.997 vs 0.652)
    assert probability_of_backtest_overfitting(returns, n_splits=16).pbo > 0.3


@pytest.mark.parametrize(
    ("returns", "kwargs", "message"),
    [
        (np.zeros((20, 3)), dict(n_splits=5), "even"),
        (np.zeros((20, 3)), dict(n_splits=0), "even"),
        (np.zeros((10, 3)), dict(n_splits=16), "at least n_splits"),
        (np.zeros((20, 1)), dict(n_splits=4), "at least 2 trials"),
        (np.zeros(20), dict(n_splits=4), "2-D"),
        (np.zeros((3, 3)), dict(n_splits=2), "needs at least 2"),
        (np.full((20, 3), np.nan), dict(n_splits=4), "finite"),
        (np.zeros((20, 3)), dict(n_splits=4, metric="sortino"), "metric"),
    ],
)
def test_pbo_rejects_impossible_inputs(returns: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        probability_of_backtest_overfitting(returns, **kwargs)  # type: ignore[arg-type]


def test_select_with_overfitting_checks_for_the_leaderboard() -> None:
    rng = np.random.default_rng(13)
    index = pd.date_range("2020-01-01", periods=1600, freq="D")
    frame = pd.DataFrame(rng.normal(0.0, 0.01, size=(1600, 8)), index=index, columns=[f"t{i:03d}" for i in range(8)])
    frame["t003"] += 0.004  # per-bar Sharpe ~0.4: clearly skilled
    frame["t007"] = 0.0  # a flat trial still counts as a trial
    frame.iloc[0] = np.nan  # the first out-of-sample bar has no return yet
    out = select_with_overfitting_checks(frame, periods_per_year=252.0)
    assert set(out) == {"best_sharpe", "expected_max_sharpe", "deflated_sharpe", "dsr_pvalue", "pbo", "n_trials"}
    returns = frame.fillna(0.0)["t003"]
    assert out["best_sharpe"] == pytest.approx(returns.mean() / returns.std() * math.sqrt(252.0), rel=1e-9)
    assert out["n_trials"] == 8.0 and out["deflated_sharpe"] > 0.95 and out["pbo"] == 0.0
    assert out["dsr_pvalue"] == pytest.approx(1 - out["deflated_sharpe"])
    single = select_with_overfitting_checks(frame[["t003"]], periods_per_year=252.0)
    assert math.isnan(single["pbo"]) and single["expected_max_sharpe"] == 0.0
    with pytest.raises(ValueError, match="periods_per_year"):
        select_with_overfitting_checks(frame, periods_per_year=0.0)


# ----------------------------------------------------------------------------------------------- CPCV


def _groups_by_definition(n: int, n_groups: int, first_valid: int) -> list[list[int]]:
    """Contiguous groups of first_valid..n-1; the first (n - first_valid) mod n_groups groups hold one extra sample."""
    size, extra = divmod(n - first_valid, n_groups)
    groups, start = [], first_valid
    for j in range(n_groups):
        stop = start + size + (j < extra)
        groups.append(list(range(start, stop)))
        start = stop
    return groups


def test_cpcv_split_counts_and_test_group_frequency() -> None:
    n_groups, k = 6, 2
    folds = combinatorial_purged_folds(600, n_groups=n_groups, n_test_groups=k, purge=5, embargo=3, horizon=5)
    assert len(folds) == math.comb(n_groups, k) == 15
    assert [f.index for f in folds] == list(range(15))
    groups = _groups_by_definition(600, n_groups, 0)
    for g in groups:
        hits = sum(set(g) <= set(f.test.tolist()) for f in folds)
        assert hits == math.comb(n_groups - 1, k - 1) == 5


def test_cpcv_brute_force_against_definitions() -> None:
    """Random parameters: a ValueError exactly when infeasible, else folds equal to the definition and leak-free."""
    rng = np.random.default_rng(17)
    built = 0
    for _ in range(250):
        n = int(rng.integers(1, 160))
        horizon = int(rng.integers(1, 6))
        n_groups = int(rng.integers(2, 8))
        params = dict(n_groups=n_groups, n_test_groups=int(rng.integers(1, n_groups)),
                      purge=horizon + int(rng.integers(0, 3)), embargo=int(rng.integers(0, 5)), horizon=horizon,
                      first_valid=int(rng.integers(0, 20)))
        purge, embargo, first_valid = params["purge"], params["embargo"], params["first_valid"]
        if n - first_valid < n_groups:
            with pytest.raises(ValueError):
                combinatorial_purged_folds(n, **params)
            continue
        groups = _groups_by_definition(n, n_groups, first_valid)
        expected_trains = []
        for combo in combinations(range(n_groups), params["n_test_groups"]):
            banned = {u for j in combo for u in range(groups[j][0] - purge, groups[j][-1] + embargo + 1)}
            expected_trains.append(sorted(set(range(first_valid, n)) - banned))
        if not all(expected_trains):
            with pytest.raises(ValueError, match="no training sample"):
                combinatorial_purged_folds(n, **params)
            continue
        folds = combinatorial_purged_folds(n, **params)
        built += 1
        for fold, combo, expected_train in zip(folds, combinations(range(n_groups), params["n_test_groups"]),
                                               expected_trains):
            train, test = fold.train.tolist(), fold.test.tolist()
            assert test == sorted(u for j in combo for u in groups[j])
            assert train == expected_train and not set(train) & set(test)
            for t in train:  # no training label window [t+1, t+h] touches a test sample
                assert not set(range(t + 1, t + horizon + 1)) & set(test)
            for j in combo:  # purge before and embargo after every test group
                start, end = groups[j][0], groups[j][-1]
                assert not set(train) & set(range(start - purge, start))
                assert not set(train) & set(range(end + 1, end + embargo + 1))
    assert built > 100


@pytest.mark.parametrize(("n_groups", "k"), [(2, 1), (5, 1), (6, 2), (6, 3), (7, 4), (8, 2)])
def test_cpcv_paths_cover_every_group_once(n_groups: int, k: int) -> None:
    paths = cpcv_paths(n_groups, k)
    n_paths = k * math.comb(n_groups, k) // n_groups
    assert paths.shape == (n_paths, n_groups) and n_paths == math.comb(n_groups - 1, k - 1)
    combos = list(combinations(range(n_groups), k))
    for g in range(n_groups):  # column g: every split testing g, once each
        assert sorted(paths[:, g].tolist()) == [i for i, c in enumerate(combos) if g in c]
    np.testing.assert_array_equal(np.bincount(paths.ravel(), minlength=len(combos)), np.full(len(combos), k))
    folds = combinatorial_purged_folds(20 * n_groups + 3, n_groups=n_groups, n_test_groups=k, purge=2, embargo=1,
                                       horizon=2, first_valid=3)
    groups = _groups_by_definition(20 * n_groups + 3, n_groups, 3)
    for path in paths:  # stitching each group's predictions from its split rebuilds the whole sample range once
        stitched = [u for g, split in enumerate(path) for u in folds[split].test.tolist() if u in set(groups[g])]
        assert stitched == list(range(3, 20 * n_groups + 3))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(purge=4), r"purge \(4\) must be >= horizon \(5\)"),
        (dict(n_groups=1, n_test_groups=1), "n_groups"),
        (dict(n_test_groups=6), "n_test_groups"),
        (dict(n_test_groups=0), "n_test_groups"),
        (dict(embargo=-1), "embargo"),
        (dict(first_valid=-1), "first_valid"),
        (dict(horizon=0, purge=0), "horizon"),
        (dict(n_samples=5), "every group needs at least one sample"),
        (dict(n_samples=40, purge=10, embargo=10), "no training sample"),
    ],
)
def test_cpcv_impossible_sizes_name_the_quantity(overrides: dict[str, int], message: str) -> None:
    kwargs = dict(n_samples=600, n_groups=6, n_test_groups=2, purge=5, embargo=3, horizon=5, first_valid=0)
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=message):
        combinatorial_purged_folds(kwargs.pop("n_samples"), **kwargs)
    with pytest.raises(ValueError, match="n_test_groups"):
        cpcv_paths(4, 4)
