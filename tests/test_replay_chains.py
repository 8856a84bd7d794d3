"""Chain and graph models served from a stream that carries option-chain snapshots (``embedtune replay --chains``;
issue 17, item 2).

Model: the quickstart-like tiny chain model of ``test_saved_chain_model`` (trained by ``fit_fold``, exported with its
chain scaling). Reference, computed without the real-time code: the batch model, i.e. the trained network on the
experiment's ``WindowDataset`` (features from ``dataset.prepare`` scaled by the fold's ``FoldScaler``, chains and
graphs from ``prepare`` scaled by ``train.data.scale_chains``/``scale_graphs``) on the same bars and chains. With a
full refresh every tick the served head outputs equal it to 1e-5 (float32 model; heads in float64).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedtune.cli import main
from test_saved_chain_model import TrainedChainModel, train_chain_model

HEADS = ["p_down", "p_neutral", "p_up", "vol_pred", "volume_pred", "signal"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedChainModel:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one sample at a time: extra threads only contend for the shared cores
    yield train_chain_model(tmp_path_factory.mktemp("chain_model"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stream(trained: TrainedChainModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The model's own bars and chains as files, as a feed recorder would have written them."""
    from embedtune.data.sources import load_market

    market = load_market(trained.cfg.data)
    folder = tmp_path_factory.mktemp("stream")
    market.bars.reset_index().to_parquet(folder / "bars.parquet")
    market.chains.to_parquet(folder / "chains.parquet")
    return folder / "bars.parquet", folder / "chains.parquet"


def batch_heads(trained: TrainedChainModel, stamps: pd.Index) -> pd.DataFrame:
    """The batch model's head outputs at ``stamps`` (``realtime.model.HEAD_COLUMNS`` order)."""
    from embedtune.train.data import WindowDataset, scale_chains, scale_graphs
    from embedtune.train.outcome import fold_train

    data = trained.data
    chains = scale_chains(data.chains, fold_train(data, trained.fold))
    positions = data.index.get_indexer(stamps)
    assert (positions >= 0).all()
    dataset = WindowDataset(torch.from_numpy(trained.outcome.scaler.features(data.features)),
                            torch.zeros(len(data.index), 4), positions, trained.cfg.model.window, chains,
                            scale_graphs(data.graphs, chains))
    model = trained.outcome.model.eval()
    with torch.no_grad():
        out = model(dataset.inputs_at(torch.as_tensor(positions)))
    p = torch.softmax(out["direction"].double(), dim=-1).numpy()
    values = np.column_stack([p, out["volatility"].double().numpy().ravel(), out["volume"].double().numpy().ravel(),
                              p[:, 2] - p[:, 0]])
    return pd.DataFrame(values, index=stamps, columns=HEADS)


