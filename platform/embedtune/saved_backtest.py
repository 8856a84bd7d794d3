"""Backtest a saved model on new bars, outside any search.

Rebuilds the features of the new bars with the model's own config, scales them with the training scaler (a chain or
graph model also gets the option-chain tensors and graphs of the new chains, scaled by its saved chain scaling),
predicts, and runs the config's strategy through the same vectorbt backtest as a trial; the result is a small bundle
written under a hidden name and renamed when complete. Bars the model was trained or selected on are flagged as in
sample (``saved_model.overlaps_model_period``, the rule replays use too).
"""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedtune.bundle.layout import CONFIG_FILE, EQUITY_PNG, METRICS_FILE, OOS_FILE, PREDICTIONS_FILE
from embedtune.bundle.publish import publishing
from embedtune.errors import DataError, UsageError
from embedtune.leaderboard.chart import equity_curves

if TYPE_CHECKING:
    from embedtune.config.schema import ExperimentConfig
    from embedtune.data.market import MarketData
    from embedtune.dataset import PreparedData

#: Where ``embedtune backtest`` puts its results, under the results root.
BACKTESTS_DIR = "backtests"


def backtest_saved_model(model_dir: str | Path, data: str, output_dir: str | Path, start: str | None = None,
                         end: str | None = None, trial: str | None = None, chains: str | None = None) -> Path:
    """Backtest a saved model on the bars of ``data`` (a bar file or ``bundled:<name>``), from ``start`` to ``end``
    (the bars before ``start`` still warm the features up); returns the result folder under ``output_dir``.

    ``chains``: option chains for those bars (a chain file, or ``synthetic``: generated from them by the model's
    ``data.chain_generator``), for a model that reads chains; by default a model trained on generated chains gets
    them generated again, one trained on a chain file must be given its new chains."""
    import torch

    from embedtune.config.loading import attached_to
    from embedtune.data.sources import load_market
    from embedtune.evaluation import evaluate_oos, head_metrics
    from embedtune.labels import LABEL_COLUMNS, make_labels
    from embedtune.saved_model import build_network, load_saved_model, overlaps_model_period
    from embedtune.strategy import load_strategy
    from embedtune.train.data import WindowDataset
    from embedtune.train.fold import predict

    model = load_saved_model(model_dir, trial)
    cfg = new_data_config(model.config, data, chains)
    with attached_to("--data"):
        market = load_market(cfg.data)
    features, warmup = model_features(market, cfg, model.feature_names)
    index = market.bars.index
    positions = np.arange(warmup + cfg.model.window - 1, len(index))
    positions = positions[_within(index[positions], start, end)]
    if len(positions) < 2:
        raise UsageError("--data", f"{len(positions)} bar(s) to backtest in [{start or 'start'}, {end or 'end'}] "
                                   f"after a warm-up of {warmup + cfg.model.window - 1} bars")
    labels = make_labels(market.bars, cfg.labels)[list(LABEL_COLUMNS)].to_numpy(np.float32)
    tensors, graphs = model.chains.batch(cfg, market, "--chains") if model.chains is not None else (None, None)
    dataset = WindowDataset(torch.from_numpy(model.scaler.features(features)),
                            torch.from_numpy(np.nan_to_num(model.scaler.targets(labels), nan=0.0)),
                            positions, cfg.model.window, tensors, graphs)
    net = build_network(cfg, model.weights, model.feature_names)
    predictions, _, _ = predict(net, dataset, model.scaler, index, torch.device("cpu"))
    strategy = load_strategy(cfg.strategy.name, cfg.strategy.params, Path(cfg.strategy.path))
    from embedtune.plugin_check import check_strategy
    check_strategy(strategy, _as_prepared(market, features, model.feature_names, labels, warmup, cfg),
                   positions=positions)  # before anything is written
    evaluation = evaluate_oos(cfg, _as_prepared(market, features, model.feature_names, labels, warmup, cfg),
                              predictions, strategy)
    summary = {
        "metrics": evaluation.metrics,
        "heads": head_metrics(predictions, labels[positions]),
        "period": {"start": str(index[positions[0]]), "end": str(index[positions[-1]]), "bars": len(positions)},
        "data": {"name": market.name, "source": market.source, "synthetic": market.synthetic,
                 "hash": market.data_hash, "notes": dict(market.notes)},
        "model": {"path": str(Path(model_dir).resolve()), **model.meta},
        "chains": None if tensors is None else {
            "source": cfg.data.option_chains, "snapshots": tensors.n_snapshots,
            "first_snapshot": str(tensors.snapshot_times[0]), "scaled_by": "the model's training snapshots"},
        "overlaps_training": overlaps_model_period(model.meta, market, index[positions[0]]),
        "in_sample": overlaps_model_period(model.meta, market, index[positions[0]], "selection_end"),
        "strategy": {"name": cfg.strategy.name, "params": cfg.strategy.params, "fees": cfg.strategy.fees,
                     "slippage": cfg.strategy.slippage},
    }
    if summary["in_sample"] and not summary["overlaps_training"]:
        print(f"embedtune: warning: the backtest starts at {summary['period']['start']}, before the end of the data "
              f"the search selected this model on ({model.meta['selection_end']}): these bars are in sample",
              file=sys.stderr)
    if summary["overlaps_training"]:
        print(f"embedtune: warning: the backtest starts at {summary['period']['start']}, before the model's "
              f"training data ends ({model.meta['trained_through']}): these bars are in sample", file=sys.stderr)
    return write_backtest(Path(output_dir), cfg, market, evaluation.frame, predictions, summary)


