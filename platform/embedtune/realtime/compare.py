"""Adaptive against static enhancement, backtested on the same bars and ranked in the leaderboard.

One stream is replayed through three enhancers tick by tick: ``adaptive`` (the regime detector on, its profile from
the config's regime table), ``static`` (detection off: the base ``normal`` profile throughout; everything else, the
refresh cadence, EMA blending and gap policy included, shared with ``adaptive``, so the regime table is the only
difference) and ``backtested`` (``parity: true``: the path the walk-forward backtest evaluated, so ``static`` against
it is what EMA blending and gap resets do). Profiles and blending are thus judged by the same backtest before they
are switched on for a model.

Each tick's signal becomes a target by one rule for all, ``direction_threshold``'s: long when the edge exceeds
``threshold``, short (flat if long-only) below ``-threshold``, else flat; no signal yet (warm-up, after a gap reset)
holds. With a model the edge is its ``signal`` head (p_up - p_down); without one it is a trend-following readout of
the standardized feature row the enhancer serves, ``tanh`` of the mean of its directional columns (returns, RSI,
MACD, ...), so the regime table's family weights move it. Both targets are executed at the next bar's open by
``run_backtest`` over the same bars, from the first bar every variant has a signal.

The result is one bundle in ``bundle.writer.write_bundle``'s layout (two trials, one pseudo-fold over the replayed
period), written under a hidden ``.partial`` name, renamed when complete and ingested into the leaderboard store. When
the backtested bars start at or before the end of the model's selection period on its own market
(``realtime.in_sample``), the manifest says ``in_sample``, both rows carry the ``in_sample`` flag and the Markdown
opens with a banner.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from embedtune.backtest.metrics import compute_metrics, periods_per_year
from embedtune.backtest.portfolio import run_backtest
from embedtune.bundle.layout import LEADERBOARD_DB
from embedtune.bundle.publish import publishing, staging_path
from embedtune.config.schema import ObjectiveConfig, StrategyConfig
from embedtune.data.market import MarketData
from embedtune.errors import ConfigError
from embedtune.leaderboard.records import IN_SAMPLE_FLAG, TrialRecord
from embedtune.leaderboard.store import LeaderboardStore
from embedtune.realtime.compare_bundle import OBJECTIVE, content_hash, write_comparison_bundle
from embedtune.realtime.config import PARITY, RealtimeConfig
from embedtune.realtime.enhancer import RealTimeEnhancer
from embedtune.realtime.in_sample import in_sample_label
from embedtune.realtime.model import HEAD_COLUMNS
from embedtune.realtime.serving import Progress, Serving, bar_ticks, load_serving
from embedtune.strategy import direction_signal
from embedtune.tune.objectives import capacity, objective_values, risk_adjusted
from embedtune.trial_state import TrialStatus

EXPERIMENT = "realtime-adaptive-vs-static"
#: ``backtested`` is the walk-forward backtest's path (``parity: true``: a full refresh every tick, so no EMA blending,
#: no profiles, no window restart at gaps); ``static`` against it is what EMA blending and gap resets do, ``adaptive``
#: against ``static`` what the regime profiles do.
VARIANTS: tuple[str, ...] = ("adaptive", "static", "backtested")
#: ``direction_threshold``'s default edge threshold.
DEFAULT_THRESHOLD = 0.1
#: Families served without a model or config: technical columns give the regime table's weights something to move.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {"base": {}, "technical": {}}
#: Columns whose standardized value is positive when the market is going up: the model-free readout averages them.
DIRECTIONAL_COLUMNS: frozenset[str] = frozenset({
    "base.ret_1", "base.ret_5", "base.ret_20", "base.rsi_14", "technical.rsi_14", "technical.rsi_30",
    "technical.rsi_60", "technical.macd_line", "technical.macd_hist", "technical.kama_dist", "technical.vwap_dev",
    "technical.cmf", "microstructure.ofi", "microstructure.ofi_20", "microstructure.depth_imbalance",
})
_SIGNAL = HEAD_COLUMNS.index("signal")
_WHERE = "<compare options>"


@dataclass(frozen=True)
class TradingRule:
    """``direction_threshold`` on the edge (p_up - p_down or the readout), with the costs of the backtest."""

    threshold: float
    allow_short: bool
    fees: float
    slippage: float

    @classmethod
    def resolve(cls, serving: Serving, threshold: float | None, allow_short: bool | None, fees: float | None,
                slippage: float | None) -> "TradingRule":
        """Explicit values, else the experiment's ``direction_threshold`` parameters and costs, else defaults."""
        strategy = serving.experiment.strategy if serving.experiment is not None else StrategyConfig()
        params = strategy.params if strategy.name == "direction_threshold" else {}
        rule = cls(float(params.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold),
                   bool(params.get("allow_short", True) if allow_short is None else allow_short),
                   float(strategy.fees if fees is None else fees),
                   float(strategy.slippage if slippage is None else slippage))
        if not 0.0 <= rule.threshold < 1.0:
            raise ConfigError("threshold", f"must be in [0, 1), got {rule.threshold}", path=_WHERE)
        return rule


