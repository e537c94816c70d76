"""Transformer building blocks shared by the tokenizer and the predictor.

Names of modules and parameters match the published Kronos checkpoints exactly, so their
state dicts load strictly. Attention optionally reads and extends a key/value cache, which
is what makes token-by-token generation cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * weight, normalised in float32 even in half precision.

    Written out: on the CPU it gives the same bits as F.rms_norm in half its dispatches,
    which matters in the one-token generation step.
    """
    if x.dtype == torch.float32:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


class FeedForward(nn.Module):
    """SwiGLU without biases."""

    def __init__(self, d_model: int, ff_dim: int, dropout_p: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (base 10000, rotate-half convention)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        # Persistent: the published state dicts carry it.
        self.register_buffer("inv_freq", inv_freq)
        self._tables: tuple[torch.Tensor, torch.Tensor] | None = None

    def _load_from_state_dict(self, *args, **kwargs):
        self._tables = None  # new inv_freq, stale tables
        super()._load_from_state_dict(*args, **kwargs)

    def tables(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin for positions 0..n-1, shape (n, dim); see apply_rotary."""
        t = self._tables
        if (
            t is None
            or t[0].shape[0] < n
            or t[0].dtype != dtype
            or t[0].device != self.inv_freq.device
        ):
            size = max(256, 1 << (n - 1).bit_length())  # grow geometrically, not per step
            # Built as normal tensors even under inference_mode: the cache outlives it and
            # may serve a training pass later.
            with torch.inference_mode(False):
                pos = torch.arange(size, device=self.inv_freq.device).type_as(self.inv_freq)
                freqs = torch.outer(pos, self.inv_freq)
                emb = torch.cat((freqs, freqs), dim=-1)
                half = freqs.shape[-1]
                sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(emb)
                t = self._tables = (emb.cos().to(dtype), (emb.sin() * sign).to(dtype))
        return t[0][:n], t[1][:n]


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotate-half rotary: x * cos + cat(-x2, x1) * sin, with the sign folded into the sin
    table so that the half swap is a single roll (the same bits, fewer dispatches).
    ``out`` may be x itself: the products are taken before it is written."""
    return torch.add(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin, out=out)


class KVCache:
    """Keys and values of one attention layer during generation.

    Built from a window's keys and values (B, heads, L, head_dim); ``expand`` makes room for
    generated tokens. Appended tokens arrive as one tensor of keys then values, and each
    buffer is laid out (2, ...) with keys first, so that appending is a single copy.

    - One path per series: generated tokens follow the context in one buffer, and a step's
      attention is a single fused call.
    - Several paths: the context is computed once per series and shared in place by its
      paths; each path appends to its own part (2, B, heads, paths, capacity, head_dim),
      and attention reads both parts with batched matrix products, so sharing costs
      neither copies nor memory.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v  # what every path of a series attends to
        self.length = k.shape[2]  # filled tokens of k and v
        self.paths = 1
        self.kv = self.gen = None  # the append buffer: one path, or per-path parts
        self.n_gen = 0

    def expand(self, paths: int, capacity: int) -> KVCache:
        """Make room for ``capacity`` generated tokens in each of ``paths`` paths per series."""
        b, h, length, d = self.k.shape
        self.paths = paths
        if paths == 1:
            self.kv = self.k.new_empty(2, b, h, length + capacity, d)
            self.kv[0, :, :, :length], self.kv[1, :, :, :length] = self.k, self.v
            self.k, self.v = self.kv[0], self.kv[1]
            return self
        self.k, self.v = self.k.contiguous(), self.v.contiguous()
        self._ctx_kt = self.k.view(b * h, length, d).transpose(1, 2)
        self._ctx_v = self.v.view(b * h, length, d)
        self.gen = self.k.new_empty(2, b, h, paths, capacity, d)
        return self

    def append(self, kv: torch.Tensor) -> None:
        """kv: (B * paths, 2 * heads, 1, head_dim), the newest token's keys then values."""
        n, two_h, _, d = kv.shape
        if self.gen is not None and self.n_gen < self.gen.shape[4]:
            rows = kv.view(n // self.paths, self.paths, 2, two_h // 2, d)
            self.gen[:, :, :, :, self.n_gen] = rows.permute(2, 0, 3, 1, 4)
            self.n_gen += 1
        elif self.kv is not None and self.length < self.kv.shape[3]:
            self.kv[:, :, :, self.length] = kv.view(n, 2, two_h // 2, d).transpose(0, 1)
            self.length += 1
        else:
            raise RuntimeError("KVCache is full: expand() it with enough capacity")

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """Softmax attention of one query per row, q: (B * paths, heads, 1, head_dim)."""
        if self.gen is None:
            n = self.length
            return F.scaled_dot_product_attention(q, self.k[:, :, :n], self.v[:, :, :n])
        n, h, _, d = q.shape
        b, length, paths, g = self.k.shape[0], self.length, self.paths, self.n_gen
        q_bh = q.view(b, paths, h, d).transpose(1, 2).reshape(b * h, paths, d)
        scores = torch.bmm(q_bh, self._ctx_kt)  # (B * heads, paths, L)
        if g:
            gen_k = self.gen[0, :, :, :, :g].reshape(b * h * paths, g, d)
            gen_scores = torch.bmm(q_bh.reshape(b * h * paths, 1, d), gen_k.transpose(1, 2))
            scores = torch.cat([scores, gen_scores.view(b * h, paths, g)], dim=-1)
        probs = torch.softmax(scores * d**-0.5, dim=-1)
        out = torch.bmm(probs[..., :length], self._ctx_v)  # (B * heads, paths, d)
        if g:
            gen_v = self.gen[1, :, :, :, :g].reshape(b * h * paths, g, d)
            p_gen = probs[..., length:].reshape(b * h * paths, 1, g)
            out = out + torch.bmm(p_gen, gen_v).view(b * h, paths, d)
        return out.view(b, h, paths, d).transpose(1, 2).reshape(n, h, 1, d)


class _Attention(nn.Module):
    """Multi-head projections and rotary table shared by self- and cross-attention."""

    def __init__(
        self, d_model: int, n_heads: int, attn_dropout_p: float = 0.0, resid_dropout_p: float = 0.0
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)


class SelfAttention(_Attention):
    """Causal multi-head self-attention with rotary positions."""

    def forward(
        self, x: torch.Tensor, prefill: bool = False
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Causal attention over x, positions from 0. With ``prefill`` the keys and values
        come back as a cache for token-by-token generation (see generation.TokenStep)."""
        b, n, d = x.shape
        cos, sin = self.rotary.tables(n, x.dtype)
        q = apply_rotary(self._heads(self.q_proj(x)), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(x)), cos, sin)
        v = self._heads(self.v_proj(x))
        dropout = self.attn_dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.resid_dropout(self.out_proj(out)), (KVCache(k, v) if prefill else None)


class CrossAttention(_Attention):
    """Attention of query tokens over a sequence of hidden states, with rotary positions.

    Rotary tables have the query's length, so a single query gets no rotation at all
    (position 0), as in the published implementation.
    """

    def memory(self, hidden: torch.Tensor) -> KVCache:
        """Unrotated keys and values of hidden states, for single-query attention."""
        return KVCache(self._heads(self.k_proj(hidden)), self._heads(self.v_proj(hidden)))

    def forward(self, query: torch.Tensor, hidden: torch.Tensor, causal: bool) -> torch.Tensor:
        """Training form: query and hidden have the same length and both are rotated."""
        b, n, d = query.shape
        cos, sin = self.rotary.tables(n, query.dtype)
        q = apply_rotary(self._heads(self.q_proj(query)), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(hidden)), cos, sin)
        v = self._heads(self.v_proj(hidden))
        dropout = self.attn_dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(b, n, d)))

    def attend_one(self, query: torch.Tensor, memory: KVCache) -> torch.Tensor:
        """Inference form: one query token per row over the memory's keys and values."""
        b, _, d = query.shape
        out = memory.attend(self._heads(self.q_proj(query)))
        return self.out_proj(out.transpose(1, 2).reshape(b, 1, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: RMSNorm -> causal attention -> residual; RMSNorm -> SwiGLU -> residual."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        ffn_dropout_p: float = 0.0,
        attn_dropout_p: float = 0.0,
        resid_dropout_p: float = 0.0,
    ):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout_p)

    def forward(
        self, x: torch.Tensor, prefill: bool = False
    ) -> tuple[torch.Tensor, KVCache | None]:
        attn, cache = self.self_attn(self.norm1(x), prefill)
        x = x + attn
        return x + self.ffn(self.norm2(x)), cache
