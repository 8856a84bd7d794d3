"""O(1)-per-tick versions of the batch features, equal to them to 1e-9 on every tick.

(Features that re-bin or re-rank a whole window, or follow calendar buckets, are in ``realtime.windowed``.)

Each object takes one tick's inputs in ``update(...)``, returns the feature's value at that tick, and keeps it in
``value``. The conventions are those of the batch functions they mirror (``features.base``, ``features.technical``,
``features.microstructure``): NaN until a window is full and while any NaN is inside it (pandas
``rolling(window, min_periods=window)``), EMAs seeded by the first value with pandas' own ``adjust=False`` update,
Wilder averages seeded by the mean of the first full window, and the same NaN masks by bar position.

Rolling moments keep running sums of shifted values, sum(x - K) and sum((x - K)^2), and recompute them exactly
(``math.fsum`` around a fresh shift K = the window mean) every ``window`` updates. The shift removes the catastrophic
cancellation of sum(x^2) - (sum x)^2 / n when the mean dwarfs the spread (log volume, cumulative flow), and the
periodic recompute stops rounding errors from accumulating over a long stream, at an amortized O(1) cost. Windows
built inside ``staggered()`` (a feature engine's) start their recompute cycles at successive phases, so the engine's
many equal windows do not all recompute on the same tick.

Arithmetic is plain Python floats on purpose: per-tick work on a handful of scalars is several times faster than
NumPy's per-call overhead.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy.special import ndtr

from embedtune.features import wavelet as wavelet_batch
from embedtune.features.microstructure import AMIHUD_SCALE

NAN = math.nan


def divide(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with NumPy's float semantics (inf or NaN, never ``ZeroDivisionError``)."""
    if denominator != 0.0:
        return numerator / denominator
    if numerator != numerator or numerator == 0.0:
        return NAN
    return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)


def log(x: float) -> float:
    """``np.log`` semantics for one float: -inf at 0, NaN below 0 or for NaN."""
    if x > 0.0:
        return math.log(x) if x != math.inf else math.inf
    return -math.inf if x == 0.0 else NAN


#: The recompute phases handed out while ``staggered`` is active (None: every window starts its cycle at 0).
_phases: Iterator[int] | None = None


@contextmanager
def staggered() -> Iterator[None]:
    """Rolling windows built inside this block start their exact-recompute cycles at phases 0, 1, 2, ... (modulo
    their period) in construction order: a feature engine's twenty-odd 20-bar windows would otherwise all recompute
    on every 20th tick, a latency spike on 5% of ticks. Deterministic, as the engine fixes the construction order;
    values differ from unstaggered ones only by where rounding is reset (well inside the 1e-9 of the batch)."""
    global _phases
    previous, _phases = _phases, itertools.count()
    try:
        yield
    finally:
        _phases = previous


def _phase(period: int) -> int:
    """Updates already counted towards the first recompute of a window built now (see ``staggered``)."""
    return next(_phases) % period if _phases is not None else 0


def pandas_alpha(span: float | None = None, alpha: float | None = None) -> float:
    """The smoothing factor exactly as pandas derives it (through the centre of mass), so EMAs match bit for bit."""
    com = (span - 1) / 2 if span is not None else (1 - alpha) / alpha  # type: ignore[operator]
    return 1.0 / (1.0 + com)


