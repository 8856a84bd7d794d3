"""Per-fold scaling and the windowed torch dataset. Scalers are fit on the training segment only."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data

from embedtune.chains.tensorize import ChainTensors
from embedtune.labels import label_column

#: The regression heads' columns in the label matrix (volatility, volume).
REGRESSION_COLUMNS = (label_column("volatility"), label_column("volume"))
CLIP = 10.0


@dataclass(frozen=True)
class FoldScaler:
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, train: np.ndarray, window: int,
            window_index: np.ndarray | None = None) -> "FoldScaler":
        """Feature statistics over exactly the rows the training samples' input windows read (see
        ``window_rows``), target statistics over the training labels.

        Not the span ``train.min() - window + 1 .. train.max()``: under CPCV the training samples lie on both sides
        of the test groups, and that span would put the test groups' features into the scaler. ``window_index``:
        a universe's windows (``panel_window_index``), None for one instrument's contiguous ones. A regression
        target without any label (a close-only universe's volume) gets mean 0 and std 1: nothing to scale."""
        rows = features[window_rows(train, window, len(features), window_index)]
        mean = np.nanmean(rows, axis=0)
        std = np.nanstd(rows, axis=0)
        targets = labels[train][:, REGRESSION_COLUMNS]
        known = np.isfinite(targets).any(axis=0)
        if known.all():  # one instrument always: the statistics exactly as they always were
            target_mean, target_std = np.nanmean(targets, axis=0), np.maximum(np.nanstd(targets, axis=0), 1e-12)
        else:
            filled = np.where(known, targets, 0.0)  # columns without labels: 0, replaced just below (no warning)
            target_mean = np.where(known, np.nanmean(filled, axis=0), 0.0)
            target_std = np.where(known, np.maximum(np.nanstd(filled, axis=0), 1e-12), 1.0)
        return cls(feature_mean=mean, feature_std=np.where(std > 1e-12, std, 1.0),
                   target_mean=target_mean, target_std=target_std)

    def features(self, features: np.ndarray) -> np.ndarray:
        scaled = np.clip((features - self.feature_mean) / self.feature_std, -CLIP, CLIP)
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)

    def targets(self, labels: np.ndarray) -> np.ndarray:
        out = labels.astype(np.float32).copy()
        out[:, REGRESSION_COLUMNS] = (labels[:, REGRESSION_COLUMNS] - self.target_mean) / self.target_std
        return out

    def unscale_regression(self, values: np.ndarray, column: int) -> np.ndarray:
        slot = REGRESSION_COLUMNS.index(column)
        return values * self.target_std[slot] + self.target_mean[slot]


