"""Order flow in experiments (``data.quotes``, ``data.trades``): file validation with located one-line errors, causal
aggregation to bars against a plain loop, no look-ahead (changing events after bar t leaves bars <= t alone), files
and the synthetic stream giving the same features, provenance labels, and a planted order-flow signal that a trial
with the order-flow columns finds and the same trial without them does not (two seeds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from threadpoolctl import threadpool_limits

from embedtune.cli import main
from embedtune.config import load_config
from embedtune.config.schema import ExperimentConfig, OrderFlowGeneratorConfig
from embedtune.data.market import MarketData
from embedtune.data.orderflow import (
    OrderFlow, aggregate_quotes, aggregate_trades, attach_order_flow, load_quotes, load_trades,
    synthetic_order_flow,
)
from embedtune.data.sources import load_market
from embedtune.data.synthetic_market import generate_market
from embedtune.data.synthetic_trades import generate_quote_trade_stream
from embedtune.dataset import PreparedData, prepare
from embedtune.errors import DataError
from embedtune.features.compute import compute_features
from embedtune.features.microstructure import FLOW_COLUMNS, QUOTE_SUM_COLUMNS
from embedtune.strategy import load_strategy
from embedtune.train.loop import FoldReport, run_folds

PLANTED = "tests/configs/orderflow_tiny.yaml"
#: Short windows (every column defined within ~25 bars) and a rare PIN re-estimate (a multi-start MLE each).
SMALL = {"flow_window": 3, "bvc_window": 10, "spread_window": 5, "amihud_window": 5, "kyle_window": 10,
         "vpin_buckets": 5, "vpin_volume_window": 10, "pin_window": 20, "pin_stride": 60, "size_window": 5}
#: The microstructure columns that need quotes or trades (NaN, then dropped, on bars alone).
ORDER_FLOW_FEATURES = ("ofi", "ofi_3", "pressure_3", "imbalance_3", "kyle_lambda_10", "rel_spread", "depth_imbalance",
                       "quote_stability_3", "pin_20", "trade_size_logmean", "trade_size_cv", "trade_size_skew",
                       "large_trade_share")


def _features(market: MarketData) -> pd.DataFrame:
    return compute_features(market, {"microstructure": SMALL})


# ------------------------------------------------------------------------------------------------------ files

QUOTES_CSV = """timestamp,bid,ask,bid_size,ask_size
2024-01-02 10:00:00,99.90,100.10,5,7
2024-01-02 10:00:00,99.95,100.10,6,7
2024-01-02 10:30:00,99.80,100.00,4,0
"""
TRADES_CSV = """Datetime,Price,Size,Side
2024-01-02 10:00:00,100.10,3,buy
2024-01-02 10:10:00,99.95,2,S
2024-01-02 10:10:00,100.00,1,-1
2024-01-02 10:20:00,100.05,4,1
"""


def _write(tmp: Path, text: str, name: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_quote_and_trade_files_load(tmp_path: Path) -> None:
    quotes = load_quotes(_write(tmp_path, QUOTES_CSV, "quotes.csv"))
    assert list(quotes.columns) == ["timestamp", "bid", "ask", "bid_size", "ask_size"]
    assert quotes["bid"].tolist() == [99.90, 99.95, 99.80] and quotes["ask_size"].tolist() == [7.0, 7.0, 0.0]
    trades = load_trades(_write(tmp_path, TRADES_CSV, "trades.csv"))  # Datetime/Price/Side in any case, as bars
    assert trades["side"].tolist() == [1, -1, -1, 1] and trades["size"].tolist() == [3.0, 2.0, 1.0, 4.0]
    assert trades["timestamp"].iloc[1] == trades["timestamp"].iloc[2]  # equal stamps: one clock tick, two trades


def _replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line] = new
    return "\n".join(lines) + "\n"


BAD_FILES = [
    # (kind, edited file, data row, column, words in the message)
    ("quotes", QUOTES_CSV.replace("ask_size", "asksize"), None, "ask_size", "missing required column"),
    ("quotes", _replace_line(QUOTES_CSV, 2, "2024-01-02 10:00:00,100.20,100.10,6,7"), 2, "bid", "above ask"),
    ("quotes", _replace_line(QUOTES_CSV, 3, "2024-01-02 10:30:00,99.80,100.00,-4,0"), 3, "bid_size", ">= 0"),
    ("quotes", _replace_line(QUOTES_CSV, 3, "2024-01-02 09:30:00,99.80,100.00,4,0"), 3, "timestamp",
     "earlier than the previous row"),
    ("quotes", _replace_line(QUOTES_CSV, 1, "2024-01-02 10:00:00,99.90,abc,5,7"), 1, "ask", "cannot parse 'abc'"),
    ("quotes", _replace_line(QUOTES_CSV, 2, "2024-01-02 10:00:00,0,100.10,6,7"), 2, "bid", "must be > 0"),
    ("trades", _replace_line(TRADES_CSV, 3, "2024-01-02 10:10:00,100.00,0,-1"), 3, "size", "must be > 0"),
    ("trades", _replace_line(TRADES_CSV, 4, "2024-01-02 10:20:00,100.05,4,hold"), 4, "side", "'hold' is not"),
    ("trades", _replace_line(TRADES_CSV, 2, "2024-13-02 10:10:00,99.95,2,S"), 2, "datetime", "cannot parse"),
    ("trades", _replace_line(TRADES_CSV, 1, "2024-01-02 10:00:00,nan,3,buy"), 1, "price", "missing or NaN"),
    ("trades", _replace_line(TRADES_CSV, 2, "2024-01-02 10:10:00+01:00,99.95,2,S"), 2, "datetime",
     "mixed time zones"),
]


@pytest.mark.parametrize("kind,text,row,column,words", BAD_FILES)
def test_bad_files_name_file_row_and_column(tmp_path: Path, kind: str, text: str, row: int | None, column: str,
                                            words: str) -> None:
    load = load_quotes if kind == "quotes" else load_trades
    path = _write(tmp_path, text, f"{kind}.csv")
    with pytest.raises(DataError) as caught:
        load(path)
    err = caught.value
    assert (err.path, err.row, err.column) == (str(path), row, column)
    where = f"{path}, row {row} (line {row + 1}), column '{column}'" if row else f"{path}, column '{column}'"
    assert str(err).startswith(f"data error: {where}: ") and words in str(err) and "\n" not in str(err)


def _config_file(tmp: Path, data: dict[str, object]) -> Path:
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "of", "data": {"source": "bundled:goog_daily", "start": "2012-06-01",
                                                           **data}, "features": {"base": {}}}))
    return path


def _cli_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``embedtune validate-config`` prints for a bad input: exit 2 and exactly one stderr line."""
    code = main(["validate-config", str(path)])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out.err and out.out == "", out
    return lines[0]


