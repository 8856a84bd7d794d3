"""Causal time series over chain snapshots: Greek momentum, option/underlying correlation, put/call flow."""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

FrameOrArray = TypeVar("FrameOrArray", pd.DataFrame, pd.Series, np.ndarray)


def greeks_momentum(values: FrameOrArray, periods: int = 1) -> FrameOrArray:
    """Rate of change per snapshot, (g_t - g_{t-periods}) / periods, along the first axis; causal (NaN at the start)."""
    if periods < 1:
        raise ValueError("periods must be >= 1")
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return values.diff(periods) / periods
    arr = np.asarray(values, dtype=float)
    out = np.full_like(arr, np.nan)
    out[periods:] = (arr[periods:] - arr[:-periods]) / periods
    return out


def option_underlying_correlation(
    option_price: pd.Series, underlying_price: pd.Series, window: int,
) -> pd.Series:
    """Trailing correlation of one-period option price changes with underlying price changes (causal).

    A call's changes track the underlying (about +1 when deep in the money), a put's mirror it; the value drifts
    toward 0 as gamma and vega, not delta, drive the price.
    """
    if window < 3:
        raise ValueError("window must be >= 3")
    d_option = option_price.astype(float).diff()
    d_under = underlying_price.astype(float).reindex(option_price.index).diff()
    return d_option.rolling(window, min_periods=window).corr(d_under)


def option_flow(chains: pd.DataFrame) -> pd.DataFrame:
    """Per snapshot: put/call volume ratio, put/call open-interest ratio and the open-interest change.

    OI change is matched per contract (expiry, strike, right) against the previous snapshot, summed and divided by
    the matched previous OI, so contracts listed or expiring in between do not register as flow. Rows with an
    unknown right or negative/NaN volume or OI are ignored; ratios are NaN when the call side is zero.
    """
    right = chains["right"].astype(str).str.upper()
    ts = pd.to_datetime(chains["timestamp"])
    volume = pd.to_numeric(chains["volume"], errors="coerce").to_numpy(dtype=float)
    oi = pd.to_numeric(chains["open_interest"], errors="coerce").to_numpy(dtype=float)
    is_put = (right == "P").to_numpy()
    known = (right == "C").to_numpy() | is_put
    snap_id, snaps = pd.factorize(ts, sort=True)
    n_snap = len(snaps)
    vol_ok = known & np.isfinite(volume) & (volume >= 0)
    oi_ok = known & np.isfinite(oi) & (oi >= 0)

    def side_sum(values: np.ndarray, ok: np.ndarray, put: bool) -> np.ndarray:
        sel = ok & (is_put == put)
        return np.bincount(snap_id[sel], weights=values[sel], minlength=n_snap)

    with np.errstate(divide="ignore", invalid="ignore"):
        call_vol, put_vol = side_sum(volume, vol_ok, False), side_sum(volume, vol_ok, True)
        call_oi, put_oi = side_sum(oi, oi_ok, False), side_sum(oi, oi_ok, True)
        pc_volume = np.where(call_vol > 0, put_vol / call_vol, np.nan)
        pc_oi = np.where(call_oi > 0, put_oi / call_oi, np.nan)
    key = pd.DataFrame({
        "expiry": pd.factorize(pd.to_datetime(chains["expiry"]))[0], "strike": chains["strike"].to_numpy(dtype=float),
        "put": is_put, "snap": snap_id, "oi": np.where(oi_ok, oi, np.nan),
    })
    key = key[oi_ok].sort_values(["expiry", "strike", "put", "snap"], kind="stable")
    same = (key[["expiry", "strike", "put"]].shift() == key[["expiry", "strike", "put"]]).all(axis=1).to_numpy()
    prev_snap = key["snap"].shift().to_numpy()
    matched = same & (prev_snap == key["snap"].to_numpy() - 1)
    prev_oi = key["oi"].shift().to_numpy()
    snap_m = key["snap"].to_numpy()[matched]
    change = np.bincount(snap_m, weights=(key["oi"].to_numpy() - prev_oi)[matched], minlength=n_snap)
    base = np.bincount(snap_m, weights=prev_oi[matched], minlength=n_snap)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi_change = np.where(base > 0, change / base, np.nan)
    return pd.DataFrame({"pc_volume_ratio": pc_volume, "pc_oi_ratio": pc_oi, "oi_change": oi_change},
                        index=pd.DatetimeIndex(snaps).rename("timestamp"))
