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
import math
import weakref

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..model.layers import apply_rotary, rms_norm


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


def _weights_key(model) -> tuple:
    """Changes whenever a parameter is replaced, moved or updated in place."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


_STEP_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _laid_out(*weights: torch.Tensor, parts: int = 1) -> torch.Tensor:
    """Weights (out, in), stacked along out, laid out for products of a few rows (measured
    on this project's CPU, same values):

    - one part: stored (in, out) and returned as the (out, in) view F.linear takes, so a
      one-row product streams the weights in the order it reads them (20% faster);
    - ``parts`` > 1: (parts, in, out / parts) blocks, one per thread, for ``_product``'s
      batched product (a one-row product alone keeps one core busy: 20% faster on 2).
    """
    w = torch.cat(weights)
    if parts == 1:
        return w.t().contiguous().t()
    return w.view(parts, w.shape[0] // parts, w.shape[1]).transpose(1, 2).contiguous()


def _product(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weights, b) for rows x (n, in) and weights from ``_laid_out``."""
    if w.dim() == 2:
        return F.linear(x, w, b)
    parts = w.shape[0]
    xs = x.expand(parts, *x.shape)
    y = torch.bmm(xs, w) if b is None else torch.baddbmm(b.view(parts, 1, -1), xs, w)
    return y.transpose(0, 1).reshape(x.shape[0], -1)


def _parts(model) -> int:
    """Blocks per product: the CPU's threads when every product splits evenly, else 1."""
    threads = torch.get_num_threads()
    dims = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    cpu = next(model.parameters()).device.type == "cpu"
    return threads if cpu and threads > 1 and all(n % threads == 0 for n in dims) else 1


def _step_weights(model) -> dict:
    """The step's weights: q|k|v, w1|w3 and the dependency layer's k|v each stacked into
    one product, every product laid out for few rows (``_laid_out``), the token tables
    pre-scaled. A copy of the step's weights (about 94 MB for Kronos-small), built once
    per model and weights version rather than on every generate."""
    parts = _parts(model)
    key = (_weights_key(model), parts)
    cached = _STEP_WEIGHTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]

    def lay(*weights):
        return _laid_out(*weights, parts=parts)

    emb, dep, head = model.embedding, model.dep_layer, model.head
    cross = dep.cross_attn
    scale = math.sqrt(emb.d_model)  # as in HierarchicalEmbedding: elementwise, same bits
    layers = []
    for block in model.transformer:
        attn, ffn = block.self_attn, block.ffn
        qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
        layers.append(
            (
                block.norm1.weight,
                lay(*(m.weight for m in qkv)),
                torch.cat([m.bias for m in qkv]),
                lay(attn.out_proj.weight),
                attn.out_proj.bias,
                block.norm2.weight,
                lay(ffn.w1.weight, ffn.w3.weight),
                lay(ffn.w2.weight),
            )
        )
    w = {
        "tables": (emb.emb_s1.weight * scale, emb.emb_s2.weight * scale),
        "fusion": (lay(emb.fusion_proj.weight), emb.fusion_proj.bias),
        "layers": layers,
        "dep_kv": (
            lay(cross.k_proj.weight, cross.v_proj.weight),
            torch.cat([cross.k_proj.bias, cross.v_proj.bias]),
        ),
        "dep_q": (emb.emb_s1.weight, lay(cross.q_proj.weight), cross.q_proj.bias),
        "dep_out": (lay(cross.out_proj.weight), cross.out_proj.bias, dep.norm.weight),
        "s1_head": (lay(head.proj_s1.weight), head.proj_s1.bias),
        "s2_head": (lay(head.proj_s2.weight), head.proj_s2.bias),
    }
    _STEP_WEIGHTS[model] = (key, w)
    return w


