"""KronosPredictor: the published API, its extensions, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, TINY_TOKENIZER

from kronos_alpha import InputError, Kronos, KronosPredictor, KronosTokenizer, auto_device

FEATURES = ["open", "high", "low", "close", "volume", "amount"]


@pytest.fixture
def predictor(upstream_tiny):
    model, tokenizer = upstream_tiny
    return KronosPredictor(model, tokenizer, device="cpu", max_context=128)


@pytest.fixture
def window(intraday_bars):
    ctx = intraday_bars.iloc[100:160].reset_index(drop=True)
    fut = intraday_bars.iloc[160:168].reset_index(drop=True)
    return ctx, ctx["timestamps"], fut["timestamps"]


def test_predict_returns_the_published_frame(predictor, window):
    df, xt, yt = window
    out = predictor.predict(df[FEATURES], xt, yt, pred_len=8, verbose=False, seed=0)
    assert list(out.columns) == FEATURES
    assert (out.index == pd.DatetimeIndex(yt)).all()
    assert np.isfinite(out.to_numpy()).all()


def test_seed_makes_sampling_reproducible(predictor, window):
    df, xt, yt = window
    a = predictor.predict(df, xt, yt, 8, sample_count=3, seed=5)
    b = predictor.predict(df, xt, yt, 8, sample_count=3, seed=5)
    c = predictor.predict(df, xt, yt, 8, sample_count=3, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_paths_are_all_returned_and_average_to_predict(predictor, window):
    df, xt, yt = window
    (paths,) = predictor.predict_paths([df], [xt], [yt], 8, sample_count=4, seed=1)
    assert paths.shape == (4, 8, 6)
    assert not np.allclose(paths[0], paths[1])  # distinct draws
    mean = predictor.predict(df, xt, yt, 8, sample_count=4, seed=1)
    np.testing.assert_allclose(mean.to_numpy(), paths.mean(axis=0), rtol=1e-6)
    one = predictor.predict_paths(df, xt, yt, 8, sample_count=4, seed=1)  # a frame, as predict
    np.testing.assert_array_equal(one, paths)


def test_predict_batch_accepts_different_context_lengths(predictor, intraday_bars):
    frames, xts, yts = [], [], []
    for start, length in ((0, 40), (300, 70), (600, 40)):
        ctx = intraday_bars.iloc[start : start + length]
        fut = intraday_bars.iloc[start + length : start + length + 5]
        frames.append(ctx)
        xts.append(ctx["timestamps"])
        yts.append(fut["timestamps"])
    batch = predictor.predict_batch(frames, xts, yts, 5, top_k=1, top_p=1.0)
    for df, xt, yt, out in zip(frames, xts, yts, batch):
        alone = predictor.predict(df, xt, yt, 5, top_k=1, top_p=1.0)
        np.testing.assert_allclose(out.to_numpy(), alone.to_numpy(), rtol=1e-5)


def test_a_constant_column_gives_no_nan(predictor, window):
    df, xt, yt = window
    flat = df.copy()
    flat[["open", "high", "low", "close"]] = 10.0
    out = predictor.predict(flat, xt, yt, 8, seed=0)
    assert np.isfinite(out.to_numpy()).all()


def test_volume_and_amount_are_optional(predictor, window):
    df, xt, yt = window
    for cols in (["open", "high", "low", "close"], ["open", "high", "low", "close", "volume"]):
        out = predictor.predict(df[cols], xt, yt, 8, seed=0)
        assert list(out.columns) == FEATURES


def test_device_auto_detection_falls_back_to_cpu(upstream_tiny):
    assert auto_device() in {"cuda", "mps", "cpu"}
    model, tokenizer = upstream_tiny
    assert KronosPredictor(model, tokenizer).device == auto_device()


@pytest.mark.parametrize(
    "mutate,match",
    [
        (
            lambda df, xt, yt, n: (df.drop(columns=["close"]), xt, yt, n),
            "missing price column.*close",
        ),
        (
            lambda df, xt, yt, n: (df.assign(high=df["high"].where(df.index != 7)), xt, yt, n),
            "NaN/inf.*'high'.*row 7",
        ),
        (
            lambda df, xt, yt, n: (
                df.assign(volume=df["volume"].replace(df["volume"].iloc[3], np.inf)),
                xt,
                yt,
                n,
            ),
            "NaN/inf.*'volume'",
        ),
        (lambda df, xt, yt, n: (df, xt[::-1].reset_index(drop=True), yt, n), "out of order"),
        (lambda df, xt, yt, n: (df, xt.where(xt.index != 5, xt[4]), yt, n), "duplicated timestamp"),
        (
            lambda df, xt, yt, n: (df, xt[:-1], yt, n),
            "x_timestamp has 59 entries but df has 60 rows",
        ),
        (lambda df, xt, yt, n: (df, xt, yt, 0), "pred_len must be a positive integer"),
        (lambda df, xt, yt, n: (df, xt, yt, -3), "pred_len must be a positive integer"),
        (lambda df, xt, yt, n: (df, xt, yt, 5), "pred_len is 5 but y_timestamp has 8"),
        (lambda df, xt, yt, n: (df.iloc[:0], xt[:0], yt, n), "is empty"),
        (lambda df, xt, yt, n: (df.iloc[:1], xt[:1], yt, n), "single row"),
        (
            lambda df, xt, yt, n: (df.assign(low=-df["low"]), xt, yt, n),
            "negative price in column 'low'",
        ),
        (lambda df, xt, yt, n: (df, xt, xt[-8:], n), "not after the last context bar"),
        (lambda df, xt, yt, n: (df.to_numpy(), xt, yt, n), "must be a pandas DataFrame"),
    ],
)
def test_bad_input_is_named(predictor, window, mutate, match):
    df, xt, yt, n = mutate(*window, 8)
    with pytest.raises(ValueError, match=match):
        predictor.predict(df, xt, yt, pred_len=n)


def test_bit_widths_must_agree():
    model = Kronos(**TINY_MODEL)
    tokenizer = KronosTokenizer(**dict(TINY_TOKENIZER, s1_bits=6, s2_bits=6, group_size=4))
    with pytest.raises(ValueError, match=r"bit widths \(s1=6, s2=6\) disagree.*s1=4, s2=4"):
        KronosPredictor(model, tokenizer)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)
