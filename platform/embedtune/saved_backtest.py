"""Operations besides a search: train one fixed config, and backtest a saved model on new data.

``train_only`` is an experiment with the search switched off (the config's base hyperparameters, one trial, no
uncertainty baseline), so it gets the same walk-forward folds, checkpoints and leaderboard bundle as a search, plus
the trained model in ``<bundle>/model/``. ``backtest_saved_model`` rebuilds the features of new bars with the
model's own config, scales them with the training scaler, predicts, and runs the config's strategy through the same
vectorbt backtest as a trial; the result is a small bundle written under a hidden name and renamed when complete.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from embedtune.leaderboard.chart import equity_curves
from embedtune.errors import DataError, EmbedtuneError

if TYPE_CHECKING:
    from embedtune.config import ExperimentConfig
    from embedtune.data.market import MarketData
    from embedtune.dataset import PreparedData
    from embedtune.experiment import ExperimentResult
    from embedtune.saved_model import SavedModel

#: A search switched off: the config's own values, one trial, no learned-weights baseline.
TRAIN_OVERRIDES: dict[str, Any] = {"search.space": {}, "search.num_samples": 1, "search.max_concurrent": 1,
                                   "search.uncertainty_baseline": False}
BACKTESTS_DIR = "backtests"


@dataclass
class UsageError(EmbedtuneError):
    """A bad command-line value (a date, a data source) that is not part of a config file."""

    option: str
    message: str

    def __str__(self) -> str:
        return f"usage error: {self.option}: {self.message}"


def train_only(config_path: str | Path, output_root: str | None = None, verbose: bool = True) -> ExperimentResult:
    """One trial at the config's base hyperparameters over its walk-forward folds; the trained model (last fold)
    is saved in ``<bundle>/model/`` when the trial finishes. The derived config is kept next to the results."""
    from embedtune.config import dump_config, load_config
    from embedtune.experiment import run_experiment
    from embedtune.saved_model import export_model

    cfg = load_config(config_path)
    fixed = cfg.with_overrides(TRAIN_OVERRIDES)
    derived = Path(output_root or cfg.output.root) / cfg.name / "_train" / f"{fixed.config_hash[:12]}.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(dump_config(fixed))
    result = run_experiment(derived, output_root=output_root, verbose=verbose)
    if (result.table["status"] == "done").any():
        export_model(result.run_dir, str(result.table["trial"].iloc[0]))
    return result


def backtest_saved_model(model_dir: str | Path, data: str, output_dir: str | Path, start: str | None = None,
                         end: str | None = None, trial: str | None = None) -> Path:
    """Backtest a saved model on the bars of ``data`` (a bar file or ``bundled:<name>``), from ``start`` to ``end``
    (the bars before ``start`` still warm the features up); returns the result folder under ``output_dir``."""
    import torch

    from embedtune.data.sources import load_market
    from embedtune.evaluation import evaluate_oos, head_metrics
    from embedtune.labels import LABEL_COLUMNS, make_labels
    from embedtune.models.ensemble import build_model
    from embedtune.saved_model import ModelError, load_saved_model
    from embedtune.strategy import load_strategy
    from embedtune.train.data import WindowDataset
    from embedtune.train.loop import predict

    model = load_saved_model(model_dir, trial)
    cfg = new_data_config(model.config, data)
    market = load_market(cfg.data, "--data")
    features, warmup = model_features(market, cfg, model.feature_names)
    index = market.bars.index
    positions = np.arange(warmup + cfg.model.window - 1, len(index))
    positions = positions[_within(index[positions], start, end)]
    if len(positions) < 2:
        raise UsageError("--data", f"{len(positions)} bar(s) to backtest in [{start or 'start'}, {end or 'end'}] "
                                   f"after a warm-up of {warmup + cfg.model.window - 1} bars")
    labels = make_labels(market.bars, cfg.labels)[list(LABEL_COLUMNS)].to_numpy(np.float32)
    dataset = WindowDataset(torch.from_numpy(model.scaler.features(features)),
                            torch.from_numpy(np.nan_to_num(model.scaler.targets(labels), nan=0.0)),
                            positions, cfg.model.window)
    net = build_model(cfg.model, n_features=len(model.feature_names), feature_names=model.feature_names)
    try:
        net.load_state_dict(torch.load(model.weights, map_location="cpu", weights_only=True))
    except (RuntimeError, pickle.UnpicklingError) as err:
        raise ModelError(str(model.weights), f"weights do not fit the config's model: {str(err).splitlines()[0]}"
                         ) from None
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
        "overlaps_training": _overlaps_training(model, market, index[positions[0]]),
        "in_sample": _overlaps_training(model, market, index[positions[0]], "selection_end"),
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


def new_data_config(cfg: ExperimentConfig, data: str) -> ExperimentConfig:
    """The model's config pointed at new bars: no slicing of the old data, option chains regenerated or dropped."""
    from embedtune.saved_model import ModelError

    model = cfg.model
    if model.type == "ensemble" and (model.chain.enabled or model.graph.enabled):
        raise ModelError("model", "models with option-chain encoders cannot be backtested on new data: their "
                                  "per-fold chain standardization is not saved with the weights")
    chains = cfg.data.option_chains
    if chains not in ("none", "synthetic"):
        if "options" in cfg.features:
            raise UsageError("--data", f"the options features were computed from the chain file {chains!r}, "
                                       "which belongs to the training data")
        chains = "none"
    if not data or not (data.startswith("bundled:") or data == "synthetic" or Path(data).is_file()):
        raise UsageError("--data", f"{data!r} is neither a bar file nor bundled:<name>")
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


