"""Autoregressive generation of (s1, s2) tokens: the cached engine and the reference loop.

Window semantics (those of the published implementation): at most ``max_context`` tokens
are fed. While context + generated tokens fit, positions count from the first context
token, so a key/value cache is exact: the context is processed once and each step feeds
one token. Once they no longer fit, the window slides by one token per step and positions
restart at its start, so every hidden state changes and the window is recomputed.

``generate_reference`` is the plain full-recompute loop, kept to check and time the engine.
From bars to tokens and from tokens back to bars: ``paths.sample_paths``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .step import TokenStep


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k filtering when top_k > 0, otherwise nucleus filtering when top_p < 1."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cum > top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
        drop[..., 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, uniform: torch.Tensor | None
) -> torch.Tensor:
    """One token per row. With ``uniform`` (one U(0,1) per row) sampling is an inverse-CDF
    draw, so each row's result depends only on its own random number."""
    if top_k == 1 or temperature == 0:
        return logits.argmax(-1)  # greedy: top-1 filtering, or the zero-temperature limit
    probs = F.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    if uniform is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    cdf = torch.cumsum(probs, dim=-1)
    target = (uniform.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # Rounding can put the target at the very top of the cdf: take the last kept token.
    last_kept = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(-1)
    return torch.minimum(index, last_kept)


def series_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (e.g. a global seed and a series number)."""
    return int(
        np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )


def window_seed(seed: int, instrument, t) -> int:
    """The random stream of one forecast window: a function of (seed, instrument, decision
    time) only, so it does not depend on batch, rank or cache."""
    key = int.from_bytes(hashlib.sha256(str(instrument).encode()).digest()[:8], "little")
    return series_seed(seed, key, pd.Timestamp(t).value)


def uniforms_for_seeds(seeds, sample_count: int, pred_len: int) -> torch.Tensor:
    """Per-series random numbers (series, sample, step, s1/s2) from independent generators,
    so a series' draw does not depend on which other series share its batch."""
    out = torch.empty(len(seeds), sample_count, pred_len, 2)
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed) % (2**63))
        out[i] = torch.rand(sample_count, pred_len, 2, generator=g)
    return out


class _Sampler:
    def __init__(self, temperature, top_k, top_p, uniforms, n_rows):
        self.t, self.k, self.p = temperature, top_k, top_p
        self.u = None if uniforms is None else uniforms.reshape(n_rows, -1, 2)

    def __call__(self, logits, step, which):
        u = None if self.u is None else self.u[:, step, which]
        return sample_tokens(logits, self.t, self.k, self.p, u)


def _steps(pred_len: int, progress: bool):
    """The generation steps, with a tqdm bar when asked (upstream's ``verbose``)."""
    return tqdm(range(pred_len), desc="generating", leave=False, disable=not progress)


def _validate(s1, stamp, future_stamp, pred_len, max_context):
    if pred_len <= 0:
        raise ValueError(f"pred_len must be positive, got {pred_len}")
    if max_context <= 0:
        raise ValueError(f"max_context must be positive, got {max_context}")
    if stamp.shape[:2] != s1.shape or future_stamp.shape[:2] != (s1.shape[0], pred_len):
        raise ValueError(
            f"stamp shapes {tuple(stamp.shape)}, {tuple(future_stamp.shape)} do not fit "
            f"tokens {tuple(s1.shape)} and pred_len {pred_len}"
        )


def _path_rows(s1, s2, stamp, future_stamp, pred_len: int, sample_count: int):
    """Token buffers (context, then room for pred_len tokens) and the stamps of the whole
    span, one row per sampled path, series-major (row = b * sample_count + s)."""
    pad = s1.new_zeros(s1.shape[0], pred_len)
    return tuple(
        torch.cat(parts, dim=1).repeat_interleave(sample_count, 0)
        for parts in ((s1, pad), (s2, pad), (stamp, future_stamp))
    )


@torch.inference_mode()
def generate(
    model,
    s1: torch.Tensor,
    s2: torch.Tensor,
    stamp: torch.Tensor,
    future_stamp: torch.Tensor,
    pred_len: int,
    max_context: int,
    sample_count: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    uniforms: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached generation. s1, s2: (B, L) context tokens; stamp (B, L, 5); future_stamp
    (B, pred_len, 5). Returns (s1, s2) of shape (B * sample_count, L + pred_len), rows
    ordered series-major (row = b * sample_count + s)."""
    _validate(s1, stamp, future_stamp, pred_len, max_context)
    B, L = s1.shape
    S = sample_count
    sample = _Sampler(temperature, top_k, top_p, uniforms, B * S)
    tok1, tok2, all_stamp_rows = _path_rows(s1, s2, stamp, future_stamp, pred_len, S)

    # Step 0 sees the same window for every path of a series: compute it once per series.
    start = max(0, L - max_context)
    cached = L < max_context  # room left to append at least one token
    capacity = min(max_context, L + pred_len - 1) - L if cached else 0
    step = TokenStep(model, L + capacity)
    h, caches = step.window(s1[:, start:], s2[:, start:], stamp[:, start:], prefill=cached)
    h_last = h[:, -1].repeat_interleave(S, 0)
    if cached:
        caches = [c.expand(S, capacity) for c in caches]
        memory = step.memory(h).expand(S, capacity)
        # Calendar embeddings of the generated positions, once (the same sums as embed()).
        future_time = model.time_emb(future_stamp).repeat_interleave(S, 0)
    else:
        memory = step.memory(h.repeat_interleave(S, 0))

    t1 = t2 = None  # the tokens of the previous step
    for i in _steps(pred_len, progress):
        n = L + i  # tokens before the one generated in this step
        if i > 0:
            if n <= max_context:  # append the previous token to the cached window
                h_last = step.hidden(t1, t2, future_time[:, i - 1], n - 1, caches, memory)
            else:  # the window slides: positions restart at its start, recompute it
                w = slice(n - max_context, n)
                h, _ = step.window(tok1[:, w], tok2[:, w], all_stamp_rows[:, w])
                h_last = h[:, -1]
                memory = step.memory(h)
        t1 = sample(step.s1_logits(h_last), i, 0)
        t2 = sample(step.s2_logits(h_last, t1, memory), i, 1)
        tok1[:, n], tok2[:, n] = t1, t2
    return tok1, tok2


@torch.inference_mode()
def generate_reference(
    model,
    s1,
    s2,
    stamp,
    future_stamp,
    pred_len,
    max_context,
    sample_count=1,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    uniforms=None,
    progress=False,
):
    """The published algorithm: every step recomputes the whole window from scratch."""
    _validate(s1, stamp, future_stamp, pred_len, max_context)
    L = s1.shape[1]
    sample = _Sampler(temperature, top_k, top_p, uniforms, s1.shape[0] * sample_count)
    tok1, tok2, all_stamp = _path_rows(s1, s2, stamp, future_stamp, pred_len, sample_count)
    for i in _steps(pred_len, progress):
        n = L + i
        w = slice(max(0, n - max_context), n)
        logits, h = model.decode_s1(tok1[:, w], tok2[:, w], all_stamp[:, w])
        t1 = sample(logits[:, -1], i, 0)
        t2 = sample(model.decode_s2(h, t1), i, 1)
        tok1[:, n], tok2[:, n] = t1, t2
    return tok1, tok2
