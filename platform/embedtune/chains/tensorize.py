"""Option-chain snapshots as fixed-width model inputs: one padded row of named features per option, causally.

Conventions (shared by ``per_option_features`` and ``tensorize_chains``):

* Time to expiry ``T = (expiry - timestamp) / 365.25 days``, the generator's convention, so a chain's ``iv`` column
  and an IV solved from its mid agree. Contracts at or past expiry are dropped by ``tensorize_chains``.
* Spot of a snapshot is the close of the latest bar at or before the snapshot's timestamp (never a later bar); the
  forward is ``F = spot * exp(rate * T)``.
* IV comes from the ``iv`` column where present and finite, otherwise it is solved from the mid with
  ``options.implied_vol``; Greeks are ``options.bs_greeks`` at that IV.
* Every feature of a snapshot depends on that snapshot's rows and its spot only (shares, ATM IV and ranks are
  within the snapshot), so a snapshot at time t can influence bars at or after t only.
* Non-finite values become 0 and the row's ``valid`` flag 0, so a model never sees NaN but can tell zeros apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedtune.data.market import MarketData
from embedtune.options import bs_greeks, implied_vol

DAYS_PER_YEAR = 365.25
DEFAULT_N_FEATURES = 50

#: Per-option features, in column order; columns beyond these (up to ``n_features``) are zero padding.
OPTION_FEATURES: tuple[str, ...] = (
    "log_moneyness",      # ln(K / F)
    "std_moneyness",      # ln(K / F) / sqrt(T): comparable across expiries
    "tte",                # years
    "is_call",
    "mid_over_spot",
    "rel_spread",         # (ask - bid) / mid
    "iv",
    "delta",
    "gamma_spot",         # gamma * S: change of delta per relative spot move
    "vega_spot",          # vega / S, per 1.00 vol
    "theta_spot",         # theta / S, per year
    "log_volume",         # log1p(volume)
    "log_open_interest",  # log1p(open interest)
    "volume_share",       # volume / snapshot total volume
    "oi_share",           # open interest / snapshot total open interest
    "iv_minus_atm",       # iv - ATM iv of the same expiry (strike nearest the forward)
    "time_value_share",   # 1 - discounted intrinsic / mid
    "last_in_spread",     # (last - mid) / (ask - bid): where the last trade sat in the quote
    "turnover",           # volume / (volume + open interest)
    "valid",              # 1 when every feature above was finite
)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPTION_FEATURES)}

_NS_PER_YEAR = DAYS_PER_YEAR * 86_400 * 1e9
_REQUIRED = ("timestamp", "expiry", "strike", "right", "bid", "ask", "last", "volume", "open_interest")


def _check_chain(frame: pd.DataFrame, what: str) -> None:
    if len(frame) == 0:
        raise ValueError(f"{what} has no rows: an option chain needs at least one contract")
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")


def _rights(frame: pd.DataFrame) -> np.ndarray:
    """+1 for calls, -1 for puts; anything else is a clear error (the Greeks need a right)."""
    right = frame["right"].astype(str).str.upper().to_numpy()
    bad = ~np.isin(right, ["C", "P"])
    if bad.any():
        raise ValueError(f"right must be 'C' or 'P', found {sorted(set(right[bad]))[:5]}")
    return np.where(right == "C", 1, -1).astype(np.int8)


def _ns(stamps: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch (UTC for tz-aware), avoiding object arrays of Timestamps."""
    return pd.DatetimeIndex(pd.to_datetime(stamps)).as_unit("ns").asi8


