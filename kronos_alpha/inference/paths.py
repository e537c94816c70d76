"""Sampled paths: normalised bars -> tokens -> generated tokens -> decoded bars.

``sample_paths`` tokenises a batch of contexts, generates (``generation.generate``, or the
published full-recompute loop) and decodes the forecast rows. ``decode_paths`` is the
decoding: after generation every path of a series holds the same context tokens followed
by its own generated ones, and the tokenizer's decoder is causal, so the decoded context
rows are the same in every path and only the generated rows are the forecast. The window's
context prefix therefore runs through the decoder once per series (keeping each layer's
keys and values, and skipping what no forecast row reads: the last layer's prefix outputs
and the head), and only the generated rows of each path run against those keys and values.

It is the same arithmetic as decoding every path's whole window: row by row the same
products and the same fused attention kernel over the same key length (the prefix queries
causal over the window's keys, whose not-yet-known suffix is zero and masked; the suffix
queries with a lower-right causal mask). Products over fewer rows may still be blocked
differently by the BLAS, so the results agree to float rounding (about 1e-7 of the
values' scale) and are often bit-identical; ``tests/test_decode.py`` checks both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model.layers import apply_rotary
from . import generation
from .graphs import generate_graphed


def _attention_inputs(block, x, cos, sin, queries: bool = True):
    """Rotated queries (None without ``queries``) and keys, and values, of one decoder
    block over rows x."""
    attn = block.self_attn
    h = block.norm1(x)
    q = apply_rotary(attn._heads(attn.q_proj(h)), cos, sin) if queries else None
    k = apply_rotary(attn._heads(attn.k_proj(h)), cos, sin)
    return q, k, attn._heads(attn.v_proj(h))


def _finish(block, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The block after attention: output projection, residual, feed-forward, residual."""
    b, n, d = x.shape
    x = x + block.self_attn.out_proj(out.transpose(1, 2).reshape(b, n, d))
    return x + block.ffn(block.norm2(x))


@torch.no_grad()
def decode_paths(tokenizer, s1: torch.Tensor, s2: torch.Tensor, prefix: int, paths: int):
    """``tokenizer.decode((s1, s2))[:, prefix:]`` for token windows s1, s2 (B * paths, W),
    rows series-major, whose first ``prefix`` tokens are the same in every path of a
    series: the prefix is decoded once per series, not once per path."""
    w = s1.shape[1]
    if paths == 1 or not 0 < prefix < w:  # nothing shared: the plain decode
        return tokenizer.decode((s1, s2), half=True)[:, prefix:]
    code = tokenizer.tokenizer.index_to_code((s1, s2), half=True)
    zp = tokenizer.post_quant_embed(code[::paths, :prefix])  # (B, prefix, d)
    zs = tokenizer.post_quant_embed(code[:, prefix:])  # (B * paths, W - prefix, d)
    suffix_mask = torch.ones(w - prefix, w, dtype=torch.bool, device=s1.device).tril(prefix)
    pad = (0, 0, 0, w - prefix)  # the prefix's keys, zero where the suffix's will be
    layers = list(tokenizer.decoder)
    kv = None  # every path's keys and values: its series' prefix, then its own rows
    for i, block in enumerate(layers):
        last = i + 1 == len(layers)  # the prefix only lends its keys and values
        cos, sin = block.self_attn.rotary.tables(w, zs.dtype)
        qp, kp, vp = _attention_inputs(block, zp, cos[:prefix], sin[:prefix], not last)
        qs, ks, vs = _attention_inputs(block, zs, cos[prefix:], sin[prefix:])
        if kv is None:  # one buffer, rewritten by every layer: a fresh one per layer (33
            # MB for 160 paths of 100 rows) came from the OS each time, and faulting its
            # pages in made filling it take 4x longer than the copy itself
            kv = ks.new_empty(2, ks.shape[0], ks.shape[1], w, ks.shape[3])
        shared = kv[:, :, :, :prefix].unflatten(1, (-1, paths))  # (2, B, paths, ...)
        shared[0], shared[1] = kp.unsqueeze(1), vp.unsqueeze(1)
        kv[0, :, :, prefix:], kv[1, :, :, prefix:] = ks, vs
        out = F.scaled_dot_product_attention(qs, kv[0], kv[1], attn_mask=suffix_mask)
        if not last:  # the prefix rows feed the next layer's keys and values
            out_p = F.scaled_dot_product_attention(
                qp, F.pad(kp, pad), F.pad(vp, pad), is_causal=True
            )
            zp = _finish(block, zp, out_p)
        zs = _finish(block, zs, out)
    return tokenizer.head(zs)


@torch.no_grad()
def sample_paths(
    tokenizer,
    model,
    x: np.ndarray,
    x_stamp: np.ndarray,
    y_stamp: np.ndarray,
    max_context: int,
    sample_count: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    uniforms: torch.Tensor | None = None,
    reference: bool = False,
    progress: bool = False,
    graphs: bool = False,
) -> np.ndarray:
    """Normalised bars x (B, L, 6) -> sampled normalised paths (B, sample_count, P, 6).

    The context is tokenised whole; of the last ``max_context`` tokens of context +
    generated tokens, the last P decoded rows are the forecast. With ``reference`` this is
    the published algorithm (full-recompute generation, every path's window decoded
    whole); otherwise the cached engine (with ``graphs``, its one-token steps replayed as
    CUDA graphs: ``graphs.generate_graphed``) and ``decode_paths``.
    """
    device = next(model.parameters()).device
    # The tokenizer may run in float32 while the model runs in bf16/fp16: BSQ tokens are
    # signs of a projection, which half precision flips near zero.
    tokenizer_dtype = next(tokenizer.parameters()).dtype
    pred_len = y_stamp.shape[1]
    xt = torch.as_tensor(x, dtype=torch.float32, device=device).to(tokenizer_dtype)
    st = torch.as_tensor(x_stamp, device=device)
    fst = torch.as_tensor(y_stamp, device=device)
    if uniforms is not None:
        uniforms = uniforms.to(device)
    s1, s2 = tokenizer.encode(xt, half=True)
    run = generation.generate_reference if reference else generation.generate
    if graphs and not reference:
        run = generate_graphed
    tok1, tok2 = run(
        model, s1, s2, st, fst, pred_len, max_context, sample_count,
        temperature, top_k, top_p, uniforms, progress=progress,
    )  # fmt: skip
    total = tok1.shape[1]
    start = max(0, total - max_context)  # the window slides as in generation
    w = slice(start, total)
    if reference:  # as published: every path's whole window
        z = tokenizer.decode((tok1[:, w], tok2[:, w]), half=True)
    else:  # the window's context tokens are every path's prefix
        z = decode_paths(tokenizer, tok1[:, w], tok2[:, w], s1.shape[1] - start, sample_count)
    z = z[:, -pred_len:]
    return z.float().cpu().numpy().reshape(x.shape[0], sample_count, pred_len, z.shape[-1])
