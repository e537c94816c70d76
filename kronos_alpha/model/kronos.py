"""Kronos: the decoder-only transformer that predicts (s1, s2) token pairs.

s1 (coarse) comes from the last hidden state; s2 (fine) from a dependency layer in which
the embedding of the chosen s1 token attends over the hidden states of the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import HierarchicalEmbedding, TemporalEmbedding
from .hub import HubMixin
from .layers import CrossAttention, KVCache, RMSNorm, TransformerBlock


class DependencyAwareLayer(nn.Module):
    """s2 conditioning: RMSNorm(hidden + cross-attention(s1 embedding -> hidden states))."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        attn_dropout_p: float = 0.0,
        resid_dropout_p: float = 0.0,
    ):
        super().__init__()
        self.cross_attn = CrossAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm = RMSNorm(d_model)

    def forward(self, hidden: torch.Tensor, s1_embed: torch.Tensor) -> torch.Tensor:
        """Training form: causal, rotated, one query per position."""
        return self.norm(hidden + self.cross_attn(s1_embed, hidden, causal=True))


class DualHead(nn.Module):
    def __init__(self, s1_bits: int, s2_bits: int, d_model: int):
        super().__init__()
        self.vocab_s1, self.vocab_s2 = 2**s1_bits, 2**s2_bits
        self.proj_s1 = nn.Linear(d_model, self.vocab_s1)
        self.proj_s2 = nn.Linear(d_model, self.vocab_s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_s1(x)

    def cond_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_s2(x)


class Kronos(
    nn.Module,
    HubMixin,
    library_name="kronos-alpha",
    repo_url="https://github.com/shiyu-coder/Kronos",
    tags=["time-series", "finance", "kronos"],
):
    """Constructor arguments are those of the published ``config.json`` files."""

    def __init__(
        self,
        s1_bits: int,
        s2_bits: int,
        n_layers: int,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        ffn_dropout_p: float,
        attn_dropout_p: float,
        resid_dropout_p: float,
        token_dropout_p: float,
        learn_te: bool,
    ):
        super().__init__()
        self.s1_bits, self.s2_bits = s1_bits, s2_bits
        self.d_model, self.n_layers = d_model, n_layers
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.token_drop = nn.Dropout(token_dropout_p)
        self.transformer = nn.ModuleList(
            [
                TransformerBlock(
                    d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p
                )
                for _ in range(n_layers)
            ]
        )
        self.norm = RMSNorm(d_model)
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, mean=0, std=module.embedding_dim**-0.5)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def embed(self, s1: torch.Tensor, s2: torch.Tensor, stamp: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding(s1, s2)
        if stamp is not None:
            x = x + self.time_emb(stamp)
        return self.token_drop(x)

    def hidden(
        self, s1: torch.Tensor, s2: torch.Tensor, stamp: torch.Tensor | None, prefill: bool = False
    ) -> tuple[torch.Tensor, list[KVCache] | None]:
        """Final-normed hidden states of a window; with ``prefill`` also its per-layer caches."""
        x = self.embed(s1, s2, stamp)
        caches = []
        for layer in self.transformer:
            x, cache = layer(x, prefill)
            caches.append(cache)
        return self.norm(x), (caches if prefill else None)

    def decode_s1(self, s1, s2, stamp=None):
        """Full pass over a window: (s1 logits at every position, hidden states)."""
        h, _ = self.hidden(s1, s2, stamp)
        return self.head(h), h

    def decode_s2(self, hidden: torch.Tensor, s1_last: torch.Tensor) -> torch.Tensor:
        """s2 logits at the last position given the chosen s1 token, computed as published:
        the dependency layer and the s2 head run over every position of the window."""
        s1_embed = self.embedding.emb_s1(s1_last.reshape(-1, 1))
        attn = self.dep_layer.cross_attn.attend_one(
            s1_embed, self.dep_layer.cross_attn.memory(hidden)
        )
        return self.head.cond_forward(self.dep_layer.norm(hidden + attn))[:, -1]

    def forward(self, s1, s2, stamp=None, s1_targets=None):
        """Training pass: (s1 logits, s2 logits) at every position.

        With ``s1_targets`` the s2 branch is teacher-forced on them (as in the paper); without,
        it is conditioned on s1 tokens sampled from the model's own s1 distribution.
        """
        h, _ = self.hidden(s1, s2, stamp)
        s1_logits = self.head(h)
        if s1_targets is None:
            probs = F.softmax(s1_logits.detach(), dim=-1)
            s1_targets = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(
                probs.shape[:-1]
            )
        s2_logits = self.head.cond_forward(self.dep_layer(h, self.embedding.emb_s1(s1_targets)))
        return s1_logits, s2_logits

    def loss(self, s1, s2, stamp=None) -> dict[str, torch.Tensor]:
        """Next-token objective: inputs 0..T-2, targets 1..T-1, s1 teacher-forced."""
        s1_logits, s2_logits = self(
            s1[:, :-1], s2[:, :-1], None if stamp is None else stamp[:, :-1], s1[:, 1:]
        )
        ce_s1 = F.cross_entropy(s1_logits.reshape(-1, s1_logits.shape[-1]), s1[:, 1:].reshape(-1))
        ce_s2 = F.cross_entropy(s2_logits.reshape(-1, s2_logits.shape[-1]), s2[:, 1:].reshape(-1))
        return {"loss": (ce_s1 + ce_s2) / 2, "ce_s1": ce_s1, "ce_s2": ce_s2}
