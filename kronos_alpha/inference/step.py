"""The per-token step of generation and the window pass it continues from, written for
this project's CPU: the predictor's weights stacked (q|k|v, w1|w3, the dependency layer's
k|v) and laid out for the products a step makes, the token tables pre-scaled, no module
called. ``generation.generate`` drives them.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layers import KVCache, apply_rotary, rms_norm


def _weights_key(model) -> tuple:
    """Changes whenever a parameter is replaced, moved or updated in place."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


WINDOW_ROWS = 768  # rows per chunk of a window pass (TokenStep.window)
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


def _split_product(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pieces: int):
    """``_product`` of x against ``pieces`` equal row blocks of stacked weights, as separate
    products: row slices of a one-part layout are views (no copies); the per-thread
    blocks and int8 weights do not slice, so there the stacked product's output is split."""
    if w.dim() == 2 and type(w) is torch.Tensor:
        biases = [None] * pieces if b is None else b.chunk(pieces)
        return [_product(x, wi, bi) for wi, bi in zip(w.chunk(pieces), biases)]
    return _product(x, w, b).chunk(pieces, dim=-1)


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
        self.time_emb = model.time_emb

    def window(self, s1, s2, stamp, prefill: bool = False):
        """What ``model.hidden`` computes for a window (B, n), positions from 0. Returns
        (final-normed hidden states (B, n, d), the per-layer caches when ``prefill``, else
        None).

        Series are independent, so they go through the layers a few at a time (about
        ``WINDOW_ROWS`` rows): a chunk's activations stay in cache between products, which
        was 5-10% faster on this project's CPU for 32 x 90 rows, with the same bits.
        """
        b, n = s1.shape
        per_chunk = max(1, WINDOW_ROWS // n)
        if b <= per_chunk:
            return self._window(s1, s2, stamp, prefill)
        parts = [
            self._window(
                s1[i : i + per_chunk], s2[i : i + per_chunk], stamp[i : i + per_chunk], prefill
            )
            for i in range(0, b, per_chunk)
        ]
        h = torch.cat([p[0] for p in parts])
        if not prefill:
            return h, None
        caches = [
            KVCache(torch.cat([p[1][j].k for p in parts]), torch.cat([p[1][j].v for p in parts]))
            for j in range(len(self.layers))
        ]
        return h, caches

    def _window(self, s1, s2, stamp, prefill: bool):
        """``window`` for one chunk of series. Many rows per product here, so q, k, v, w1
        and w3 are separate products (row slices of the stacked weights, no copies):
        measured here, one stacked product over thousands of rows runs slower than its
        parts, and rotating a slice of it is 2-3x slower than rotating a product of its own.
        """
        b, n = s1.shape
        tokens = torch.cat([self.s1_table[s1], self.s2_table[s2]], -1).view(b * n, -1)
        x = _product(tokens, *self.fusion) + self.time_emb(stamp).view(b * n, -1)
        caches = []
        for norm1, w_qkv, b_qkv, w_out, b_out, norm2, w_13, w_2, cos, sin, heads in self.layers:
            a = rms_norm(x, norm1, self.eps)
            q, k, v = (
                y.view(b, n, heads, -1).transpose(1, 2) for y in _split_product(a, w_qkv, b_qkv, 3)
            )
            q, k = apply_rotary(q, cos[:n], sin[:n]), apply_rotary(k, cos[:n], sin[:n])
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + _product(out.transpose(1, 2).reshape(b * n, -1), w_out, b_out)
            gate, up = _split_product(rms_norm(x, norm2, self.eps), w_13, None, 2)
            x = x + _product(F.silu(gate) * up, w_2)
            if prefill:
                caches.append(KVCache(k, v))
        h = rms_norm(x, self.norm, self.eps).view(b, n, -1)
        return h, (caches if prefill else None)

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

    def memory(self, h: torch.Tensor) -> KVCache:
        """The dependency layer's unrotated keys and values of hidden states (B, n, d), in
        one product (``CrossAttention.memory``)."""
        b, n, _ = h.shape
        kv = _product(h.reshape(b * n, -1), *self.dep_kv).view(b, n, 2 * self.dep_heads, -1)
        kv = kv.transpose(1, 2)
        return KVCache(kv[:, : self.dep_heads], kv[:, self.dep_heads :])

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
