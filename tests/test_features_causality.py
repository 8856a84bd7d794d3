"""Every registered feature family is causal: changing the data after time t changes no value at or before t."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from embedtune.data.market import MarketData
from embedtune.data.synthetic_market import generate_market
from embedtune.data.synthetic_options import generate_option_chains
from embedtune.features import FAMILIES, build_family

T = 450  # the bar position after which the future is rewritten


@pytest.fixture(scope="module")
def markets() -> tuple[MarketData, MarketData]:
    market = generate_market(n_bars=700, seed=4, quotes=True)
    market = replace(market, chains=generate_option_chains(market.bars, seed=1, every=5))
    cut = market.bars.index[T]
    rng = np.random.default_rng(9)
    bars = market.bars.copy()
    factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, len(bars) - T - 1)))
    price_columns = [c for c in ("open", "high", "low", "close", "bid", "ask") if c in bars.columns]
    bars.iloc[T + 1:, [bars.columns.get_loc(c) for c in price_columns]] *= factor[:, None]
    size_columns = [c for c in ("volume", "bid_size", "ask_size") if c in bars.columns]
    bars.iloc[T + 1:, [bars.columns.get_loc(c) for c in size_columns]] *= rng.uniform(0.2, 5.0, (len(bars) - T - 1, 1))
    chains = market.chains.copy()
    later = chains["timestamp"] > cut
    for column in ("bid", "ask", "last"):
        chains.loc[later, column] *= 1.5
    chains.loc[later, "volume"] = chains.loc[later, "volume"] * 3 + 1
    return market, replace(market, bars=bars, chains=chains)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_is_causal(name: str, markets: tuple[MarketData, MarketData]) -> None:
    original, changed = markets
    family = build_family(name, {})
    before = family.compute(original)
    after = family.compute(changed)
    assert list(before.columns) == family.output_columns()
    pd.testing.assert_frame_equal(before.iloc[: T + 1], after.iloc[: T + 1], check_exact=False, rtol=1e-12,
                                  atol=1e-12)
    informative = [c for c in before.columns if before[c].iloc[T + 1:].notna().any()]
    if name != "calendar":  # calendar features depend on dates only, which do not change
        moved = [c for c in informative
                 if not np.allclose(before[c].iloc[T + 1:], after[c].iloc[T + 1:], equal_nan=True)]
        assert moved, f"{name}: no column reacts to the changed future, so the test would prove nothing"
