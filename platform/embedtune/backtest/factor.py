"""Cross-sectional factor analysis of a score panel: IC, Rank IC, ICIR, quantile returns, spread and turnover.

What Qlib's ``calc_ic`` / ``risk_analysis`` and alphalens' tear sheet report for a factor, computed over a whole
timestamp x symbol panel with array operations (one pass per quantile, no loop over timestamps), so that a model's
predicted scores on a universe can be judged by how well they *order* the symbols, not by one instrument's backtest.

Conventions (tested against alphalens-reloaded 0.5.1 in ``tests/test_factor.py``):

* The forward return ``prices.shift(-h) / prices - 1`` is the **label**, never a feature: the score at t (known at
  t's close) is paired with the return from t's close to t+h's close. It is NaN where either close is missing (no
  forward fill: alphalens forward-fills prices, so it differs only across missing bars).
* A name is in timestamp t's cross-section when it has a score, a forward return and ``tradable`` is true; a
  timestamp with fewer than 2 such names has NaN IC and no quantiles.
* IC = Pearson correlation of score and forward return across the cross-section; Rank IC = the Pearson correlation
  of their average ranks (Spearman, ``scipy.stats.spearmanr``); ICIR = mean / std (ddof=1) over timestamps with an
  IC; ``ic_tstat`` = ic_mean / (ic_std / sqrt(n)), the t-statistic of the mean IC over those n timestamps.
* Quantiles are alphalens' ``pd.qcut(scores, Q, labels=False) + 1`` of each cross-section, computed from ranks: with
  the linearly interpolated edges of ``qcut``, the name of 0-based (min) rank i of n falls in bucket
  ``max(1, ceil(i * Q / (n - 1)))``, exact integer arithmetic. Tied scores share a bucket (where ``qcut`` would
  raise on duplicate edges this still assigns one).
* Turnover of quantile k at t is alphalens' ``quantile_turnover``: the share of the names in quantile k at t that
  were not in it ``horizon`` rows earlier (NaN where either set is empty).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FactorReport:
    """Per-timestamp factor statistics of a score panel; ``summary()`` reduces them to numbers."""

    #: Pearson IC per timestamp (NaN without 2 names or without variance).
    ic: pd.Series
    #: Spearman (rank) IC per timestamp.
    rank_ic: pd.Series
    #: Mean forward return of each quantile (columns 1..Q) per timestamp.
    quantile_returns: pd.DataFrame
    #: Top minus bottom quantile mean forward return per timestamp.
    spread: pd.Series
    #: alphalens' quantile turnover of each quantile (columns 1..Q) per timestamp.
    turnover: pd.DataFrame
    horizon: int
    quantiles: int

    def summary(self) -> dict[str, float]:
        """Time means and IC statistics; NaN where a statistic has too few timestamps."""
        ic = self.ic.dropna()
        rank_ic = self.rank_ic.dropna()
        ic_mean, ic_std = _mean(ic), _std(ic)
        rank_mean, rank_std = _mean(rank_ic), _std(rank_ic)
        out = {
            "ic_mean": ic_mean,
            "ic_std": ic_std,
            "icir": _ratio(ic_mean, ic_std),
            "rank_ic_mean": rank_mean,
            "rank_icir": _ratio(rank_mean, rank_std),
            "ic_tstat": _ratio(ic_mean, ic_std / math.sqrt(len(ic))) if len(ic) > 1 else math.nan,
            "spread_mean": _mean(self.spread.dropna()),
            "top_turnover": _mean(self.turnover[self.quantiles].dropna()),
            "bottom_turnover": _mean(self.turnover[1].dropna()),
        }
        for k in range(1, self.quantiles + 1):
            out[f"q{k}_mean_return"] = _mean(self.quantile_returns[k].dropna())
        return out


def _mean(x: pd.Series) -> float:
    return float(x.mean()) if len(x) else math.nan


def _std(x: pd.Series) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def forward_returns(prices: pd.DataFrame, horizon: int = 1) -> pd.DataFrame:
    """Return from t's close to t+h's close per symbol: the label of the score at t (never a feature).

    NaN where either close is missing; the last ``horizon`` rows are NaN because their future is unknown.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return prices.shift(-horizon) / prices - 1.0