def _years(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    return (_ns(later) - _ns(earlier)) / _NS_PER_YEAR


def _raw_features(
    frame: pd.DataFrame, spot: np.ndarray, snap: np.ndarray, rate: float, w: np.ndarray, t: np.ndarray,
) -> np.ndarray:
    """(rows, len(OPTION_FEATURES)) float64 for rows of possibly many snapshots (``snap`` codes group them)."""
    num = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
           for c in ("strike", "bid", "ask", "last", "volume", "open_interest")}
    k, bid, ask = num["strike"], num["bid"], num["ask"]
    volume = np.where(num["volume"] >= 0, num["volume"], np.nan)
    oi = np.where(num["open_interest"] >= 0, num["open_interest"], np.nan)
    quoted = (bid >= 0) & (ask > 0) & (ask >= bid)
    mid = np.where(quoted, 0.5 * (bid + ask), np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_m = np.log(k / (spot * np.exp(rate * t)))
        iv = (pd.to_numeric(frame["iv"], errors="coerce").to_numpy(dtype=float) if "iv" in frame.columns
              else np.full(len(frame), np.nan))
        unsolved = ~np.isfinite(iv)
        if unsolved.any():
            iv[unsolved] = implied_vol(mid[unsolved], spot[unsolved], k[unsolved], t[unsolved], rate, 0.0,
                                       w[unsolved]).vol
        greeks = bs_greeks(spot, k, t, rate, 0.0, iv, w)
        intrinsic = np.maximum(w * (spot - k * np.exp(-rate * t)), 0.0)
        n_snap = int(snap.max()) + 1
        vol_total = np.bincount(snap, weights=np.nan_to_num(volume), minlength=n_snap)[snap]
        oi_total = np.bincount(snap, weights=np.nan_to_num(oi), minlength=n_snap)[snap]

        # ATM iv per (snapshot, expiry): mean iv (calls and puts) at the strike nearest the forward.
        expiry_code = pd.factorize(_ns(frame["expiry"]))[0].astype(np.int64)
        group = pd.factorize(snap.astype(np.int64) * (int(expiry_code.max()) + 1) + expiry_code)[0]
        distance = np.where(np.isfinite(iv) & np.isfinite(log_m), np.abs(log_m), np.inf)
        nearest = pd.Series(distance).groupby(group).transform("min").to_numpy()
        at_money = np.isfinite(distance) & (distance == nearest)
        n_groups = int(group.max()) + 1
        atm_iv = (np.bincount(group[at_money], weights=iv[at_money], minlength=n_groups)
                  / np.bincount(group[at_money], minlength=n_groups))[group]

        columns = {
            "log_moneyness": log_m,
            "std_moneyness": log_m / np.sqrt(t),
            "tte": t,
            "is_call": (w > 0).astype(float),
            "mid_over_spot": mid / spot,
            "rel_spread": (ask - bid) / mid,
            "iv": iv,
            "delta": greeks["delta"],
            "gamma_spot": greeks["gamma"] * spot,
            "vega_spot": greeks["vega"] / spot,
            "theta_spot": greeks["theta"] / spot,
            "log_volume": np.log1p(volume),
            "log_open_interest": np.log1p(oi),
            "volume_share": np.where(vol_total > 0, volume / vol_total, 0.0),
            "oi_share": np.where(oi_total > 0, oi / oi_total, 0.0),
            "iv_minus_atm": iv - atm_iv,
            "time_value_share": 1.0 - intrinsic / mid,
            "last_in_spread": np.where(ask > bid, (num["last"] - mid) / (ask - bid), 0.0),
            "turnover": np.where(volume + oi > 0, volume / (volume + oi), 0.0),
        }
    raw = np.stack([columns[name] for name in OPTION_FEATURES[:-1]], axis=1)
    finite = np.isfinite(raw)
    valid = finite.all(axis=1) & (t > 0)
    return np.concatenate([np.where(finite, raw, 0.0), valid[:, None].astype(float)], axis=1)


def _check_width(n_features: int) -> None:
    if n_features < len(OPTION_FEATURES):
        raise ValueError(f"n_features={n_features} is below the {len(OPTION_FEATURES)} per-option features")


def _pad(raw: np.ndarray, n_features: int) -> np.ndarray:
    _check_width(n_features)
    out = np.zeros((raw.shape[0], n_features), dtype=np.float32)
    out[:, : raw.shape[1]] = raw
    return out


def per_option_features(
    snapshot: pd.DataFrame, spot: float, rate: float = 0.02, n_features: int = DEFAULT_N_FEATURES,
) -> np.ndarray:
    """``(len(snapshot), n_features)`` float32: ``OPTION_FEATURES`` then zeros, rows in the snapshot's order.

    Expired rows are kept (features of their intrinsic value, ``valid`` 0); ``tensorize_chains`` drops them.
    ``snapshot`` is one timestamp's rows of a long chain (``CHAIN_COLUMNS``, ``iv`` optional).
    """
    _check_chain(snapshot, "snapshot")
    if snapshot["timestamp"].nunique() != 1:
        raise ValueError("per_option_features takes one snapshot (a single timestamp); use tensorize_chains")
    t = _years(snapshot["expiry"], snapshot["timestamp"])
    spots = np.full(len(snapshot), float(spot))
    raw = _raw_features(snapshot, spots, np.zeros(len(snapshot), dtype=np.intp), rate, _rights(snapshot), t)
    return _pad(raw, n_features)


@dataclass(frozen=True)
class ChainTensors:
    """Padded per-snapshot option tensors; axis 0 is ``snapshot_times`` order, axis 1 an option slot.

    Within a snapshot, slots are ordered by (expiry, strike, right) with calls first; padding slots have
    ``mask`` False, zero features, ``strike_rank`` 0, ``tte`` 0, ``expiry_id`` -1, ``right`` 0 and ``row`` -1.
    """

    #: (n_snapshots, max_options, n_features) float32, columns ``feature_names`` then zeros.
    features: np.ndarray
    #: (n_snapshots, max_options) bool, True for a real option.
    mask: np.ndarray
    #: (n_snapshots, max_options) int64: dense strike rank relative to the strike nearest spot (0 = ATM, negative
    #: below); equal strikes share a rank across expiries and rights.
    strike_rank: np.ndarray
    #: (n_snapshots, max_options) float32, years to expiry.
    tte: np.ndarray
    #: (n_snapshots, max_options) int64: expiry position within the snapshot (0 = front).
    expiry_id: np.ndarray
    #: (n_snapshots, max_options) int8: +1 call, -1 put, 0 padding.
    right: np.ndarray
    #: (n_snapshots, max_options) int64: position (``iloc``) of the slot's row in the chains frame given.
    row: np.ndarray
    #: (n_snapshots,) sorted snapshot timestamps.
    snapshot_times: pd.DatetimeIndex
    #: (n_snapshots,) float64 spot used for each snapshot (NaN when no bar is at or before it).
    spot: np.ndarray
    #: (n_bars,) int64: index of the latest snapshot at or before each bar, -1 if none.
    snapshot_for_bar: np.ndarray
    #: Options dropped because a snapshot had more than ``max_options`` (the farthest from the money go first).
    n_truncated: int
    feature_names: tuple[str, ...] = OPTION_FEATURES

    @property
    def n_snapshots(self) -> int:
        return self.features.shape[0]

    def for_bars(self, bar_positions: np.ndarray) -> np.ndarray:
        """Snapshot indices visible at the given bar positions (-1: none yet); use to gather model inputs."""
        return self.snapshot_for_bar[np.asarray(bar_positions)]


def _as_index(stamps: pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(stamps)).as_unit("ns")


def tensorize_chains(
    chains: pd.DataFrame, bars: pd.DataFrame | MarketData, max_options: int | None = None,
    n_features: int = DEFAULT_N_FEATURES, rate: float = 0.02,
) -> ChainTensors:
    """Pad every snapshot of a long chain into ``ChainTensors`` and map each bar to its latest visible snapshot.

    ``max_options=None`` uses the largest snapshot's size: that width is a whole-sample statistic (it only changes
    padding), so pass a fixed ``max_options`` when tensors must be identical across growing samples. Snapshots with
    more options keep the ``max_options`` nearest the money (smallest |ln(K/S)|).
    """
    frame = bars.bars if isinstance(bars, MarketData) else bars
    _check_chain(chains, "chains")
    if not isinstance(frame.index, pd.DatetimeIndex) or "close" not in frame.columns:
        raise ValueError("bars need a DatetimeIndex and a 'close' column")
    if max_options is not None and max_options < 1:
        raise ValueError(f"max_options must be >= 1, got {max_options}")
    _check_width(n_features)

    stamps = _as_index(chains["timestamp"])
    bar_times = _as_index(frame.index)
    if not bar_times.is_monotonic_increasing:
        raise ValueError("bars must be sorted by time (snapshot_for_bar is a search over bar timestamps)")
    if (stamps.tz is None) != (bar_times.tz is None):
        raise ValueError("chain timestamps and bar timestamps must both be tz-aware or both tz-naive")
    if stamps.hasnans or pd.to_datetime(chains["expiry"]).isna().any():
        raise ValueError("chains have missing timestamp or expiry values")
    snap_all, snapshot_times = pd.factorize(stamps, sort=True)
    snapshot_times = pd.DatetimeIndex(snapshot_times, name="timestamp")
    close = frame["close"].to_numpy(dtype=float)
    bar_pos = bar_times.searchsorted(snapshot_times, side="right") - 1
    spot = np.where(bar_pos >= 0, close[np.maximum(bar_pos, 0)], np.nan)

    t_all = _years(chains["expiry"], chains["timestamp"])
    w_all = _rights(chains)
    live = np.flatnonzero(t_all > 0)
    if live.size == 0:
        raise ValueError("every contract in chains is at or past its expiry")
    strike = pd.to_numeric(chains["strike"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(strike) & (strike > 0)).all():
        raise ValueError("chains have missing or non-positive strikes")
    work = pd.DataFrame({
        "row": live, "snap": snap_all[live], "expiry": _ns(chains["expiry"])[live],
        "strike": strike[live], "put": w_all[live] < 0,
        "distance": np.abs(np.log(strike[live] / spot[snap_all[live]])),
    })
    if work.duplicated(["snap", "expiry", "strike", "put"]).any():
        raise ValueError("chains have duplicate (timestamp, expiry, strike, right) rows")
    n_truncated = 0
    if max_options is not None:
        by_distance = work.sort_values(["snap", "distance", "expiry", "strike", "put"], kind="stable",
                                       na_position="last")
        keep = by_distance.groupby("snap", sort=False).cumcount().to_numpy() < max_options
        n_truncated = int((~keep).sum())
        work = by_distance[keep]
    work = work.sort_values(["snap", "expiry", "strike", "put"], kind="stable").reset_index(drop=True)
    slot = work.groupby("snap", sort=False).cumcount().to_numpy()
    width = int(max_options if max_options is not None else slot.max() + 1)

    rows = work["row"].to_numpy()
    snap = work["snap"].to_numpy()
    subset = chains.iloc[rows]
    raw = _raw_features(subset, spot[snap], snap, rate, w_all[rows], t_all[rows])

    # Dense strike rank within the snapshot, centred on the strike nearest spot (NaN spot: centred on rank 0).
    dense = work.groupby("snap")["strike"].rank(method="dense").to_numpy().astype(np.int64) - 1
    nearest = work["distance"].fillna(np.inf).to_numpy()
    atm_rank = pd.Series(dense).where(nearest == pd.Series(nearest).groupby(snap).transform("min").to_numpy())
    centre = atm_rank.groupby(snap).transform("min").fillna(0).to_numpy().astype(np.int64)
    expiry_rank = work.groupby("snap")["expiry"].rank(method="dense").to_numpy().astype(np.int64) - 1

    n_snap = len(snapshot_times)
    features = np.zeros((n_snap, width, n_features), dtype=np.float32)
    features[snap, slot, : raw.shape[1]] = raw
    mask = np.zeros((n_snap, width), dtype=bool)
    mask[snap, slot] = True

    def filled(values: np.ndarray, dtype: type, fill: float) -> np.ndarray:
        out = np.full((n_snap, width), fill, dtype=dtype)
        out[snap, slot] = values
        return out

    return ChainTensors(
        features=features, mask=mask, strike_rank=filled(dense - centre, np.int64, 0),
        tte=filled(t_all[rows], np.float32, 0.0), expiry_id=filled(expiry_rank, np.int64, -1),
        right=filled(w_all[rows], np.int8, 0), row=filled(rows, np.int64, -1), snapshot_times=snapshot_times,
        spot=spot, snapshot_for_bar=(snapshot_times.searchsorted(bar_times, side="right") - 1).astype(np.int64),
        n_truncated=n_truncated,
    )
