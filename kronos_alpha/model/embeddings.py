"""Token and calendar embeddings of the Kronos predictor."""

from __future__ import annotations

import math

import torch
from torch import nn

# Calendar fields, in the order of the stamp columns: minute, hour, weekday, day, month.
TIME_FIELDS = (("minute", 60), ("hour", 24), ("weekday", 7), ("day", 32), ("month", 13))


class HierarchicalEmbedding(nn.Module):
    """Embeds (s1, s2) token pairs: both scaled by sqrt(d_model), concatenated, fused."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2**s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2**s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)
        nn.init.normal_(self.emb_s1.weight, mean=0, std=d_model**-0.5)
        nn.init.normal_(self.emb_s2.weight, mean=0, std=d_model**-0.5)

    def forward(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.d_model)
        return self.fusion_proj(
            torch.cat([self.emb_s1(s1) * scale, self.emb_s2(s2) * scale], dim=-1)
        )


class FixedEmbedding(nn.Module):
    """A frozen sinusoidal table (used when learn_te is false)."""

    def __init__(self, size: int, d_model: int):
        super().__init__()
        w = torch.zeros(size, d_model)
        position = torch.arange(size).float().unsqueeze(1)
        div_term = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
        w[:, 0::2] = torch.sin(position * div_term)
        w[:, 1::2] = torch.cos(position * div_term)
        self.emb = nn.Embedding(size, d_model)
        self.emb.weight = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).detach()


class TemporalEmbedding(nn.Module):
    """Sum of the five calendar-field embeddings of each bar."""

    def __init__(self, d_model: int, learn_te: bool):
        super().__init__()
        table = nn.Embedding if learn_te else FixedEmbedding
        self.minute_embed = table(60, d_model)
        self.hour_embed = table(24, d_model)
        self.weekday_embed = table(7, d_model)
        self.day_embed = table(32, d_model)
        self.month_embed = table(13, d_model)

    def forward(self, stamp: torch.Tensor) -> torch.Tensor:
        """stamp: (..., 5) with minute, hour, weekday, day, month."""
        s = stamp.long()
        # Summation order kept as published, for bit-level agreement.
        return (
            self.hour_embed(s[..., 1])
            + self.weekday_embed(s[..., 2])
            + self.day_embed(s[..., 3])
            + self.month_embed(s[..., 4])
            + self.minute_embed(s[..., 0])
        )
