"""Per-fold scaling and the windowed torch dataset. Scalers are fit on the training segment only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

REGRESSION_COLUMNS = (1, 2)  # volatility, volume in the label matrix
CLIP = 10.0


@dataclass(frozen=True)
class FoldScaler:
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, train: np.ndarray, window: int) -> "FoldScaler":
        rows = features[max(int(train.min()) - window + 1, 0): int(train.max()) + 1]
        mean = np.nanmean(rows, axis=0)
        std = np.nanstd(rows, axis=0)
        targets = labels[train][:, REGRESSION_COLUMNS]
        return cls(
            feature_mean=mean, feature_std=np.where(std > 1e-12, std, 1.0),
            target_mean=np.nanmean(targets, axis=0), target_std=np.maximum(np.nanstd(targets, axis=0), 1e-12),
        )

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


class WindowDataset(Dataset):
    """Sample i is the feature window ending at bar ``positions[i]`` and that bar's labels."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, positions: np.ndarray, window: int) -> None:
        self.features = features
        self.labels = labels
        self.positions = torch.as_tensor(positions, dtype=torch.long)
        self.offsets = torch.arange(-window + 1, 1)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.positions[i]
        return self.features[t + self.offsets], self.labels[t]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectorized gather of many samples at once (faster than a DataLoader for small models)."""
        t = self.positions[idx]
        return self.features[t[:, None] + self.offsets[None, :]], self.labels[t]