def test_full_refresh_every_tick_gives_the_batch_models_heads(trained: TrainedChainModel, stream: tuple[Path, Path],
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bars, chains = stream
    assert main(["replay", "--model", str(trained.folder), "--data", str(bars), "--chains", str(chains), "--out",
                 str(tmp_path), "--refresh-every", "1", "--quiet"]) == 0
    assert "snapshots encoded" in capsys.readouterr().out
    served = pd.read_parquet(tmp_path / "signals.parquet")
    data = trained.data
    first = data.index.get_loc(served.index[0])
    assert served.index.equals(data.index[first:]) and len(served) > 500  # every bar after the warm-up
    assert served["refreshed"].all()
    np.testing.assert_allclose(served[HEADS].to_numpy(), batch_heads(trained, served.index).to_numpy(), atol=1e-5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    visible = np.unique(data.chains.snapshot_for_bar[first:])
    assert summary["chains"] == str(chains) and summary["snapshots_encoded"] == len(visible[visible >= 0])


def test_generated_chains_serve_the_same_model(trained: TrainedChainModel, stream: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """``--chains synthetic`` generates the snapshots from the streamed bars by the model's generator settings, as its
    experiment did, so the first 300 ticks serve what the recorded chains give."""
    from embedtune.realtime.replay import replay

    summary = replay(trained.folder, str(stream[0]), tmp_path, chains="synthetic", limit=300, progress=False,
                     overrides={"refresh_every": 1})
    served = pd.read_parquet(tmp_path / "signals.parquet")
    assert summary.chains == "synthetic" and len(served) > 150
    np.testing.assert_allclose(served[HEADS].to_numpy(), batch_heads(trained, served.index).to_numpy(), atol=1e-5)


def test_the_feed_maps_ticks_to_snapshots_and_spots_as_the_batch_path() -> None:
    """``SnapshotFeed`` against ``tensorize_chains``: the latest snapshot at or before each tick, spot the close of the
    latest bar at or before the snapshot; a rejected tick's close is never a spot (the reference drops that bar)."""
    from embedtune.chains.tensorize import tensorize_chains
    from embedtune.data.synthetic_market import generate_market
    from embedtune.data.synthetic_options import generate_option_chains
    from embedtune.realtime.chain_runner import SnapshotFeed
    from embedtune.realtime.serving import bar_ticks

    bars = generate_market(n_bars=120, seed=3, freq="h").bars
    chains = generate_option_chains(bars, seed=1, every=7, n_expiries=2, strikes_per_side=2)
    # Half the snapshots move to half an hour after their bar: visible from the next bar on, spot the bar's close.
    stamps = pd.to_datetime(chains["timestamp"])
    chains["timestamp"] = stamps.where(stamps.dt.hour % 2 == 0, stamps + pd.Timedelta(minutes=30))
    off_bar = chains["timestamp"][~chains["timestamp"].isin(bars.index)]
    assert len(off_bar) and len(off_bar) < len(chains)
    rejected = int(bars.index.searchsorted(off_bar.iloc[-1]) - 1)  # the bar just before an off-bar snapshot
    kept = bars.drop(bars.index[rejected])
    reference = tensorize_chains(chains, kept, max_options=16)
    feed = SnapshotFeed(chains, "chains")
    seen = []
    for i, tick in enumerate(bar_ticks(bars)):
        feed.begin(tick)
        if i != rejected:
            seen.append(feed.current())
        feed.end(tick, accepted=i != rejected)
    np.testing.assert_array_equal(seen, reference.snapshot_for_bar)
    assert feed.times.equals(reference.snapshot_times)
    np.testing.assert_array_equal(feed.spot, reference.spot)


def test_ticks_between_snapshots_reuse_the_snapshot_embedding(trained: TrainedChainModel) -> None:
    """Refreshes every 4 ticks, partial updates between: each snapshot is encoded once, when it becomes visible, and
    every tick (refreshed or not) fuses the chain and graph embeddings the batch model gives its bar."""
    from embedtune.data.sources import load_market
    from embedtune.realtime.serving import bar_ticks, load_serving
    from embedtune.train.data import WindowDataset, scale_chains, scale_graphs
    from embedtune.train.outcome import fold_train

    serving = load_serving(trained.folder, overrides={"refresh_every": 4})
    market = serving.stream_market(load_market(trained.cfg.data))
    enhancer = serving.enhancer(serving.config)
    runner = enhancer.model
    stamps, encoded, served, refreshed = [], [], [], []
    for tick in bar_ticks(market.bars.iloc[:300]):
        result = enhancer.process_tick(tick)
        if result.embedding is not None:
            stamps.append(tick.timestamp)
            encoded.append(runner.snapshots_encoded)
            served.append(np.concatenate([runner.snapshot_embeddings[n][0].numpy() for n in ("chain", "graph")]))
            refreshed.append(result.refreshed)
    assert any(refreshed) and not all(refreshed)
    data = trained.data
    positions = data.index.get_indexer(stamps)
    visible = data.chains.snapshot_for_bar[positions]
    np.testing.assert_array_equal(np.diff(encoded), np.diff(visible) != 0)  # encoded exactly when a new one shows
    chains = scale_chains(data.chains, fold_train(data, trained.fold))
    dataset = WindowDataset(torch.from_numpy(trained.outcome.scaler.features(data.features)),
                            torch.zeros(len(data.index), 4), positions, trained.cfg.model.window, chains,
                            scale_graphs(data.graphs, chains))
    inputs = dataset.inputs_at(torch.as_tensor(positions))
    with torch.no_grad():
        batch = torch.cat([trained.outcome.model.sources[n](inputs)[0] for n in ("chain", "graph")], dim=1)
    np.testing.assert_allclose(np.stack(served), batch.numpy(), atol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("no chains", "usage error: --chains: the model reads option chains"),
    ("no chain model", "usage error: --chains: only a model with chain or graph encoders reads option chains"),
    ("missing file", "usage error: --chains: '{tmp}/none.parquet' is neither a chain file nor synthetic"),
    ("bad row", "data error: {tmp}/bad.parquet, row 8, column 'bid': bid"),
])
def test_bad_input_is_one_line_and_exit_2(case: str, message: str, trained: TrainedChainModel,
                                          stream: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    served = ["--model", str(trained.folder)]
    chains = ["--chains", str(stream[1])]
    if case == "no chains":
        chains = []
    elif case == "no chain model":
        served = ["--config", "tests/configs/tiny.yaml"]
    elif case == "missing file":
        chains = ["--chains", str(tmp_path / "none.parquet")]
    else:
        frame = pd.read_parquet(stream[1])
        frame.loc[7, "ask"] = frame.loc[7, "bid"] - 0.5
        frame.to_parquet(tmp_path / "bad.parquet")
        chains = ["--chains", str(tmp_path / "bad.parquet")]
    out = tmp_path / "out"
    assert main(["replay", *served, "--data", str(stream[0]), *chains, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"embedtune: {message.format(tmp=tmp_path)}") and "\n" not in err, err
    assert not out.exists()
