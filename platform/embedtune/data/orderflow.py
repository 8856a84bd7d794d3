"""Order flow for experiments: quote and trade streams (files, or the synthetic generator) aggregated onto the bars.

``data.quotes`` and ``data.trades`` are each ``none``, ``synthetic`` or a path to a CSV/CSV.gz/Parquet file:

* quotes: ``timestamp, bid, ask, bid_size, ask_size``, one row per quote update;
* trades: ``timestamp, price, size`` and optionally ``side`` (1/-1, buy/sell or B/S; without it the family signs
  trades by Lee-Ready against the prevailing quote when quotes are attached, else by the tick rule).

Files are validated like bars, each problem one ``DataError`` naming file, row and column: missing column, no rows,
unparsable or missing timestamp, mixed time zones, unparsable number, timestamps out of order (equal ones are fine:
several events share a clock tick), NaN/inf, non-positive bid/ask/price, negative or (trades) zero sizes, bid above
ask, a side that is not buy or sell, and a time zone (naive vs aware) that differs from the bars'.

``synthetic`` is the EKOP quote/trade generator of ``synthetic_trades`` driven by the bars (``order_flow_generator``),
one stream for both keys, so synthetic quotes and trades agree; the market is then labelled synthetic and the stream
named in its source and notes, which every report and bundle carries.

Aggregation is causal: a bar's stamp is read as its close, and bar t holds the events in (stamp t-1, stamp t]
(``microstructure.assign_bars``): an event at exactly a bar's stamp is that bar's, events after the last bar are
dropped, and so are events more than one bar spacing before the first. Daily bars stamped with their date (midnight)
therefore see day D's trades from bar D+1 on; stamp them at their close to see them at bar D. The bars gain the
standing quote at their close (``bid, ask, bid_size, ask_size``, carried over bars without an update), the quote
stream's per-bar sums (``QUOTE_SUM_COLUMNS``) and the per-bar signed flow (``FLOW_COLUMNS``); the trades themselves
travel as ``MarketData.trades`` for the trade-size statistics, which the microstructure family maps to bars by the
same rule.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.config.schema import DataConfig, OrderFlowGeneratorConfig
from embedtune.data.loaders import TIMESTAMP_COLUMNS, RawTable, read_table
from embedtune.data.market import QUOTE_COLUMNS, MarketData
from embedtune.data.synthetic_trades import generate_quote_trade_stream
from embedtune.data.validate import (
    Source, as_text, check_bound, check_finite, check_order, fmt, parse_numbers, parse_timestamps, raise_first,
    require_columns, require_rows,
)
from embedtune.errors import ConfigError
from embedtune.features.microstructure import FLOW_COLUMNS, assign_bars, quote_bar_sums, trade_bars

#: Columns of a quote file, and of ``OrderFlow.quotes``.
QUOTE_STREAM_COLUMNS: tuple[str, ...] = ("timestamp", *QUOTE_COLUMNS)
#: Required columns of a trade file; ``side`` is optional.
TRADE_STREAM_COLUMNS: tuple[str, ...] = ("timestamp", "price", "size")
#: Accepted ``side`` cells (lower-cased): buyer-initiated +1, seller-initiated -1.
SIDE_VALUES: dict[str, int] = {"1": 1, "+1": 1, "1.0": 1, "b": 1, "buy": 1,
                               "-1": -1, "-1.0": -1, "s": -1, "sell": -1}


# ------------------------------------------------------------------------------------------------------ files


def _time_column(columns: pd.Index) -> str:
    """The time column, named like a bar file's (``timestamp``, ``datetime`` or ``date``)."""
    return next((c for c in TIMESTAMP_COLUMNS if c in columns), "timestamp")


def quotes_from_table(table: RawTable) -> pd.DataFrame:
    """Validate raw quote cells: a frame with ``QUOTE_STREAM_COLUMNS`` (float quotes), in file order."""
    source, raw = table.source, table.frame
    time = _time_column(raw.columns)
    require_columns(source, list(raw.columns), [time, *QUOTE_COLUMNS])
    require_rows(source, raw)
    timestamps = parse_timestamps(source, raw[time], time)
    values = parse_numbers(source, raw, list(QUOTE_COLUMNS))
    check_order(source, timestamps, time, unique=False)
    check_finite(source, values, list(QUOTE_COLUMNS))
    check_bound(source, values, ["bid", "ask"], strict=True)
    check_bound(source, values, ["bid_size", "ask_size"], strict=False)
    bid, ask = values["bid"], values["ask"]
    raise_first(source, [("bid", bid > ask, lambda p: f"bid {fmt(bid[p])} is above ask {fmt(ask[p])}")])
    return pd.DataFrame({"timestamp": timestamps, **values}, columns=list(QUOTE_STREAM_COLUMNS))


def _parse_sides(source: Source, raw: pd.Series) -> np.ndarray:
    """+1/-1 per row from 1/-1, buy/sell or B/S (any case); anything else is an error at its row."""
    text = as_text(raw).reset_index(drop=True).str.lower()
    mapped = text.map(SIDE_VALUES)
    raise_first(source, [("side", mapped.isna().to_numpy(),
                          lambda p: f"side '{text.iloc[p]}' is not 1/-1, buy/sell or B/S")])
    return mapped.to_numpy(dtype=np.int8)