class TokenStep:
    """The per-token computations of generation: one new token per row through the
    transformer against the prefilled caches, and the s1 and s2 logits of a hidden state.

    The same mathematics as the modules' forward, laid out for one-row products: there a
    step is bound by weight reads and per-operation overhead, not by arithmetic. (A
    one-row product may round differently from the same row inside the full pass's matrix
    product, by about 1e-6, so tests compare the tokens, not the hidden states.) So the
    weights are stacked and re-laid (``_step_weights``), the token embeddings are
    pre-scaled, no module is called, and a layer's new keys and values reach its cache in
    one copy.
    """

    def __init__(self, model, positions: int):
        dtype = next(model.parameters()).dtype
        w = _step_weights(model)
        self.s1_table, self.s2_table = w["tables"]
        self.fusion = w["fusion"]
        self.layers = []
        for block, weights in zip(model.transformer, w["layers"]):
            attn = block.self_attn
            cos, sin = attn.rotary.tables(max(positions, 1), dtype)
            self.layers.append((*weights, cos, sin, attn.n_heads))
        self.norm = model.norm.weight
        self.eps = model.norm.eps
        self.dep_heads = model.dep_layer.cross_attn.n_heads
        self.dep_kv, self.dep_q, self.dep_out = w["dep_kv"], w["dep_q"], w["dep_out"]
        self.s1_head, self.s2_head = w["s1_head"], w["s2_head"]

    def hidden(self, s1, s2, time, position: int, caches, memory) -> torch.Tensor:
        """Tokens (rows,) at ``position`` with their time embedding (rows, d) -> the
        final-normed hidden state (rows, d); appends to the caches and to the s2 memory."""
        x = _product(torch.cat([self.s1_table[s1], self.s2_table[s2]], -1), *self.fusion) + time
        n, d = x.shape
        for (norm1, w_qkv, b_qkv, w_out, b_out, norm2, w_13, w_2, cos, sin, heads), cache in zip(
            self.layers, caches
        ):
            qkv = _product(rms_norm(x, norm1, self.eps), w_qkv, b_qkv).view(n, 3 * heads, 1, -1)
            qk = qkv[:, : 2 * heads]
            apply_rotary(qk, cos[position], sin[position], out=qk)
            cache.append(qkv[:, heads:])  # rotated keys, then values
            x = x + _product(cache.attend(qkv[:, :heads]).reshape(n, d), w_out, b_out)
            gate, up = _product(rms_norm(x, norm2, self.eps), w_13).chunk(2, dim=-1)
            x = x + _product(F.silu(gate) * up, w_2)
        h = rms_norm(x, self.norm, self.eps)
        memory.append(_product(h, *self.dep_kv).view(n, 2 * self.dep_heads, 1, -1))
        return h

    def s1_logits(self, h: torch.Tensor) -> torch.Tensor:
        return _product(h, *self.s1_head)

    def s2_logits(self, h: torch.Tensor, s1: torch.Tensor, memory) -> torch.Tensor:
        """s2 logits of hidden states h (rows, d) given their chosen s1 tokens (rows,): the
        dependency layer's single query attends over the window (``memory``)."""
        table, w_q, b_q = self.dep_q
        n, d = h.shape
        q = _product(table[s1], w_q, b_q).view(n, self.dep_heads, 1, -1)
        w_out, b_out, norm = self.dep_out
        attn = _product(memory.attend(q).reshape(n, d), w_out, b_out)
        return _product(rms_norm(h + attn, norm, self.eps), *self.s2_head)


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
    dep = model.dep_layer.cross_attn
    tok1, tok2, all_stamp_rows = _path_rows(s1, s2, stamp, future_stamp, pred_len, S)

    # Step 0 sees the same window for every path of a series: compute it once per series.
    start = max(0, L - max_context)
    cached = L < max_context  # room left to append at least one token
    capacity = min(max_context, L + pred_len - 1) - L if cached else 0
    step = TokenStep(model, L + capacity)
    h, caches = model.hidden(s1[:, start:], s2[:, start:], stamp[:, start:], prefill=cached)
    h_last = h[:, -1].repeat_interleave(S, 0)
    if cached:
        caches = [c.expand(S, capacity) for c in caches]
        memory = dep.memory(h).expand(S, capacity)
        # Calendar embeddings of the generated positions, once (the same sums as embed()).
        future_time = model.time_emb(future_stamp).repeat_interleave(S, 0)
    else:
        memory = dep.memory(h.repeat_interleave(S, 0))

    t1 = t2 = None  # the tokens of the previous step
    for i in _steps(pred_len, progress):
        n = L + i  # tokens before the one generated in this step
        if i > 0:
            if n <= max_context:  # append the previous token to the cached window
                h_last = step.hidden(t1, t2, future_time[:, i - 1], n - 1, caches, memory)
            else:  # the window slides: positions restart at its start, recompute it
                w = slice(n - max_context, n)
                h, _ = model.hidden(tok1[:, w], tok2[:, w], all_stamp_rows[:, w])
                h_last = h[:, -1]
                memory = dep.memory(h)
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
