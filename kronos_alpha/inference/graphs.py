"""Generation with the per-token step captured as CUDA graphs.

On a GPU a one-token step of a small model is bound by kernel launches, not by the GPU:
Kronos-small's step is a few hundred small kernels. A CUDA graph replays them in one
launch, but only if every replay has the same shapes and reads the same addresses. So
the step here works on static buffers:

- per-layer keys|values and the dependency layer's memory, each (rows, 2 * heads,
  slots, head_dim) with room for the whole cached phase, filled after the prefill;
- the step's inputs (previous tokens, their time embedding, the chosen s1 token) and its
  outputs (hidden state, s1 and s2 logits) in fixed tensors, copied in and read out;
- the position as a device tensor: rotary rows are picked with index_select, the new keys
  and values are written with index_copy_, and attention over all slots masks those past
  the position. No Python number enters the step, so one capture serves every step.

The prefill and the sliding-window steps (context + generated > max_context) run eagerly
through ``TokenStep`` as in ``generation.generate``, and so does sampling. Without CUDA
(or with capture=False) the same static code runs eagerly, which is what CPU tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.layers import apply_rotary, rms_norm
from . import generation as gen
from .step import TokenStep, _product

SLOT_MULTIPLE = 16  # slots rounded up: the GPU's masked attention wants aligned masks
WARMUP_RUNS = 3  # eager runs on a side stream before capture (torch's CUDA graph recipe)


class StaticStep:
    """The cached phase's step on static buffers: ``hidden`` feeds one token per row (the
    tokens in ``t1``/``t2`` with time embedding ``time`` at position ``pos``) and leaves
    the hidden state in ``h`` and s1 logits in ``logits1``; ``s2`` turns ``h`` and the
    chosen s1 tokens in ``s1`` into ``logits2``. Rows are series-major (b * paths + s).
    """

    def __init__(self, model, step: TokenStep, caches, memory, paths: int, positions: int):
        b, _, length, _ = caches[0].k.shape
        rows = b * paths
        slots = -(-positions // SLOT_MULTIPLE) * SLOT_MULTIPLE
        self.step, self.length = step, length

        def buffer(k, v):
            # Every path of a series starts from the same context: broadcast, no repeat.
            heads = k.shape[1]
            buf = k.new_zeros(rows, 2 * heads, slots, k.shape[3])
            per_series = buf.view(b, paths, *buf.shape[1:])
            per_series[:, :, :heads, :length] = k.unsqueeze(1)
            per_series[:, :, heads:, :length] = v.unsqueeze(1)
            return buf

        self.kv = [buffer(c.k, c.v) for c in caches]
        self.mem = buffer(memory.k, memory.v)
        device, dtype, d = self.mem.device, self.mem.dtype, model.d_model
        self.slots = torch.arange(slots, device=device)
        self.pos = torch.full((1,), length - 1, device=device)
        self.t1, self.t2, self.s1 = (
            torch.zeros(rows, dtype=torch.long, device=device) for _ in range(3)
        )
        self.time = torch.zeros(rows, d, dtype=dtype, device=device)
        self.h = torch.zeros(rows, d, dtype=dtype, device=device)
        self.logits1 = torch.zeros(rows, model.head.vocab_s1, dtype=dtype, device=device)
        self.logits2 = torch.zeros(rows, model.head.vocab_s2, dtype=dtype, device=device)

    def _mask(self) -> torch.Tensor:
        """True for the filled slots (up to and including ``pos``), for every row and head."""
        return (self.slots <= self.pos).view(1, 1, 1, -1)

    def hidden(self) -> None:
        """``TokenStep.hidden`` with the position, cache writes and attention length taken
        from ``pos``: the same products, in the same order."""
        st, pos, mask = self.step, self.pos, self._mask()
        tokens = torch.cat(
            [st.s1_table.index_select(0, self.t1), st.s2_table.index_select(0, self.t2)], -1
        )
        x = _product(tokens, *st.fusion) + self.time
        n, d = x.shape
        for (norm1, w_qkv, b_qkv, w_out, b_out, norm2, w_13, w_2, cos, sin, heads), kv in zip(
            st.layers, self.kv
        ):
            qkv = _product(rms_norm(x, norm1, st.eps), w_qkv, b_qkv).view(n, 3 * heads, 1, -1)
            qk = qkv[:, : 2 * heads]
            apply_rotary(qk, cos.index_select(0, pos), sin.index_select(0, pos), out=qk)
            kv.index_copy_(2, pos, qkv[:, heads:])  # rotated keys, then values
            out = F.scaled_dot_product_attention(
                qkv[:, :heads], kv[:, :heads], kv[:, heads:], attn_mask=mask
            )
            x = x + _product(out.reshape(n, d), w_out, b_out)
            gate, up = _product(rms_norm(x, norm2, st.eps), w_13).chunk(2, dim=-1)
            x = x + _product(F.silu(gate) * up, w_2)
        h = rms_norm(x, st.norm, st.eps)
        self.mem.index_copy_(2, pos, _product(h, *st.dep_kv).view(n, 2 * st.dep_heads, 1, -1))
        self.h.copy_(h)
        self.logits1.copy_(st.s1_logits(h))

    def s2(self) -> None:
        """``TokenStep.s2_logits`` of ``h`` and ``s1`` over the memory's filled slots."""
        st, heads = self.step, self.step.dep_heads
        table, w_q, b_q = st.dep_q
        w_out, b_out, norm = st.dep_out
        n, d = self.h.shape
        q = _product(table.index_select(0, self.s1), w_q, b_q).view(n, heads, 1, -1)
        out = F.scaled_dot_product_attention(
            q, self.mem[:, :heads], self.mem[:, heads:], attn_mask=self._mask()
        )
        attn = _product(out.reshape(n, d), w_out, b_out)
        self.logits2.copy_(_product(rms_norm(self.h + attn, norm, st.eps), *st.s2_head))

    def runners(self, capture: bool, feeds: bool) -> tuple:
        """(hidden or None when no token is fed in the cached phase, s2): the methods
        themselves, or with ``capture`` the replays of their CUDA graphs."""
        fns = (self.hidden, self.s2) if feeds else (self.s2,)
        if capture:
            # Warm-up and capture run hidden() for real: let its writes land in slot
            # ``length``, which the first fed token overwrites before anything reads it.
            self.pos.fill_(self.length)
            fns = _captured(fns)
            self.pos.fill_(self.length - 1)
        return (fns[0], fns[1]) if feeds else (None, fns[0])