def new_data_config(cfg: ExperimentConfig, data: str, chains: str | None = None) -> ExperimentConfig:
    """The model's config pointed at new bars: no slicing of the old data; option chains from ``chains`` (a file or
    ``synthetic``), else regenerated from the new bars when the model's were generated, else dropped when the model
    does not read them."""
    from embedtune.realtime.chain_inputs import ChainSettings

    if not data or not (data.startswith("bundled:") or data == "synthetic" or Path(data).is_file()):
        raise UsageError("--data", f"{data!r} is neither a bar file nor bundled:<name>")
    needs = ChainSettings.of(cfg) is not None or "options" in cfg.features
    own = cfg.data.option_chains
    if chains is not None:
        if not needs:
            raise UsageError("--chains", "the model reads no option chains (no chain or graph encoder, no options "
                                         "features)")
        if chains != "synthetic" and not Path(chains).is_file():
            raise UsageError("--chains", f"{chains!r} is neither a chain file nor synthetic")
    elif own == "synthetic" or not needs:
        chains = own if own == "synthetic" else "none"
    else:
        raise UsageError("--chains", f"the model reads option chains, and its own came from {own!r}, which belongs "
                                     "to the training data: pass --chains FILE with chains for these bars (or "
                                     "--chains synthetic)")
    return cfg.with_overrides({"data.source": data, "data.start": None, "data.end": None,
                               "data.option_chains": chains})


def model_features(market: MarketData, cfg: ExperimentConfig, names: list[str]) -> tuple[np.ndarray, int]:
    """The model's feature columns on new bars, in training order, with the causal gap repair ``prepare`` uses
    (forward fill after the warm-up); returns the matrix and the warm-up length."""
    from embedtune.features.cache import FeatureCache
    from embedtune.features.compute import compute_features

    cache = FeatureCache(Path(cfg.output.feature_cache)) if cfg.output.feature_cache else None
    frame = compute_features(market, cfg.features, cache)
    missing = [n for n in names if n not in frame.columns or frame[n].first_valid_index() is None]
    if missing:
        raise DataError(market.source, f"the model's feature {missing[0]!r} has no value on these {len(frame)} bars"
                                       + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    frame = frame[names].copy()
    warmup = max(int(frame.index.get_loc(frame[c].first_valid_index())) for c in names)
    frame.iloc[warmup:] = frame.iloc[warmup:].ffill()
    return frame.to_numpy(np.float32), warmup


def _timestamp(text: str, option: str, index: pd.Index) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise UsageError(option, f"{text!r} is not a date or timestamp") from None
    tz = getattr(index, "tz", None)
    if tz is not None and stamp.tzinfo is None:
        return stamp.tz_localize(tz)
    if tz is None and stamp.tzinfo is not None:
        return stamp.tz_convert(None)
    return stamp


def _within(stamps: pd.Index, start: str | None, end: str | None) -> np.ndarray:
    keep = np.ones(len(stamps), dtype=bool)
    if start:
        keep &= stamps >= _timestamp(start, "--start", stamps)
    if end:
        keep &= stamps <= _timestamp(end, "--end", stamps)
    return keep


def _as_prepared(market: MarketData, features: np.ndarray, names: list[str], labels: np.ndarray, warmup: int,
                 cfg: ExperimentConfig) -> PreparedData:
    """The new bars in the shape ``evaluate_oos`` reads (no folds: the whole period is out of sample)."""
    from embedtune.backtest.metrics import periods_per_year
    from embedtune.dataset import PreparedData

    return PreparedData(market_name=market.name, source=market.source, synthetic=market.synthetic,
                        data_hash=market.data_hash, bars=market.bars, features=features, feature_names=names,
                        labels=labels, first_sample=warmup + cfg.model.window - 1, folds=[],
                        periods_per_year=periods_per_year(market.bars.index), notes=dict(market.notes))


def write_backtest(output_dir: Path, cfg: ExperimentConfig, market: MarketData, frame: pd.DataFrame,
                   predictions: pd.DataFrame, summary: dict[str, Any]) -> Path:
    """``metrics.json``, ``oos.parquet``, ``predictions.parquet``, ``equity.png`` and ``config.yaml``, staged under a
    hidden name and renamed into place only when all are written."""
    from embedtune.config.loading import dump_config
    from embedtune.bundle.reader import clean

    name = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{cfg.config_hash[:8]}-"
            + re.sub(r"[^A-Za-z0-9_.-]", "_", market.name))
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / name
    with publishing(final, clear=False) as staging:
        (staging / METRICS_FILE).write_text(json.dumps(clean(summary), indent=1))
        frame.to_parquet(staging / OOS_FILE)
        predictions.to_parquet(staging / PREDICTIONS_FILE)
        (staging / CONFIG_FILE).write_text(dump_config(cfg))
        equity_png(frame, staging / EQUITY_PNG, f"{cfg.name} on {market.name}: saved model, out of sample",
                   market.synthetic)
    return final


def equity_png(frame: pd.DataFrame, path: Path, title: str, synthetic: bool) -> Path:
    return equity_curves([("strategy", frame["equity"])], frame["benchmark_equity"], path, title, synthetic)
