"""What the trainer minimises: a module whose ``forward(x, stamp)`` returns the loss dict of
``KronosTokenizer.loss`` or ``Kronos.loss``, and whose ``trained`` is the module to update."""

from __future__ import annotations

import torch
from torch import nn


class TokenizerObjective(nn.Module):
    """Reconstruction from s1 and from the full code, plus the BSQ loss."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @property
    def trained(self) -> nn.Module:
        return self.tokenizer

    def forward(self, x, stamp):
        return self.tokenizer.loss(x)


class PredictorObjective(nn.Module):
    """Cross-entropy on s1 and s2 tokens (s1 teacher-forced) of a frozen tokenizer's codes."""

    def __init__(self, model, tokenizer):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer.eval().requires_grad_(False)

    @property
    def trained(self) -> nn.Module:
        return self.model

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no dropout in the encoder
        return self

    def forward(self, x, stamp):
        with torch.no_grad():
            s1, s2 = self.tokenizer.encode(x, half=True)
        return self.model.loss(s1, s2, stamp)
