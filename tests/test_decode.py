"""Decoding the shared context once per series (paths.decode_paths), the predictor's
reference mode, and the batched series preparation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DEVICE, TINY_TOKENIZER

from kronos_alpha import InputError, KronosPredictor, KronosTokenizer
from kronos_alpha.inference.data import time_features
from kronos_alpha.inference.paths import decode_paths, sample_paths
from kronos_alpha.inference.predictor import prepare_batch, prepare_series

FEATURES = ["open", "high", "low", "close", "volume", "amount"]


def _windows(series, paths, prefix, generated, vocab, seed=0):
    """Token windows (series * paths, prefix + generated): a shared prefix per series."""
    g = torch.Generator().manual_seed(seed)

    def one():
        ctx = torch.randint(0, vocab, (series, prefix), generator=g).repeat_interleave(paths, 0)
        gen = torch.randint(0, vocab, (series * paths, generated), generator=g)
        return torch.cat([ctx, gen], 1).to(DEVICE)

    return one(), one()


def _close(part, full):
    """Within float rounding of the values' scale (a wrong position or key is O(1))."""
    scale = full.abs().max()
    assert part.shape == full.shape
    assert (part - full).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize(
    "series,paths,prefix,generated",
    [(3, 4, 20, 8), (2, 5, 90, 10), (1, 3, 1, 6), (4, 2, 30, 1), (2, 2, 7, 25)],
)
def test_decoding_the_prefix_once_equals_decoding_every_window(series, paths, prefix, generated):
    torch.manual_seed(0)
    tokenizer = KronosTokenizer(**TINY_TOKENIZER).eval().to(DEVICE)
    s1, s2 = _windows(series, paths, prefix, generated, 2 ** TINY_TOKENIZER["s1_bits"])
    with torch.no_grad():
        full = tokenizer.decode((s1, s2))[:, prefix:]
    _close(decode_paths(tokenizer, s1, s2, prefix, paths), full)


def test_decoding_at_published_dimensions_and_the_plain_cases(upstream_tiny):
    _, tokenizer = upstream_tiny
    tokenizer = tokenizer.to(DEVICE)
    s1, s2 = _windows(3, 5, 90, 10, 2**tokenizer.s1_bits, seed=1)
    with torch.no_grad():
        full = tokenizer.decode((s1, s2))
    _close(decode_paths(tokenizer, s1, s2, 90, 5), full[:, 90:])
    # One path per series, or nothing shared: the plain decode, bit for bit.
    assert torch.equal(decode_paths(tokenizer, s1, s2, 90, 1), full[:, 90:])
    assert torch.equal(decode_paths(tokenizer, s1, s2, 0, 5), full)


def test_a_wrong_prefix_is_not_within_rounding():
    """The check above can fail: paths that do not share the claimed prefix decode wrong."""
    torch.manual_seed(0)
    tokenizer = KronosTokenizer(**TINY_TOKENIZER).eval()
    s1, s2 = _windows(2, 3, 12, 6, 16)
    s1[1, 3] = (s1[1, 3] + 1) % 16  # path 1 of series 0 no longer shares the prefix
    with torch.no_grad():
        full = tokenizer.decode((s1, s2))[:, 12:]
    part = decode_paths(tokenizer, s1, s2, 12, 3)
    assert (part[1] - full[1]).abs().max() > 1e-3 * full.abs().max()


@pytest.mark.parametrize("context,pred_len,max_context", [(30, 8, 64), (30, 12, 36), (50, 6, 40)])
def test_sampled_paths_equal_the_published_algorithm(tiny_pair, context, pred_len, max_context):
    """Seeded sampling with several paths: engine + shared decode against full recompute +
    every window decoded; the window fills and slides, or the context exceeds it."""
    from kronos_alpha.inference.generation import uniforms_for_seeds

    model, tokenizer = tiny_pair
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, context, 6)).astype(np.float32)
    times = pd.date_range("2024-03-01 09:30", periods=context + pred_len, freq="5min")
    stamps = np.repeat(time_features(times)[None], 3, axis=0)
    u = uniforms_for_seeds([1, 2, 3], 4, pred_len)
    args = (x, stamps[:, :context], stamps[:, context:], max_context, 4, 1.0, 0, 0.9, u)
    engine = sample_paths(tokenizer, model, *args)
    reference = sample_paths(tokenizer, model, *args, reference=True)
    assert engine.shape == (3, 4, pred_len, 6)
    np.testing.assert_allclose(engine, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    assert not np.allclose(engine[0, 0], engine[0, 1])  # the paths are distinct draws


def test_the_predictors_reference_mode_gives_the_same_forecasts(upstream_tiny, intraday_bars):
    model, tokenizer = upstream_tiny
    frames, xts, yts = [], [], []
    for start in (0, 200, 400):
        ctx, fut = (
            intraday_bars.iloc[start : start + 60],
            intraday_bars.iloc[start + 60 : start + 68],
        )
        frames.append(ctx[FEATURES])
        xts.append(ctx["timestamps"])
        yts.append(fut["timestamps"])
    kw = dict(pred_len=8, sample_count=3, seed=4)
    engine = KronosPredictor(model, tokenizer, device=DEVICE, max_context=64)
    reference = KronosPredictor(model, tokenizer, device=DEVICE, max_context=64, reference=True)
    assert reference.reference and not engine.reference
    for a, b in zip(
        engine.predict_paths(frames, xts, yts, **kw),
        reference.predict_paths(frames, xts, yts, **kw),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    c = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c})


@pytest.mark.parametrize(
    "tz", [None, "UTC", "Asia/Shanghai", "America/New_York"], ids=lambda t: str(t)
)
def test_batched_stamps_equal_per_series_stamps(tz):
    # Spans a DST change in New York; one index at second resolution; one calendar shared.
    a = pd.date_range("2024-03-08 22:00", periods=40, freq="30min", tz=tz)
    b = pd.date_range("2024-01-02", periods=25, freq="D", tz=tz).as_unit("s")
    shared = pd.date_range("2024-12-31 23:00", periods=5, freq="h", tz=tz)
    xs, ys = [a[:-5], b[:20], a[:-5]], [a[-5:], b[20:], shared]
    frames = [_frame(len(x), i) for i, x in enumerate(xs)]
    for p, x, y in zip(prepare_batch(frames, xs, ys, 5), xs, ys):
        np.testing.assert_array_equal(p.stamp, time_features(x))
        np.testing.assert_array_equal(p.future_stamp, time_features(y))
        assert (p.index == y).all()
    alone = prepare_series(frames[1], xs[1], ys[1], 5)
    np.testing.assert_array_equal(alone.stamp, time_features(b[:20]))


def test_batched_preparation_names_the_bad_series_and_checks_bars_first():
    t = pd.date_range("2024-01-01", periods=12, freq="D")
    good, bad = _frame(10, 0), _frame(10, 1)
    bad.iloc[3, 0] = np.nan
    with pytest.raises(InputError, match=r"df_list\[1\] has 1 NaN"):
        prepare_batch([good, bad], [t[:10]] * 2, [t[10:]] * 2, 2)
    # The bars' error comes before that of the (here also bad) timestamps.
    with pytest.raises(InputError, match=r"df has 1 NaN"):
        prepare_batch([bad], [["not a time"] * 10], [t[10:]], 2)
    with pytest.raises(InputError, match=r"y_timestamp starts at"):
        prepare_batch([good, good], [t[:10], t[:10]], [t[10:], t[8:10]], 2)
    with pytest.raises(InputError, match=r"pred_len is 3"):
        prepare_batch([good], [t[:10]], [t[10:]], 3)
