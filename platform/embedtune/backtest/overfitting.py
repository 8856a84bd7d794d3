"""Backtest-overfitting diagnostics for a set of trials: Deflated Sharpe Ratio and Probability of Backtest Overfitting.

Units and conventions (shared by every function here):

* Sharpe ratios are **per period** (per bar), NOT annualized: SR = mean(r) / std(r, ddof=1), no risk-free rate. The
  annualized Sharpe of ``embedtune.backtest.metrics`` is SR * sqrt(A), A = periods per year; divide by sqrt(A) to
  come back. Only :func:`select_with_overfitting_checks` annualizes, and only the Sharpe values it reports.
* ``skew`` is the sample skewness and ``kurtosis`` the **raw** (non-excess, normal = 3) fourth standardized moment,
  both with the biased (population) estimators of scipy.stats; these satisfy kurtosis >= 1 + skew^2, which keeps the
  DSR denominator real.
* ``n_obs`` (T) is the number of return observations behind the Sharpe ratio being tested.

References: Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5);
Bailey, Borwein, Lopez de Prado & Zhu (2015/2017), "The Probability of Backtest Overfitting", J. Computational
Finance 20(4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

EULER_GAMMA = 0.5772156649015329
PBOMetric = Literal["sharpe", "mean"]
_CHUNK_ELEMENTS = 1 << 22  # combinations x trials evaluated per matrix product in the PBO


@dataclass(frozen=True)
class DSRResult:
    """Outcome of a Deflated (or Probabilistic) Sharpe Ratio test; Sharpe ratios are per period."""

    sharpe: float  # observed per-period Sharpe ratio SR of the selected trial
    expected_max_sharpe: float  # SR0: expected maximum per-period Sharpe of n_trials unskilled trials
    n_trials: int
    sharpe_variance: float  # V: variance of the per-period Sharpe ratios across trials
    n_obs: int
    skew: float
    kurtosis: float  # raw fourth standardized moment (normal = 3)
    z: float  # (SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2)
    probability: float  # DSR = Phi(z): probability that the true Sharpe exceeds SR0

    @property
    def pvalue(self) -> float:
        """1 - DSR: one-sided p-value of H0 "true Sharpe <= SR0"; significant at 5% when DSR > 0.95."""
        return 1.0 - self.probability


@dataclass(frozen=True)
class PBOResult:
    """Combinatorially symmetric cross-validation (CSCV) outcome; one entry per combination where arrays."""

    pbo: float  # fraction of combinations whose logit is <= 0
    logits: np.ndarray  # lambda_c = ln(w_c / (1 - w_c)), w_c = OOS rank of the IS-best trial / (N + 1)
    is_performance: np.ndarray  # in-sample metric of the IS-best trial
    oos_performance: np.ndarray  # out-of-sample metric of that same trial
    best_trial: np.ndarray  # column index of the IS-best trial
    in_sample_blocks: np.ndarray  # (C, S/2) block indices forming each combination's in-sample half
    n_splits: int
    n_trials: int
    n_rows_used: int  # S * floor(T / S): the earliest T mod S rows are dropped


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR0 = sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e))), g = Euler-Mascheroni (BLdP 2014, eq. 6 / FST).

    Per-period units, like ``sharpe_variance``. With one trial there is no selection and SR0 = 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not (math.isfinite(sharpe_variance) and sharpe_variance >= 0):
        raise ValueError(f"sharpe_variance must be finite and >= 0, got {sharpe_variance}")
    if n_trials == 1:
        return 0.0
    quantiles = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n_trials) \
        + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sharpe_variance) * quantiles)


def _sharpe_z(sharpe: float, benchmark_sharpe: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """z = (SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2) (Mertens' standard error of SR)."""
    if n_obs < 2:
        raise ValueError(f"n_obs must be >= 2, got {n_obs}")
    for name, value in (("sharpe", sharpe), ("benchmark_sharpe", benchmark_sharpe), ("skew", skew),
                        ("kurtosis", kurtosis)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    variance_factor = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if variance_factor <= 0:
        raise ValueError(
            f"1 - skew*SR + (kurtosis - 1)/4*SR^2 = {variance_factor:.3g} <= 0: kurtosis must be the raw (non-excess) "
            f"moment with kurtosis >= 1 + skew^2 (got skew={skew}, kurtosis={kurtosis}) and SR per period"
        )
    return float((sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(variance_factor))


def probabilistic_sharpe_ratio(sharpe: float, benchmark_sharpe: float, n_obs: int, skew: float,
                               kurtosis: float) -> float:
    """PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2)): P(true SR > SR*).

    SR, SR* per period; kurtosis raw (normal = 3), so normal returns give a denominator of sqrt(1 + SR^2 / 2).
    """
    return float(stats.norm.cdf(_sharpe_z(sharpe, benchmark_sharpe, n_obs, skew, kurtosis)))


def deflated_sharpe_ratio(sharpe: float, n_trials: int, sharpe_variance: float, n_obs: int, skew: float,
                          kurtosis: float) -> DSRResult:
    """DSR = PSR with benchmark SR0 = :func:`expected_max_sharpe` (n_trials, V) (Bailey & Lopez de Prado 2014).

    ``sharpe`` is the selected (best) trial's per-period Sharpe, ``sharpe_variance`` the variance of the per-period
    Sharpe ratios of all ``n_trials`` trials, ``n_obs`` the selected trial's number of returns, ``skew`` and
    ``kurtosis`` (raw) its return moments. DSR > 0.95 rejects "the best Sharpe is the luck of n_trials tries" at 5%.
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    z = _sharpe_z(sharpe, sr0, n_obs, skew, kurtosis)
    return DSRResult(sharpe=float(sharpe), expected_max_sharpe=sr0, n_trials=int(n_trials),
                     sharpe_variance=float(sharpe_variance), n_obs=int(n_obs), skew=float(skew),
                     kurtosis=float(kurtosis), z=z, probability=float(stats.norm.cdf(z)))


def dsr_from_returns(best_returns: np.ndarray, all_trial_sharpes: np.ndarray) -> DSRResult:
    """DSR of the selected trial from its per-period returns and every trial's per-period Sharpe (itself included).

    SR = mean / std(ddof=1) of ``best_returns``; skew and raw kurtosis are biased sample moments;
    V = var(all_trial_sharpes, ddof=1) (0 for a single trial); N = len(all_trial_sharpes); T = len(best_returns).
    """
    r = np.asarray(best_returns, dtype=float)
    sharpes = np.asarray(all_trial_sharpes, dtype=float)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"best_returns must be 1-D with at least 2 values, got shape {r.shape}")
    if sharpes.ndim != 1 or sharpes.size < 1:
        raise ValueError(f"all_trial_sharpes must be 1-D and non-empty, got shape {sharpes.shape}")
    if not np.isfinite(r).all():
        raise ValueError("best_returns must be finite (fill flat bars with 0 before calling)")
    if not np.isfinite(sharpes).all():
        raise ValueError("all_trial_sharpes must be finite (a flat trial's Sharpe is 0)")
    std = float(r.std(ddof=1))
    if not std > 0:
        raise ValueError("best_returns has zero variance: its Sharpe ratio, skew and kurtosis are undefined")
    variance = float(sharpes.var(ddof=1)) if sharpes.size > 1 else 0.0
    return deflated_sharpe_ratio(
        sharpe=float(r.mean()) / std, n_trials=int(sharpes.size), sharpe_variance=variance, n_obs=int(r.size),
        skew=float(stats.skew(r, bias=True)), kurtosis=float(stats.kurtosis(r, fisher=False, bias=True)),
    )


def per_period_sharpe(returns: np.ndarray) -> np.ndarray:
    """mean / std(ddof=1) of each column of a (T x N) array; 0 for a zero-variance (flat) column."""
    r = np.asarray(returns, dtype=float)
    n = r.shape[0]
    return _moment_metric(r.sum(axis=0), (r * r).sum(axis=0), n, "sharpe")


def _moment_metric(sums: np.ndarray, sums_sq: np.ndarray, n: int, metric: PBOMetric) -> np.ndarray:
    """Metric over n rows from column sums and sums of squares; Sharpe = mean / std(ddof=1).

    Zero variance gives Sharpe 0 for a zero mean and +-inf otherwise, so a flat trial ranks in the middle.
    Raw (uncentred) sums are accurate here: the cancellation error is ~eps * (1 + SR^2), and per-bar SR is small.
    """
    mean = sums / n
    if metric == "mean":
        return mean
    var = np.maximum((sums_sq - sums * mean) / (n - 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = mean / np.sqrt(var)
    flat = var == 0
    return np.where(flat, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)), sharpe)


def _check_pbo_inputs(r: np.ndarray, n_splits: int, metric: str) -> None:
    if r.ndim != 2:
        raise ValueError(f"returns must be a 2-D (T bars x N trials) array, got shape {r.shape}")
    n_rows, n_trials = r.shape
    if metric not in ("sharpe", "mean"):
        raise ValueError(f"metric must be 'sharpe' or 'mean', got {metric!r}")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits (S) must be even and >= 2, got {n_splits}")
    if n_rows < n_splits:
        raise ValueError(f"need at least n_splits ({n_splits}) rows, got T = {n_rows}")
    if n_trials < 2:
        raise ValueError(f"need at least 2 trials (columns) to select among, got N = {n_trials}")
    if metric == "sharpe" and (n_rows // n_splits) * (n_splits // 2) < 2:
        raise ValueError(
            f"each half holds (T // S) * S/2 = {(n_rows // n_splits) * (n_splits // 2)} rows; the Sharpe ratio "
            f"(std with ddof=1) needs at least 2 (T = {n_rows}, S = {n_splits})"
        )
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite (fill flat bars with 0 before calling)")


def _oos_relative_rank(perf_oos: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rank 1..N (ties averaged) of each row's chosen value among that row's N OOS values, 1 = worst."""
    below = (perf_oos < chosen[:, None]).sum(axis=1)
    tied = (perf_oos == chosen[:, None]).sum(axis=1)
    return below + (tied + 1) / 2.0


def probability_of_backtest_overfitting(returns: np.ndarray, n_splits: int = 16,
                                        metric: PBOMetric = "sharpe") -> PBOResult:
    """PBO by CSCV (Bailey, Borwein, Lopez de Prado & Zhu 2015).

    ``returns`` is T bars x N trials over the same bars. The last S * floor(T/S) rows are cut into S equal contiguous
    blocks; each of the C(S, S/2) combinations of S/2 blocks is an in-sample (IS) half, its complement the
    out-of-sample (OOS) half. Per combination c: n* = argmax IS metric (first on ties), w_c = rank of n*'s OOS metric
    among the N trials (1 = worst, N = best, ties averaged) / (N + 1), lambda_c = ln(w_c / (1 - w_c)).
    PBO = #{c: lambda_c <= 0} / C. ``metric`` is the per-period Sharpe (mean / std, ddof=1) or the mean return.
    Vectorized: per-block column sums and sums of squares, combined for a batch of combinations by one matrix product.
    """
    r = np.asarray(returns, dtype=float)
    _check_pbo_inputs(r, n_splits, metric)
    n_rows, n_trials = r.shape
    block = n_rows // n_splits
    used = r[n_rows - block * n_splits:].reshape(n_splits, block, n_trials)
    block_sums, block_sq = used.sum(axis=1), (used * used).sum(axis=1)
    total_sums, total_sq = block_sums.sum(axis=0), block_sq.sum(axis=0)
    in_sample = np.array(list(combinations(range(n_splits), n_splits // 2)), dtype=np.intp)
    membership = np.zeros((len(in_sample), n_splits))
    np.put_along_axis(membership, in_sample, 1.0, axis=1)
    half = block * n_splits // 2

    best = np.empty(len(in_sample), dtype=np.intp)
    is_perf = np.empty(len(in_sample))
    oos_perf = np.empty(len(in_sample))
    ranks = np.empty(len(in_sample))
    step = max(1, _CHUNK_ELEMENTS // n_trials)
    for start in range(0, len(in_sample), step):
        rows = slice(start, start + step)
        is_sums, is_sq = membership[rows] @ block_sums, membership[rows] @ block_sq
        perf_is = _moment_metric(is_sums, is_sq, half, metric)
        perf_oos = _moment_metric(total_sums - is_sums, total_sq - is_sq, half, metric)
        chosen = np.argmax(perf_is, axis=1)
        take = np.arange(len(chosen))
        best[rows], is_perf[rows], oos_perf[rows] = chosen, perf_is[take, chosen], perf_oos[take, chosen]
        ranks[rows] = _oos_relative_rank(perf_oos, perf_oos[take, chosen])
    w = ranks / (n_trials + 1)
    logits = np.log(w / (1.0 - w))
    return PBOResult(pbo=float(np.mean(logits <= 0)), logits=logits, is_performance=is_perf,
                     oos_performance=oos_perf, best_trial=best, in_sample_blocks=in_sample, n_splits=n_splits,
                     n_trials=n_trials, n_rows_used=block * n_splits)


def select_with_overfitting_checks(trial_returns: pd.DataFrame, periods_per_year: float,
                                   n_splits: int = 16) -> dict[str, float]:
    """Overfitting checks for the best trial (highest Sharpe) of a leaderboard, as plain floats.

    ``trial_returns``: one column per trial (every trial tried, flat ones included), rows = the shared OOS bars of
    ``TrialRecord.oos["strategy_return"]``; NaN returns count as 0 (no position). A zero-variance trial has Sharpe 0.
    Keys: ``best_sharpe`` and ``expected_max_sharpe`` (SR0), both annualized by sqrt(periods_per_year);
    ``deflated_sharpe`` = DSR, the probability in [0, 1] that the best trial's true Sharpe exceeds SR0;
    ``dsr_pvalue`` = 1 - DSR; ``pbo`` by CSCV over ``n_splits`` blocks (NaN with a single trial); ``n_trials``.
    """
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    if trial_returns.shape[1] < 1:
        raise ValueError("trial_returns has no trial columns")
    returns = trial_returns.astype(float).fillna(0.0).to_numpy()
    if returns.shape[0] < 2:
        raise ValueError(f"need at least 2 out-of-sample bars, got {returns.shape[0]}")
    if not np.isfinite(returns).all():
        raise ValueError("trial_returns must be finite or NaN")
    sharpes = per_period_sharpe(returns)
    if not np.isfinite(sharpes).all():
        raise ValueError("a trial has constant non-zero returns: its Sharpe ratio is infinite")
    best = int(np.argmax(sharpes))
    dsr = dsr_from_returns(returns[:, best], sharpes)
    pbo = probability_of_backtest_overfitting(returns, n_splits).pbo if returns.shape[1] >= 2 else math.nan
    annual = math.sqrt(periods_per_year)
    return {
        "best_sharpe": dsr.sharpe * annual,
        "expected_max_sharpe": dsr.expected_max_sharpe * annual,
        "deflated_sharpe": dsr.probability,
        "dsr_pvalue": dsr.pvalue,
        "pbo": pbo,
        "n_trials": float(dsr.n_trials),
    }
