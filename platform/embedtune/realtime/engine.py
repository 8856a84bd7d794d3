"""Feature rows tick by tick: the configured families' columns, named and ordered as the batch pipeline names them.

Each supported family has an adapter made of parts: a part owns the incremental objects behind some of the family's
columns and advances them once per tick, and each column has a zero-argument reader. Only the parts behind the
served columns run. Every column the ``base``, ``technical``, ``microstructure`` (its bar and quote measures),
``wavelet`` and ``calendar`` families compute from bars (and bar-end quotes) is served, equal to the batch column.
What a bar/quote tick cannot feed is not served: signed trade flow (``microstructure`` pressure, imbalance, Kyle's
lambda, PIN), trade sizes, option chains (``options``). Asking for such a column is an ``UnsupportedFeatureError``
naming every missing column and why, so a model is never fed a column that silently differs from training.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.features.family import FAMILIES, build_family
from embedtune.features.base import BaseParams
from embedtune.features.calendar import CalendarParams
from embedtune.features.microstructure import MicrostructureParams
from embedtune.features.technical import TechnicalParams
from embedtune.features.wavelet import STATS, WaveletParams, band_names
from embedtune.realtime import incremental as inc
from embedtune.realtime import windowed
from embedtune.realtime.ticks import Tick

Reader = Callable[[], float]
Updater = Callable[[Tick], None]

#: Why a family's columns cannot be served from ticks (bars with optional bar-end quotes), for the error message.
UNSERVABLE: dict[str, str] = {
    "microstructure": "needs signed trade flow (per-bar buy/sell volume or a trade stream) or trade sizes, which a "
                      "bar/quote tick does not carry",
    "options": "needs option chains, which a tick stream does not carry",
}


class UnsupportedFeatureError(EmbedtuneError):
    """Columns a model needs that the real-time engine cannot compute; one line naming each with the reason."""

    def __init__(self, columns: list[str], supported: list[str], reasons: dict[str, str] | None = None) -> None:
        super().__init__(columns, supported)
        self.columns, self.supported = columns, supported
        self.reasons = reasons or {c: "no incremental version" for c in columns}

    def __str__(self) -> str:
        groups: dict[str, list[str]] = {}
        for column in self.columns:
            groups.setdefault(self.reasons.get(column, "no incremental version"), []).append(column)
        why = "; ".join(f"{', '.join(cols)}: {reason}" for reason, cols in groups.items())
        return (f"the real-time engine cannot compute feature columns {self.columns} ({why}); it serves "
                f"{len(self.supported)} columns of the configured families")


class FamilyAdapter:
    """One family's incremental state, as named parts; ``readers`` maps full column names to getters.

    ``select(columns)`` picks the parts those columns need (none until called); ``update`` advances just those, so a
    model that uses a few of a family's columns does not pay for the rest (the volume profile costs most).
    """

    family: str = ""

    def __init__(self) -> None:
        self.readers: dict[str, Reader] = {}
        self._parts: dict[str, tuple[Updater, int]] = {}
        self._needs: dict[str, tuple[str, ...]] = {}
        self._selected: list[str] = []
        self._updaters: list[Updater] = []

    def column(self, suffix: str) -> str:
        return f"{self.family}.{suffix}"

    def part(self, name: str, updater: Updater, window: int, readers: dict[str, Reader],
             after: tuple[str, ...] = ()) -> None:
        """Register a part: its per-tick updater, the bars its state spans, its columns (by suffix) and the parts
        that must run before it (whose state it reads)."""
        self._parts[name] = (updater, window)
        for suffix, reader in readers.items():
            self.readers[self.column(suffix)] = reader
            self._needs[self.column(suffix)] = (*after, name)

    def select(self, columns: Iterable[str]) -> None:
        """Run only the parts behind ``columns`` (in registration order, so a dependency runs first)."""
        wanted = {p for c in columns if c in self._needs for p in self._needs[c]}
        self._selected = [p for p in self._parts if p in wanted]
        self._updaters = [self._parts[p][0] for p in self._selected]

    @property
    def longest_window(self) -> int:
        """Bars the selected parts' state spans (1 when it does not depend on past bars)."""
        return max((self._parts[p][1] for p in self._selected), default=1)

    def update(self, tick: Tick) -> None:
        """Advance the selected parts by one tick."""
        for updater in self._updaters:
            updater(tick)


