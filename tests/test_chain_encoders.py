"""Option-chain tensors, option graphs and the two chain encoders (transformer over options, GNN over relations)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Batch

from embedtune.chains import (
    EDGE_DIM, EDGE_KINDS, OPTION_FEATURES, OptionGraph, build_graphs, build_option_graph, edge_counts,
    per_option_features, tensorize_chains,
)
from embedtune.chains.tensorize import FEATURE_INDEX
from embedtune.data.synthetic_options import generate_option_chains
from embedtune.models.chain_transformer import OptionChainTransformer
from embedtune.models.gnn import OptionGraphEncoder

N_FEATURES = 50


@pytest.fixture(scope="module")
def goog_chains(goog_bars: pd.DataFrame) -> pd.DataFrame:
    return generate_option_chains(goog_bars, every=20, n_expiries=3, strikes_per_side=5)


def _tiny_transformer() -> OptionChainTransformer:
    torch.manual_seed(0)
    return OptionChainTransformer(N_FEATURES, d_model=32, n_heads=4, n_layers=2, dim_feedforward=64, dropout=0.0,
                                  out_dim=16).eval()


def _tiny_gnn() -> OptionGraphEncoder:
    torch.manual_seed(0)
    return OptionGraphEncoder(N_FEATURES, hidden=32, out_dim=16, n_layers=3, heads=4).eval()


def _hand_chain(expiries: int = 2, strikes: tuple[float, ...] = (95.0, 100.0, 105.0)) -> pd.DataFrame:
    """expiries x strikes x {C, P}, one snapshot, priced by the generator's conventions (iv column included)."""
    ts = pd.Timestamp("2024-01-02")
    grid = pd.MultiIndex.from_product(
        [pd.date_range("2024-02-16", periods=expiries, freq="28D"), strikes, ["C", "P"]],
        names=["expiry", "strike", "right"],
    ).to_frame(index=False)
    rng = np.random.default_rng(3)
    n = len(grid)
    mid = 1.0 + rng.random(n) * 5
    return grid.assign(timestamp=ts, bid=mid - 0.05, ask=mid + 0.05, last=mid, volume=rng.integers(0, 50, n),
                       open_interest=rng.integers(10, 500, n), iv=0.2 + 0.1 * rng.random(n))


# ---------------------------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------------------------


