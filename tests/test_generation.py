"""The cached engine against the full-recompute reference, and the sampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, TINY_MODEL, TINY_TOKENIZER, token_inputs

from kronos_alpha import Kronos, KronosTokenizer
from kronos_alpha.inference.generation import (
    filter_logits,
    generate,
    generate_reference,
    sample_tokens,
    series_seed,
    uniforms_for_seeds,
)
from kronos_alpha.inference.graphs import generate_graphed
from kronos_alpha.model.layers import KVCache

# The cached engine, and its static-buffer form (CUDA graphs; eager on the CPU).
ENGINES = [pytest.param(generate, id="engine"), pytest.param(generate_graphed, id="graphed")]


@pytest.mark.parametrize(
    "context,pred_len,max_context",
    [
        (20, 8, 64),  # the window never fills: pure cache
        (20, 12, 24),  # fills, then slides for the last steps
        (24, 5, 24),  # context exactly max_context: slides from step 1
        (40, 6, 24),  # context longer than max_context: slides from the start
        (1, 4, 8),  # a single context token
        (10, 1, 16),  # one step: nothing is fed (the static step runs only its s2 part)
    ],
)
@pytest.mark.parametrize("sample_count", [1, 3])
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_equals_reference_greedy(
    tiny_pair, engine, context, pred_len, max_context, sample_count
):
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 3, context, pred_len)
    args = (model, s1, s2, st, fst, pred_len, max_context, sample_count, 1.0, 1, 1.0)
    e1, e2 = engine(*args)
    r1, r2 = generate_reference(*args)
    assert e1.shape == (3 * sample_count, context + pred_len)
    assert torch.equal(e1, r1) and torch.equal(e2, r2)
    assert torch.equal(e1[:, :context], s1.repeat_interleave(sample_count, 0))


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 0.9, 1.0), (5, 1.0, 0.7), (0, 1.0, 1.3)])
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_equals_reference_sampling_with_shared_random_numbers(
    tiny_pair, engine, top_k, top_p, temperature
):
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 2, 18, 10, seed=1)
    u = uniforms_for_seeds([11, 12], 4, 10)
    args = (model, s1, s2, st, fst, 10, 22, 4, temperature, top_k, top_p, u)
    e1, e2 = engine(*args)
    r1, r2 = generate_reference(*args)
    assert torch.equal(e1, r1) and torch.equal(e2, r2)
    # Different paths of one series really are different draws.
    assert not torch.equal(e1[0], e1[1]) or not torch.equal(e2[0], e2[1])


def test_a_series_draw_does_not_depend_on_its_batch(tiny_pair):
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 3, 16, 6, seed=2)
    seeds = [series_seed(7, i) for i in range(3)]
    u = uniforms_for_seeds(seeds, 2, 6)
    alone = generate(model, s1[1:2], s2[1:2], st[1:2], fst[1:2], 6, 32, 2, 1.0, 0, 0.95, u[1:2])
    batch = generate(model, s1, s2, st, fst, 6, 32, 2, 1.0, 0, 0.95, u)
    assert torch.equal(alone[0], batch[0][2:4]) and torch.equal(alone[1], batch[1][2:4])


def test_top_k_keeps_exactly_k_and_top_p_keeps_the_crossing_token():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, True, False, False, False]]
    probs = torch.softmax(logits, -1)[0]
    # Cumulative mass after the first token is probs[0] < 0.7, so the second is kept too.
    assert probs[0] < 0.7 < probs[0] + probs[1]
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits)).all()


def test_inverse_cdf_sampling_matches_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(20000, -1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    draws = sample_tokens(logits, 1.0, 0, 1.0, u)
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    # A filtered-out token is never drawn, whatever the random number.
    edge = sample_tokens(logits[:4], 1.0, 2, 1.0, torch.tensor([0.0, 0.5, 0.99, 1.0]))
    assert edge.tolist() == [0, 0, 1, 1]


def test_seeds_are_reproducible_and_distinct():
    a = uniforms_for_seeds([series_seed(1, 2)], 2, 3)
    b = uniforms_for_seeds([series_seed(1, 2)], 2, 3)
    c = uniforms_for_seeds([series_seed(1, 3)], 2, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_lengths_are_errors(tiny_pair, engine):
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 1, 8, 4)
    with pytest.raises(ValueError, match="pred_len"):
        engine(model, s1, s2, st, fst, 0, 16)
    with pytest.raises(ValueError, match="stamp"):
        engine(model, s1, s2, st, fst[:, :2], 4, 16)


def test_a_model_that_generated_can_still_train():
    """generate runs under inference_mode; the rotary tables it caches on the model must
    still serve a training pass afterwards."""
    model = Kronos(**TINY_MODEL).to(DEVICE)
    tokenizer = KronosTokenizer(**TINY_TOKENIZER).eval().to(DEVICE)
    s1, s2, st, fst = token_inputs(tokenizer, 2, 12, 3)
    generate(model.eval(), s1, s2, st, fst, 3, 32)
    loss = model.train().loss(s1, s2, st)["loss"]
    loss.backward()
    assert all(p.grad is not None for p in model.transformer.parameters())


def test_a_full_cache_refuses_another_token():
    k = torch.zeros(1, 2, 3, 4)
    one_path = KVCache(k, k).expand(1, 1)
    shared = KVCache(k, k).expand(2, 1)
    one_path.append(torch.ones(1, 4, 1, 4))
    shared.append(torch.ones(2, 4, 1, 4))
    assert one_path.length == 4 and torch.equal(one_path.v[:, :, 3], torch.ones(1, 2, 4))
    for cache, rows in ((one_path, 1), (shared, 2), (KVCache(k, k), 1)):
        with pytest.raises(RuntimeError, match="full"):
            cache.append(torch.ones(rows, 4, 1, 4))


def test_the_stacked_weights_follow_an_in_place_update(tiny_pair):
    """The step's stacked weights are cached per model: an optimizer-style in-place update
    (or a load_state_dict) must rebuild them, or the engine would generate from old weights."""
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 2, 12, 6)
    args = (model, s1, s2, st, fst, 6, 32, 1, 1.0, 1, 1.0)
    before = generate(*args)
    with torch.no_grad():
        for block in model.transformer:
            block.self_attn.q_proj.weight.mul_(4.0)
            block.ffn.w1.weight.neg_()
        model.embedding.emb_s2.weight.mul_(3.0)
    after, reference = generate(*args), generate_reference(*args)
    assert torch.equal(after[0], reference[0]) and torch.equal(after[1], reference[1])
    assert not torch.equal(after[0], before[0])
    model.load_state_dict(Kronos(**TINY_MODEL).state_dict())  # new weights, same tensors
    assert torch.equal(generate(*args)[0], generate_reference(*args)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_the_engine_equals_the_reference_with_one_or_split_products(tiny_pair, threads):
    """With several threads the step's products are split in per-thread blocks
    (generation._laid_out / _product); with one they are not. Both give the reference's
    tokens, and a split product equals the plain one to float rounding."""
    from kronos_alpha.inference.step import _laid_out, _parts, _product

    model, tokenizer = tiny_pair
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert _parts(model) == (threads if DEVICE == "cpu" else 1)
        s1, s2, st, fst = token_inputs(tokenizer, 2, 16, 6, seed=3)
        args = (model, s1, s2, st, fst, 6, 20, 2, 1.0, 1, 1.0)
        e1, e2 = generate(*args)
        r1, r2 = generate_reference(*args)
        assert torch.equal(e1, r1) and torch.equal(e2, r2)
    finally:
        torch.set_num_threads(before)
    w, b, x = torch.randn(12, 8), torch.randn(12), torch.randn(3, 8)
    for parts in (1, 2, 4):
        laid = _laid_out(w[:6], w[6:], parts=parts)
        assert torch.allclose(_product(x, laid, b), F.linear(x, w, b), atol=1e-6)
        assert torch.allclose(_product(x[:1], laid), F.linear(x[:1], w), atol=1e-6)


@pytest.mark.parametrize("window_rows", [4096, 20])  # one chunk, and 2 series a chunk
def test_the_window_pass_equals_the_modules_forward(tiny_pair, monkeypatch, window_rows):
    """TokenStep.window (stacked weights, separate q/k/v and w1/w3 slices, series in
    chunks) computes model.hidden's hidden states and caches: bit for bit in one chunk;
    in chunks a product of fewer rows may round differently (as a one-row step does), so
    there to float32 rounding, and the greedy tokens are the reference's."""
    from kronos_alpha.inference import step

    model, tokenizer = tiny_pair
    monkeypatch.setattr(step, "WINDOW_ROWS", window_rows)
    s1, s2, st, fst = token_inputs(tokenizer, 7, 9, 4)
    with torch.inference_mode():
        want, want_caches = model.hidden(s1, s2, st, prefill=True)
        got, caches = step.TokenStep(model, 9).window(s1, s2, st, prefill=True)
        assert step.TokenStep(model, 9).window(s1, s2, st)[1] is None
    same = torch.equal if window_rows > 7 * 9 else lambda a, b: torch.allclose(a, b, atol=1e-5)
    assert same(got, want)
    for c, w in zip(caches, want_caches, strict=True):
        assert same(c.k, w.k) and same(c.v, w.v)
    args = (model, s1, s2, st, fst, 4, 64, 2, 1.0, 1, 1.0)
    e1, e2 = generate(*args)
    r1, r2 = generate_reference(*args)
    assert torch.equal(e1, r1) and torch.equal(e2, r2)
