"""Fusion, uncertainty weighting, contrastive pretraining and embedding-quality metrics (fast, CPU, seconds)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from embedtune.models.contrastive import ProjectionHead, contrastive_pairs, nt_xent, pretrain_encoder
from embedtune.models.fusion import AttentionFusion, HierarchicalFusion, build_fusion
from embedtune.models.quality import cluster_purity, head_accuracy, retrieval_accuracy
from embedtune.models.uncertainty import UncertaintyWeighting

DIMS = {"transformer": 8, "gnn": 4, "wavelet": 6, "microstructure": 3}


def hand_nt_xent(z1: list[list[float]], z2: list[list[float]], t: float) -> float:
    views = z1 + z2
    n2 = len(views)

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        numerator = math.exp(cos(views[i], views[j]) / t)
        denominator = sum(math.exp(cos(views[i], views[k]) / t) for k in range(n2) if k != i)
        total += -math.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize("t", [0.1, 0.5, 2.0])
def test_nt_xent_matches_hand_computation(t: float) -> None:
    z1 = [[1.0, 0.2], [-0.3, 0.8], [0.5, -1.0]]
    z2 = [[0.9, 0.4], [0.1, 1.0], [-0.2, -0.7]]
    got = nt_xent(torch.tensor(z1, dtype=torch.float64), torch.tensor(z2, dtype=torch.float64), t)
    assert float(got) == pytest.approx(hand_nt_xent(z1, z2, t), rel=1e-10)


def test_lower_temperature_sharpens() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 4, generator=g)
    aligned = z1 + 0.05 * torch.randn(8, 4, generator=g)
    # Lower temperature rewards well-aligned positives more and punishes positives that are the least similar more.
    assert nt_xent(z1, aligned, 0.1) < nt_xent(z1, aligned, 1.0)
    assert nt_xent(z1, -z1, 0.1) > nt_xent(z1, -z1, 1.0)


def embeddings(batch: int = 5, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {name: torch.randn(batch, dim, generator=g) for name, dim in DIMS.items() if name not in skip}


@pytest.mark.parametrize("kind", ["concat", "attention", "hierarchical"])
def test_fusion_shapes_weights_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(kind, DIMS, out_dim=7, order=list(DIMS))
    fused, weights = fusion(embeddings())
    assert fused.shape == (5, 7)
    assert list(weights) == list(DIMS)
    assert all(w.shape == (5,) for w in weights.values())
    torch.testing.assert_close(torch.stack(list(weights.values())).sum(0), torch.ones(5))
    (fused ** 2).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_attention_weights_are_a_softmax_over_sources() -> None:
    torch.manual_seed(0)
    fusion = AttentionFusion(DIMS, out_dim=6)
    fused, weights = fusion(embeddings())
    w = torch.stack(list(weights.values()), dim=1)
    assert (w > 0).all()
    projected = torch.stack([fusion.project[n](e) for n, e in embeddings().items()], dim=1)
    torch.testing.assert_close(fused, (w[..., None] * projected).sum(1))


def test_hierarchical_skips_missing_sources_consistently() -> None:
    torch.manual_seed(0)
    fusion = HierarchicalFusion(DIMS, out_dim=6, order=["transformer", "gnn", "wavelet", "microstructure"])
    emb = embeddings(skip=("wavelet",))
    fused, weights = fusion(emb)
    assert list(weights) == ["transformer", "gnn", "microstructure"]
    torch.testing.assert_close(sum(weights.values()), torch.ones(5))

    state = fusion.project["transformer"](emb["transformer"])  # level1 = fuse(transformer, gnn)
    for name in ("gnn", "microstructure"):  # wavelet's step is skipped, the chain goes on with microstructure
        incoming = fusion.project[name](emb[name])
        alpha = torch.softmax(fusion.gate[name](torch.cat([state, incoming], -1)), -1)
        state = alpha[:, :1] * state + alpha[:, 1:] * incoming
    torch.testing.assert_close(fused, state)

    emb = embeddings(skip=("transformer",))  # the first present source starts the chain
    fused, w = fusion(emb)
    assert list(w) == ["gnn", "wavelet", "microstructure"]
    alpha = torch.softmax(fusion.gate["wavelet"](torch.cat([fusion.project["gnn"](emb["gnn"]),
                                                            fusion.project["wavelet"](emb["wavelet"])], -1)), -1)
    torch.testing.assert_close(w["wavelet"] + w["gnn"], 1 - w["microstructure"])
    torch.testing.assert_close(w["gnn"] / w["wavelet"], alpha[:, 0] / alpha[:, 1])


def test_fusion_errors_name_the_config_key() -> None:
    with pytest.raises(ValueError, match="fusion.type"):
        build_fusion("mean", DIMS, out_dim=4, order=None)
    with pytest.raises(ValueError, match="fusion.order"):
        build_fusion("hierarchical", DIMS, out_dim=4, order=["transformer", "gnn"])
    with pytest.raises(ValueError, match="unknown embedding sources"):
        build_fusion("attention", DIMS, out_dim=4, order=None)({**embeddings(), "options": torch.zeros(5, 2)})


def test_uncertainty_weighting_closed_form() -> None:
    parts = {"direction": torch.tensor(1.1), "volatility": torch.tensor(0.4), "volume": torch.tensor(2.0),
             "regime": torch.tensor(1.5)}
    s = torch.tensor([0.3, -0.5, 1.0, 0.0])
    simple = UncertaintyWeighting()
    kendall = UncertaintyWeighting(form="kendall")
    with torch.no_grad():
        simple.log_vars.copy_(s)
        kendall.log_vars.copy_(s)
    losses = [1.1, 0.4, 2.0, 1.5]
    regression = [False, True, True, False]
    expected_simple = sum(math.exp(-si) * li + si for si, li in zip(s.tolist(), losses))
    expected_kendall = sum(
        (0.5 if r else 1.0) * math.exp(-si) * li + 0.5 * si for si, li, r in zip(s.tolist(), losses, regression)
    )
    assert simple(parts).item() == pytest.approx(expected_simple, rel=1e-6)
    assert kendall(parts).item() == pytest.approx(expected_kendall, rel=1e-6)
    assert simple.effective_lambdas()["volume"] == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert kendall.effective_lambdas()["volatility"] == pytest.approx(0.5 * math.exp(0.5), rel=1e-6)
    with pytest.raises(ValueError, match="expected"):
        simple({"direction": torch.tensor(1.0)})


def test_uncertainty_weighting_learns_larger_variance_for_noisier_task() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    w = torch.randn(4, 2, generator=g)
    y = x @ w + torch.randn(512, 2, generator=g) * torch.tensor([0.1, 1.0])
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    weighting = UncertaintyWeighting(("clean", "noisy"), form="kendall", regression=("clean", "noisy"))
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=0.05)
    for _ in range(400):
        mse = ((model(x) - y) ** 2).mean(0)
        loss = weighting({"clean": mse[0], "noisy": mse[1]})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    s = weighting.log_variances()
    assert s["noisy"] > s["clean"] + 3.0  # true log-variance ratio is log(100) = 4.6
    assert s["noisy"] == pytest.approx(math.log(mse[1].item()), abs=0.1)  # optimum s = log(MSE)
    lambdas = weighting.effective_lambdas()
    assert lambdas["clean"] > 10 * lambdas["noisy"]


def market(n_days: int = 40, bars_per_day: int = 8, seed: int = 0) -> tuple[pd.DatetimeIndex, np.ndarray,
                                                                              np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2024-01-02", periods=n_days, tz="America/New_York")
    ts = pd.DatetimeIndex([d + pd.Timedelta(hours=9 + h) for d in days for h in range(bars_per_day)])
    returns = rng.normal(0, 1, len(ts)) * np.repeat(rng.uniform(0.5, 2.0, n_days), bars_per_day) * 0.01
    vol = pd.Series(returns).rolling(10).std().to_numpy()
    regime = rng.choice(3, len(ts), p=[0.7, 0.2, 0.1]).astype(float)
    return ts, returns, vol, regime


def test_pairs_stay_inside_candidates() -> None:
    ts, returns, vol, regime = market()
    candidates = np.arange(40, 200)
    a, p = contrastive_pairs(ts, returns, vol, regime, candidates, 300, np.random.default_rng(0),
                             corr_window=10, corr_threshold=0.5)
    assert len(a) == 300
    assert np.isin(a, candidates).all() and np.isin(p, candidates).all()
    assert (a != p).all()


def test_intraday_pairs_are_same_date_adjacent() -> None:
    ts, returns, vol, regime = market()
    candidates = np.arange(0, len(ts), 1)[np.arange(len(ts)) % 11 != 0]  # holes: adjacency must be checked
    a, p = contrastive_pairs(ts, returns, vol, regime, candidates, 200, np.random.default_rng(1),
                             kinds=("intraday",))
    assert len(a) == 200
    assert (np.abs(a - p) == 1).all()
    assert (ts[a].normalize() == ts[p].normalize()).all()
    assert np.isin(a, candidates).all() and np.isin(p, candidates).all()
    # Daily bars have no same-day neighbours: the intraday share is filled by the other kinds.
    daily = pd.bdate_range("2020-01-01", periods=len(ts))
    a, p = contrastive_pairs(daily, returns, vol, regime, candidates, 100, np.random.default_rng(1),
                             kinds=("intraday", "volatility"))
    assert len(a) == 100 and (daily[a].normalize() != daily[p].normalize()).all()


def test_volatility_pairs_respect_tolerance_regime_and_stratify_anchors() -> None:
    ts, returns, vol, regime = market()
    candidates = np.arange(10, 250)
    a, p = contrastive_pairs(ts, returns, vol, regime, candidates, 600, np.random.default_rng(2),
                             kinds=("volatility",), vol_tolerance=0.05)
    assert len(a) == 600 and (a != p).all()
    assert (np.abs(vol[p] - vol[a]) <= 0.05 * vol[a] + 1e-15).all()
    assert (regime[a] == regime[p]).all()
    share = np.bincount(regime[a].astype(int), minlength=3) / len(a)
    assert share.min() > 0.25  # 70/20/10 regimes, anchors drawn about a third each


def test_correlation_pairs_are_correlated_and_non_overlapping() -> None:
    ts, returns, vol, regime = market()
    candidates = np.arange(30, 300)
    a, p = contrastive_pairs(ts, returns, vol, None, candidates, 150, np.random.default_rng(3),
                             kinds=("correlation",), corr_window=10, corr_threshold=0.6)
    assert len(a) == 150
    assert (np.abs(a - p) >= 10).all()
    corr = [np.corrcoef(returns[i - 9: i + 1], returns[j - 9: j + 1])[0, 1] for i, j in zip(a, p)]
    assert min(corr) >= 0.6 - 1e-6


class TinyEncoder(nn.Module):
    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4 * n_features, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), torch.zeros(len(x))


def test_pretrain_encoder_only_sees_candidates_and_learns() -> None:
    ts, returns, vol, regime = market()
    features = torch.randn(len(ts), 3, generator=torch.Generator().manual_seed(0))
    candidates = np.arange(20, 150)
    a, p = contrastive_pairs(ts, returns, vol, regime, candidates, 128, np.random.default_rng(4))
    seen: list[np.ndarray] = []

    def make_views(positions: np.ndarray) -> torch.Tensor:
        seen.append(positions)
        return features[torch.as_tensor(positions)[:, None] + torch.arange(-3, 1)[None, :]]

    torch.manual_seed(0)
    encoder = TinyEncoder(3, 8)
    before = [q.detach().clone() for q in encoder.parameters()]
    head = ProjectionHead(8, out_dim=4)
    history = pretrain_encoder(encoder, make_views, a, p, epochs=3, lr=1e-2, temperature=0.5, batch_size=32,
                               generator=torch.Generator().manual_seed(0), head=head)
    assert len(history) == 3 and all(np.isfinite(history))
    assert np.isin(np.concatenate(seen), candidates).all()
    assert any(not torch.equal(b, q) for b, q in zip(before, encoder.parameters()))


def test_cluster_purity_separated_and_random() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    centers = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    separated = centers[labels] + rng.normal(size=(300, 3))
    assert cluster_purity(separated, labels) == 1.0
    assert cluster_purity(torch.tensor(separated), torch.tensor(labels)) == 1.0

    noise = rng.normal(size=(3000, 4))
    random_labels = rng.choice(3, 3000, p=[0.6, 0.3, 0.1])
    assert cluster_purity(noise, random_labels) == pytest.approx(0.6, abs=0.04)


def test_retrieval_never_uses_a_later_bank_item() -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    bank_labels = np.array([0.0, 1.0, 2.0])
    bank_times = pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-05"])
    query = np.array([[0.7, 0.7]])  # perfect match: bank item 2 (label 2), dated 2024-01-05
    query_labels = np.array([2.0])
    at = lambda day: pd.DatetimeIndex([day])  # noqa: E731
    assert retrieval_accuracy(query, query_labels, bank, bank_labels, bank_times, at("2024-01-03")) == 0.0
    assert retrieval_accuracy(query, query_labels, bank, bank_labels, bank_times, at("2024-01-05")) == 0.0
    assert retrieval_accuracy(query, query_labels, bank, bank_labels, bank_times, at("2024-01-06")) == 1.0
    assert math.isnan(retrieval_accuracy(query, query_labels, bank, bank_labels, bank_times, at("2024-01-01")))
    # Chunked path agrees with one block.
    assert retrieval_accuracy(np.repeat(query, 4, 0), np.repeat(query_labels, 4), bank, bank_labels, bank_times,
                              pd.DatetimeIndex(["2024-01-03", "2024-01-06"] * 2), chunk_elements=3) == 0.5


def test_head_accuracy() -> None:
    targets = np.array([[0, 1.0, 2.0, 4], [2, 2.0, 1.0, 1], [1, 3.0, 0.0, 1], [2, np.nan, np.nan, np.nan]])
    outputs = {
        "direction": torch.tensor([[3.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]),
        "regime": torch.eye(5)[[4, 1, 0, 0]],
        "volatility": torch.tensor([1.0, 2.0, 3.0, 0.0]),
        "volume": torch.tensor([0.0, 1.0, 2.0, 5.0]),
    }
    got = head_accuracy(outputs, targets)
    assert got["direction_accuracy"] == 1.0
    assert got["regime_accuracy"] == pytest.approx(2 / 3)
    assert got["volatility_corr"] == pytest.approx(1.0) and got["volatility_r2"] == pytest.approx(1.0)
    assert got["volume_corr"] == pytest.approx(-1.0) and got["volume_r2"] == pytest.approx(1 - 8 / 2)