class BaseAdapter(FamilyAdapter):
    family = "base"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        p = BaseParams.model_validate(params)
        for k in p.return_lags:
            ret = inc.LogReturn(k)
            self.part(f"ret_{k}", lambda t, r=ret: r.update(t.close), k, {f"ret_{k}": _reader(ret)})
        vol = inc.RealizedVol(p.vol_window)
        self.part("rv", lambda t: vol.update(t.close), p.vol_window + 1, {f"rv_{p.vol_window}": _reader(vol)})
        rsi = inc.WilderRSI(p.rsi_period)
        self.part("rsi", lambda t: rsi.update(t.close), p.rsi_period + 1, {f"rsi_{p.rsi_period}": _rsi_reader(rsi)})
        volume = inc.RollingZScore(p.volume_window)
        self.part("volume_z", lambda t: volume.update(math.log1p(t.volume)), p.volume_window,
                  {f"volume_z_{p.volume_window}": _reader(volume)})


class TechnicalAdapter(FamilyAdapter):
    family = "technical"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        p = TechnicalParams.model_validate(params)
        for k in p.rsi_periods:
            rsi = inc.WilderRSI(k)
            self.part(f"rsi_{k}", lambda t, r=rsi: r.update(t.close), k + 1, {f"rsi_{k}": _rsi_reader(rsi)})
        macd = inc.MACD(p.macd_fast, p.macd_slow, p.macd_signal)
        self.part("macd", lambda t: macd.update(t.close), p.macd_slow + p.macd_signal, {
            "macd_line": lambda: macd.value, "macd_signal": lambda: macd.signal, "macd_hist": lambda: macd.hist})
        kama = inc.KAMADistance(p.kama_window, p.kama_fast, p.kama_slow)
        self.part("kama", lambda t: kama.update(t.close), p.kama_window + 1, {"kama_dist": _reader(kama)})
        vwap = inc.VWAPDeviation(p.vwap_window)
        self.part("vwap", lambda t: vwap.update(t.high, t.low, t.close, t.volume), p.vwap_window,
                  {"vwap_dev": _reader(vwap)})
        profile = windowed.VolumeProfile(p.profile_window, p.profile_bins, p.value_area)
        self.part("profile", lambda t: profile.update(t.high, t.low, t.close, t.volume), p.profile_window, {
            "vp_poc_dist": lambda: profile.poc, "vp_val_dist": lambda: profile.val,
            "vp_vah_dist": lambda: profile.vah})
        ad = inc.AccumulationZScore(p.ad_window)
        self.part("ad", lambda t: ad.update(t.high, t.low, t.close, t.volume), p.ad_window, {"ad_z": _reader(ad)})
        cmf = inc.ChaikinMoneyFlow(p.cmf_window)
        self.part("cmf", lambda t: cmf.update(t.high, t.low, t.close, t.volume), p.cmf_window, {"cmf": _reader(cmf)})
        smi = inc.SmartMoneyIndex(p.smi_window)
        self.part("smi", lambda t: smi.update(t.open, t.close), p.smi_window + 1, {"smi": _reader(smi)})
        block = windowed.BlockVolumeShare(p.block_window, p.block_quantile)
        # The threshold of bar t uses the window before it: 2 * window bars feed the first value.
        self.part("block", lambda t: block.update(t.volume), 2 * p.block_window, {"block_share": _reader(block)})
        for timeframe in p.higher_timeframes:
            htf = windowed.HigherTimeframe(timeframe, p.htf_rsi_period)
            # Its state is in higher bars, whatever the bar spacing: a gap reset restarts it like any other window.
            self.part(f"htf_{timeframe}", lambda t, h=htf: h.update(t.timestamp, t.close), 1, {
                f"htf_{timeframe}_ret": _reader(htf), f"htf_{timeframe}_rsi": lambda h=htf: h.rsi})


