"""Train one fixed config: an experiment with the search switched off.

The config's base hyperparameters, one trial, no uncertainty baseline, so it gets the same walk-forward folds,
checkpoints and leaderboard bundle as a search, plus the trained model in ``<bundle>/model/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedtune.experiment import ExperimentResult

#: A search switched off: the config's own values, one trial, no learned-weights baseline.
TRAIN_OVERRIDES: dict[str, Any] = {"search.space": {}, "search.num_samples": 1, "search.max_concurrent": 1,
                                   "search.uncertainty_baseline": False}


def train_only(config_path: str | Path, output_root: str | None = None, verbose: bool = True) -> ExperimentResult:
    """One trial at the config's base hyperparameters over its walk-forward folds; the trained model (last fold)
    is saved in ``<bundle>/model/`` when the trial finishes. The derived config is kept next to the results."""
    from embedtune.config.loading import dump_config, load_config
    from embedtune.experiment import run_experiment
    from embedtune.saved_model import export_model

    from embedtune.errors import ConfigError

    cfg = load_config(config_path)
    if cfg.data.universe is not None:  # refused before anything runs, not after the run when the model is saved
        raise ConfigError("data.universe", "a universe model cannot be saved for serving yet (live inference reads "
                                           "one instrument); run the experiment with embedtune tune", str(config_path))
    fixed = cfg.with_overrides(TRAIN_OVERRIDES)
    derived = Path(output_root or cfg.output.root) / cfg.name / "_train" / f"{fixed.config_hash[:12]}.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(dump_config(fixed))
    result = run_experiment(derived, output_root=output_root, verbose=verbose)
    if (result.table["status"] == "done").any():
        export_model(result.run_dir, str(result.table["trial"].iloc[0]))
    return result
