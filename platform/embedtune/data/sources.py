"""Resolve the config's ``data`` section into one ``MarketData``: bundled real bars, a file, or the synthetic market."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from embedtune.config.schema import DataConfig
from embedtune.data.market import MarketData
from embedtune.errors import ConfigError, DataError


def load_market(cfg: DataConfig) -> MarketData:
    from embedtune.data.bundled import BUNDLED, load_bundled
    from embedtune.data.loaders import load_bars, load_option_chain
    from embedtune.data.synthetic_market import generate_market
    from embedtune.data.synthetic_options import generate_option_chains

    source = cfg.source
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if name not in BUNDLED:
            raise ConfigError("data.source", f"unknown bundled data {name!r}; known: {sorted(BUNDLED)}")
        try:
            market = load_bundled(name, cfg.price)
        except DataError as err:  # a bundled file is ours: what the user can change is the config
            raise ConfigError("data.price",
                              f"bundled:{name} cannot give {cfg.price}: {err.message}") from None
    elif source == "synthetic":
        s = cfg.synthetic
        market = generate_market(n_bars=s.n_bars, seed=s.seed, signal_strength=s.signal_strength, regimes=s.regimes)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError("data.source", f"no such file {source!r} (or use bundled:<name>, synthetic)")
        market = MarketData(name=path.stem, bars=load_bars(path, cfg.price), source=str(path))

    market = _slice(market, cfg)
    if cfg.quotes != "none" or cfg.trades != "none":
        from embedtune.data.orderflow import load_order_flow

        market = load_order_flow(market, cfg)  # data.quotes / data.trades onto the sliced bars
    chains = cfg.option_chains
    if chains == "none":
        return market
    if chains == "synthetic":
        g = cfg.chain_generator
        tick = 0.01 if float(market.bars["close"].median()) >= 10.0 else 1e-4  # cents for equities, pips for FX
        frame = generate_option_chains(market.bars, seed=g.seed, every=g.every, n_expiries=g.n_expiries,
                                       strikes_per_side=g.strikes_per_side, rate=g.rate, tick=tick,
                                       informed_skew=g.informed_skew, informed_horizon=g.informed_horizon)
        note = "synthetic (generated" + (", with a planted look-ahead skew signal)" if g.informed_skew else ")")
        return _replace(market, chains=frame, synthetic=True, notes={**market.notes, "option_chains": note})
    path = Path(chains)
    if not path.is_file():
        raise ConfigError("data.option_chains", f"no such file {chains!r} (or use none, synthetic)")
    return _replace(market, chains=load_option_chain(path, market.bars.index, cfg.chain_time))


def _slice(market: MarketData, cfg: DataConfig) -> MarketData:
    if cfg.start is None and cfg.end is None:
        return market
    bounds = {}
    for key in ("start", "end"):
        value = getattr(cfg, key)
        try:
            bounds[key] = pd.Timestamp(value) if value is not None else None
        except (ValueError, TypeError):
            raise ConfigError(f"data.{key}", f"cannot parse {value!r} as a timestamp") from None
    bars = market.bars.loc[bounds["start"]:bounds["end"]]
    if len(bars) < 2:
        raise ConfigError("data.start", "the start/end window leaves fewer than 2 bars")
    regimes = market.regimes.loc[bars.index] if market.regimes is not None else None
    return _replace(market, bars=bars, regimes=regimes)


def _replace(market: MarketData, **changes: object) -> MarketData:
    from dataclasses import replace

    return replace(market, **changes)  # type: ignore[arg-type]
