"""The feature cache: a second run hits; a change to the data (trades too), to one family's config, to any code the
families run, to a file a parameter names or to a numerical library's version recomputes what it affects."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from embedtune.data.market import MarketData
from embedtune.data.synthetic_options import generate_option_chains
from embedtune.data.synthetic_trades import aggregate_to_bars, generate_quote_trade_stream
from embedtune.features import build_family
from embedtune.features import cache as cache_module
from embedtune.features.cache import FeatureCache
from embedtune.features.compute import compute_features

SPEC = {"base": {}, "technical": {"rsi_periods": [14], "profile_window": 50}}


def test_second_run_hits_and_changes_recompute(tmp_path: Path, goog_bars: pd.DataFrame) -> None:
    market = MarketData(name="goog", bars=goog_bars.iloc[:600], source="test")
    cold = FeatureCache(tmp_path)
    first = compute_features(market, SPEC, cold)
    assert (cold.hits, cold.misses) == (0, 2)

    warm = FeatureCache(tmp_path)
    second = compute_features(market, SPEC, warm)
    assert (warm.hits, warm.misses) == (2, 0)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, compute_features(market, SPEC))  # cache never changes values

    changed_params = FeatureCache(tmp_path)
    compute_features(market, {**SPEC, "technical": {"rsi_periods": [30], "profile_window": 50}}, changed_params)
    assert (changed_params.hits, changed_params.misses) == (1, 1)  # only the edited family recomputes

    bars = goog_bars.iloc[:600].copy()
    bars.iloc[-1, bars.columns.get_loc("volume")] *= 2.0
    changed_data = FeatureCache(tmp_path)
    recomputed = compute_features(MarketData(name="goog", bars=bars, source="test"), SPEC, changed_data)
    assert (changed_data.hits, changed_data.misses) == (0, 2)
    assert recomputed["base.volume_z_20"].iloc[-1] != first["base.volume_z_20"].iloc[-1]
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------ the key covers all code, file parameters, inputs, library versions

def _copy_features(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(cache_module.FEATURES_DIR, tmp_path / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


def test_code_digest_covers_every_module_of_the_package_and_what_it_imports(tmp_path: Path) -> None:
    real = cache_module.code_digest(cache_module.FEATURES_DIR)
    assert cache_module.code_digest(_copy_features(tmp_path, "same")) == real  # relative paths + bytes only
    for helper in ("base.py", "family.py", "options_family.py", "nb.py", "calendar_data.py"):
        edited = _copy_features(tmp_path, helper.replace(".", "_"))
        (edited / helper).write_text((edited / helper).read_text() + "\n# edited\n")
        assert cache_module.code_digest(edited) != real, helper
    added = _copy_features(tmp_path, "added")
    (added / "extra_helper.py").write_text("X = 1\n")
    assert cache_module.code_digest(added) != real  # a new module is code the families may run

    # Modules outside the package that the features import, also lazily inside a function, transitively.
    names = {name for name, _ in cache_module.code_sources(cache_module.FEATURES_DIR)}
    assert {"embedtune.data.market", "embedtune.errors", "embedtune.data", "embedtune", "embedtune.options.iv",
            "embedtune.options.nb"} <= names
    lazy = _copy_features(tmp_path, "lazy")
    (lazy / "extra_helper.py").write_text("def f():\n    from ..data import synthetic_options\n")
    lazy_names = {name for name, _ in cache_module.code_sources(lazy)}
    assert "embedtune.data.synthetic_options" in lazy_names and "embedtune.data.synthetic_options" not in names
    assert cache_module.code_digest(lazy) != cache_module.code_digest(added)


def test_editing_a_helper_module_recomputes_the_family(tmp_path: Path, goog_bars: pd.DataFrame,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """technical.py is untouched; editing base.py (whose rsi/rolling_zscore it calls) still recomputes it."""
    market = MarketData(name="goog", bars=goog_bars.iloc[:300], source="test")
    spec = {"technical": SPEC["technical"]}
    store = tmp_path / "cache"
    compute_features(market, spec, FeatureCache(store))

    monkeypatch.setattr(cache_module, "FEATURES_DIR", _copy_features(tmp_path, "pristine"))
    same = FeatureCache(store)
    compute_features(market, spec, same)
    assert (same.hits, same.misses) == (1, 0)

    edited = _copy_features(tmp_path, "edited")
    (edited / "base.py").write_text((edited / "base.py").read_text().replace("def rsi(", "def rsi(  ", 1))
    monkeypatch.setattr(cache_module, "FEATURES_DIR", edited)
    after_edit = FeatureCache(store)
    compute_features(market, spec, after_edit)
    assert (after_edit.hits, after_edit.misses) == (0, 1)


def test_library_versions_are_part_of_the_key(goog_bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    market = MarketData(name="goog", bars=goog_bars.iloc[:100], source="test")
    family = build_family("base", {})
    before = cache_module.family_key(family, market)
    assert set(cache_module.library_versions()) == {"pandas", "numpy", "PyWavelets", "scipy", "numba"}
    assert "absent" not in cache_module.library_versions().values()
    bumped = {**cache_module.library_versions(), "numba": "0.0.1"}
    monkeypatch.setattr(cache_module, "library_versions", lambda: bumped)
    assert cache_module.family_key(family, market) != before


def test_event_file_bytes_are_part_of_the_key(tmp_path: Path, goog_bars: pd.DataFrame) -> None:
    market = MarketData(name="goog", bars=goog_bars.iloc[:300], source="test")
    earnings, fomc_extra = tmp_path / "earnings.csv", tmp_path / "meetings.csv"
    start = goog_bars.index[0]
    earnings.write_text("date\n" + (start + pd.Timedelta(days=40)).strftime("%Y-%m-%d") + "\n")
    fomc_extra.write_text("date\n" + (start + pd.Timedelta(days=60)).strftime("%Y-%m-%d") + "\n")
    spec = {"calendar": {"earnings_file": str(earnings), "event_files": {"meeting": str(fomc_extra)}}}
    store = tmp_path / "cache"
    cold = FeatureCache(store)
    first = compute_features(market, spec, cold)
    warm = FeatureCache(store)
    compute_features(market, spec, warm)
    assert (cold.misses, warm.hits, warm.misses) == (1, 1, 0)

    earnings.write_text("date\n" + (start + pd.Timedelta(days=20)).strftime("%Y-%m-%d") + "\n")  # same path
    edited = FeatureCache(store)
    second = compute_features(market, spec, edited)
    assert (edited.hits, edited.misses) == (0, 1)
    assert first["calendar.days_to_earnings"].iloc[0] - second["calendar.days_to_earnings"].iloc[0] == 20

    fomc_extra.write_text(fomc_extra.read_text() + (start + pd.Timedelta(days=90)).strftime("%Y-%m-%d") + "\n")
    nested = FeatureCache(store)
    compute_features(market, spec, nested)
    assert (nested.hits, nested.misses) == (0, 1)  # a file inside a dict-valued parameter counts too

    # The general rule: Path values (nested too) and strings naming an existing file are hashed by content.
    digests = cache_module.file_digests({"a": [Path(earnings)], "b": str(fomc_extra), "c": "db4",
                                         "d": tmp_path / "gone.csv"})
    assert set(digests) == {"params.a.0", "params.b", "params.d"} and digests["params.d"] == "missing"


def test_trades_quotes_and_chains_are_part_of_the_key(tmp_path: Path, goog_bars: pd.DataFrame) -> None:
    bars = goog_bars.iloc[:300]
    stream = generate_quote_trade_stream(bars, seed=3, trades_per_bar=5)
    market = MarketData(name="goog", bars=bars, source="test", trades=stream.trades)
    spec = {"microstructure": {"flow_window": 10, "vpin_buckets": 5, "pin_window": 20, "pin_stride": 5}}
    store = tmp_path / "cache"
    first = compute_features(market, spec, FeatureCache(store))
    warm = FeatureCache(store)
    pd.testing.assert_frame_equal(compute_features(market, spec, warm), first)
    assert (warm.hits, warm.misses) == (1, 0)

    trades = stream.trades.copy()
    trades.iloc[-1, trades.columns.get_loc("size")] *= 50.0
    changed = MarketData(name="goog", bars=bars, source="test", trades=trades)
    assert changed.data_hash == market.data_hash  # data_hash leaves trades out; the cache key does not
    recomputed = FeatureCache(store)
    compute_features(changed, spec, recomputed)
    assert (recomputed.hits, recomputed.misses) == (0, 1)
    base_cache = FeatureCache(store)
    compute_features(market, {"base": {}}, base_cache)
    compute_features(MarketData(name="goog", bars=bars, source="test"), {"base": {}}, base_cache)
    assert base_cache.misses == 2  # every family's key covers the trade stream, declared or not

    # Quotes are columns of the bars and chains are part of data_hash, so both are in the key.
    quoted = aggregate_to_bars(stream, bars)
    requoted = quoted.copy()
    requoted.iloc[-1, requoted.columns.get_loc("bid")] -= 0.01
    family = build_family("base", {})
    assert cache_module.family_key(family, MarketData(name="goog", bars=quoted, source="test")) != \
        cache_module.family_key(family, MarketData(name="goog", bars=requoted, source="test"))
    chains = generate_option_chains(bars, seed=0, every=50)
    rechained = chains.copy()
    rechained.iloc[0, rechained.columns.get_loc("bid")] += 0.01
    assert cache_module.family_key(family, MarketData(name="goog", bars=bars, source="test", chains=chains)) != \
        cache_module.family_key(family, MarketData(name="goog", bars=bars, source="test", chains=rechained))
