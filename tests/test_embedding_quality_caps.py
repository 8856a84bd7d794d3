"""The embedding diagnostics read at most QUALITY_QUERIES test rows and QUALITY_BANK bank rows, evenly spaced: below
the caps they are the plain diagnostics, above them exactly the diagnostics of the evenly spaced rows."""
from __future__ import annotations

import numpy as np
import pytest

from embedtune.labels import label_column
from embedtune.models.quality import cluster_purity, retrieval_accuracy
from embedtune.train import fold as fold_module
from embedtune.train.fold import embedding_quality, evenly_spaced


def _case(seed: int, n_test: int, n_bank: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = n_bank + n_test
    labels = np.column_stack([rng.integers(0, 3, n), rng.normal(size=n), rng.normal(size=n),
                              rng.integers(0, 5, n)]).astype(np.float64)
    emb = rng.normal(size=(n, 4)) + labels[:, [0]]  # direction shapes the embedding: retrieval above chance
    bank, test = np.arange(n_bank), np.arange(n_bank, n)
    return emb[test], test, emb[bank], bank, labels


def _plain(test_emb: np.ndarray, test: np.ndarray, bank_emb: np.ndarray, bank: np.ndarray, labels: np.ndarray,
           horizon: int) -> dict[str, float]:
    """The diagnostics written out directly (one instrument: times are positions)."""
    out = {"regime_purity": cluster_purity(test_emb, labels[test, label_column("regime")])}
    for name in ("direction", "regime"):
        column = label_column(name)
        out[f"retrieval_{name}"] = retrieval_accuracy(test_emb, labels[test, column], bank_emb, labels[bank, column],
                                                      bank + horizon, test)
    return out


def test_evenly_spaced_keeps_the_ends_and_the_count() -> None:
    assert evenly_spaced(5, 10).tolist() == [0, 1, 2, 3, 4]
    picked = evenly_spaced(1_000, 7)
    assert picked[0] == 0 and picked[-1] == 999 and len(picked) == 7 and (np.diff(picked) > 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_caps_leave_small_folds_alone_and_subsample_large_ones(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _case(seed, n_test=300, n_bank=900)
    assert embedding_quality(*case, horizon=2) == pytest.approx(_plain(*case, horizon=2))
    monkeypatch.setattr(fold_module, "QUALITY_QUERIES", 50)
    monkeypatch.setattr(fold_module, "QUALITY_BANK", 200)
    test_emb, test, bank_emb, bank, labels = case
    q, b = evenly_spaced(len(test), 50), evenly_spaced(len(bank), 200)
    capped = embedding_quality(*case, horizon=2)
    assert capped == pytest.approx(_plain(test_emb[q], test[q], bank_emb[b], bank[b], labels, horizon=2))
    assert capped["retrieval_direction"] > 0.5  # the planted structure is still seen through the subsample
