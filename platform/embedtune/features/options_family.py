"""The ``options`` feature family: per-bar implied-vol, smile, SABR, flow and Greeks features from option chains.

Each chain snapshot is reduced to one row of features using that snapshot alone (plus earlier snapshots for OI
change and momentum); every bar then takes the latest snapshot stamped at or before it, so a snapshot at time t
affects bars at or after t only. Rows that cannot be priced (missing fields, unknown right, non-positive or crossed
quotes, expired contracts, no forward, no implied vol) are masked with a ``ChainReason`` code, never used silently;
``OptionsFeatures.chain_diagnostics`` returns the per-row codes.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from embedtune.data.market import CHAIN_COLUMNS, MarketData
from embedtune.errors import DataError
from embedtune.features.family import FamilyParams, FeatureFamily, register
from embedtune.options import (
    IVReason, atm_vol_at_tenor, bs_greeks, fit_sabr, greeks_momentum, implied_vol, option_flow, smile_params,
    term_structure_slope,
)

_YEAR = pd.Timedelta(days=365)


class ChainReason(IntEnum):
    """Why a chain row is excluded from the vol features (first failing check wins)."""

    OK = 0
    #: NaN/missing timestamp, expiry, strike, bid or ask.
    MISSING_FIELD = 1
    #: right is not 'C'/'P'.
    BAD_RIGHT = 2
    NONPOSITIVE_STRIKE = 3
    #: expiry at or before the snapshot time.
    EXPIRED = 4
    #: bid < 0 or ask <= 0.
    NONPOSITIVE_PRICE = 5
    #: bid > ask.
    CROSSED_QUOTE = 6
    #: neither a put-call-parity forward nor a spot (bar at or before the snapshot) is available.
    NO_FORWARD = 7
    #: the mid has no implied vol; the ``iv_reason`` column says why (an ``IVReason``).
    IV_FAILED = 8


class OptionsParams(FamilyParams):
    #: Continuously compounded risk-free rate used for discounting (and the spot-carry forward).
    rate: float = Field(default=0.0, ge=-0.2, le=1.0)
    #: Dividend yield; used only by ``forward="spot"`` (the parity forward already contains the carry).
    div: float = Field(default=0.0, ge=-0.2, le=1.0)
    #: "parity": forward from the call-put mid difference at the strike where it is smallest (spot carry as
    #: fallback); "spot": bar close at or before the snapshot times exp((rate - div) T).
    forward: Literal["parity", "spot"] = "parity"
    #: Tenor of the interpolated ATM implied vol, in calendar days.
    tenor_days: int = Field(default=30, ge=1, le=3650)
    #: Expiries closer than this (calendar days) are left out of the smile, term-structure and SABR features.
    min_expiry_days: float = Field(default=1.0, ge=0.0)
    #: Fewest usable strikes an expiry needs for a smile (quadratic) or SABR fit.
    min_strikes: int = Field(default=5, ge=4)
    #: Strikes enter the fits when |ln(K/F)| / sqrt(T) is at most this.
    smile_max_abs_y: float = Field(default=0.5, gt=0.0)
    sabr: bool = True
    sabr_beta: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Hours added to each expiry (e.g. 16 when expiries are dates and options expire at the close).
    expiry_offset_hours: float = Field(default=0.0, ge=0.0, le=24.0)
    #: Snapshots back for the momentum (rate of change) columns.
    momentum_snapshots: int = Field(default=1, ge=1)
    #: Bars a snapshot may be carried forward (None: until the next snapshot).
    max_carry_bars: int | None = Field(default=None, ge=0)


_SNAPSHOT_COLUMNS: tuple[str, ...] = (
    "atm_iv_front", "atm_iv_tenor", "term_slope", "skew_front", "curvature_front", "sabr_rho_front", "sabr_nu_front",
    "pc_volume_ratio", "pc_oi_ratio", "oi_change", "atm_gamma_front", "atm_vega_front", "atm_theta_front",
    "oi_net_delta", "oi_net_gamma", "iv_tenor_momentum", "oi_net_gamma_momentum", "valid_fraction",
)


@register
class OptionsFeatures(FeatureFamily):
    """Implied-vol level, term structure and smile, SABR shape, option flow and Greeks exposure, per bar.

    Scale-free by construction: vols in vol units, Greeks per unit forward (gamma * F, vega / F, theta / F for the
    front ATM-forward call), OI-weighted net delta and gamma * F (calls +, puts -), ratios for flow.
    """

    name = "options"
    Params = OptionsParams
    params: OptionsParams
    requires = frozenset({"bars", "chains"})

    def _names(self) -> dict[str, str]:
        tenor = f"{self.params.tenor_days}d"
        names = {c: c for c in _SNAPSHOT_COLUMNS}
        names["atm_iv_tenor"] = f"atm_iv_{tenor}"
        names["iv_tenor_momentum"] = f"atm_iv_{tenor}_momentum"
        return names

    def output_columns(self) -> list[str]:
        return [self.column(n) for n in self._names().values()] + [self.column("snapshot_age_bars")]

    # -- per-row preparation ---------------------------------------------------------------------------------------

    def chain_diagnostics(self, market: MarketData) -> pd.DataFrame:
        """The chain rows with ``snapshot`` (time), ``t`` (years), ``forward``, ``mid``, ``iv`` and the int8 codes
        ``reason`` (``ChainReason``) and ``iv_reason`` (``IVReason``, -1 where no vol was attempted)."""
        p = self.params
        chains = _checked_chains(market)
        bar_ts = _bar_times(market)
        ts = _aligned_times(chains["timestamp"], bar_ts, market, "timestamp")
        expiry = _aligned_times(chains["expiry"], bar_ts, market, "expiry") + pd.Timedelta(
            hours=p.expiry_offset_hours)
        strike = pd.to_numeric(chains["strike"], errors="coerce").to_numpy(dtype=float)
        bid = pd.to_numeric(chains["bid"], errors="coerce").to_numpy(dtype=float)
        ask = pd.to_numeric(chains["ask"], errors="coerce").to_numpy(dtype=float)
        right = chains["right"].astype(str).str.upper().to_numpy()
        is_call, is_put = right == "C", right == "P"
        t = ((expiry - ts) / _YEAR).to_numpy(dtype=float)

        reason = np.full(len(chains), ChainReason.OK, dtype=np.int8)

        def flag(mask: np.ndarray, code: ChainReason) -> None:
            reason[(reason == ChainReason.OK) & mask] = code

        flag(ts.isna().to_numpy() | expiry.isna().to_numpy() | ~np.isfinite(strike) | ~np.isfinite(bid)
             | ~np.isfinite(ask), ChainReason.MISSING_FIELD)
        flag(~(is_call | is_put), ChainReason.BAD_RIGHT)
        flag(strike <= 0, ChainReason.NONPOSITIVE_STRIKE)
        flag(t <= 0, ChainReason.EXPIRED)
        flag((bid < 0) | (ask <= 0), ChainReason.NONPOSITIVE_PRICE)
        flag(bid > ask, ChainReason.CROSSED_QUOTE)
        mid = 0.5 * (bid + ask)

        snap_id, snaps = pd.factorize(ts, sort=True)
        exp_id = pd.factorize(expiry, sort=True)[0]
        group = pd.factorize(snap_id.astype(np.int64) * (exp_id.max(initial=-1) + 2) + exp_id, sort=True)[0]
        forward = self._forwards(market, bar_ts, snaps, snap_id, group, strike, t, mid, is_call, reason)
        flag(~np.isfinite(forward), ChainReason.NO_FORWARD)

        iv = np.full(len(chains), np.nan)
        iv_reason = np.full(len(chains), -1, dtype=np.int8)
        ok = reason == ChainReason.OK
        if ok.any():
            result = implied_vol(mid[ok], forward[ok], strike[ok], t[ok], p.rate, p.rate,
                                 np.where(is_call[ok], 1.0, -1.0))
            iv[ok], iv_reason[ok] = result.vol, result.reason
        flag(ok & (iv_reason != IVReason.OK), ChainReason.IV_FAILED)
        return pd.DataFrame({
            "snapshot": ts, "expiry": expiry, "strike": strike, "right": right, "t": t, "forward": forward,
            "mid": mid, "iv": iv, "reason": reason, "iv_reason": iv_reason, "snap_id": snap_id, "group": group,
        }, index=chains.index)

    def _forwards(
        self, market: MarketData, bar_ts: pd.DatetimeIndex, snaps: pd.DatetimeIndex, snap_id: np.ndarray,
        group: np.ndarray, strike: np.ndarray, t: np.ndarray, mid: np.ndarray, is_call: np.ndarray,
        reason: np.ndarray,
    ) -> np.ndarray:
        """Forward per row: put-call parity at the strike with the smallest |C - P| of its (snapshot, expiry), else
        the causal spot (last bar close at or before the snapshot) carried at ``rate - div``."""
        p = self.params
        close = market.bars["close"].to_numpy(dtype=float)
        pos = np.searchsorted(_ns(bar_ts), _ns(snaps), side="right") - 1
        snap_spot = np.where(pos >= 0, close[np.maximum(pos, 0)], np.nan)
        forward = snap_spot[snap_id] * np.exp((p.rate - p.div) * t)
        if p.forward == "parity":
            good = reason == ChainReason.OK
            quotes = pd.DataFrame({"g": group, "k": strike, "mid": mid, "t": t})
            calls = quotes[good & is_call].drop_duplicates(["g", "k"], keep=False)
            puts = quotes[good & ~is_call].drop_duplicates(["g", "k"], keep=False)
            pairs = calls.merge(puts[["g", "k", "mid"]], on=["g", "k"], suffixes=("_c", "_p"))
            if len(pairs):
                pairs["diff"] = pairs["mid_c"] - pairs["mid_p"]
                best = pairs.loc[pairs["diff"].abs().groupby(pairs["g"]).idxmin()]
                parity = best["k"] + best["diff"] * np.exp(p.rate * best["t"])
                parity = parity[parity > 0]
                by_group = np.full(group.max(initial=-1) + 1, np.nan)
                by_group[best.loc[parity.index, "g"].to_numpy()] = parity.to_numpy()
                forward = np.where(np.isfinite(by_group[group]), by_group[group], forward)
        return np.where(np.isfinite(forward) & (forward > 0), forward, np.nan)

    # -- per-snapshot features -------------------------------------------------------------------------------------

    def snapshot_features(self, market: MarketData) -> pd.DataFrame:
        """One row of features per chain snapshot (indexed by snapshot time), before alignment to bars."""
        p = self.params
        rows = self.chain_diagnostics(market)
        snaps = pd.DatetimeIndex(pd.factorize(rows["snapshot"], sort=True)[1])
        n_snap = len(snaps)
        snap_id = rows["snap_id"].to_numpy()
        ok = (rows["reason"] == ChainReason.OK).to_numpy()
        k, f, t, iv = (rows[c].to_numpy(dtype=float) for c in ("strike", "forward", "t", "iv"))
        is_call = (rows["right"] == "C").to_numpy()
        group = rows["group"].to_numpy()
        out = pd.DataFrame(index=snaps, columns=list(_SNAPSHOT_COLUMNS), dtype=float)

        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(k / f) / np.sqrt(t)
        otm = np.where(is_call, k >= f, k < f)
        fit_rows = ok & otm & (t >= p.min_expiry_days / 365.0) & (np.abs(y) <= p.smile_max_abs_y)
        n_groups = int(group.max(initial=-1)) + 1
        smile = smile_params(k[fit_rows], f[fit_rows], t[fit_rows], iv[fit_rows], group[fit_rows],
                             min_points=p.min_strikes, n_groups=n_groups)
        smile_atm = smile.atm_vol
        first = pd.DataFrame({"g": group, "snap": snap_id, "t": t, "f": f}).groupby("g").first()
        g_snap = first["snap"].reindex(range(n_groups)).to_numpy()
        g_t = first["t"].reindex(range(n_groups)).to_numpy()
        g_f = first["f"].reindex(range(n_groups)).to_numpy()
        has = np.isfinite(smile_atm) & (g_t >= p.min_expiry_days / 365.0)
        gid = np.flatnonzero(has)
        snap_of = g_snap[gid].astype(np.intp)
        tenor = p.tenor_days / 365.0
        out["atm_iv_tenor"] = atm_vol_at_tenor(g_t[gid], smile_atm[gid], tenor, snap_of, n_groups=n_snap)
        out["term_slope"] = term_structure_slope(g_t[gid], smile_atm[gid], snap_of, n_groups=n_snap)
        front = pd.DataFrame({"g": gid, "snap": snap_of, "t": g_t[gid]}).sort_values(["snap", "t"]).groupby(
            "snap").first()
        fg = front["g"].to_numpy()
        fs = front.index.to_numpy()
        front_atm = smile_atm[fg]
        self._put(out, "atm_iv_front", fs, front_atm)
        self._put(out, "skew_front", fs, smile.skew[fg])
        self._put(out, "curvature_front", fs, smile.curvature[fg])
        greeks = bs_greeks(g_f[fg], g_f[fg], g_t[fg], p.rate, p.rate, front_atm, "C")
        self._put(out, "atm_gamma_front", fs, greeks["gamma"] * g_f[fg])
        self._put(out, "atm_vega_front", fs, greeks["vega"] / g_f[fg])
        self._put(out, "atm_theta_front", fs, greeks["theta"] / g_f[fg])
        if p.sabr:
            self._sabr(out, fs, fg, fit_rows, group, k, iv, g_f, g_t)

        oi = pd.to_numeric(_checked_chains(market)["open_interest"], errors="coerce").to_numpy(dtype=float)
        use = ok & np.isfinite(oi) & (oi >= 0)
        if use.any():
            row_greeks = bs_greeks(f[use], k[use], t[use], p.rate, p.rate, iv[use], np.where(is_call[use], 1., -1.))
            sid = snap_id[use]
            total = np.bincount(sid, weights=oi[use], minlength=n_snap)
            sign = np.where(is_call[use], 1.0, -1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["oi_net_delta"] = np.bincount(sid, weights=oi[use] * row_greeks["delta"], minlength=n_snap) / total
                out["oi_net_gamma"] = np.bincount(
                    sid, weights=oi[use] * sign * row_greeks["gamma"] * f[use], minlength=n_snap) / total
        n_rows = np.bincount(snap_id[snap_id >= 0], minlength=n_snap)
        out["valid_fraction"] = np.bincount(snap_id[ok], minlength=n_snap) / np.maximum(n_rows, 1)

        flow_rows = ~np.isin(rows["reason"].to_numpy(), (ChainReason.MISSING_FIELD, ChainReason.EXPIRED))
        flow_chain = _checked_chains(market)[flow_rows].assign(timestamp=rows["snapshot"][flow_rows])
        if len(flow_chain):
            flow = option_flow(flow_chain).reindex(snaps)
            for column in ("pc_volume_ratio", "pc_oi_ratio", "oi_change"):
                out[column] = flow[column].to_numpy()
        out["iv_tenor_momentum"] = greeks_momentum(out["atm_iv_tenor"], p.momentum_snapshots)
        out["oi_net_gamma_momentum"] = greeks_momentum(out["oi_net_gamma"], p.momentum_snapshots)
        return out.rename(columns=self._names())

    @staticmethod
    def _put(out: pd.DataFrame, column: str, snap_positions: np.ndarray, values: np.ndarray) -> None:
        column_values = np.full(len(out), np.nan)
        column_values[snap_positions] = values
        out[column] = column_values

    def _sabr(
        self, out: pd.DataFrame, fs: np.ndarray, fg: np.ndarray, fit_rows: np.ndarray, group: np.ndarray,
        k: np.ndarray, iv: np.ndarray, g_f: np.ndarray, g_t: np.ndarray,
    ) -> None:
        """SABR rho and nu of each snapshot's front expiry: one bounded least-squares fit per snapshot."""
        rows = np.flatnonzero(fit_rows)
        order = rows[np.argsort(group[rows], kind="stable")]
        sorted_groups = group[order]
        start = np.searchsorted(sorted_groups, fg, side="left")
        stop = np.searchsorted(sorted_groups, fg, side="right")
        rho = np.full(fg.size, np.nan)
        nu = np.full(fg.size, np.nan)
        for i, (g, a, b) in enumerate(zip(fg, start, stop)):
            if b - a >= self.params.min_strikes:
                sel = order[a:b]
                fit = fit_sabr(k[sel], g_f[g], g_t[g], iv[sel], beta=self.params.sabr_beta)
                rho[i], nu[i] = fit.rho, fit.nu
        self._put(out, "sabr_rho_front", fs, rho)
        self._put(out, "sabr_nu_front", fs, nu)

    # -- alignment to bars -----------------------------------------------------------------------------------------

    def compute(self, market: MarketData) -> pd.DataFrame:
        snap = self.snapshot_features(market)
        bar_ts = _bar_times(market)
        table = np.vstack([snap.to_numpy(dtype=float), np.full((1, snap.shape[1]), np.nan)])
        pos = np.searchsorted(_ns(snap.index), _ns(bar_ts), side="right") - 1
        live = pos >= 0
        first_bar = np.append(np.searchsorted(_ns(bar_ts), _ns(snap.index), side="left"), 0)
        age = np.arange(len(bar_ts)) - first_bar[pos]
        if self.params.max_carry_bars is not None:
            live &= age <= self.params.max_carry_bars
        values = table[np.where(live, pos, -1)]
        frame = pd.DataFrame(values, index=market.bars.index, columns=[self.column(c) for c in snap.columns])
        frame[self.column("snapshot_age_bars")] = np.where(live, age, np.nan).astype(float)
        return frame[self.output_columns()]