def trades_from_table(table: RawTable) -> pd.DataFrame:
    """Validate raw trade cells: ``timestamp, price, size`` (+ ``side`` as int8 +1/-1 when the file has it)."""
    source, raw = table.source, table.frame
    time = _time_column(raw.columns)
    require_columns(source, list(raw.columns), [time, *TRADE_STREAM_COLUMNS[1:]])
    require_rows(source, raw)
    timestamps = parse_timestamps(source, raw[time], time)
    values = parse_numbers(source, raw, ["price", "size"])
    check_order(source, timestamps, time, unique=False)
    check_finite(source, values, ["price", "size"])
    check_bound(source, values, ["price", "size"], strict=True, note=" (a trade has a price and a size)")
    frame = pd.DataFrame({"timestamp": timestamps, **values})
    if "side" in raw.columns:
        frame["side"] = _parse_sides(source, raw["side"])
    return frame


def load_quotes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load and validate a quote file (CSV, CSV.gz or Parquet)."""
    return quotes_from_table(read_table(path))


def load_trades(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load and validate a trade file (CSV, CSV.gz or Parquet)."""
    return trades_from_table(read_table(path))


def check_zone(path: str, timestamps: pd.Series, index: pd.DatetimeIndex) -> None:
    """A stream and its bars must both be tz-naive or both tz-aware: comparing a naive clock with an instant would
    place every event at a guessed time."""
    zone = pd.DatetimeIndex(timestamps).tz
    if (zone is None) != (index.tz is None):
        what = ("have no UTC offset but the bars are in " + str(index.tz) if zone is None
                else f"are in {zone} but the bars have no time zone")
        raise Source(path, is_csv=not path.lower().endswith((".parquet", ".pq"))).error(
            f"timestamps {what}; write both with a UTC offset or both without", 0, "timestamp")


# ------------------------------------------------------------------------------------------------ aggregation


def _in_bars(events: pd.DataFrame, index: pd.DatetimeIndex) -> tuple[pd.DataFrame, np.ndarray]:
    """Events in time order (stable) that some bar holds, with their bar positions (``assign_bars``)."""
    ordered = events.iloc[np.argsort(pd.DatetimeIndex(events["timestamp"]).asi8, kind="stable")]
    position = assign_bars(ordered["timestamp"], index)
    keep = position >= 0
    return ordered.iloc[keep].reset_index(drop=True), position[keep]