def test_tensorize_bundled_goog_is_nan_free(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    tensors = tensorize_chains(goog_chains, goog_bars)
    per_snapshot = goog_chains.groupby("timestamp").size().to_numpy()
    assert tensors.features.shape == (len(per_snapshot), per_snapshot.max(), N_FEATURES)
    assert tensors.features.dtype == np.float32 and np.isfinite(tensors.features).all()
    assert (tensors.mask.sum(axis=1) == per_snapshot).all()
    assert 16 <= len(OPTION_FEATURES) <= 24 and tensors.feature_names == OPTION_FEATURES
    real = tensors.features[tensors.mask]
    assert (real[:, FEATURE_INDEX["valid"]] == 1).all()
    assert (real[:, len(OPTION_FEATURES):] == 0).all()  # padding columns up to n_features
    assert (tensors.features[~tensors.mask] == 0).all() and (tensors.row[~tensors.mask] == -1).all()
    assert np.isfinite(tensors.tte).all() and (tensors.tte[tensors.mask] > 0).all()
    # strike_rank 0 is the strike nearest spot in every snapshot
    assert ((tensors.strike_rank == 0) & tensors.mask).any(axis=1).all()
    # the bar <-> snapshot map: latest snapshot at or before each bar
    seen = tensors.snapshot_for_bar >= 0
    bar_times = goog_bars.index.to_numpy()
    assert (tensors.snapshot_times.to_numpy()[tensors.snapshot_for_bar[seen]] <= bar_times[seen]).all()
    later = tensors.snapshot_for_bar[seen] + 1 < tensors.n_snapshots
    nxt = tensors.snapshot_times.to_numpy()[np.minimum(tensors.snapshot_for_bar[seen] + 1, tensors.n_snapshots - 1)]
    assert (nxt[later] > bar_times[seen][later]).all()
    assert (bar_times[~seen] < tensors.snapshot_times[0]).all()


def test_per_option_features_solves_iv_from_mid_and_flags_nan(goog_bars: pd.DataFrame,
                                                              goog_chains: pd.DataFrame) -> None:
    snapshot = goog_chains[goog_chains["timestamp"] == goog_chains["timestamp"].iloc[0]].reset_index(drop=True)
    spot = float(goog_bars["close"].loc[: snapshot["timestamp"].iloc[0]].iloc[-1])
    given = per_option_features(snapshot, spot)
    solved = per_option_features(snapshot.drop(columns="iv"), spot)
    assert given.shape == (len(snapshot), N_FEATURES)
    np.testing.assert_allclose(solved[:, FEATURE_INDEX["iv"]], snapshot["iv"], rtol=1e-5)
    broken = snapshot.drop(columns="iv")
    broken.loc[3, "bid"] = np.nan
    out = per_option_features(broken, spot)
    assert np.isfinite(out).all()
    assert out[3, FEATURE_INDEX["valid"]] == 0 and out[3, FEATURE_INDEX["iv"]] == 0
    assert (np.delete(out, 3, axis=0)[:, FEATURE_INDEX["valid"]] == 1).all()


def test_tensors_are_causal(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    times = np.sort(goog_chains["timestamp"].unique())
    cutoff = times[len(times) // 2]
    changed = goog_chains.copy()
    after = changed["timestamp"] > cutoff
    changed.loc[after, ["bid", "ask", "last"]] *= 1.7
    changed.loc[after, "volume"] += 1000
    changed = changed[~(after & (changed["strike"] == changed["strike"].max()))]  # a listing disappears later
    extra = changed[changed["timestamp"] == times[-1]].assign(timestamp=times[-1] + np.timedelta64(1, "D"))
    changed = pd.concat([changed, extra], ignore_index=True)  # and a new snapshot appears

    for max_options in (None, 40):
        base = tensorize_chains(goog_chains, goog_bars, max_options=max_options)
        new = tensorize_chains(changed, goog_bars, max_options=max_options)
        k = int(np.searchsorted(base.snapshot_times, cutoff, side="right"))
        assert (new.snapshot_times[:k] == base.snapshot_times[:k]).all()
        visible = goog_bars.index <= cutoff
        np.testing.assert_array_equal(new.snapshot_for_bar[visible], base.snapshot_for_bar[visible])
        width = min(base.mask.shape[1], new.mask.shape[1])  # max_options=None: width may follow later snapshots
        for name in ("features", "mask", "strike_rank", "tte", "expiry_id", "right"):
            np.testing.assert_array_equal(getattr(new, name)[:k, :width], getattr(base, name)[:k, :width])
        assert not base.mask[:k, width:].any() and not new.mask[:k, width:].any()


def test_empty_chain_raises(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    empty = goog_chains.iloc[:0]
    with pytest.raises(ValueError, match="no rows"):
        tensorize_chains(empty, goog_bars)
    with pytest.raises(ValueError, match="no rows"):
        per_option_features(empty, 100.0)
    with pytest.raises(ValueError, match="no rows"):
        build_option_graph(empty, np.zeros((0, N_FEATURES), dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------------------------------------------


def test_edge_counts_on_hand_made_chain() -> None:
    chain = _hand_chain()
    graph = build_option_graph(chain, per_option_features(chain, 100.0), required_kinds=EDGE_KINDS)
    # 2 expiries x 3 strikes x {C, P} = 12 options; counts are directed (each relation twice):
    # same_expiry: per (expiry, right) 2 adjacent pairs x 4 groups = 8 pairs
    # calendar:    per (strike, right) 1 expiry pair x 6 groups = 6 pairs
    # parity:      one C-P pair per (expiry, strike) = 6 pairs
    # spread:      verticals 1 per (expiry, right) = 4 + diagonals per right (1 + 2 + 1) x 2 = 8 -> 12 pairs
    assert edge_counts(graph) == {"same_expiry": 16, "calendar": 12, "parity": 12, "spread": 24}
    assert isinstance(graph, OptionGraph) and graph.validate()
    assert graph.edge_attr.shape == (64, EDGE_DIM)
    weights = graph.edge_attr[:, len(EDGE_KINDS):]
    assert ((weights >= 0) & (weights <= 1)).all()
    src, dst = graph.edge_index
    parity = graph.edge_type == EDGE_KINDS.index("parity")
    a, b = chain.iloc[src[parity].numpy()], chain.iloc[dst[parity].numpy()]
    assert (a["strike"].to_numpy() == b["strike"].to_numpy()).all()
    assert (a["expiry"].to_numpy() == b["expiry"].to_numpy()).all()
    assert (a["right"].to_numpy() != b["right"].to_numpy()).all()
    calendar = graph.edge_type == EDGE_KINDS.index("calendar")
    a, b = chain.iloc[src[calendar].numpy()], chain.iloc[dst[calendar].numpy()]
    assert (a["strike"].to_numpy() == b["strike"].to_numpy()).all()
    assert (a["right"].to_numpy() == b["right"].to_numpy()).all()
    assert (a["expiry"].to_numpy() != b["expiry"].to_numpy()).all()


def test_missing_edge_kind_raises() -> None:
    chain = _hand_chain(expiries=1)
    features = per_option_features(chain, 100.0)
    graph = build_option_graph(chain, features)
    assert edge_counts(graph)["calendar"] == 0
    with pytest.raises(ValueError, match="calendar"):
        build_option_graph(chain, features, required_kinds=("calendar",))
    calls = chain[chain["right"] == "C"]
    with pytest.raises(ValueError, match="parity"):
        build_option_graph(calls, per_option_features(calls, 100.0), required_kinds=("same_expiry", "parity"))


def test_build_graphs_matches_tensors(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    tensors = tensorize_chains(goog_chains, goog_bars)
    graphs = build_graphs(goog_chains, tensors, required_kinds=EDGE_KINDS)
    assert len(graphs) == tensors.n_snapshots
    for s in (0, len(graphs) - 1):
        assert graphs[s].num_nodes == int(tensors.mask[s].sum())
        assert torch.equal(graphs[s].x, torch.from_numpy(tensors.features[s, tensors.mask[s]]))
        graphs[s].validate()
    batch = Batch.from_data_list(graphs[:3])
    out = _tiny_gnn()(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
    assert out.shape == (3, 16) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------------------------------


def _chain_batch(tensors, idx: list[int], width: int) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    return (torch.from_numpy(tensors.features[idx, :width]), torch.from_numpy(tensors.mask[idx, :width]),
            torch.from_numpy(tensors.strike_rank[idx, :width]), torch.from_numpy(tensors.tte[idx, :width]))


def test_transformer_shapes_and_padding_invariance(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    model = _tiny_transformer()
    tensors = tensorize_chains(goog_chains, goog_bars, max_options=12)
    x, mask, rank, tte = _chain_batch(tensors, [0, 1, 2], 12)
    mask[1, 7:] = False  # chains of different sizes in one batch: 12, 7 and 12 options
    with torch.no_grad():
        out = model(x, mask, rank, tte)
        assert out.shape == (3, 16) and torch.isfinite(out).all()
        alone = model(x[1:2, :7], mask[1:2, :7], rank[1:2, :7], tte[1:2, :7])
        torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=1e-5)
        # 20 extra padded slots full of junk (NaN, huge values, random ranks and tte) change nothing
        gen = torch.Generator().manual_seed(1)
        junk = torch.randn(3, 20, N_FEATURES, generator=gen) * 1e6
        junk[:, ::3] = float("nan")
        padded = model(
            torch.cat([x, junk], 1), torch.cat([mask, torch.zeros(3, 20, dtype=torch.bool)], 1),
            torch.cat([rank, torch.randint(-100, 100, (3, 20), generator=gen)], 1),
            torch.cat([tte, torch.rand(3, 20, generator=gen) * 9], 1),
        )
        torch.testing.assert_close(padded, out, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    tensors = tensorize_chains(goog_chains, goog_bars, max_options=16)
    transformer = _tiny_transformer().train()
    transformer(*_chain_batch(tensors, [0, 5], 16)).pow(2).sum().backward()
    batch = Batch.from_data_list(build_graphs(goog_chains, tensors)[:2])
    gnn = _tiny_gnn().train()
    gnn(batch.x, batch.edge_index, batch.edge_attr, batch.batch).pow(2).sum().backward()
    for model in (transformer, gnn):
        for name, param in model.named_parameters():
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_gnn_is_permutation_invariant(goog_bars: pd.DataFrame, goog_chains: pd.DataFrame) -> None:
    tensors = tensorize_chains(goog_chains, goog_bars)
    graph = build_graphs(goog_chains, tensors)[3]
    model = _tiny_gnn()
    gen = torch.Generator().manual_seed(7)
    perm = torch.randperm(graph.num_nodes, generator=gen)  # new node j is old node perm[j]
    inverse = torch.argsort(perm)
    edge_order = torch.randperm(graph.num_edges, generator=gen)
    with torch.no_grad():
        out = model(graph.x, graph.edge_index, graph.edge_attr)
        permuted = model(graph.x[perm], inverse[graph.edge_index][:, edge_order], graph.edge_attr[edge_order])
    assert out.shape == (1, 16)
    torch.testing.assert_close(permuted, out, atol=1e-5, rtol=1e-5)


def test_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        OptionChainTransformer(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="heads"):
        OptionGraphEncoder(N_FEATURES, hidden=30, out_dim=8, heads=4)
