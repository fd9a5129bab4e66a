"""Optimizers and learning-rate schedules.

The learning rate of update ``n`` (counted from 1) is computed from the config every update::

    lr(n) = max(train.lr * warmup(n) * shape(n) * decay, train.min_lr)

    warmup(n) = n / warmup_updates while n < warmup_updates, else 1
    shape(n)  = sqrt(warmup_updates / n) after the warm-up for ``inverse_sqrt`` (Vaswani et al.
                2017, eq. 3, the "Noam" schedule), else 1
    decay     = decay_factor ** k, where k counts
                  ``plateau``: validations after which the validation metric had not improved
                               for ``plateau_patience`` validations in a row (then the count
                               restarts), as torch's ReduceLROnPlateau;
                  ``halving``: epochs ended from epoch ``halve_after_epoch`` on (Luong et al.
                               2015: "after 5 epochs, we begin to halve the learning rate every
                               epoch").

Only ``decay`` and the plateau counter are state (saved in checkpoints); everything else comes
from the config, so a resumed run that changes ``train.lr`` uses the new rate from its next update.
"""

from __future__ import annotations

from typing import Any

import torch

from seq2seq.choices import OPTIMIZERS, SCHEDULES
from seq2seq.config import TrainConfig


def build_optimizer(t: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``train.optimizer``, fused where torch has a fused kernel for it on the
    parameters' device: one pass over all parameters per step instead of a loop of small
    operations per tensor (about 10x faster for Adam on a CPU, docs/performance.md)."""
    params = [p for p in model.parameters() if p.requires_grad]
    choice = OPTIMIZERS.get(t.optimizer)
    cls = getattr(torch.optim, choice.torch_class)
    try:
        return cls(params, lr=t.lr, fused=True, **choice.arguments(t))
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or class
        return cls(params, lr=t.lr, **choice.arguments(t))


class LRSchedule:
    def __init__(self, t: TrainConfig, optimizer: torch.optim.Optimizer):
        self.t, self.optimizer = t, optimizer
        self.kind = SCHEDULES.get(t.schedule)
        self.decay = 1.0
        self.bad_validations = 0  # plateau: validations in a row without improvement

    def factor(self, n: int) -> float:
        warm = self.t.warmup_updates
        if warm and n < warm:
            return n / warm
        return self.kind.shape(n, self.t)

    def lr(self, n: int) -> float:
        return max(self.t.lr * self.factor(n) * self.decay, self.t.min_lr)

    def set(self, n: int) -> float:
        """Set the rate of update ``n`` in the optimizer; returns it."""
        lr = self.lr(n)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def after_validation(self, improved: bool) -> None:
        if not self.kind.decays_on_plateau:
            return
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations >= self.t.plateau_patience:
            self.decay *= self.t.decay_factor
            self.bad_validations = 0

    def after_epoch(self, epoch: int) -> None:
        if self.kind.decays_each_epoch and epoch >= self.t.halve_after_epoch:
            self.decay *= self.t.decay_factor

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.bad_validations = int(state["bad_validations"])