@dataclass
class VariantTrace:
    """One variant's replay: per accepted tick its edge (NaN before the first embedding) and served profile."""

    name: str
    config: RealtimeConfig
    enhancer: RealTimeEnhancer
    edge: list[float] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)

    def profile_changes(self) -> int:
        """Ticks on which the served profile differs from the previous tick's (a gap reset to ``normal`` counts)."""
        profiles = self.config.adaptive.profiles
        return sum(profiles[a] != profiles[b] for a, b in zip(self.profile, self.profile[1:]))


def variant_configs(cfg: RealtimeConfig) -> dict[str, RealtimeConfig]:
    """The configs: ``cfg`` with regime detection on (adaptive) and off (static), nothing else changed, and the
    backtested path (``parity: true``: ``cfg`` with the parity settings in place of its own)."""
    raw = {**cfg.model_dump(), "parity": False}
    configs = {name: RealtimeConfig.model_validate({**raw, "adaptive": {**raw["adaptive"],
                                                                        "enabled": name == "adaptive"}})
               for name in VARIANTS if name != "backtested"}
    parity = {k: v for k, v in raw.items() if k not in PARITY}
    configs["backtested"] = RealtimeConfig.model_validate({**parity, "parity": True,
                                                            "adaptive": {**raw["adaptive"], "enabled": False}})
    return configs


def readout_index(columns: list[str]) -> np.ndarray:
    """Positions of the directional columns in the served row (what the model-free readout averages)."""
    index = np.array([i for i, c in enumerate(columns) if c in DIRECTIONAL_COLUMNS], dtype=int)
    if not len(index):
        raise ConfigError("features", f"no directional column to read a signal from without a model "
                                      f"(one of {sorted(DIRECTIONAL_COLUMNS)}); served: {columns}", path=_WHERE)
    return index


def replay_variants(serving: Serving, bars: pd.DataFrame, progress: bool = False,
                    stream: IO[str] | None = None) -> tuple[dict[str, VariantTrace], pd.DataFrame]:
    """Feed every bar to every variant's enhancer; returns the traces and, per accepted bar (``bars`` rows, so
    duplicated or rejected bars drop out), the regime the adaptive run detected at its close."""
    traces = {name: VariantTrace(name, cfg, serving.enhancer(cfg)) for name, cfg in
              variant_configs(serving.config).items()}
    readout = None if serving.model is not None else readout_index(traces["adaptive"].enhancer.columns)
    positions: list[int] = []
    regimes: list[str] = []
    bar = Progress(len(bars), stream, label="compare") if progress else None
    for i, tick in enumerate(bar_ticks(bars)):
        results = {name: trace.enhancer.process_tick(tick) for name, trace in traces.items()}
        if results["adaptive"].accepted:  # all validate the same ticks with the same rules
            positions.append(i)
            regimes.append(str(results["adaptive"].regime))
            for name, trace in traces.items():
                result = results[name]
                if result.embedding is None:
                    edge = np.nan
                elif readout is None:
                    edge = float(result.outputs[_SIGNAL]) if result.outputs is not None else np.nan
                else:
                    edge = float(np.tanh(np.mean(result.embedding[readout])))
                trace.edge.append(edge)
                trace.profile.append(str(result.regime))
        if bar is not None:
            bar.update(i + 1)
    if bar is not None:
        bar.close(len(bars))
    return traces, pd.DataFrame({"regime": regimes, "row": positions}, index=bars.index[positions])