def aggregate_quotes(quotes: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Per bar of ``index``: the standing quote at its close (``QUOTE_COLUMNS``, the bar's last update, carried over
    bars without one; NaN before the first) and the stream's ``QUOTE_SUM_COLUMNS``; only events the bar holds."""
    ordered, position = _in_bars(quotes, index)
    n = len(index)
    columns = [ordered[c].to_numpy(dtype=float) for c in QUOTE_COLUMNS]
    out = pd.DataFrame(index=index)
    last = np.flatnonzero(np.r_[position[1:] != position[:-1], True]) if len(position) else position
    for name, values in zip(QUOTE_COLUMNS, columns):
        standing = np.full(n, np.nan)
        standing[position[last]] = values[last]
        out[name] = pd.Series(standing, index=index).ffill()
    for name, values in quote_bar_sums(position, *columns, n).items():
        out[name] = values
    return out


def aggregate_trades(trades: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Per bar of ``index``: ``FLOW_COLUMNS`` (buy and sell volume and counts) of the trades it holds, each trade
    signed as the microstructure family signs it (``side``, else Lee-Ready on ``bid, ask``, else the tick rule)."""
    return trade_bars(trades, index)[list(FLOW_COLUMNS)]


def prevailing_quotes(trades: pd.DataFrame, quotes: pd.DataFrame) -> pd.DataFrame:
    """``trades`` (in time order) with ``bid, ask`` of the last quote strictly before each trade (Lee-Ready's
    prevailing quote: a quote stamped with the trade may already show its impact); NaN before the first quote."""
    stamps = pd.DatetimeIndex(trades["timestamp"]).as_unit("ns")
    quote_stamps = pd.DatetimeIndex(quotes["timestamp"]).as_unit("ns")
    if stamps.tz is not None:
        quote_stamps = quote_stamps.tz_convert(stamps.tz)
    order = np.argsort(quote_stamps.asi8, kind="stable")
    right = pd.DataFrame({"timestamp": quote_stamps[order], "bid": quotes["bid"].to_numpy()[order],
                          "ask": quotes["ask"].to_numpy()[order]})
    left = trades.drop(columns=[c for c in ("bid", "ask") if c in trades.columns]).assign(timestamp=stamps)
    return pd.merge_asof(left.reset_index(drop=True), right, on="timestamp", direction="backward",
                         allow_exact_matches=False)


@dataclass(frozen=True)
class OrderFlow:
    """Quote and/or trade events for one underlying, with where they came from (``labels``: key -> file or
    generator, for the market's source) and what is synthetic."""

    quotes: pd.DataFrame | None
    trades: pd.DataFrame | None
    labels: dict[str, str]
    synthetic: bool
    notes: dict[str, str] = field(default_factory=dict)


def attach_order_flow(market: MarketData, flow: OrderFlow) -> MarketData:
    """``market`` with the flow aggregated onto its bars (quote columns and sums, flow columns; existing columns of
    those names replaced) and the trades the bars hold as ``trades``; its source names every stream, and it is
    synthetic if any input is."""
    index = market.bars.index
    if not index.is_monotonic_increasing:
        raise ValueError("order flow can be aggregated onto bars sorted by time only")
    bars = market.bars.copy()
    notes = dict(market.notes)
    counts = []
    if flow.quotes is not None:
        aggregated = aggregate_quotes(flow.quotes, index)
        for column in aggregated.columns:
            bars[column] = aggregated[column]
        counts.append(f"quotes {int(aggregated['quote_updates'].sum())} of {len(flow.quotes)} updates")
    trades = None
    if flow.trades is not None:
        held, _ = _in_bars(flow.trades, index)  # in time order, as merge_asof needs
        trades = held
        if flow.quotes is not None and "side" not in held.columns:
            trades = prevailing_quotes(held, flow.quotes)
        aggregated = aggregate_trades(trades, index)
        for column in FLOW_COLUMNS:
            bars[column] = aggregated[column]
        counts.append(f"trades {len(held)} of {len(flow.trades)}")
    rule = ("each bar holds the events in (previous bar, its stamp]; " + ", ".join(counts) + " fall in the bars")
    notes["order_flow"] = "; ".join([*flow.notes.values(), rule]) if flow.notes else rule
    source = market.source + "".join(f"+{key}:{label}" for key, label in flow.labels.items())
    return replace(market, bars=bars, trades=trades, source=source, synthetic=market.synthetic or flow.synthetic,
                   notes=notes)


# ------------------------------------------------------------------------------------------------- from config


def synthetic_order_flow(bars: pd.DataFrame, cfg: OrderFlowGeneratorConfig, quotes: bool, trades: bool
                         ) -> OrderFlow:
    """The generator's one stream over ``bars``, split into a quote stream (the quote at each trade) and a trade
    stream (``timestamp, price, size, side``), whichever are asked for."""
    stream = generate_quote_trade_stream(
        bars, seed=cfg.seed, trades_per_bar=cfg.trades_per_bar, episode_share=cfg.episode_share,
        alpha_episode=cfg.alpha_episode, alpha_normal=cfg.alpha_normal, informed_intensity=cfg.informed_intensity,
        informed_lead=cfg.informed_lead)
    events = stream.trades
    label = f"synthetic?seed={cfg.seed}" + (f"&informed_lead={cfg.informed_lead}" if cfg.informed_lead else "")
    kinds = [k for k, wanted in (("quotes", quotes), ("trades", trades)) if wanted]
    return OrderFlow(
        quotes=events[list(QUOTE_STREAM_COLUMNS)].copy() if quotes else None,
        trades=events[["timestamp", "price", "size", "side"]].copy() if trades else None,
        labels={k: label for k in kinds}, synthetic=True,
        notes={"generator": f"SYNTHETIC {' and '.join(kinds)} from the quote/trade generator driven by the bars "
                            f"({stream.notes['trades'].removeprefix('SYNTHETIC EKOP stream: ')}; "
                            f"{stream.notes['episodes'].split(';')[0]})"})


def _file(key: str, value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"data.{key}", f"no such file {value!r} (or use none, synthetic)")
    return path


def load_order_flow(market: MarketData, cfg: DataConfig) -> MarketData:
    """``market`` with ``data.quotes`` and ``data.trades`` attached (unchanged when both are ``none``): files are
    loaded, validated and checked against the bars' time zone; ``synthetic`` ones come from one generated stream."""
    wanted = {key: getattr(cfg, key) for key in ("quotes", "trades") if getattr(cfg, key) != "none"}
    if not wanted:
        return market
    generated = synthetic_order_flow(market.bars, cfg.order_flow_generator, wanted.get("quotes") == "synthetic",
                                     wanted.get("trades") == "synthetic") if "synthetic" in wanted.values() else None
    streams: dict[str, pd.DataFrame | None] = {"quotes": None, "trades": None}
    labels: dict[str, str] = {}
    for key, value in wanted.items():
        if generated is not None and value == "synthetic":
            streams[key], labels[key] = getattr(generated, key), generated.labels[key]
            continue
        path = _file(key, value)
        frame = load_quotes(path) if key == "quotes" else load_trades(path)
        check_zone(value, frame["timestamp"], market.bars.index)
        streams[key], labels[key] = frame, value
    flow = OrderFlow(quotes=streams["quotes"], trades=streams["trades"], labels=labels,
                     synthetic=generated is not None, notes=generated.notes if generated is not None else {})
    return attach_order_flow(market, flow)
