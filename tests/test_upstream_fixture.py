"""Bit-level agreement with the upstream implementation, through the upstream-tiny fixture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DEVICE

from kronos_alpha import KronosPredictor
from kronos_alpha.inference.data import normalize, scaler_stats, time_features
from kronos_alpha.inference.panel import as_timestamps, ohlcv_matrix

FEATURES = ["open", "high", "low", "close", "volume", "amount"]


@pytest.fixture(scope="module")
def components(fixture_dir):
    return dict(np.load(fixture_dir / "components_rows0_96.npz"))


def test_preprocessing_matches(components, intraday_bars):
    rows = intraday_bars.iloc[:96]
    x = ohlcv_matrix(rows[FEATURES])
    mean, std = scaler_stats(x)
    np.testing.assert_allclose(
        normalize(x, mean, std, 5), components["x_normalized"], rtol=0, atol=1e-6
    )
    np.testing.assert_array_equal(
        time_features(as_timestamps(rows["timestamps"])), components["stamp"]
    )


def test_component_outputs_match(upstream_tiny, components):
    model, tokenizer = upstream_tiny
    x = torch.from_numpy(components["x_normalized"])[None]
    stamp = torch.from_numpy(components["stamp"])[None]
    with torch.no_grad():
        s1, s2 = tokenizer.encode(x, half=True)
        np.testing.assert_array_equal(s1.numpy(), components["s1_ids"])
        np.testing.assert_array_equal(s2.numpy(), components["s2_ids"])
        np.testing.assert_array_equal(
            tokenizer.encode(x, half=False).numpy(), components["full_ids"]
        )
        np.testing.assert_allclose(
            tokenizer.decode((s1, s2)).numpy(), components["reconstruction"], atol=1e-5
        )
        logits, hidden = model.decode_s1(s1, s2, stamp)
        np.testing.assert_allclose(logits.numpy(), components["s1_logits"], atol=1e-5)
        s1_last = logits[:, -1].argmax(-1)
        np.testing.assert_array_equal(s1_last.numpy(), components["s1_argmax_last"][:, 0])
        s2_logits = model.decode_s2(hidden, s1_last)
        np.testing.assert_allclose(s2_logits.numpy(), components["s2_logits_last"], atol=1e-5)


@pytest.mark.parametrize("reference", [False, True], ids=["engine", "reference"])
def test_greedy_forecasts_equal_the_golden_csvs(
    upstream_tiny, golden_cases, intraday_bars, fixture_dir, reference, monkeypatch
):
    model, tokenizer = upstream_tiny
    if reference:  # the full-recompute loop must agree as well
        import kronos_alpha.inference.generation as generation

        monkeypatch.setattr(generation, "generate", generation.generate_reference)
    for case in golden_cases:
        golden = pd.read_csv(fixture_dir / case["file"], parse_dates=["timestamps"])
        start, ctx, pred = case["start"], case["context"], case["pred_len"]
        context = intraday_bars.iloc[start : start + ctx]
        future = intraday_bars.iloc[start + ctx : start + ctx + pred]
        predictor = KronosPredictor(
            model, tokenizer, device=DEVICE, max_context=case["max_context"]
        )
        out = predictor.predict(
            context[case["columns"]],
            context["timestamps"],
            future["timestamps"],
            pred,
            T=1.0,
            top_k=1,
            top_p=1.0,
        )
        assert list(out.columns) == FEATURES
        assert (out.index == pd.DatetimeIndex(golden["timestamps"])).all()
        # Relative 1e-5; the absolute floor only matters for the volume/amount of the OHLC-only
        # case, which are zero up to float noise (~1e-6), where a relative test means nothing.
        np.testing.assert_allclose(
            out.to_numpy(), golden[FEATURES].to_numpy(), rtol=1e-5, atol=1e-9, err_msg=case["file"]
        )


# The training losses are reproduced through the trainer's objectives in test_finetune.py.