def _rowwise_pearson(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x and y over the columns where ``valid``; NaN under 2 names or no variance."""
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(valid, x, 0.0).sum(axis=1) / n
        ym = np.where(valid, y, 0.0).sum(axis=1) / n
        dx = np.where(valid, x - xm[:, None], 0.0)
        dy = np.where(valid, y - ym[:, None], 0.0)
        cov = (dx * dy).sum(axis=1)
        den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        out = cov / den
    out[(n < 2) | ~(den > 0)] = np.nan
    return out


def quantile_buckets(scores: pd.DataFrame, valid: pd.DataFrame, quantiles: int) -> np.ndarray:
    """Quantile 1..Q of each valid score within its row, 0 elsewhere: ``pd.qcut(row, Q, labels=False) + 1``.

    From ranks rather than a qcut per row, so the whole panel is one vectorized pass (see the module docstring).
    """
    masked = scores.where(valid)
    i = masked.rank(axis=1, method="min").to_numpy() - 1.0  # 0-based rank, ties share the lowest
    n = valid.to_numpy().sum(axis=1)[:, None].astype(float)
    ok = valid.to_numpy() & (n >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ceil(i * Q / (n - 1)) in integers: (i * Q + n - 2) // (n - 1); values are small exact floats.
        b = np.floor_divide(i * quantiles + n - 2.0, n - 1.0)
    b = np.where(ok, np.maximum(b, 1.0), 0.0)
    return b.astype(np.int64)


def analyze_factor(scores: pd.DataFrame, prices: pd.DataFrame, tradable: pd.DataFrame | None = None,
                   horizon: int = 1, quantiles: int = 5) -> FactorReport:
    """Factor statistics of ``scores`` (timestamp x symbol, known at each close) against ``prices``' closes.

    ``scores`` and ``tradable`` are aligned to ``prices``' index and columns (missing cells count as no score / not
    tradable); a name is used at t only with a score, a forward return and ``tradable`` true.
    """
    if quantiles < 2:
        raise ValueError(f"quantiles must be >= 2, got {quantiles}")
    prices = prices.astype(float)
    scores = scores.reindex(index=prices.index, columns=prices.columns).astype(float)
    fwd = forward_returns(prices, horizon)
    valid = scores.notna() & fwd.notna() & np.isfinite(scores) & np.isfinite(fwd)
    if tradable is not None:
        trad = tradable.reindex(index=prices.index, columns=prices.columns)
        valid &= trad.fillna(False).astype(bool)
    index = prices.index
    v = valid.to_numpy()
    s, r = scores.to_numpy(), fwd.to_numpy()

    ic = pd.Series(_rowwise_pearson(s, r, v), index=index, name="ic")
    s_rank = scores.where(valid).rank(axis=1, method="average").to_numpy()
    r_rank = fwd.where(valid).rank(axis=1, method="average").to_numpy()
    rank_ic = pd.Series(_rowwise_pearson(s_rank, r_rank, v), index=index, name="rank_ic")

    buckets = quantile_buckets(scores, valid, quantiles)
    labels = list(range(1, quantiles + 1))
    q_ret = np.full((len(index), quantiles), np.nan)
    q_turn = np.full((len(index), quantiles), np.nan)
    r0 = np.where(v, r, 0.0)
    for j, k in enumerate(labels):
        member = buckets == k
        count = member.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            q_ret[:, j] = np.where(count > 0, np.where(member, r0, 0.0).sum(axis=1) / count, np.nan)
        prev = np.zeros_like(member)
        prev[horizon:] = member[:-horizon]
        prev_count = prev.sum(axis=1)
        new = (member & ~prev).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            q_turn[:, j] = np.where((count > 0) & (prev_count > 0), new / count, np.nan)
    quantile_returns = pd.DataFrame(q_ret, index=index, columns=labels)
    turnover = pd.DataFrame(q_turn, index=index, columns=labels)
    spread = (quantile_returns[quantiles] - quantile_returns[1]).rename("spread")
    return FactorReport(ic=ic, rank_ic=rank_ic, quantile_returns=quantile_returns, spread=spread,
                        turnover=turnover, horizon=horizon, quantiles=quantiles)