def _overlaps_training(model: SavedModel, market: MarketData, first: pd.Timestamp,
                       until: str = "trained_through") -> bool | None:
    """True when the backtest starts on bars the model learned from (same market, before its last used bar), or with
    ``until="selection_end"`` on bars the search chose it on."""
    through = model.meta.get(until)
    trained_on = model.meta.get("data") or {}
    if not through or not trained_on:
        return None
    if trained_on.get("name") != market.name and trained_on.get("hash") != market.data_hash:
        return False
    return bool(first <= _timestamp(through, until, market.bars.index))


def write_backtest(output_dir: Path, cfg: ExperimentConfig, market: MarketData, frame: pd.DataFrame,
                   predictions: pd.DataFrame, summary: dict[str, Any]) -> Path:
    """``metrics.json``, ``oos.parquet``, ``predictions.parquet``, ``equity.png`` and ``config.yaml``, staged under a
    hidden name and renamed into place only when all are written."""
    from embedtune.config import dump_config
    from embedtune.leaderboard.bundle import clean

    name = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{cfg.config_hash[:8]}-"
            + re.sub(r"[^A-Za-z0-9_.-]", "_", market.name))
    output_dir.mkdir(parents=True, exist_ok=True)
    staging, final = output_dir / f".{name}.partial", output_dir / name
    staging.mkdir()
    try:
        (staging / "metrics.json").write_text(json.dumps(clean(summary), indent=1))
        frame.to_parquet(staging / "oos.parquet")
        predictions.to_parquet(staging / "predictions.parquet")
        (staging / "config.yaml").write_text(dump_config(cfg))
        equity_png(frame, staging / "equity.png", f"{cfg.name} on {market.name}: saved model, out of sample",
                   market.synthetic)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def equity_png(frame: pd.DataFrame, path: Path, title: str, synthetic: bool) -> Path:
    return equity_curves([("strategy", frame["equity"])], frame["benchmark_equity"], path, title, synthetic)


def _cmd_train(args: argparse.Namespace) -> int:
    from embedtune.saved_model import MODEL_DIR

    result = train_only(args.config, output_root=args.output)
    model = result.run_dir / MODEL_DIR
    print(f"bundle: {result.run_dir}\n  model: {model if model.is_dir() else 'none (the trial did not finish)'}\n"
          f"  took {result.seconds:.0f} s")
    return 0 if model.is_dir() else 1


def _cmd_backtest(args: argparse.Namespace) -> int:
    from embedtune.saved_model import MODEL_DIR

    model_dir = args.model
    if args.config:
        trained = train_only(args.config, output_root=args.output)
        model_dir = trained.run_dir / MODEL_DIR
        print(f"trained: {trained.run_dir}", file=sys.stderr)
        if not model_dir.is_dir():
            print("embedtune: training did not finish a trial, nothing to backtest", file=sys.stderr)
            return 1
    out = backtest_saved_model(model_dir, args.data, Path(args.output or "results") / BACKTESTS_DIR,
                               start=args.start, end=args.end, trial=args.trial)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("sharpe", "total_return", "max_drawdown")
                      if isinstance(metrics.get(k), (int, float)))
    print(f"backtest: {out}\n  {shown}")
    return 0


def add_ops_parsers(subparsers: Any) -> None:
    """Register ``train`` and ``backtest`` on the top-level ``embedtune`` subparsers."""
    p = subparsers.add_parser("train", help="train one fixed config (base hyperparameters, no search) and save "
                                            "its model in the result bundle")
    p.add_argument("--config", required=True)
    p.add_argument("--output", default=None, help="results root (overrides output.root)")
    p.set_defaults(func=_cmd_train)
    p = subparsers.add_parser("backtest", help="backtest a saved model (or a config, trained first) on new data")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="a bundle's model/ folder, a result bundle or a Ray "
                                                       "checkpoint folder")
    source.add_argument("--config", help="train this config first (as `embedtune train`), then backtest its model")
    p.add_argument("--data", required=True, metavar="SOURCE", help="bar file (CSV, CSV.gz, Parquet) or bundled:NAME")
    p.add_argument("--start", default=None, help="first bar to trade (earlier bars only warm up the features)")
    p.add_argument("--end", default=None, help="last bar to trade")
    p.add_argument("--trial", default=None, help="with a result bundle: its trial id (default: the top finished)")
    p.add_argument("--output", default=None, help="results root (default results); backtests go to "
                                                  f"<root>/{BACKTESTS_DIR}/")
    p.set_defaults(func=_cmd_backtest)


def main(argv: Sequence[str] | None = None) -> int:
    """``train``/``backtest`` alone, for the job scripts; the same one-line errors and exit 2 as ``embedtune``."""
    from embedtune.cli import dispatch

    parser = argparse.ArgumentParser(prog="embedtune")
    add_ops_parsers(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