def evaluate_variant(bars: pd.DataFrame, edge: pd.Series, rule: TradingRule, objective: ObjectiveConfig,
                     annualization: float) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics (``evaluation.evaluate_oos``'s set) and the OOS frame (its columns) of trading ``edge`` by ``rule``;
    the target decided at each close is executed at the next bar's open by ``run_backtest``."""
    target = direction_signal(pd.DataFrame({"p_up": edge, "p_down": 0.0}, index=bars.index), rule.threshold,
                              rule.allow_short)
    result = run_backtest(bars, target, fees=rule.fees, slippage=rule.slippage)
    metrics = dict(compute_metrics(result, annualization))
    strategy_returns, benchmark = result.returns.fillna(0.0), result.benchmark_returns.fillna(0.0)
    metrics["benchmark_correlation"] = (float(np.corrcoef(strategy_returns, benchmark)[0, 1])
                                        if strategy_returns.std() > 0 and benchmark.std() > 0 else float("nan"))
    metrics["capacity"] = capacity(result.traded, bars, objective)
    metrics["risk_adjusted"] = risk_adjusted(metrics, objective)
    metrics.update(objective_values(metrics, objective))
    frame = pd.DataFrame({"target": target, "position": result.positions, "strategy_return": result.returns,
                          "benchmark_return": result.benchmark_returns}, index=bars.index)
    frame["equity"] = (1.0 + frame["strategy_return"].fillna(0.0)).cumprod()
    frame["benchmark_equity"] = (1.0 + frame["benchmark_return"].fillna(0.0)).cumprod()
    return {k: float(v) for k, v in metrics.items()}, frame


def compare_adaptive_static(model_dir: str | Path | None, data: str | MarketData, out_root: str | Path, *,
                            config_path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                            limit: int | None = None, chains: str | None = None, threshold: float | None = None,
                            allow_short: bool | None = None, fees: float | None = None,
                            slippage: float | None = None, leaderboard_db: str | None = None,
                            name: str = EXPERIMENT, progress: bool = True, stream: IO[str] | None = None) -> Path:
    """Replay ``data`` adaptively and statically, backtest both, write the bundle ``<out_root>/<name>/<run-id>``
    and ingest it into ``leaderboard_db`` (default ``sqlite:///<out_root>/leaderboard.db``); returns the bundle.

    ``model_dir``/``config_path``/``overrides`` choose what is served as in ``replay`` (without a model or config,
    ``DEFAULT_FEATURES``); ``data`` is a name or file as in ``replay``, or a ``MarketData``; ``chains`` the stream's
    snapshots for a chain or graph model, as in ``replay`` (a ``MarketData`` carries its own). ``threshold``,
    ``allow_short``, ``fees`` and ``slippage`` default to the experiment's ``direction_threshold`` settings.
    """
    started_at, started = datetime.now(timezone.utc), time.perf_counter()
    overrides = dict(overrides or {})
    if model_dir is None and config_path is None:
        overrides.setdefault("features", DEFAULT_FEATURES)
    serving = load_serving(model_dir, config_path, overrides)
    rule = TradingRule.resolve(serving, threshold, allow_short, fees, slippage)
    market = serving.stream_market(data, chains)
    if limit is not None:
        market = replace(market, bars=market.bars.iloc[:limit],
                         regimes=None if market.regimes is None else market.regimes.iloc[:limit])

    traces, ticks = replay_variants(serving, market.bars, progress, stream)
    edges = pd.DataFrame({n: t.edge for n, t in traces.items()}, index=ticks.index)
    both = edges.notna().all(axis=1).to_numpy()
    if both.sum() < 2:
        raise ConfigError("limit", f"{len(market.bars)} bars give {int(both.sum())} bar(s) with a signal "
                                   "from every variant; a backtest needs at least 2: replay more bars", path=_WHERE)
    first = int(both.argmax())
    bars = market.bars.iloc[ticks["row"].to_numpy()[first:]]
    annualization = periods_per_year(bars.index)
    objective = _objective(serving)
    label = (in_sample_label(serving.meta, market, bars.index[0])
             if serving.model is not None else None)
    records = []
    for variant, trace in traces.items():
        metrics, oos = evaluate_variant(bars, edges[variant].iloc[first:], rule, objective, annualization)
        if label is not None and label.in_sample:
            metrics[IN_SAMPLE_FLAG] = 1.0  # ``trial_flags`` puts it on the leaderboard row
        oos["signal"] = edges[variant].iloc[first:]
        oos["regime"] = ticks["regime"].iloc[first:]
        oos["profile"] = trace.profile[first:]
        records.append(TrialRecord(
            trial_id=variant, status=TrialStatus.DONE, params={"adaptive": variant == "adaptive", "parity": variant == "backtested"}, metrics=metrics,
            folds_done=1, config_hash=content_hash(trace.config.model_dump(mode="json")), oos=oos,
            extra={"profile_changes": trace.profile_changes(),
                   "regime_changes": trace.enhancer.event_counts.get("regime_change", 0),
                   "event_counts": dict(trace.enhancer.event_counts)}))

    config = _bundle_config(name, model_dir, config_path, market, limit, serving, rule)
    root = Path(out_root).resolve() / name
    root.mkdir(parents=True, exist_ok=True)
    run_id = _free_run_id(root, f"{started_at:%Y%m%d-%H%M%S}-{content_hash(config)[:8]}")
    final = root / run_id
    with publishing(final, clear=False) as staging:  # a staging that exists is another live run's: never removed
        enhancer = traces["adaptive"].enhancer
        write_comparison_bundle(staging, run_id, config, market, bars, enhancer.columns,
                                list(enhancer.engine.skipped), records, annualization, started_at,
                                time.perf_counter() - started, label)
    db = leaderboard_db or f"sqlite:///{Path(out_root).resolve() / LEADERBOARD_DB}"
    with LeaderboardStore(db) as store:  # one transaction: the run and both trials, or nothing
        store.ingest(final)
    return final


def _free_run_id(root: Path, run_id: str) -> str:
    """``run_id``, suffixed when a run with the same config started in the same second (bundle or staging)."""
    candidate, n = run_id, 1
    while (root / candidate).exists() or staging_path(root / candidate).exists():
        n += 1
        candidate = f"{run_id}-{n}"
    return candidate


def _objective(serving: Serving) -> ObjectiveConfig:
    """Sharpe, maximized; capacity and the risk-adjusted score with the experiment's settings."""
    base = serving.experiment.objective if serving.experiment is not None else ObjectiveConfig()
    return ObjectiveConfig(metric=OBJECTIVE, risk_adjusted=base.risk_adjusted, capital=base.capital,
                           capacity_window=base.capacity_window)


def _bundle_config(name: str, model_dir: str | Path | None, config_path: str | Path | None, market: MarketData,
                   limit: int | None, serving: Serving, rule: TradingRule) -> dict[str, Any]:
    """What determines the comparison, as the bundle's ``config.yaml`` (its hash is the run's config hash)."""
    return {
        "name": name,
        "description": "Real-time enhancement with the regime table (adaptive) against the base profile (static) "
                       "and against the walk-forward backtest's path (backtested: a full refresh every tick, no EMA "
                       "blending, no profiles, no restart at gaps) on the same replayed stream, traded by the same "
                       "rule at the next bar's open.",
        "model": None if model_dir is None else str(model_dir),
        "config_file": None if config_path is None else str(config_path),
        "experiment_config_hash": None if serving.experiment is None else serving.experiment.config_hash,
        "data": {"name": market.name, "source": market.source, "limit": limit,
                 "option_chains": serving.chain_source or None},
        "signal": "p_up - p_down (the model's signal head)" if serving.model is not None
        else "tanh(mean of the directional columns of the served feature row)",
        "rule": asdict(rule),
        "strategy": {"name": "direction_threshold",
                     "params": {"threshold": rule.threshold, "allow_short": rule.allow_short},
                     "fees": rule.fees, "slippage": rule.slippage},
        "objective": {"metric": OBJECTIVE},
        "realtime": serving.config.model_dump(mode="json"),
    }
