"""Learned homoscedastic uncertainty weighting of task losses (Kendall, Gal & Cipolla, CVPR 2018).

Hand-set lambdas need a search per dataset; instead each task gets a learned log-variance s_i = log(sigma_i^2) and
the total loss trades each task's loss against its own noise level. Two documented forms:

* ``"simplified"`` (default), the form most implementations use::

      total = sum_i exp(-s_i) * L_i + s_i

  At the optimum s_i = log(L_i), so the effective weight exp(-s_i) = 1 / L_i: noisier tasks get smaller weights.

* ``"kendall"``, the paper's eqs. (7) and (10), with Gaussian likelihood for regression tasks (L_i an MSE) and a
  temperature-scaled softmax for classification tasks (L_i a cross-entropy)::

      regression:      0.5 * exp(-s_i) * L_i + 0.5 * s_i      (= L_i / (2 sigma^2) + log sigma)
      classification:        exp(-s_i) * L_i + 0.5 * s_i      (= L_i / sigma^2     + log sigma)

  Optima: s_i = log(L_i) for regression, s_i = log(2 L_i) for classification.

The log-variances should not be weight-decayed (decay pulls them to 0, i.e. back to fixed unit weights): put
``UncertaintyWeighting.parameters()`` in an optimizer group with ``weight_decay=0``.
"""
from __future__ import annotations

from typing import Collection, Literal, Sequence

import torch
from torch import nn

from embedtune.models.heads import TASKS

REGRESSION_TASKS = ("volatility", "volume")


class UncertaintyWeighting(nn.Module):
    """``forward(parts)`` maps per-task losses (scalars) to the weighted total; see the module docstring."""

    def __init__(
        self, tasks: Sequence[str] = TASKS, form: Literal["simplified", "kendall"] = "simplified",
        regression: Collection[str] = REGRESSION_TASKS, init_log_var: float = 0.0,
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"uncertainty weighting: tasks must be non-empty and distinct, got {list(tasks)}")
        if form not in ("simplified", "kendall"):
            raise ValueError(f"uncertainty weighting: form must be 'simplified' or 'kendall', got {form!r}")
        self.form = form
        is_regression = torch.tensor([task in regression for task in self.tasks])
        if form == "simplified":
            loss_scale, log_var_scale = torch.ones(len(self.tasks)), torch.ones(len(self.tasks))
        else:
            loss_scale = torch.where(is_regression, 0.5, 1.0)
            log_var_scale = torch.full((len(self.tasks),), 0.5)
        self.register_buffer("loss_scale", loss_scale)
        self.register_buffer("log_var_scale", log_var_scale)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        if set(parts) != set(self.tasks):
            raise ValueError(f"uncertainty weighting: got losses for {sorted(parts)}, expected {list(self.tasks)}")
        losses = torch.stack([parts[task] for task in self.tasks])
        precision = torch.exp(-self.log_vars)
        return (self.loss_scale * precision * losses + self.log_var_scale * self.log_vars).sum()

    @torch.no_grad()
    def effective_lambdas(self) -> dict[str, float]:
        """The multiplier each task's loss currently gets, comparable to the fixed ``training.lambdas``."""
        weights = self.loss_scale * torch.exp(-self.log_vars)
        return {task: float(w) for task, w in zip(self.tasks, weights)}

    @torch.no_grad()
    def log_variances(self) -> dict[str, float]:
        return {task: float(s) for task, s in zip(self.tasks, self.log_vars)}