class RollingWindow:
    """Fixed-size ring buffer with shifted running sums; mean, variance and sum in O(1) per update.

    Empty slots count as NaN, so "full and clean" is simply "no NaN inside". A run of identical values as long as
    the window has variance exactly 0, as pandas reports it (its rolling variance special-cases constant windows).
    """

    __slots__ = ("window", "_buf", "_pos", "_nans", "_shift", "_s1", "_s2", "_since", "_every", "_last", "_run")

    def __init__(self, window: int, recompute_every: int | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._buf = [NAN] * window
        self._pos = 0
        self._nans = window
        self._shift = 0.0
        self._s1 = 0.0
        self._s2 = 0.0
        self._every = max(recompute_every or window, 1)
        self._since = _phase(self._every)
        self._last = NAN
        self._run = 0

    def push(self, x: float) -> None:
        buf, pos = self._buf, self._pos
        old = buf[pos]
        if old != old:
            self._nans -= 1
        else:
            d = old - self._shift
            self._s1 -= d
            self._s2 -= d * d
        buf[pos] = x
        pos += 1
        self._pos = 0 if pos == self.window else pos
        if x != x:
            self._nans += 1
            self._run = 0
        else:
            d = x - self._shift
            self._s1 += d
            self._s2 += d * d
            self._run = self._run + 1 if x == self._last else 1
        self._last = x
        self._since += 1
        if self._since >= self._every:
            self.recompute()

    def recompute(self) -> None:
        """Exact sums around a fresh shift (the window mean): resets accumulated rounding error."""
        finite = [v for v in self._buf if v == v]
        self._shift = math.fsum(finite) / len(finite) if finite else 0.0
        k = self._shift
        self._s1 = math.fsum(v - k for v in finite)
        self._s2 = math.fsum((v - k) * (v - k) for v in finite)
        self._since = 0

    @property
    def full(self) -> bool:
        return self._nans == 0

    def mean(self) -> float:
        return self._shift + self._s1 / self.window if self._nans == 0 else NAN

    def deviation(self, x: float) -> float:
        """x - mean, formed from the shifted sums so a large level never rounds the difference."""
        return (x - self._shift) - self._s1 / self.window if self._nans == 0 else NAN

    def sum(self) -> float:
        return self._shift * self.window + self._s1 if self._nans == 0 else NAN

    def var(self, ddof: int = 1) -> float:
        if self._nans or self.window <= ddof:
            return NAN
        if self._run >= self.window:
            return 0.0
        return max((self._s2 - self._s1 * self._s1 / self.window) / (self.window - ddof), 0.0)

    def values(self) -> list[float]:
        """The window's contents, oldest first."""
        return self._buf[self._pos:] + self._buf[: self._pos]

    @property
    def constant(self) -> bool:
        """True when the window holds one value repeated ``window`` times."""
        return self._run >= self.window

    def exact_sum(self) -> float:
        """The correctly rounded sum of the window (``math.fsum``, O(window)); NaN unless full."""
        return math.fsum(self._buf) if self._nans == 0 else NAN


class RollingMean:
    """``x.rolling(window, min_periods=window).mean()``."""

    def __init__(self, window: int) -> None:
        self._w = RollingWindow(window)
        self.value = NAN

    def update(self, x: float) -> float:
        self._w.push(x)
        self.value = self._w.mean()
        return self.value


class RollingSum:
    """``x.rolling(window, min_periods=window).sum()``."""

    def __init__(self, window: int) -> None:
        self._w = RollingWindow(window)
        self.value = NAN

    def update(self, x: float) -> float:
        self._w.push(x)
        self.value = self._w.sum()
        return self.value


class RollingStd:
    """``x.rolling(window, min_periods=window).std(ddof)``."""

    def __init__(self, window: int, ddof: int = 1) -> None:
        self._w = RollingWindow(window)
        self.ddof = ddof
        self.value = NAN

    def update(self, x: float) -> float:
        self._w.push(x)
        self.value = math.sqrt(self._w.var(self.ddof)) if self._w.full else NAN
        return self.value


class RollingZScore:
    """``features.base.rolling_zscore``: (x - rolling mean) / rolling std (ddof 1), NaN where the std is 0."""

    def __init__(self, window: int) -> None:
        self._w = RollingWindow(window)
        self.value = NAN

    def update(self, x: float) -> float:
        self._w.push(x)
        var = self._w.var(1)
        self.value = self._w.deviation(x) / math.sqrt(var) if var > 0.0 else NAN
        return self.value


class LogReturn:
    """``features.base.log_returns(close, lag)``: log(c_t) - log(c_(t-lag)), NaN for the first ``lag`` bars."""

    def __init__(self, lag: int = 1) -> None:
        if lag < 1:
            raise ValueError(f"lag must be >= 1, got {lag}")
        self.lag = lag
        self._logs = [NAN] * (lag + 1)
        self._pos = 0
        self.value = NAN

    def update(self, close: float) -> float:
        log_close = log(close)
        self._logs[self._pos] = log_close
        self._pos = (self._pos + 1) % (self.lag + 1)
        self.value = log_close - self._logs[self._pos]  # the slot after the newest holds the value lag bars ago
        return self.value


class RealizedVol:
    """``features.base.realized_vol``: rolling std (ddof 1) of one-bar log returns."""

    def __init__(self, window: int) -> None:
        self._ret = LogReturn(1)
        self._std = RollingStd(window)
        self.value = NAN

    def update(self, close: float) -> float:
        self.value = self._std.update(self._ret.update(close))
        return self.value


class PandasEMA:
    """``x.ewm(alpha, adjust=False, ignore_na=True).mean()`` with pandas' exact update and constant shortcut."""

    __slots__ = ("_alpha", "_old", "_denominator", "value")

    def __init__(self, alpha: float) -> None:
        self._alpha = alpha
        self._old = 1.0 - alpha
        self._denominator = self._old + alpha
        self.value = NAN

    def update(self, x: float) -> float:
        if x != x:
            return self.value
        if self.value != self.value:
            self.value = x
        elif self.value != x:
            self.value = (self._old * self.value + self._alpha * x) / self._denominator
        return self.value


class WilderRSI:
    """``features.base.rsi``: Wilder smoothing (alpha 1/period) seeded by the mean of the first ``period`` moves.

    Returns the 0..100 RSI; NaN for the first ``period`` bars; 100 while the average loss is 0.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        alpha = pandas_alpha(alpha=1.0 / period)
        self._gain, self._loss = PandasEMA(alpha), PandasEMA(alpha)
        self._prev = NAN
        self._bars = 0
        self._gains: list[float] = []
        self._losses: list[float] = []
        self.value = NAN

    def update(self, close: float) -> float:
        delta = close - self._prev
        self._prev = close
        self._bars += 1
        if self._bars == 1:
            return self.value
        gain = delta if delta > 0.0 else 0.0
        loss = -delta if delta < 0.0 else 0.0
        if self._bars <= self.period + 1:  # moves of bars 1..period seed the averages at bar ``period``
            self._gains.append(gain)
            self._losses.append(loss)
            if self._bars <= self.period:
                return self.value
            self._gain.update(math.fsum(self._gains) / self.period)
            self._loss.update(math.fsum(self._losses) / self.period)
            self._gains, self._losses = [], []
        else:
            self._gain.update(gain)
            self._loss.update(loss)
        avg_gain, avg_loss = self._gain.value, self._loss.value
        self.value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss) if avg_loss > 0.0 else 100.0
        return self.value


class MACD:
    """``features.technical.macd``: (line, signal, histogram) divided by the close.

    ``update`` returns the line; ``signal`` and ``hist`` hold the other two. NaN masks by bar position as the batch
    function applies them: the line before bar ``slow - 1``, signal and histogram before bar ``slow + signal - 2``.
    """

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self._fast = PandasEMA(pandas_alpha(span=fast))
        self._slow = PandasEMA(pandas_alpha(span=slow))
        self._signal = PandasEMA(pandas_alpha(span=signal))
        self._line_from = slow - 1
        self._signal_from = slow + signal - 2
        self._bar = -1
        self.value = self.signal = self.hist = NAN

    def update(self, close: float) -> float:
        self._bar += 1
        line = self._fast.update(close) - self._slow.update(close)
        sig = self._signal.update(line)
        self.value = line / close if self._bar >= self._line_from else NAN
        ok = self._bar >= self._signal_from
        self.signal = sig / close if ok else NAN
        self.hist = (line - sig) / close if ok else NAN
        return self.value


class KAMADistance:
    """log(close / KAMA) as ``features.technical`` computes it (``kama`` seeded at bar ``er_window - 1``)."""

    def __init__(self, er_window: int, fast: int, slow: int) -> None:
        self.n = er_window
        self._closes = [NAN] * (er_window + 1)
        self._pos = 0
        self._path = RollingSum(er_window)
        self._fast_sc, self._slow_sc = 2.0 / (fast + 1.0), 2.0 / (slow + 1.0)
        self._prev_close = NAN
        self._kama = NAN
        self._bar = -1
        self.value = NAN

    def update(self, close: float) -> float:
        self._bar += 1
        self._closes[self._pos] = close
        self._pos = (self._pos + 1) % (self.n + 1)
        change = abs(close - self._closes[self._pos])
        path = self._path.update(abs(close - self._prev_close))
        self._prev_close = close
        er = 0.0 if path == 0.0 else change / path
        sc = (er * (self._fast_sc - self._slow_sc) + self._slow_sc) ** 2
        if self._bar == self.n - 1:
            self._kama = close
        elif self._bar >= self.n:
            if self._kama != self._kama:
                self._kama = close
            elif not (close != close or sc != sc):
                self._kama = self._kama + sc * (close - self._kama)
        self.value = log(divide(close, self._kama)) if self._bar >= self.n else NAN
        return self.value


class VWAPDeviation:
    """``features.technical.vwap_deviation``: log(close / rolling VWAP of the typical price)."""

    def __init__(self, window: int) -> None:
        self._traded = RollingSum(window)
        self._volume = RollingSum(window)
        self.value = NAN

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        typical = (high + low + close) / 3.0
        traded = self._traded.update(typical * volume)
        total = self._volume.update(volume)
        self.value = log(divide(close, divide(traded, total))) if total > 0.0 else NAN
        return self.value


class MoneyFlow:
    """Chaikin money-flow volume of one bar (``technical.money_flow_volume``); 0 on a bar with no range."""

    @staticmethod
    def of(high: float, low: float, close: float, volume: float) -> float:
        span = high - low
        if span == 0.0:
            return 0.0 * volume
        multiplier = ((close - low) - (high - close)) / span if span > 0.0 else NAN
        return multiplier * volume


class ChaikinMoneyFlow:
    """``technical`` column ``cmf``: rolling sum of money-flow volume over rolling volume."""

    def __init__(self, window: int) -> None:
        self._flow = RollingSum(window)
        self._volume = RollingSum(window)
        self.value = NAN

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        flow = self._flow.update(MoneyFlow.of(high, low, close, volume))
        total = self._volume.update(volume)
        self.value = flow / total if total > 0.0 else NAN
        return self.value


class AccumulationZScore:
    """``technical`` column ``ad_z``: rolling z-score of the cumulative money-flow volume (NaN bars skipped)."""

    def __init__(self, window: int) -> None:
        self._cum = 0.0
        self._z = RollingZScore(window)
        self.value = NAN

    def update(self, high: float, low: float, close: float, volume: float) -> float:
        flow = MoneyFlow.of(high, low, close, volume)
        if flow == flow:
            self._cum += flow
        self.value = self._z.update(self._cum if flow == flow else NAN)
        return self.value


class SmartMoneyIndex:
    """``technical.smart_money_index``: rolling sum of log(close/open) - log(open/previous close)."""

    def __init__(self, window: int) -> None:
        self._sum = RollingSum(window)
        self._prev_close = NAN
        self.value = NAN

    def update(self, open_: float, close: float) -> float:
        move = log(divide(close, open_)) - log(divide(open_, self._prev_close))
        self._prev_close = close
        self.value = self._sum.update(move)
        return self.value


class OrderFlowImbalance:
    """Cont-Kukanov-Stoikov OFI of a quote against the previous one (``microstructure.order_flow_imbalance``).

    ``update`` returns the raw e_n with the batch family's NaN -> 0 (the first quote, or one next to a missing
    quote, contributes no flow).
    """

    def __init__(self) -> None:
        self._prev = (NAN, NAN, NAN, NAN)
        self.value = NAN

    def update(self, bid: float, ask: float, bid_size: float, ask_size: float) -> float:
        b0, a0, qb0, qa0 = self._prev
        e = ((bid >= b0) * bid_size - (bid <= b0) * qb0 - (ask <= a0) * ask_size + (ask >= a0) * qa0)
        self._prev = (bid, ask, bid_size, ask_size)
        self.value = e if e == e else 0.0
        return self.value


class QuoteFeatures:
    """Per-bar quote measures of ``microstructure.quote_features`` with one quote snapshot per bar.

    ``ofi`` = e / depth, ``ofi_w`` = rolling sum(e) / rolling mean(depth), ``rel_spread``, ``depth_imbalance`` and
    ``quote_stability`` (share of unchanged consecutive quotes in the window). Relative spread, depth imbalance
    and depth carry the last value over missing quotes, as the batch family forward-fills them. The batch family
    leaves every quote column NaN on bars without quote columns; a tick cannot tell an absent quote from a missing
    one, so ``quote_stability`` stays NaN until a quote has been seen (a quote-less stream: NaN throughout).
    """

    def __init__(self, window: int) -> None:
        self._ofi = OrderFlowImbalance()
        self._ofi_sum = RollingSum(window)
        self._depth_mean = RollingMean(window)
        self._kept = RollingSum(window)
        self._transitions = RollingSum(window)
        self._prev: tuple[float, float, float, float] | None = None
        self._quoted = False
        self.depth = self.rel_spread = self.depth_imbalance = NAN
        self.ofi = self.ofi_w = self.quote_stability = NAN
        self.value = NAN

    def update(self, bid: float, ask: float, bid_size: float, ask_size: float) -> float:
        e = self._ofi.update(bid, ask, bid_size, ask_size)
        depth = (bid_size + ask_size) / 2.0
        if depth == depth:
            self.depth = depth
        spread = divide(ask - bid, (ask + bid) / 2.0)
        if spread == spread:
            self.rel_spread = spread
        imbalance = divide(bid_size - ask_size, bid_size + ask_size)
        if imbalance == imbalance:
            self.depth_imbalance = imbalance
        first = self._prev is None
        if first:
            unchanged = 0.0
        else:
            b0, a0, qb0, qa0 = self._prev  # type: ignore[misc]
            unchanged = float(bid == b0 and ask == a0 and bid_size == qb0 and ask_size == qa0)  # NaN != NaN
        self._kept.update(unchanged)
        self._transitions.update(0.0 if first else 1.0)
        self._prev = (bid, ask, bid_size, ask_size)
        self.ofi = divide(e, self.depth)
        self.ofi_w = divide(self._ofi_sum.update(e), self._depth_mean.update(self.depth))
        self._quoted = self._quoted or any(v == v for v in (bid, ask, bid_size, ask_size))
        self.quote_stability = divide(self._kept.value, self._transitions.value) if self._quoted else NAN
        self.value = self.ofi
        return self.value


class ExactRollingMean:
    """``x.rolling(window, min_periods=window).mean()`` from an exact sum (``math.fsum``) of the window: O(window).

    For a value that feeds a discrete decision (VPIN's bucket size decides where a bucket closes) a running sum's
    last-ulp drift could flip the decision; the exact sum equals pandas' compensated sum wherever that one is exact
    (integer volumes), and a constant window gives the value itself, as pandas does.
    """

    def __init__(self, window: int) -> None:
        self._w = RollingWindow(window)
        self.value = NAN

    def update(self, x: float) -> float:
        w = self._w
        w.push(x)
        self.value = x if w.full and w.constant else w.exact_sum() / w.window
        return self.value


class RollingCovariance:
    """``x.rolling(window, min_periods=window).cov(y)`` (ddof 1) from shifted co-moment sums, O(1) per update.

    Like ``RollingWindow``: sums of (x - Kx), (y - Ky) and their product, recomputed exactly (``math.fsum``, fresh
    shifts at the window means) every ``window`` updates; a pair with a NaN makes the window NaN until it leaves.
    """

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self._xs = [NAN] * window
        self._ys = [NAN] * window
        self._pos = 0
        self._nans = window
        self._kx = self._ky = 0.0
        self._sx = self._sy = self._sxy = 0.0
        self._since = _phase(window)
        self.value = NAN

    def update(self, x: float, y: float) -> float:
        pos = self._pos
        ox, oy = self._xs[pos], self._ys[pos]
        if ox != ox or oy != oy:
            self._nans -= 1
        else:
            dx, dy = ox - self._kx, oy - self._ky
            self._sx -= dx
            self._sy -= dy
            self._sxy -= dx * dy
        self._xs[pos], self._ys[pos] = x, y
        self._pos = (pos + 1) % self.window
        if x != x or y != y:
            self._nans += 1
        else:
            dx, dy = x - self._kx, y - self._ky
            self._sx += dx
            self._sy += dy
            self._sxy += dx * dy
        self._since += 1
        if self._since >= self.window:
            self._recompute()
        n = self.window
        self.value = (self._sxy - self._sx * self._sy / n) / (n - 1) if self._nans == 0 else NAN
        return self.value

    def _recompute(self) -> None:
        pairs = [(x, y) for x, y in zip(self._xs, self._ys) if x == x and y == y]
        if pairs:
            self._kx = math.fsum(x for x, _ in pairs) / len(pairs)
            self._ky = math.fsum(y for _, y in pairs) / len(pairs)
        kx, ky = self._kx, self._ky
        self._sx = math.fsum(x - kx for x, _ in pairs)
        self._sy = math.fsum(y - ky for _, y in pairs)
        self._sxy = math.fsum((x - kx) * (y - ky) for x, y in pairs)
        self._since = 0


class BulkVolumeClassification:
    """``microstructure.bvc_buy_fraction``: Phi(r_t / sigma_t), 0.5 on a flat window (sigma = 0), NaN before it fills.

    ``scipy.special.ndtr`` itself, so the normal CDF is the batch one bit for bit.
    """

    def __init__(self, window: int) -> None:
        self._ret = LogReturn(1)
        self._std = RollingStd(window)
        self.value = NAN

    def update(self, close: float) -> float:
        r = self._ret.update(close)
        sigma = self._std.update(r)
        self.value = 0.5 if sigma == 0.0 else float(ndtr(divide(r, sigma)))
        return self.value


class CorwinSchultzSpread:
    """``microstructure.corwin_schultz_spread``: trailing mean of the two-bar high/low spread estimate.

    The current bar's range is shifted to contain the previous close, a negative two-bar estimate counts as 0.
    """

    K: float = 3.0 - 2.0 * math.sqrt(2.0)

    def __init__(self, window: int) -> None:
        self._mean = RollingMean(window)
        self._prev = (NAN, NAN, NAN)
        self.value = NAN

    @classmethod
    def two_bar(cls, prev_high: float, prev_low: float, prev_close: float, high: float, low: float) -> float:
        """The estimate from bars t-1 and t (NaN without a previous bar, or where NumPy's would be inf/inf)."""
        if not (prev_high == prev_high and prev_low == prev_low and prev_close == prev_close):
            return NAN
        shift = max(prev_close - high, 0.0) - max(low - prev_close, 0.0)
        h_adj, l_adj = high + shift, low + shift
        beta = log(divide(prev_high, prev_low)) ** 2 + log(divide(h_adj, l_adj)) ** 2
        gamma = log(divide(max(prev_high, h_adj), min(prev_low, l_adj))) ** 2
        if not (math.isfinite(beta) and math.isfinite(gamma)):
            return NAN
        alpha = (math.sqrt(2.0 * beta) - math.sqrt(beta)) / cls.K - math.sqrt(gamma / cls.K)
        try:
            spread = 2.0 * math.expm1(alpha) / (1.0 + math.exp(alpha))
        except OverflowError:  # NumPy: inf / inf
            return NAN
        return 0.0 if spread < 0.0 else spread

    def update(self, high: float, low: float, close: float) -> float:
        spread = self.two_bar(*self._prev, high, low)
        self._prev = (high, low, close)
        self.value = self._mean.update(spread)
        return self.value


class RollSpread:
    """``microstructure.roll_spread``: 2 sqrt(-cov(r_t, r_(t-1))) over ``window`` return pairs; 0 when cov > 0."""

    def __init__(self, window: int) -> None:
        self._ret = LogReturn(1)
        self._cov = RollingCovariance(window)
        self._prev_ret = NAN
        self.value = NAN

    def update(self, close: float) -> float:
        r = self._ret.update(close)
        cov = self._cov.update(r, self._prev_ret)
        self._prev_ret = r
        self.value = NAN if cov != cov else 2.0 * math.sqrt(max(-cov, 0.0))
        return self.value


class AmihudIlliquidity:
    """``microstructure.amihud_illiquidity``: trailing mean of |r| / dollar volume per million; NaN over a bar with
    no dollar volume."""

    def __init__(self, window: int) -> None:
        self._ret = LogReturn(1)
        self._mean = RollingMean(window)
        self.value = NAN

    def update(self, close: float, volume: float) -> float:
        r = self._ret.update(close)
        dollar = close * volume
        illiquidity = abs(r) / dollar * AMIHUD_SCALE if dollar > 0.0 else NAN
        self.value = self._mean.update(illiquidity)
        return self.value


class VPIN:
    """``microstructure.vpin`` (``features.nb.vpin_nb``) carried bar by bar: volume poured into equal-volume buckets.

    The fill state (open bucket's size, fill and buys) and the last ``n_buckets`` bucket imbalances are the whole
    state; a bucket opened during bar t gets ``bucket_volume`` x the trailing ``volume_window`` mean volume at t.
    Bars with NaN or non-positive volume or a NaN buy fraction, and bars arriving while no bucket is open and the
    size is not yet known, are skipped, as in the batch kernel. O(buckets completed by the bar) per update.
    """

    def __init__(self, n_buckets: int, bucket_volume: float, volume_window: int) -> None:
        self.n_buckets = n_buckets
        self.bucket_volume = bucket_volume
        self._size = ExactRollingMean(volume_window)
        self._ring = np.zeros(n_buckets)  # summed by NumPy, in slot order, as the batch kernel sums it
        self._completed = 0
        self._open = False
        self._cap = self._filled = self._buys = 0.0
        self.value = NAN

    def update(self, volume: float, buy_fraction: float) -> float:
        size = self.bucket_volume * self._size.update(volume)
        v, f = volume, buy_fraction
        if not (math.isfinite(v) and math.isfinite(f) and v > 0.0):
            return self.value
        changed = False
        while v > 0.0:
            if not self._open:
                if not (math.isfinite(size) and size > 0.0):
                    break
                self._cap, self._filled, self._buys, self._open = size, 0.0, 0.0, True
            room = self._cap - self._filled
            if v >= room:
                self._buys += room * f
                v -= room
                self._ring[self._completed % self.n_buckets] = abs(2.0 * self._buys - self._cap) / self._cap
                self._completed += 1
                self._open = False
                changed = True
            else:
                self._filled += v
                self._buys += v * f
                v = 0.0
        if changed and self._completed >= self.n_buckets:
            self.value = float(self._ring.sum()) / self.n_buckets
        return self.value


class WaveletWindow:
    """Rolling DWT band statistics of the last ``window`` source values, recomputed every ``stride`` values.

    The window is kept in a ring buffer and handed to the batch ``rolling_wavelet_stats`` as one row, so values at
    recompute ticks are the batch values; between recomputes the last result is carried (``stride=1``: every tick
    equals the batch family). ``calls`` counts recomputes.
    """

    def __init__(self, window: int, wavelet: str, levels: int, mode: str, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.window, self.wavelet, self.levels, self.mode, self.stride = window, wavelet, levels, mode, stride
        self._buf = [NAN] * window
        self._pos = 0
        self._seen = 0
        self.calls = 0
        #: True when the last ``update`` ran a decomposition.
        self.recomputed = False
        self.value = np.full((levels + 1) * len(wavelet_batch.STATS), np.nan)

    def update(self, x: float) -> np.ndarray:
        """Push one source value (NaN values before the series starts are skipped, as the batch family does)."""
        self.recomputed = False
        if x != x and self._seen == 0:
            return self.value
        self._buf[self._pos] = x
        self._pos = (self._pos + 1) % self.window
        self._seen += 1
        if self._seen >= self.window and (self._seen - self.window) % self.stride == 0:
            values = np.array(self._buf[self._pos:] + self._buf[: self._pos])
            stats = wavelet_batch.rolling_wavelet_stats(values, self.window, self.wavelet, self.levels, self.mode)
            self.value = stats.reshape(-1)
            self.calls += 1
            self.recomputed = True
        return self.value


class EfficiencyRatio:
    """Kaufman efficiency ratio |c_t - c_(t-n)| / sum |one-bar changes| (0 on a flat window): trend strength."""

    def __init__(self, window: int) -> None:
        self.n = window
        self._closes = [NAN] * (window + 1)
        self._pos = 0
        self._path = RollingSum(window)
        self._prev = NAN
        self.value = NAN

    def update(self, close: float) -> float:
        self._closes[self._pos] = close
        self._pos = (self._pos + 1) % (self.n + 1)
        path = self._path.update(abs(close - self._prev))
        self._prev = close
        change = abs(close - self._closes[self._pos])
        self.value = NAN if path != path else (0.0 if path == 0.0 else change / path)
        return self.value
