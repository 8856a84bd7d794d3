"""``LinearBase`` (``model.linear_base``): the classical linear baseline's coefficients as a frozen term added to a
deep model's head outputs, so the network trains a residual over the linear model instead of rediscovering it by SGD.

Why: on a weak signal (a planted momentum of 0.05) a network trained by minibatch SGD learns each head's intercept
(the class prior) in a few steps and the slope slowly, and early stopping ends training before the slope is there;
its traded side was long on 70-98% of bars where the logistic regression's was long on ~65% (BENCHMARKS.md,
"learning"). The linear fit is the penalized optimum in closed form, so the deep model starts where the baseline
ends, and with its heads' output layers at zero and "no epochs" a candidate of early stopping, a network that only
adds noise is kept at nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from embedtune.models.classical import ClassicalModel

#: Log-probability given to a class the linear fit never saw (its probability there is 0; a finite floor keeps the
#: cross-entropy finite).
UNSEEN_LOGIT = -10.0
#: Each head's slice of the base's outputs, in the heads' output order.
SLOTS = {"direction": slice(0, 3), "volatility": slice(3, 4), "volume": slice(4, 5), "regime": slice(5, 10)}


class LinearBase(nn.Module):
    """(batch, window, features) -> each head's linear term from the latest row: class logits (log-probabilities of
    the multinomial fit) and regression values. Buffers, not parameters: saved with the model, never trained."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(10, n_features))
        self.register_buffer("bias", torch.zeros(10))

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        z = window[:, -1] @ self.weight.T + self.bias
        return {"direction": z[:, SLOTS["direction"]], "volatility": z[:, 3], "volume": z[:, 4],
                "regime": z[:, SLOTS["regime"]]}

    def load_classical(self, model: ClassicalModel) -> None:
        """Copy a fitted linear ``ClassicalModel``'s coefficients: multinomial logits for the class heads (a binary
        fit's single row as logits (0, z); unseen classes at ``UNSEEN_LOGIT``), ridge coefficients otherwise. A
        head that was not fitted (no labels) or fitted one class stays 0 / uniform over its seen class."""
        weight = np.zeros((10, self.weight.shape[1]))
        bias = np.zeros(10)
        for name, head in model.heads.items():
            slot = SLOTS[name]
            if not head.is_class_head:
                if head.coef is not None:
                    weight[slot.start], bias[slot.start] = head.coef, head.intercept[0]
                continue
            bias[slot] = UNSEEN_LOGIT
            seen = [slot.start + c for c in head.classes]
            if head.constant is not None:
                bias[seen] = 0.0
            elif head.coef is None or head.intercept is None:
                raise ValueError(f"linear base: head {name} has no linear coefficients ({model.kind} model)")
            elif head.coef.shape[0] == 1:  # sklearn's binary fit: logit of the second class over the first
                bias[seen[0]], bias[seen[1]] = 0.0, head.intercept[0]
                weight[seen[1]] = head.coef[0]
            else:
                weight[seen], bias[seen] = head.coef, head.intercept
        self.weight.copy_(torch.from_numpy(weight).to(self.weight.dtype))
        self.bias.copy_(torch.from_numpy(bias).to(self.bias.dtype))


def zero_outputs(heads: nn.Module) -> None:
    """Each head's last linear layer to zero, so a fresh network adds exactly nothing to the linear base."""
    for name in SLOTS:
        last = getattr(heads, name)[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
