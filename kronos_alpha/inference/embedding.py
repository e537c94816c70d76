"""Kronos embeddings of a window: the transformer's hidden states as features.

A window is normalised and tokenised exactly as for sampling (``data.sample_bars``), then
one forward pass of the transformer over its last ``max_context`` tokens gives the final
(RMS-normed) hidden states. Two summaries per window: the state at the decision time (the
last bar, what the first forecast token is predicted from) and the mean over the window.
No sampling is involved, so the features are a deterministic function of the window.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import normalize, scaler_stats, unit_scale


def embedding_columns(d_model: int) -> list[str]:
    return [f"emb_last_{i}" for i in range(d_model)] + [f"emb_mean_{i}" for i in range(d_model)]


@torch.no_grad()
def embed_bars(
    tokenizer, model, bars: np.ndarray, stamp: np.ndarray, max_context: int, clip: float
) -> np.ndarray:
    """Raw bars (B, L, 6) and stamps (B, L, 5) -> (B, 2 * d_model) float32: the last hidden
    state, then the mean hidden state over the (last max_context) bars."""
    bars, _ = unit_scale(bars)
    mean, std = scaler_stats(bars)
    x = normalize(bars, mean, std, clip)
    device = next(model.parameters()).device
    xt = torch.as_tensor(x, dtype=torch.float32, device=device).to(
        next(tokenizer.parameters()).dtype
    )
    s1, s2 = tokenizer.encode(xt, half=True)
    st = torch.as_tensor(stamp, device=device)
    keep = slice(max(0, s1.shape[1] - max_context), s1.shape[1])
    h, _ = model.hidden(s1[:, keep], s2[:, keep], st[:, keep])
    h = h.float()
    return torch.cat([h[:, -1], h.mean(1)], dim=1).cpu().numpy().astype(np.float32)