def test_cli_reports_bad_order_flow_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trades = _write(tmp_path, _replace_line(TRADES_CSV, 3, "2024-01-02 10:10:00,100.00,-1,-1"), "bad_trades.csv")
    line = _cli_error(_config_file(tmp_path, {"trades": str(trades)}), capsys)
    assert line == (f"embedtune: data error: {trades}, row 3 (line 4), column 'size': size -1.0 must be > 0 "
                    "(a trade has a price and a size)")
    aware = _write(tmp_path, QUOTES_CSV.replace(":00,", ":00+00:00,"), "aware_quotes.csv")
    line = _cli_error(_config_file(tmp_path, {"quotes": str(aware)}), capsys)  # the bundled bars are tz-naive
    assert line.startswith(f"embedtune: data error: {aware}, row 1 (line 2), column 'timestamp': timestamps are in UTC")
    config = _config_file(tmp_path, {"quotes": str(tmp_path / "missing.csv")})
    assert _cli_error(config, capsys) == (f"embedtune: config error: {config}: data.quotes: no such file "
                                          f"'{tmp_path / 'missing.csv'}' (or use none, synthetic)")
    config = _config_file(tmp_path, {"trades": str(trades), "order_flow_generator": {"seed": 2}})
    assert f"{config}: data.order_flow_generator: is only read when data.quotes or data.trades is synthetic" in \
        _cli_error(config, capsys)
    config = _config_file(tmp_path, {"trades": "synthetic", "order_flow_generator": {"informed_lead": -1}})
    assert f"{config}: data.order_flow_generator.informed_lead: " in _cli_error(config, capsys)
    config = _config_file(tmp_path, {"quotes": " "})
    assert f"{config}: data.quotes: give none, synthetic or a path to a file" in _cli_error(config, capsys)