def window_rows(train: np.ndarray, window: int, n_rows: int, window_index: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the rows covered by the input windows of ``train`` (rows t-window+1..t for each sample t, or
    the rows ``window_index[t]`` names on a universe).

    Vectorized with a difference array: +1 where a window starts, -1 one past where it ends; a row is covered where
    the running sum is positive. For a contiguous training set (walk-forward) it is the one span before it."""
    train = np.asarray(train, dtype=np.int64)
    if window_index is not None:
        covered = np.zeros(n_rows, dtype=bool)
        covered[window_index[train].ravel()] = True
        return covered
    starts = np.maximum(train - window + 1, 0)
    edges = np.bincount(starts, minlength=n_rows + 1) - np.bincount(train + 1, minlength=n_rows + 1)
    return np.cumsum(edges[:n_rows]) > 0


def panel_window_index(symbol_code: np.ndarray, window: int) -> np.ndarray:
    """Row ids of each row's input window on a universe: the same symbol's ``window`` latest rows up to it, oldest
    first, (n_rows, window) int64.

    Rows are a universe's long frame (timestamp-major, ``features.panel.panel_index``), so a symbol's rows are not
    contiguous and one instrument's ``t - window + 1 .. t`` would mix symbols. Within a symbol the rows are in time
    order; a window that would reach before the symbol's first row repeats that row (such rows are no samples: their
    windows are not full, ``panel_dataset.usable_panel_rows``). One instrument's rows are one symbol, and its index is
    ``t - window + 1 .. t`` wherever the window is full."""
    code = np.asarray(symbol_code, dtype=np.int64)
    order = np.argsort(code, kind="stable")  # symbol-major, time order kept within a symbol
    sorted_code = code[order]
    starts = np.flatnonzero(np.r_[True, sorted_code[1:] != sorted_code[:-1]])
    group_start = starts[np.cumsum(np.r_[True, sorted_code[1:] != sorted_code[:-1]]) - 1]
    place = np.arange(len(code), dtype=np.int64)
    offsets = np.arange(-window + 1, 1, dtype=np.int64)
    source = np.maximum(place[:, None] + offsets[None, :], group_start[:, None])
    out = np.empty((len(code), window), dtype=np.int64)
    out[order] = order[source]
    return out


def scale_chains(chains: ChainTensors | None, train_bars: np.ndarray) -> ChainTensors | None:
    """Standardize per-option features with the real options of the snapshots the training bars can see.

    Option features live on very different scales (IV differences ~0.01, log open interest ~5); without this, a
    small but informative feature is drowned. Statistics come from training snapshots only.
    """
    if chains is None:
        return None
    seen = np.unique(chains.snapshot_for_bar[train_bars])
    seen = seen[seen >= 0]
    real = chains.features[seen][chains.mask[seen]]
    if len(real) == 0:
        return chains
    mean, std = real.mean(axis=0), real.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    scaled = np.clip((chains.features - mean) / std, -CLIP, CLIP) * chains.mask[..., None]
    return replace(chains, features=scaled.astype(np.float32))


def scale_graphs(graphs: list[Data] | None, chains: ChainTensors | None) -> list[Data] | None:
    """Graphs whose node features are the scaled chain features (same options, same order as the tensors)."""
    if graphs is None or chains is None:
        return graphs
    out = []
    for s, graph in enumerate(graphs):  # build_graphs returns one graph per snapshot, in snapshot order
        scaled = graph.clone()
        scaled.x = torch.as_tensor(chains.features[s][chains.mask[s]])
        out.append(scaled)
    return out


class WindowDataset(Dataset):
    """Sample i is the feature window ending at bar ``positions[i]``, that bar's labels, and (for the ensemble) the
    option-chain snapshot and graph visible at that bar."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, positions: np.ndarray, window: int,
                 chains: ChainTensors | None = None, graphs: list[Data] | None = None,
                 window_index: np.ndarray | None = None, symbols: np.ndarray | None = None) -> None:
        self.features = features
        self.labels = labels
        self.positions = torch.as_tensor(positions, dtype=torch.long)
        self.offsets = torch.arange(-window + 1, 1)
        #: A universe's windows (``panel_window_index``; None: one instrument's contiguous rows) and each row's symbol
        #: code (``symbol`` in the inputs, for ``model.symbol_embedding``; None: not given).
        self.window_index = torch.as_tensor(window_index, dtype=torch.long) if window_index is not None else None
        self.symbols = torch.as_tensor(symbols, dtype=torch.long) if symbols is not None else None
        self.chains = chains
        self.graphs = graphs
        if chains is not None:
            self.snapshot_for_bar = torch.as_tensor(chains.snapshot_for_bar, dtype=torch.long)
            self.chain_x = torch.as_tensor(chains.features)
            self.chain_mask = torch.as_tensor(chains.mask)
            self.chain_rank = torch.as_tensor(chains.strike_rank, dtype=torch.long)
            self.chain_tte = torch.as_tensor(chains.tte)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], torch.Tensor]:
        return self.batch(torch.tensor([i]))

    def inputs_at(self, bars: torch.Tensor) -> dict[str, Any]:
        """Model inputs for samples ending at these bar positions (vectorized gather; each snapshot once)."""
        rows = bars[:, None] + self.offsets[None, :] if self.window_index is None else self.window_index[bars]
        inputs: dict[str, Any] = {"window": self.features[rows]}
        if self.symbols is not None:
            inputs["symbol"] = self.symbols[bars]
        if self.chains is not None:
            snapshots = self.snapshot_for_bar[bars]
            unique, index = torch.unique(snapshots.clamp(min=0), return_inverse=True)
            inputs.update(chain_index=index, chain_valid=snapshots >= 0, chain_x=self.chain_x[unique],
                          chain_mask=self.chain_mask[unique], chain_rank=self.chain_rank[unique],
                          chain_tte=self.chain_tte[unique])
            if self.graphs is not None:
                inputs["graph"] = Batch.from_data_list([self.graphs[s] for s in unique.tolist()])
        return inputs

    def batch(self, idx: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        t = self.positions[idx]
        return self.inputs_at(t), self.labels[t]


def move(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) for k, v in inputs.items()}
