"""Backtest benchmark: one vectorbt sweep over 1,000 signal columns against backtesting.py running them one by one.

Run: ``.venv/bin/python benchmarks/backtest_vs_backtestingpy.py [--columns N] [--bt-columns M] [--fee F]``.
Data: the 5,000 real bundled EUR/USD hourly bars. Signals: ``--columns`` seeded, persistent long/short/flat targets
(a dead-banded sign of an AR(1) of white noise, phi drawn in [0.85, 0.98] per column, so trades last several bars).

* ours: ``run_backtest_sweep`` over all columns, plus ``sweep_metrics`` (best of ``--repeat``). The sweep calls
  vectorbt's simulator (``vectorbt.portfolio.nb.simulate_from_orders_nb``, what ``Portfolio.from_orders`` runs) on
  numpy grids of each column's orders, 64 columns to a call; the breakdown shows that call's share, and, for
  reference, ``vbt.Portfolio.from_orders`` on the same orders (its pandas broadcasting and a grid cell per bar).
* alternative: backtesting.py (PyPI ``backtesting``), one ``Backtest.run`` per column (its run includes its stats),
  a ``Strategy`` that trades the same targets: ``next()`` at bar t sees the close of t and sends a market order, which
  backtesting.py fills at the open of t+1 (``trade_on_close=False``, its default) -- the same next-open fill as ours.
  All-in sizing (``buy()``/``sell()`` default size, ``exclusive_orders=True`` so a reversal closes first),
  ``commission`` = our ``fees`` per side, no spread and no slippage on either side. Timed on the first
  ``--bt-columns`` columns (best of ``--repeat`` passes) and extrapolated per column.

Agreement is checked on those columns: trades (entry bar, exit bar, direction) must be identical; equity curves agree
up to backtesting.py's whole-unit sizing (cash 1e9, so ~1e-9) and one difference in the fee model: entering a short,
backtesting.py sizes the position net of commission, vectorbt gross (our fills are cash-limited for longs only), so the
short's size differs by a fraction ``fee``. The goal is >= 200x.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's per-run progress bar

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import vectorbt as vbt  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

import embedtune.backtest.portfolio as portfolio  # noqa: E402
from embedtune.backtest.metrics import periods_per_year, sweep_metrics  # noqa: E402
from embedtune.backtest.portfolio import order_sizes, run_backtest_sweep  # noqa: E402
from embedtune.data.bundled import load_bundled  # noqa: E402
from _harness import best_time  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

BT_CASH = 1e9  # backtesting.py trades whole units: a large account makes the rounding negligible
GOAL = 200.0


def make_targets(index: pd.DatetimeIndex, n_columns: int, seed: int) -> pd.DataFrame:
    """Persistent targets in {-1, 0, 1}: AR(1) of white noise with a dead band; flat on bar 0 (no decision before)."""
    rng = np.random.default_rng(seed)
    n = len(index)
    noise = rng.standard_normal((n, n_columns))
    phis = rng.uniform(0.85, 0.98, n_columns)
    out = np.empty((n, n_columns))
    for j, phi in enumerate(phis):
        x = lfilter([1.0], [1.0, -phi], noise[:, j]) * np.sqrt(1.0 - phi * phi)  # unit variance
        out[:, j] = np.where(x > 0.3, 1.0, np.where(x < -0.3, -1.0, 0.0))
    out[0] = 0.0  # backtesting.py's first next() is at bar 1, so neither side decides at bar 0
    return pd.DataFrame(out, index=index, columns=[f"s{j:04d}" for j in range(n_columns)])


def _backtesting_run(ohlc: pd.DataFrame, target: np.ndarray, fee: float):
    from backtesting import Backtest, Strategy

    class TargetStrategy(Strategy):
        """Trade toward ``target[t]`` at the close of bar t (filled by backtesting.py at the open of t+1)."""

        def init(self) -> None:
            self.held = 0.0

        def next(self) -> None:
            want = target[len(self.data) - 1]
            if want == self.held:
                return
            if want > 0:
                self.buy()
            elif want < 0:
                self.sell()
            else:
                self.position.close()
            self.held = want

    bt = Backtest(ohlc, TargetStrategy, cash=BT_CASH, commission=fee, spread=0.0, margin=1.0,
                  trade_on_close=False, hedging=False, exclusive_orders=True, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "trades remain open at the end" is expected
        return bt.run()


def _vbt_trades(sweep, column: int) -> pd.DataFrame:
    rec = sweep.trade_records  # vectorbt's exit trades (pf.trades.values)
    rec = rec[(rec["col"] == column) & (rec["status"] == 1)]  # closed trades; backtesting.py lists only those
    return pd.DataFrame({"entry": rec["entry_idx"], "exit": rec["exit_idx"],
                         "long": rec["direction"] == 0}).reset_index(drop=True)


def _bt_trades(stats: pd.Series) -> pd.DataFrame:
    t = stats["_trades"]
    return pd.DataFrame({"entry": t["EntryBar"].to_numpy(), "exit": t["ExitBar"].to_numpy(),
                         "long": t["Size"].to_numpy() > 0}).sort_values(["exit", "entry"]).reset_index(drop=True)


def _simulator_share(run, repeat: int) -> float:
    """Seconds that vectorbt's simulator takes inside ``run`` (the fastest of ``repeat`` runs, summed over calls)."""
    inner = portfolio.simulate_from_orders_nb
    spent = [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    best = float("inf")
    portfolio.simulate_from_orders_nb = timed
    try:
        for _ in range(repeat):
            spent[0] = 0.0
            run()
            best = min(best, spent[0])
    finally:
        portfolio.simulate_from_orders_nb = inner
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=1_000, help="signal columns in our sweep")
    parser.add_argument("--bt-columns", type=int, default=20, help="columns run (and timed) with backtesting.py")
    parser.add_argument("--fee", type=float, default=1e-4, help="fee per side, fraction of notional (both tools)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    bars = load_bundled("eurusd_hourly").bars
    assert len(bars) == 5_000, len(bars)
    targets = make_targets(bars.index, args.columns, args.seed)
    ppy = periods_per_year(bars.index)

    def from_orders():  # reference: vectorbt's pandas entry point on the same orders
        return vbt.Portfolio.from_orders(close=bars["close"], size=order_sizes(targets), size_type="targetpercent",
                                         direction="both", price=bars["open"], fees=args.fee, slippage=0.0,
                                         init_cash=1.0)

    run_backtest_sweep(bars.iloc[:200], targets.iloc[:200, :2], fees=args.fee, slippage=0.0)  # numba warm-up
    sweep_s, sweep = best_time(lambda: run_backtest_sweep(bars, targets, fees=args.fee, slippage=0.0), args.repeat)
    metrics_s, metrics = best_time(lambda: sweep_metrics(sweep, ppy), args.repeat)
    ours_s = sweep_s + metrics_s
    sim_s = _simulator_share(lambda: run_backtest_sweep(bars, targets, fees=args.fee, slippage=0.0), args.repeat)
    from_orders_s, _ = best_time(from_orders, args.repeat)

    ohlc = bars.rename(columns=str.capitalize)
    _backtesting_run(ohlc, targets.iloc[:, 0].to_numpy(), args.fee)  # import + first-call warm-up
    k = min(args.bt_columns, args.columns)
    bt_s, stats = best_time(lambda: [_backtesting_run(ohlc, targets.iloc[:, j].to_numpy(), args.fee)
                                     for j in range(k)], args.repeat)

    value = sweep.portfolio.value()
    same_trades, n_trades, eq_err, final_err, trade_err = 0, 0, 0.0, 0.0, 0.0
    rows = []
    for j in range(k):
        ours_t, theirs_t = _vbt_trades(sweep, j), _bt_trades(stats[j])
        identical = ours_t.equals(theirs_t)
        same_trades += identical
        n_trades += len(theirs_t)
        theirs_eq = stats[j]["_equity_curve"]["Equity"].to_numpy() / BT_CASH
        ours_eq = value.iloc[:, j].to_numpy()
        err = float(np.max(np.abs(theirs_eq / ours_eq - 1.0)))
        fin = abs(theirs_eq[-1] / ours_eq[-1] - 1.0)
        eq_err, final_err = max(eq_err, err), max(final_err, fin)
        if identical and len(theirs_t):
            rec = sweep.trade_records
            rec = rec[(rec["col"] == j) & (rec["status"] == 1)]
            theirs_ret = stats[j]["_trades"].sort_values(["ExitBar", "EntryBar"])["ReturnPct"].to_numpy()
            trade_err = max(trade_err, float(np.max(np.abs(rec["return"] - theirs_ret))))
        if j < 5:
            rows.append((targets.columns[j], len(ours_t), len(theirs_t), identical, ours_eq[-1], theirs_eq[-1], err))

    per_col_bt = bt_s / k
    per_col_ours = ours_s / args.columns
    ratio = per_col_bt / per_col_ours
    mean_trades = float(metrics["n_trades"].mean())
    print(f"backtest sweep: {args.columns} signal columns x {len(bars):,} real EUR/USD hourly bars, "
          f"fee {args.fee:g}/side, no slippage; ~{mean_trades:.0f} trades/column")
    print(f"\n{'column':8} {'trades ours':>11} {'trades bt.py':>12} {'same':>5} {'final eq ours':>14} "
          f"{'final eq bt.py':>14} {'max |eq diff|':>13}")
    for name, a, b, same, fa, fb, err in rows:
        print(f"{name:8} {a:>11} {b:>12} {'yes' if same else 'NO':>5} {fa:>14.6f} {fb:>14.6f} {err:>13.2e}")
    print(f"\nmatch on {k} columns: identical trade lists (entry bar, exit bar, side) {same_trades}/{k} "
          f"({n_trades:,} closed trades); max |trade return diff| {trade_err:.2e}; "
          f"max relative equity diff {eq_err:.2e} (final {final_err:.2e})")
    header = f"\n{'engine':44} {'columns':>8} {'seconds':>9} {'s/column':>10} {'ratio':>8}"
    print(header)
    print("-" * (len(header) - 1))
    print(f"{'ours: run_backtest_sweep + sweep_metrics':44} {args.columns:>8} {ours_s:>9.3f} {per_col_ours:>10.5f} "
          f"{ratio:>7.0f}x")
    for label, secs in (("  of which run_backtest_sweep", sweep_s), ("    of which simulate_from_orders_nb", sim_s),
                        ("  of which sweep_metrics", metrics_s),
                        ("(reference: vbt.Portfolio.from_orders)", from_orders_s)):
        print(f"{label:44} {args.columns:>8} {secs:>9.3f} {secs / args.columns:>10.5f}")
    print(f"{'backtesting.py ' + __import__('backtesting').__version__ + ' Backtest.run, per column':44} {k:>8} "
          f"{bt_s:>9.3f} {per_col_bt:>10.5f} {1:>7.0f}x")
    print(f"\nratio {ratio:.0f}x (goal >= {GOAL:.0f}x: {'met' if ratio >= GOAL else 'NOT met'}); backtesting.py "
          f"extrapolated to {args.columns} columns: {per_col_bt * args.columns:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