def _checked_chains(market: MarketData) -> pd.DataFrame:
    if market.chains is None:
        raise DataError(market.source or market.name,
                        "the 'options' feature family needs option chains, but this market has none (chains is None)")
    missing = [c for c in CHAIN_COLUMNS if c not in market.chains.columns]
    if missing:
        raise DataError(market.source or market.name, f"option chains lack columns {missing}")
    return market.chains


def _bar_times(market: MarketData) -> pd.DatetimeIndex:
    index = market.bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(market.source or market.name, "bars need a DatetimeIndex for the 'options' family")
    if not index.is_monotonic_increasing:
        raise DataError(market.source or market.name, "bars index must be sorted for the 'options' family")
    return index


def _ns(index: pd.Index) -> np.ndarray:
    """Epoch nanoseconds (UTC for tz-aware), so bar and chain times compare whatever their stored resolution."""
    return pd.DatetimeIndex(index).as_unit("ns").asi8


def _aligned_times(values: pd.Series, bar_ts: pd.DatetimeIndex, market: MarketData, column: str) -> pd.Series:
    """Chain times in the bars' time zone; a tz-naive chain next to tz-aware bars is ambiguous and rejected,
    except naive expiries, which are read as wall time in the bars' zone."""
    times = pd.to_datetime(values, errors="coerce")
    tz = bar_ts.tz
    if tz is None and times.dt.tz is not None:
        raise DataError(market.source or market.name, f"chain column '{column}' is tz-aware but the bars are not")
    if tz is not None and times.dt.tz is None:
        if column == "timestamp":
            raise DataError(market.source or market.name,
                            f"chain column '{column}' is tz-naive but the bars are in {tz}")
        return times.dt.tz_localize(tz)
    return times.dt.tz_convert(tz) if tz is not None else times