class MicrostructureAdapter(FamilyAdapter):
    """The bar measures (BVC, spreads, Amihud, VPIN on BVC volume) and the quote measures, one bar-end snapshot per
    tick (NaN on every tick of a quote-less stream).

    Ticks carry no signed flow, so VPIN classifies volume by BVC under either ``vpin_classification``: the batch
    value on bars without ``buy_volume``/``sell_volume`` columns or a trade stream. A model trained on signed flow
    also has the flow columns (pressure, imbalance, Kyle's lambda, PIN), which are not served, so it is refused.
    """

    family = "microstructure"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        p = MicrostructureParams.model_validate(params)
        bvc = inc.BulkVolumeClassification(p.bvc_window)
        self.part("bvc", lambda t: bvc.update(t.close), p.bvc_window + 1, {"bvc_buy_frac": _reader(bvc)})
        cs = inc.CorwinSchultzSpread(p.spread_window)
        self.part("cs", lambda t: cs.update(t.high, t.low, t.close), p.spread_window + 1,
                  {f"cs_spread_{p.spread_window}": _reader(cs)})
        roll = inc.RollSpread(p.spread_window)
        self.part("roll", lambda t: roll.update(t.close), p.spread_window + 2,
                  {f"roll_spread_{p.spread_window}": _reader(roll)})
        amihud = inc.AmihudIlliquidity(p.amihud_window)
        self.part("amihud", lambda t: amihud.update(t.close, t.volume), p.amihud_window + 1,
                  {f"amihud_{p.amihud_window}": _reader(amihud)})
        vpin = inc.VPIN(p.vpin_buckets, p.vpin_bucket_volume, p.vpin_volume_window)
        buckets = max(p.bvc_window + 1, p.vpin_volume_window) + math.ceil(p.vpin_buckets * p.vpin_bucket_volume)
        self.part("vpin", lambda t: vpin.update(t.volume, bvc.value), buckets,
                  {f"vpin_{p.vpin_buckets}": _reader(vpin)}, after=("bvc",))
        w = p.flow_window
        q = inc.QuoteFeatures(w)
        self.part("quotes", lambda t: q.update(t.bid, t.ask, t.bid_size, t.ask_size), w, {
            "ofi": lambda: q.ofi, f"ofi_{w}": lambda: q.ofi_w, "rel_spread": lambda: q.rel_spread,
            "depth_imbalance": lambda: q.depth_imbalance, f"quote_stability_{w}": lambda: q.quote_stability})

    @property
    def needs_quotes(self) -> bool:
        return "quotes" in self._selected


class WaveletAdapter(FamilyAdapter):
    """Band statistics of the trailing window, recomputed every ``stride`` ticks by the batch function."""

    family = "wavelet"

    def __init__(self, params: dict[str, Any], stride: int = 1) -> None:
        super().__init__()
        p = WaveletParams.model_validate(params)
        self.params = p
        self.window = inc.WaveletWindow(p.window, p.wavelet, p.levels, p.mode, stride)
        ret = inc.LogReturn(1)
        if p.source == "log_return":
            updater: Updater = lambda t: self.window.update(ret.update(t.close))  # noqa: E731
        else:
            updater = lambda t: self.window.update(inc.log(t.close))  # noqa: E731
        names = [f"{band}_{stat}" for band in band_names(p.levels) for stat in STATS]
        self.part("bands", updater, p.window + (1 if p.source == "log_return" else 0),
                  {n: _slot_reader(self.window, i) for i, n in enumerate(names)})


class CalendarAdapter(FamilyAdapter):
    """Cyclical time and scheduled-event distances: a function of each tick's timestamp (no window)."""

    family = "calendar"

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        p = CalendarParams.model_validate(params)
        row = windowed.CalendarRow(p)
        suffixes = [c.split(".", 1)[1] for c in build_family(self.family, params).output_columns()]
        row.value = np.full(len(suffixes), np.nan)
        self.part("row", lambda t: row.update(t.timestamp), 1,
                  {s: _array_reader(row, i) for i, s in enumerate(suffixes)})


ADAPTERS: dict[str, Callable[..., FamilyAdapter]] = {
    "base": BaseAdapter, "technical": TechnicalAdapter, "microstructure": MicrostructureAdapter,
    "wavelet": WaveletAdapter, "calendar": CalendarAdapter,
}


def _reader(obj: Any) -> Reader:
    return lambda: obj.value


def _rsi_reader(obj: inc.WilderRSI) -> Reader:
    return lambda: obj.value / 100.0 - 0.5


def _slot_reader(window: inc.WaveletWindow, index: int) -> Reader:
    return lambda: float(window.value[index])


def _array_reader(obj: Any, index: int) -> Reader:
    return lambda: float(obj.value[index])


