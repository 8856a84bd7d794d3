"""Multi-task heads on one embedding and the weighted loss sum(lambda_i * L_i)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embedtune.labels import label_column

N_DIRECTION = 3
N_REGIME = 5
TASKS = ("direction", "volatility", "volume", "regime")


class MultiTaskHeads(nn.Module):
    def __init__(self, embedding_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(embedding_dim, 8)

        def head(out: int) -> nn.Module:
            return nn.Sequential(nn.GELU(), nn.Linear(embedding_dim, hidden), nn.GELU(), nn.Linear(hidden, out))

        self.direction = head(N_DIRECTION)
        self.volatility = head(1)
        self.volume = head(1)
        self.regime = head(N_REGIME)

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "direction": self.direction(embedding),
            "volatility": self.volatility(embedding).squeeze(-1),
            "volume": self.volume(embedding).squeeze(-1),
            "regime": self.regime(embedding),
        }


@dataclass(frozen=True)
class TaskLosses:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def multitask_loss(outputs: dict[str, torch.Tensor], targets: torch.Tensor, lambdas: dict[str, float],
                   direction_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> TaskLosses:
    """Cross-entropy for the class heads, MSE for the standardized regression heads; ``targets`` is (batch, 4).

    ``direction_weights`` (per direction class) and ``label_smoothing`` touch the direction cross-entropy only, so a
    rare direction class is not simply never predicted (``training.direction_class_weights``) and the head is not
    pushed to overconfidence (``training.label_smoothing``). With a weight, the mean is ``F.cross_entropy``'s: the
    weighted sum over the batch divided by the sum of the targets' weights. The defaults call ``F.cross_entropy``
    exactly as before, so the loss is bit-identical to the unweighted, unsmoothed one."""
    if direction_weights is None and label_smoothing == 0.0:
        direction = F.cross_entropy(outputs["direction"], targets[:, label_column("direction")].long())
    else:
        direction = F.cross_entropy(outputs["direction"], targets[:, label_column("direction")].long(),
                                    weight=direction_weights,
                                    label_smoothing=label_smoothing)
    parts = {
        "direction": direction,
        "volatility": F.mse_loss(outputs["volatility"], targets[:, label_column("volatility")]),
        "volume": F.mse_loss(outputs["volume"], targets[:, label_column("volume")]),
        "regime": F.cross_entropy(outputs["regime"], targets[:, label_column("regime")].long()),
    }
    total = sum(lambdas[name] * loss for name, loss in parts.items())
    return TaskLosses(total=total, parts=parts)  # type: ignore[arg-type]