def test_order_flow_keys_stay_out_of_configs_without_order_flow() -> None:
    plain = load_config("tests/configs/tiny.yaml")
    dump = plain.model_dump(mode="json")["data"]
    assert not {"quotes", "trades", "order_flow_generator"} & set(dump)  # hashes of earlier configs are unchanged
    files = plain.with_overrides({"data.trades": "trades.csv"})
    assert "order_flow_generator" not in files.model_dump(mode="json")["data"]  # nothing reads it for files
    planted = load_config(PLANTED)
    assert planted.model_dump(mode="json")["data"]["order_flow_generator"]["informed_lead"] == 1
    for cfg in (plain, files, planted):
        assert type(cfg).model_validate(cfg.model_dump(mode="json")) == cfg
    assert len({plain.config_hash, files.config_hash, planted.config_hash}) == 3


# ------------------------------------------------------------------------------------------------ aggregation


def _loop_aggregate(index: pd.DatetimeIndex, quotes: pd.DataFrame, trades: pd.DataFrame) -> pd.DataFrame:
    """The documented rule, one event at a time: bar i holds (stamp i-1, stamp i], bar 0 (stamp 0 minus the first
    spacing, stamp 0]; events in time order (ties in input order)."""
    n = len(index)
    lows = [index[0] - (index[1] - index[0]), *index[:-1]]

    def bar_of(stamp: pd.Timestamp) -> int | None:
        return next((i for i in range(n) if lows[i] < stamp <= index[i]), None)

    out = {c: [0.0] * n for c in (*QUOTE_SUM_COLUMNS, *FLOW_COLUMNS)}
    standing: list[tuple[float, ...] | None] = [None] * n
    previous = None
    for k in sorted(range(len(quotes)), key=lambda k: (quotes["timestamp"].iloc[k], k)):
        i = bar_of(quotes["timestamp"].iloc[k])
        if i is None:
            continue
        b, a, qb, qa = (float(quotes[c].iloc[k]) for c in ("bid", "ask", "bid_size", "ask_size"))
        out["quote_updates"][i] += 1
        if previous is not None:
            pb, pa, pqb, pqa = previous
            out["quote_steps"][i] += 1
            out["quote_unchanged"][i] += float((b, a, qb, qa) == previous)
            out["quote_ofi"][i] += (b >= pb) * qb - (b <= pb) * pqb - (a <= pa) * qa + (a >= pa) * pqa
        out["quote_depth"][i] += (qb + qa) / 2
        out["quote_spread"][i] += (a - b) / ((a + b) / 2)
        out["quote_depth_imbalance"][i] += (qb - qa) / (qb + qa)
        standing[i] = previous = (b, a, qb, qa)
    for k in range(len(trades)):
        i = bar_of(trades["timestamp"].iloc[k])
        if i is None:
            continue
        side, size = int(trades["side"].iloc[k]), float(trades["size"].iloc[k])
        out["n_trades"][i] += 1
        out["buy_volume" if side > 0 else "sell_volume"][i] += size
        out["n_buys" if side > 0 else "n_sells"][i] += 1
    frame = pd.DataFrame(out, index=index)
    carried = None
    for i in range(n):
        carried = standing[i] or carried
        for j, column in enumerate(("bid", "ask", "bid_size", "ask_size")):
            frame.loc[index[i], column] = carried[j] if carried else np.nan
    return frame


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregation_matches_a_plain_loop_at_the_boundaries(seed: int) -> None:
    index = pd.DatetimeIndex(["2024-01-02 10:00", "2024-01-02 11:00", "2024-01-02 12:00", "2024-01-02 14:00",
                              "2024-01-02 15:00", "2024-01-02 16:00"], name="timestamp")
    rng = np.random.default_rng(seed)
    m = 60
    start = pd.Timestamp("2024-01-02 08:30")
    stamps = [start + pd.Timedelta(minutes=float(x)) for x in rng.uniform(0, 8.5 * 60, m)]
    one = pd.Timedelta(1, "ns")
    exact = [pd.Timestamp("2024-01-02 09:00"), pd.Timestamp("2024-01-02 09:00") + one,  # bar 0 opens after 09:00
             index[0], index[0] + one, index[3], index[3], index[-1], index[-1] + one]
    stamps = pd.DatetimeIndex(stamps + exact)
    k = len(stamps)
    bid = 100.0 + 0.01 * rng.integers(-3, 4, k)  # a coarse grid: equal bids and asks happen
    quotes = pd.DataFrame({"timestamp": stamps, "bid": bid, "ask": bid + 0.01 * rng.integers(1, 3, k),
                           "bid_size": rng.integers(1, 4, k).astype(float),
                           "ask_size": rng.integers(1, 4, k).astype(float)})
    repeat = rng.random(k) < 0.3  # some updates restate the previous row's quote (stability counts them)
    for i in np.flatnonzero(repeat[1:]) + 1:
        quotes.iloc[i, 1:] = quotes.iloc[i - 1, 1:]
    trades = pd.DataFrame({"timestamp": stamps, "price": bid, "size": rng.uniform(1, 5, k),
                           "side": rng.choice([-1, 1], k).astype(np.int8)})
    order = rng.permutation(k)  # the aggregator sorts by time itself
    got = pd.concat([aggregate_quotes(quotes.iloc[order], index), aggregate_trades(trades.iloc[order], index)],
                    axis=1)
    expected = _loop_aggregate(index, quotes.iloc[order].reset_index(drop=True),
                               trades.iloc[order].reset_index(drop=True))
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False, rtol=1e-12)
    # The boundary events by hand: 09:00 is outside bar 0, 10:00 exactly is bar 0's, 10:00 + 1 ns bar 1's, two at
    # 14:00 bar 3's, 16:00 the last bar's, 16:00 + 1 ns nobody's.
    alone = aggregate_trades(trades.iloc[m:], index)["n_trades"].tolist()
    assert alone == [2.0, 1.0, 0.0, 2.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------------------ causality


def _scramble_after(flow: OrderFlow, cut: pd.Timestamp, next_stamp: pd.Timestamp, rng: np.random.Generator
                    ) -> OrderFlow:
    """Every event after ``cut`` changed, some moved later, some deleted, new ones at exactly the next bar's stamp."""
    quotes, trades = flow.quotes.copy(), flow.trades.copy()
    later = (quotes["timestamp"] > cut).to_numpy()
    for column in ("bid_size", "ask_size"):
        quotes.loc[later, column] *= np.exp(rng.normal(0, 0.5, later.sum()))
    quotes.loc[later, ["bid", "ask"]] *= np.exp(rng.normal(0, 0.01, (later.sum(), 1)))
    quotes.loc[later, "ask"] += (quotes.loc[later, "ask"] - quotes.loc[later, "bid"]) * rng.random(later.sum())
    later = (trades["timestamp"] > cut).to_numpy()
    trades.loc[later, "size"] *= np.exp(rng.normal(0, 0.5, later.sum()))
    if "side" in trades:
        trades.loc[later, "side"] = np.where(rng.random(later.sum()) < 0.4, -1, 1).astype(np.int8)
    moved = later & (rng.random(len(trades)) < 0.2)
    trades.loc[moved, "timestamp"] += pd.Timedelta(hours=5)
    trades = trades[~(later & (rng.random(len(trades)) < 0.1))]
    added_q = quotes[quotes["timestamp"] > cut].head(3)
    added_t = trades[trades["timestamp"] > cut].head(3)
    quotes = pd.concat([quotes, added_q.assign(timestamp=next_stamp, bid_size=77.0)])
    trades = pd.concat([trades, added_t.assign(timestamp=next_stamp, size=999.0)])
    return dataclasses.replace(flow, quotes=quotes.sort_values("timestamp", kind="stable"),
                               trades=trades.sort_values("timestamp", kind="stable"))


@pytest.mark.parametrize("sides", ["known", "lee_ready"])
def test_events_after_bar_t_never_move_bars_up_to_t(sides: str) -> None:
    market = generate_market(260, seed=4, freq="h", regimes=False)
    flow = synthetic_order_flow(market.bars, OrderFlowGeneratorConfig(seed=2, trades_per_bar=12, alpha_normal=0.3),
                                quotes=True, trades=True)
    if sides == "lee_ready":  # no side column: signed against the prevailing quote, then the tick rule
        flow = dataclasses.replace(flow, trades=flow.trades.drop(columns="side"))
    attached = attach_order_flow(market, flow)
    before_bars, before = attached.bars, _features(attached)
    assert before.iloc[-1].notna().all(), list(before.columns[before.iloc[-1].isna()])
    # The bars' flow columns sign trades as the family does from the trades themselves (Lee-Ready included).
    flow_based = [f"microstructure.{c}" for c in ("vpin_5", "pressure_3", "imbalance_3", "kyle_lambda_10", "pin_20")]
    pd.testing.assert_frame_equal(_features(dataclasses.replace(attached, trades=None))[flow_based],
                                  before[flow_based])
    rng = np.random.default_rng(9)
    index = market.bars.index
    flow_columns = [*QUOTE_SUM_COLUMNS, *FLOW_COLUMNS, "bid", "ask", "bid_size", "ask_size"]
    for t in (90, 200):
        changed = attach_order_flow(market, _scramble_after(flow, index[t], index[t + 1], rng))
        after = _features(changed)
        pd.testing.assert_frame_equal(changed.bars.iloc[: t + 1], before_bars.iloc[: t + 1])
        pd.testing.assert_frame_equal(after.iloc[: t + 1], before.iloc[: t + 1])
        # The check can fail: the bars after t and every order-flow feature react.
        assert not changed.bars[flow_columns].iloc[t + 1 :].equals(before_bars[flow_columns].iloc[t + 1 :])
        moved = ~np.isclose(after.iloc[t + 1 :], before.iloc[t + 1 :], equal_nan=True).all(axis=0)
        reacting = set(after.columns[moved])
        assert {f"microstructure.{c}" for c in ORDER_FLOW_FEATURES} <= reacting, reacting
    # An event at exactly bar t's stamp is bar t's, 1 ns later it is bar t+1's.
    t = 150
    trades = flow.trades.copy()
    first_after = int(np.argmax((trades["timestamp"] > index[t]).to_numpy()))
    for stamp, bar in ((index[t], t), (index[t] + pd.Timedelta(1, "ns"), t + 1)):
        trades.iloc[first_after, trades.columns.get_loc("timestamp")] = stamp
        moved_market = attach_order_flow(market, dataclasses.replace(flow, trades=trades))
        counts = moved_market.bars["n_trades"].to_numpy() - attached.bars["n_trades"].to_numpy()
        origin = int(index.searchsorted(flow.trades["timestamp"].iloc[first_after]))
        expected = np.zeros(len(index))
        expected[bar] += 1
        expected[origin] -= 1
        np.testing.assert_array_equal(counts, expected)


# ------------------------------------------------------------------------------------- files, labels, signal


def test_files_give_the_synthetic_streams_features_and_real_files_stay_real(tmp_path: Path) -> None:
    base = load_config("tests/configs/tiny.yaml").with_overrides({"data.start": "2012-06-01"}).data
    real = load_market(base)
    generated = load_market(base.model_copy(update={"quotes": "synthetic", "trades": "synthetic"}))
    assert not real.synthetic and generated.synthetic  # real bars with a synthetic stream: labelled synthetic
    assert generated.source == "bundled:goog_daily+quotes:synthetic?seed=0+trades:synthetic?seed=0"
    assert generated.notes["order_flow"].startswith("SYNTHETIC quotes and trades from the quote/trade generator")
    # The same stream written to files, as a user would bring it.
    stream = generate_quote_trade_stream(real.bars, seed=0, trades_per_bar=50.0)
    quotes_path, trades_path = tmp_path / "quotes.csv", tmp_path / "trades.parquet"
    stream.trades[["timestamp", "bid", "ask", "bid_size", "ask_size"]].to_csv(quotes_path, index=False)
    stream.trades[["timestamp", "price", "size", "side"]].to_parquet(trades_path)
    from_files = load_market(base.model_copy(update={"quotes": str(quotes_path), "trades": str(trades_path)}))
    assert not from_files.synthetic
    assert from_files.source == f"bundled:goog_daily+quotes:{quotes_path}+trades:{trades_path}"
    columns = [*QUOTE_SUM_COLUMNS, *FLOW_COLUMNS, "bid", "ask", "bid_size", "ask_size"]
    pd.testing.assert_frame_equal(from_files.bars[columns], generated.bars[columns], check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(_features(from_files), _features(generated), check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("lead", [0, 1])
def test_generator_stamps_trades_inside_their_bar_and_plants_the_lead(goog_bars: pd.DataFrame, lead: int) -> None:
    bars = goog_bars.iloc[-300:]
    stream = generate_quote_trade_stream(bars, seed=5, trades_per_bar=10, alpha_normal=0.5, informed_lead=lead)
    trades, index = stream.trades, bars.index
    bar = trades["bar"].to_numpy()
    stamps = pd.DatetimeIndex(trades["timestamp"])
    first_low = index[0] - (index[1] - index[0])
    lows = pd.DatetimeIndex([index[b - 1] if b else first_low for b in bar])
    assert (stamps <= index[bar]).all() and (stamps > lows).all()  # (previous stamp, own stamp]
    close, open_ = bars["close"].to_numpy(), bars["open"].to_numpy()
    informed = trades[trades["informed"].to_numpy() & (bar < len(bars) - 1)]
    t = informed["bar"].to_numpy()
    move = np.sign(close[t + 1] - close[t]) if lead else np.sign(close[t] - open_[t])
    known = move != 0
    assert known.mean() > 0.9 and len(informed) > 500
    np.testing.assert_array_equal(informed["side"].to_numpy()[known], move[known])


def _trial(cfg: ExperimentConfig, seed: int, order_flow: bool) -> tuple[float, float, PreparedData]:
    """Out-of-sample direction accuracy (counted here from the predictions) and Sharpe of one linear trial, on the
    planted market of ``seed``, with its order flow attached or not (the same bars, labels and folds either way)."""
    data_section = cfg.model_dump(mode="json")["data"]
    data_section["synthetic"]["seed"] = seed
    data_section["order_flow_generator"]["seed"] = seed
    if not order_flow:
        data_section.update(quotes="none", trades="none")
        del data_section["order_flow_generator"]
    cfg = cfg.with_overrides({"data": data_section})
    data = prepare(cfg)
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path(cfg.strategy.path))
    reports: list[FoldReport] = []
    with threadpool_limits(1):  # sklearn's lbfgs on 2 shared cores: BLAS threads only contend
        final = run_folds(cfg, data, strategy, reports.append)
    hits = []
    for report in reports:
        predictions = report.outcome.predictions
        labels = data.labels[data.index.get_indexer(predictions.index), 0]  # 0 down, 2 up (no neutral band)
        called = np.where(predictions["p_up"].to_numpy() > predictions["p_down"].to_numpy(), 2.0, 0.0)
        hits.extend(called == labels)
    return float(np.mean(hits)), float(final.metrics["sharpe"]), data


@pytest.mark.parametrize("seed", [1, 2])
def test_planted_order_flow_signal_is_found_only_with_order_flow(seed: int) -> None:
    cfg = load_config(PLANTED)
    with_accuracy, with_sharpe, data = _trial(cfg, seed, order_flow=True)
    without_accuracy, without_sharpe, bare = _trial(cfg, seed, order_flow=False)
    # Every order-flow column reached the trial; the bars-only run has the same bars and lacks exactly them.
    assert data.dropped_features == () and bare.data_hash != data.data_hash
    only_with = set(data.feature_names) - set(bare.feature_names)
    assert only_with == set(bare.dropped_features) and len(only_with) == len(ORDER_FLOW_FEATURES)
    assert data.bars[["open", "high", "low", "close", "volume"]].equals(bare.bars)
    np.testing.assert_array_equal(data.labels, bare.labels)
    assert data.synthetic and "+quotes:synthetic?seed=" in data.source and "informed_lead=1" in data.source
    assert "PLANTED look-ahead order-flow signal" in data.notes["order_flow"]
    print(f"seed {seed}: with order flow accuracy {with_accuracy:.3f} Sharpe {with_sharpe:.2f}; "
          f"without accuracy {without_accuracy:.3f} Sharpe {without_sharpe:.2f}")
    assert with_accuracy > without_accuracy + 0.08 and with_accuracy > 0.6
    assert with_sharpe > without_sharpe + 1.0


def test_a_model_trained_on_a_quote_stream_is_not_served_from_bar_end_quotes() -> None:
    """Live ticks carry one quote per bar; a model whose quote columns aggregated a whole stream would be served
    different numbers under the same names, so loading it for serving is a one-line model error naming them."""
    from embedtune.realtime.serving import refuse_quote_stream_columns
    from embedtune.saved_model import ModelError

    cfg = load_config(Path(__file__).parent / "configs" / "orderflow_tiny.yaml")
    names = ["base.ret_1", "microstructure.ofi_2", "microstructure.rel_spread", "microstructure.amihud_10"]
    with pytest.raises(ModelError, match="microstructure.ofi_2, microstructure.rel_spread$|data.quotes") as err:
        refuse_quote_stream_columns(cfg, names, "model/")
    assert "amihud" not in str(err.value) and "base.ret_1" not in str(err.value)
    refuse_quote_stream_columns(cfg, ["base.ret_1", "microstructure.amihud_10"], "model/")  # bar-only columns: fine
    bars_only = cfg.with_overrides({"data.quotes": "none", "data.trades": "none"})
    refuse_quote_stream_columns(bars_only, names, "model/")  # quotes on the bars themselves: what a tick carries