def batch_columns(features: dict[str, dict[str, Any]]) -> list[str]:
    """Every column the batch pipeline computes for ``features``, in its order (families as listed)."""
    return [c for name, params in features.items() for c in build_family(name, params).output_columns()]


def unservable_columns(features: dict[str, dict[str, Any]], names: Iterable[str]) -> dict[str, str]:
    """Column -> why it cannot be served, for each of ``names`` the engine cannot compute (empty: all servable).

    What a model folder is checked with before anything is streamed, so a model that cannot be served fails at
    load with the list of what it lacks.
    """
    available = set(_adapters(features, 1)[1])
    configured = set(batch_columns(features))
    out: dict[str, str] = {}
    for name in names:
        if name in available:
            continue
        family = name.split(".", 1)[0]
        if name not in configured:
            out[name] = ("not a column of the configured feature families" if family in FAMILIES
                         else f"unknown feature family {family!r}")
        else:
            out[name] = UNSERVABLE.get(family, "no incremental version")
    return out


def _adapters(features: dict[str, dict[str, Any]], wavelet_stride: int
              ) -> tuple[list[FamilyAdapter], dict[str, Reader]]:
    """Fresh adapters of the configured families that have one, and every column they can read."""
    adapters = [ADAPTERS[name](params or {}, wavelet_stride) if name == "wavelet" else ADAPTERS[name](params or {})
                for name, params in features.items() if name in ADAPTERS]
    return adapters, {c: r for a in adapters for c, r in a.readers.items()}


class FeatureEngine:
    """All configured families, updated once per tick; ``update`` returns the row of ``columns`` (float64).

    ``feature_names`` (a trained model's inputs) fixes columns and order; a name the engine cannot compute is an
    ``UnsupportedFeatureError`` naming all of them. Without it, the served columns of every family are computed in
    batch order and the rest listed in ``skipped``.
    """

    def __init__(self, features: dict[str, dict[str, Any]], feature_names: list[str] | None = None,
                 wavelet_stride: int = 1) -> None:
        self.features = features
        self.wavelet_stride = wavelet_stride
        self._build()
        if feature_names is None:
            self.columns = [c for c in batch_columns(features) if c in self._available]
        else:
            missing = unservable_columns(features, feature_names)
            if missing:
                raise UnsupportedFeatureError(list(missing), sorted(self._available), missing)
            self.columns = list(feature_names)
        self.skipped = [c for c in batch_columns(features) if c not in self.columns]
        self._bind()

    def _build(self) -> None:
        with inc.staggered():  # the many equal windows recompute their exact sums on different ticks
            self.adapters, self._available = _adapters(self.features, self.wavelet_stride)

    def _bind(self) -> None:
        self._readers = [self._available[c] for c in self.columns]
        for adapter in self.adapters:
            adapter.select(self.columns)
        used = {c.split(".", 1)[0] for c in self.columns}
        self._active = [a for a in self.adapters if a.family in used]  # families with no served column stay idle
        self._updaters = [u for a in self._active for u in a._updaters]  # one flat loop per tick
        # The tick the parts read, its fields as Python floats: a NumPy scalar (what a bar file's columns yield)
        # makes every arithmetic step of the incremental state several times slower, for the same double result.
        self._bar = Tick(0, 1.0)

    @property
    def longest_window(self) -> int:
        return max((a.longest_window for a in self._active), default=1)

    @property
    def needs_quotes(self) -> bool:
        return any(isinstance(a, MicrostructureAdapter) and a.needs_quotes for a in self._active)

    @property
    def wavelet(self) -> WaveletAdapter | None:
        return next((a for a in self._active if isinstance(a, WaveletAdapter)), None)

    def reset(self) -> None:
        """Fresh incremental state (after a gap): the same columns, all windows empty."""
        self._build()
        self._bind()

    def update(self, tick: Tick) -> np.ndarray:
        bar = self._bar
        bar.timestamp = tick.timestamp
        bar.open, bar.high, bar.low, bar.close = float(tick.open), float(tick.high), float(tick.low), float(tick.close)
        bar.volume, bar.bid, bar.ask = float(tick.volume), float(tick.bid), float(tick.ask)
        bar.bid_size, bar.ask_size = float(tick.bid_size), float(tick.ask_size)
        for updater in self._updaters:
            updater(bar)
        return np.array([read() for read in self._readers], dtype=np.float64)