def _captured(fns) -> tuple:
    """One CUDA graph per function, after warm-up runs on a side stream (the recipe of
    torch's CUDA graph docs: warm-up lets lazy initialisation and allocator caching happen
    outside the capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            for fn in fns:
                fn()
    torch.cuda.current_stream().wait_stream(side)
    replays = []
    for fn in fns:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        replays.append(graph.replay)
    return tuple(replays)


@torch.inference_mode()
def generate_graphed(
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
    capture: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``generation.generate`` with the cached phase's per-token step on static buffers,
    replayed as CUDA graphs when ``capture`` (default: when the tensors are on CUDA).
    Returns (s1, s2) of shape (B * sample_count, L + pred_len), rows series-major."""
    gen._validate(s1, stamp, future_stamp, pred_len, max_context)
    cuda = s1.device.type == "cuda"
    capture = cuda if capture is None else bool(capture)
    if capture and not cuda:
        raise ValueError(f"capture=True needs CUDA tensors, got device {s1.device}")
    B, L = s1.shape
    S = sample_count
    sample = gen._Sampler(temperature, top_k, top_p, uniforms, B * S)
    tok1, tok2, all_stamp_rows = gen._path_rows(s1, s2, stamp, future_stamp, pred_len, S)

    start = max(0, L - max_context)
    cached = L < max_context  # room left to append at least one token
    positions = min(max_context, L + pred_len - 1) if cached else L
    step = TokenStep(model, positions)
    h, caches = step.window(s1[:, start:], s2[:, start:], stamp[:, start:], prefill=cached)
    if cached:
        static = StaticStep(model, step, caches, step.memory(h), S, positions)
        del caches  # copied into the static buffers
        # Positions L .. positions - 1 are fed in the cached phase (none when pred_len is 1).
        feed, logits2 = static.runners(capture, feeds=positions > L)
        static.h.copy_(h[:, -1].repeat_interleave(S, 0))  # after capture: warm-up wrote h
        future_time = model.time_emb(future_stamp).repeat_interleave(S, 0)
    else:
        h_last = h[:, -1].repeat_interleave(S, 0)
        memory = step.memory(h.repeat_interleave(S, 0))

    t1 = t2 = None  # the tokens of the previous step
    for i in gen._steps(pred_len, progress):
        n = L + i  # tokens before the one generated in this step
        cached = cached and n <= max_context  # once the window slides, it slides on
        if i > 0 and cached:  # append the previous token: one static step
            static.t1.copy_(t1)
            static.t2.copy_(t2)
            static.time.copy_(future_time[:, i - 1])
            static.pos.fill_(n - 1)
            feed()
        elif i > 0:  # the window slides: positions restart at its start, recompute it
            w = slice(n - max_context, n)
            h, _ = step.window(tok1[:, w], tok2[:, w], all_stamp_rows[:, w])
            h_last = h[:, -1]
            memory = step.memory(h)
        if cached:
            t1 = sample(static.logits1 if i > 0 else step.s1_logits(static.h), i, 0)
            static.s1.copy_(t1)
            logits2()
            t2 = sample(static.logits2, i, 1)
        else:
            t1 = sample(step.s1_logits(h_last), i, 0)
            t2 = sample(step.s2_logits(h_last, t1, memory), i, 1)
        tok1[:, n], tok2[:, n] = t1, t2
    return tok1, tok2
