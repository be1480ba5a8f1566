"""An exponential moving average of a model's weights, for evaluation and the saved checkpoint.

Small data trained from scratch gives noisy weights from step to step; their running average is
usually a steadier and often better model. The time constant is given in epochs, so the same
setting means the same thing for any data size and batch size.
"""

from __future__ import annotations

import copy

import torch

from ..checkpoint import unwrap


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay whose time constant is ``epochs`` epochs: ``1 - 1 / (epochs * steps_per_epoch)``."""
    return max(0.0, 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch))


class EMA:
    """``average = decay * average + (1 - decay) * weights`` after every optimiser step.

    Parameters and floating-point buffers (BatchNorm statistics) are averaged; integer buffers
    (step counters) are copied. ``model`` is a plain copy of the trained module, in eval mode.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self._pairs = self._tensors(self.model)

    @staticmethod
    def _tensors(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        tensors = [*model.parameters(), *model.buffers()]
        return [t for t in tensors if t.is_floating_point()], [t for t in tensors if not t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights (one fused update on the device)."""
        floats, others = self._tensors(unwrap(model))
        torch._foreach_lerp_(self._pairs[0], [t.detach() for t in floats], 1.0 - self.decay)
        for mine, theirs in zip(self._pairs[1], others):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed as the model's own state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict`."""
        self.model.load_state_dict(state)
