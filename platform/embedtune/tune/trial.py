"""One Tune trial: train and score all walk-forward folds of one proposed config.

Kept free of heavy imports at module level on purpose: Tune starts a trial actor by importing this module, and Tune
hands a waiting trial to an idle actor and kills the one it was starting for it. An actor that took seconds to start
(torch, vectorbt, the models) would lose that race to every trial shorter than its start-up, and trials would run one
at a time; starting light, a new actor is up in about a second and the heavy imports happen once, inside its first
trial.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune

#: Ray Train's controller takes at most one report per poll (default every 2 s) and ``ray.train.report`` blocks until
#: it is taken, so an epoch checkpoint cost 2 s whatever the epoch's compute; polled every 0.25 s it costs ~0.25 s.
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 0.25


def run_trial(params: dict[str, Any], *, base: dict[str, Any], data: list[Any], strategy: Any,
              storage_path: str) -> None:
    from embedtune.config.schema import CLASSICAL_MODELS, ExperimentConfig
    from embedtune.train.worker import FoldReportCallback, LocalSession, build_trainer, run_trial_folds
    from embedtune.tune.space import trial_config

    cfg = trial_config(ExperimentConfig.model_validate(base), params)
    trial_id = tune.get_context().get_trial_id()
    loop_config = {"config": cfg.model_dump(mode="json"), "data": data, "strategy": strategy}
    if cfg.resources.num_workers == 0 or cfg.model.type in CLASSICAL_MODELS:  # a classical model needs no workers
        run_trial_folds(loop_config, LocalSession(Path(storage_path) / f"train_{trial_id}", cfg.resources.use_gpu))
        return
    # This trial is the Train driver: Train passes the variable on to its controller (and the controller to workers).
    os.environ.setdefault(TRAIN_POLL_ENV, str(TRAIN_POLL_S))
    trainer = build_trainer(cfg, loop_config, storage_path, f"train_{trial_id}", [FoldReportCallback()])
    trainer.fit()
