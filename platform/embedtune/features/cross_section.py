"""Cross-sectional transforms of panel features, per timestamp over the symbols present there.

One model over many symbols sees each symbol's features on its own scale (a volatile name's returns dwarf a quiet
one's); putting every timestamp's cross-section on one scale makes the model compare names with each other, the
way a factor is judged (``backtest/factor.py``). Each transform reads the rows of one timestamp only, so a causal
feature stays causal. The input is a long frame whose index has a ``timestamp`` level (``features.panel``); a
symbol without a bar at t has no row there, and a NaN value is left NaN and kept out of t's statistics, so a
missing symbol never shifts the others. Everything is a grouped (cythonized) pandas operation, no loop over dates.

Conventions (column by column, over the n finite values of a timestamp):

* ``rank``: average rank r (1..n, ties share their mean, as ``scipy.stats.rankdata``) mapped to ``(r - 1) / (n - 1)``
  in [0, 1] (``rank_range: unit``) or that minus 0.5, in [-0.5, 0.5] (``centered``, the default: 0 is the median
  name). A lone name (n = 1) is the midpoint (0.5, or 0).
* ``zscore``: ``(x - mean) / std`` with ``std`` of ``ddof`` (1 by default, pandas' and Qlib's ``CSZScoreNorm``). A
  cross-section without spread (n <= ddof, or all values equal) gives 0: no name is above or below the others.
* ``winsorize``: each value clipped to the ``lower`` and ``upper`` quantiles of its timestamp (linear interpolation,
  ``numpy.quantile``'s default), which keeps one outlier from dominating a z-score computed after it.

Steps run in the order given, e.g. ``("winsorize", "zscore")``.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

Transform = Literal["rank", "zscore", "winsorize"]
TIME_LEVEL = "timestamp"


class CrossSectionSpec(BaseModel):
    """The cross-sectional feature option: which transforms, in order, and their parameters (strict, so a typo in a
    config fails when it loads). ``keep_raw`` keeps the per-symbol columns and adds the transformed ones as
    ``<column>:<step>+<step>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[Transform, ...] = Field(default=("rank",), min_length=1)
    rank_range: Literal["centered", "unit"] = "centered"
    ddof: int = Field(default=1, ge=0, le=1)
    lower: float = Field(default=0.01, ge=0.0, lt=0.5)
    upper: float = Field(default=0.99, gt=0.5, le=1.0)
    keep_raw: bool = False

    @model_validator(mode="after")
    def _distinct_steps(self) -> "CrossSectionSpec":
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"steps: each transform at most once, got {list(self.steps)}")
        return self


def _groups(frame: pd.DataFrame) -> pd.api.typing.DataFrameGroupBy:
    if TIME_LEVEL not in (frame.index.names or []):
        raise ValueError(f"cross-sectional transforms need an index level named {TIME_LEVEL!r}; "
                         f"got levels {list(frame.index.names)}")
    return frame.groupby(level=TIME_LEVEL, sort=False)


def _as_float(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(np.float64)


def cs_rank(frame: pd.DataFrame, rank_range: Literal["centered", "unit"] = "centered") -> pd.DataFrame:
    """Per-timestamp average rank of each column scaled to [0, 1] (``unit``) or [-0.5, 0.5] (``centered``); NaN
    stays NaN and is not counted."""
    frame = _as_float(frame)
    groups = _groups(frame)
    rank = groups.rank(method="average").to_numpy()
    count = groups.transform("count").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(count > 1, (rank - 1.0) / (count - 1.0), 0.5)
    unit = np.where(np.isnan(rank), np.nan, unit)
    out = unit - 0.5 if rank_range == "centered" else unit
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def cs_zscore(frame: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Per-timestamp ``(x - mean) / std`` of each column; 0 where the cross-section has no spread, NaN stays NaN."""
    frame = _as_float(frame)
    groups = _groups(frame)
    mean = groups.transform("mean").to_numpy()
    std = groups.transform("std", ddof=ddof).to_numpy()
    values = frame.to_numpy()
    centered = values - mean
    spread = np.isfinite(std) & (std > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(spread, centered / np.where(spread, std, 1.0), 0.0)
    out = np.where(np.isnan(values), np.nan, out)
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def cs_winsorize(frame: pd.DataFrame, lower: float = 0.01, upper: float = 0.99) -> pd.DataFrame:
    """Each value clipped to its timestamp's ``lower``/``upper`` quantiles (linear interpolation); NaN stays NaN."""
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
    frame = _as_float(frame)
    groups = _groups(frame)
    low = groups.quantile(lower)
    high = groups.quantile(upper)
    codes = pd.Index(low.index).get_indexer(frame.index.get_level_values(TIME_LEVEL))
    values = frame.to_numpy()
    out = np.clip(values, low.to_numpy()[codes], high.to_numpy()[codes])
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def apply_cross_section(frame: pd.DataFrame, spec: CrossSectionSpec) -> pd.DataFrame:
    """``spec.steps`` in order over every column of ``frame``; with ``keep_raw`` the raw columns come first."""
    out = _as_float(frame)
    for step in spec.steps:
        if step == "rank":
            out = cs_rank(out, spec.rank_range)
        elif step == "zscore":
            out = cs_zscore(out, spec.ddof)
        else:
            out = cs_winsorize(out, spec.lower, spec.upper)
    if not spec.keep_raw:
        return out
    suffix = "+".join(spec.steps)
    return pd.concat([frame, out.rename(columns=lambda c: f"{c}:{suffix}")], axis=1)
