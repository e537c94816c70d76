"""The machine's limit for a generation case: what the engine's work costs at best here.

``machine_rates`` measures the sgemm rate (the best of a square and model-shaped float32
products) and the memory bandwidth (the best of a large copy, counted as read + write, and
a large read). ``limit_seconds`` counts the multiply-adds and the bytes of every phase of
the engine's path through the API - tokenising the context, the prefill, every generation
step (one token per path against the caches, or a whole sliding window recomputed), and
decoding (the shared prefix once per series) - and charges each phase the slower of its
FLOPs at the sgemm rate and its bytes (weights, and the keys and values a step reads) at
the bandwidth. Elementwise work, softmax and dispatch are free here: it is a floor.

``int8=True`` is the floor of the int8 weight mode (``inference.quantize``): the
predictor's weight products at the measured rate of the int8 kernel it runs
(``int8_rate``: fbgemm's dynamic int8 linear on model-shaped products, input quantisation
included) and its weights read as one byte each plus a float32 scale per row; attention,
the embeddings and the tokenizer stay float32, as they do in that mode.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

SHAPES = [(2048, 2048, 2048), (2048, 512, 2048), (2048, 1024, 512), (512, 512, 1536)]


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine_rates(megabytes: int = 128, repeats: int = 5) -> dict:
    """{"gflops": GFLOP/s of float32 products, "bandwidth": bytes/s}, on this thread count."""
    gflops = 0.0
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(n, k)
        t = _best(lambda a=a, b=b: F.linear(a, b), repeats)
        gflops = max(gflops, 2 * m * k * n / t / 1e9)
    x = torch.randn(megabytes * 2**18)
    y = torch.empty_like(x)
    size = x.numel() * x.element_size()
    copy = 2 * size / _best(lambda: y.copy_(x), repeats)
    read = size / _best(lambda: x.sum(), repeats)
    return {"gflops": gflops, "bandwidth": max(copy, read)}


def int8_rate(repeats: int = 5) -> float:
    """Multiply-adds per second x 2 (GOP/s) of the int8 mode's kernel, the best of the
    model-shaped products (rows, in, out), on this thread count."""
    from kronos_alpha.inference.quantize import _linear_dynamic, _prepack, _quantize_rows

    best = 0.0
    for m, k, n in SHAPES[1:] + [(160, 512, 2048), (1, 512, 1536)]:
        x = torch.randn(m, k)
        packed = _prepack(*_quantize_rows(torch.randn(n, k)), None)
        t = _best(lambda x=x, packed=packed: _linear_dynamic(x, packed), repeats)
        best = max(best, 2 * m * k * n / t / 1e9)
    return best


def _causal(n: int, d: int) -> int:
    """Multiply-adds of causal attention over n rows (scores and weighted values)."""
    return n * (n + 1) * d


def _bytes(modules, int8: bool = False) -> int:
    """Bytes of the modules' parameters; with ``int8`` a Linear weight counts one byte per
    entry plus a float32 scale per output row."""
    total = 0
    for module in modules:
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if int8 and name == "weight" and isinstance(m, torch.nn.Linear):
                    total += p.numel() + 4 * p.shape[0]
                else:
                    total += p.numel() * p.element_size()
    return total


def limit_seconds(
    model, tokenizer, series, context, pred_len, paths, max_context, rates, int8=False
):
    """{"total_s", "generation_s", "phases_s": {...}} for one case (see the module doc);
    ``int8`` needs ``rates["int8_gops"]`` (``int8_rate``)."""
    flop_s, byte_s = 2 / (rates["gflops"] * 1e9), 1 / rates["bandwidth"]
    product_s = 2 / (rates["int8_gops"] * 1e9) if int8 else flop_s  # the predictor's weights
    phases = dict.fromkeys(["encode", "prefill", "steps", "sliding", "decode"], 0.0)
    predictor = ("prefill", "steps", "sliding")  # the phases whose products int8 quantises

    def charge(phase, macs, nbytes, attention_macs=0):
        """macs: weight products (the predictor's run at product_s), attention_macs: float32."""
        seconds = macs * (product_s if phase in predictor else flop_s) + attention_macs * flop_s
        phases[phase] += max(seconds, nbytes * byte_s)

    # The predictor: per-row multiply-adds of the blocks, and of what one new token adds.
    d, layers = model.d_model, model.n_layers
    ff = model.transformer[0].ffn.w1.out_features
    block = 4 * d * d + 3 * d * ff
    row = 2 * d * d + layers * block + 2 * d * d  # fusion, blocks, the s2 memory's k|v
    heads = d * model.head.vocab_s1 + 2 * d * d + d * model.head.vocab_s2  # s1, dep q|out, s2
    step_weights = _bytes(
        [model.transformer, model.embedding.fusion_proj, model.dep_layer, model.head, model.norm],
        int8,
    )
    # The tokenizer.
    dt, code, d_in = tokenizer.d_model, tokenizer.codebook_dim, tokenizer.d_in
    tff = tokenizer.encoder[0].ffn.w1.out_features if len(tokenizer.encoder) else 0
    tblock = 4 * dt * dt + 3 * dt * tff
    enc, dec = len(tokenizer.encoder), len(tokenizer.decoder)

    rows = series * context
    charge("encode", rows * (d_in * dt + enc * tblock + dt * code) + enc * series
           * _causal(context, dt), _bytes([tokenizer.embed, tokenizer.encoder]))  # fmt: skip
    first = min(context, max_context)
    charge("prefill", series * first * row, step_weights, series * layers * _causal(first, d))
    r = series * paths
    charge("steps", r * heads, step_weights, r * 2 * first * d)  # step 0's logits
    for i in range(1, pred_len):
        n = context + i  # tokens once this step's token is appended
        if n <= max_context:  # one token per path; attention reads the cached keys/values
            kv = (layers + 1) * 2 * d * 4 * (series * context + r * i)
            charge("steps", r * (row + heads), step_weights + kv, r * (layers + 1) * 2 * n * d)
        else:  # the window slides: recomputed whole
            w = max_context
            charge("sliding", r * (w * row + heads), step_weights,
                   r * (2 * w * d + layers * _causal(w, d)))  # fmt: skip
    w = min(context + pred_len, max_context)
    prefix = context - max(0, context + pred_len - max_context)
    out = dt * d_in
    if paths > 1 and 0 < prefix < w:
        once = series * (prefix * (code * dt + (dec - 1) * tblock + 2 * dt * dt)
                         + (dec - 1) * _causal(prefix, dt))  # fmt: skip
        each = r * (w - prefix) * (code * dt + dec * tblock + out + dec * 2 * w * dt)
        charge("decode", once + each, _bytes([tokenizer.decoder, tokenizer.head]))
    else:
        macs = r * (w * (code * dt + dec * tblock + out) + dec * _causal(w, dt))
        charge("decode", macs, _bytes([tokenizer.decoder, tokenizer.head]))
    generation = phases["prefill"] + phases["steps"] + phases["sliding"]
    return {"total_s": sum(phases.values()), "generation_s": generation, "phases_s": phases}
