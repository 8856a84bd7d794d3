"""A searched trial's number is stamped on it by the searcher as it is proposed (``tune.numbering``), survives a
save/restore of the search, and is stripped before the config is applied: no trial-folder names are parsed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from embedtune.config import load_config
from embedtune.tune.numbering import NumberedSearcher
from embedtune.tune.space import TRIAL_NUMBER_KEY, trial_config

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def optuna_searcher(seed: int = 3) -> OptunaSearch:
    return OptunaSearch(space={"training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
                        metric="sharpe", mode="max", sampler=optuna.samplers.TPESampler(seed=seed))


def propose(searcher: Searcher, ids: list[str]) -> list[dict[str, Any]]:
    return [searcher.suggest(trial_id) for trial_id in ids]


def test_numbers_follow_the_order_of_proposals_and_survive_a_restore(tmp_path: Path) -> None:
    """Saved and restored the way Tune does it (``SearchGenerator.save_to_dir`` / ``restore_from_dir``)."""
    search = SearchGenerator(NumberedSearcher(optuna_searcher()))
    numbered = search.searcher
    first = propose(numbered, ["a", "b", "c"])
    assert [c[TRIAL_NUMBER_KEY] for c in first] == [0, 1, 2]
    for trial_id, config, value in zip("abc", first, (0.1, 0.3, 0.2)):
        numbered.on_trial_complete(trial_id, {"sharpe": value, **config})
    search.save_to_dir(str(tmp_path), session_str="test")
    restored = SearchGenerator(NumberedSearcher(optuna_searcher()))
    restored.restore_from_dir(str(tmp_path))
    after_restore = propose(restored.searcher, ["d", "e"])
    assert [c[TRIAL_NUMBER_KEY] for c in after_restore] == [3, 4]
    # The wrapped searcher's own state came back too: it proposes what the uninterrupted searcher proposes.
    assert after_restore == propose(numbered, ["d", "e"])


def test_the_number_is_not_a_config_value() -> None:
    cfg = load_config(TINY)
    run = trial_config(cfg, {"training.learning_rate": 0.003, TRIAL_NUMBER_KEY: 7})
    assert run.training.learning_rate == 0.003
    assert run.config_hash == trial_config(cfg, {"training.learning_rate": 0.003}).config_hash
