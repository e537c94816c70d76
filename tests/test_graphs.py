"""The static-buffer (CUDA-graph) generation step: its wiring, validation and memory
estimate, and on a GPU the captured graphs against the eager tokens. On the CPU
``generate_graphed`` runs its static code eagerly, and test_generation's engine-equals-
reference tests run it as one of the engines."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_panel, token_inputs

from kronos_alpha.inference.data import time_features
from kronos_alpha.inference.generation import generate_reference, uniforms_for_seeds
from kronos_alpha.inference.graphs import generate_graphed


def test_capture_is_refused_off_cuda(tiny_pair):
    """Bad lengths are test_generation's (both engines); capturing needs CUDA tensors."""
    model, tokenizer = tiny_pair
    s1, s2, st, fst = token_inputs(tokenizer, 1, 8, 4)
    if s1.device.type != "cuda":
        with pytest.raises(ValueError, match="capture=True needs CUDA tensors"):
            generate_graphed(model, s1, s2, st, fst, 4, 16, capture=True)
    else:
        pytest.skip("the tensors are on CUDA: capture is allowed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("context,pred_len,max_context,sample_count", [
    (20, 8, 64, 1), (20, 12, 24, 3), (1, 4, 8, 2), (10, 1, 16, 2)])  # fmt: skip
def test_captured_graphs_give_the_eager_tokens(
    tiny_pair, dtype, context, pred_len, max_context, sample_count
):
    model, tokenizer = (copy.deepcopy(m) for m in tiny_pair)  # moved: not the shared pair
    model = model.to("cuda", dtype)
    s1, s2, st, fst = token_inputs(tokenizer, 3, context, pred_len, device="cuda")
    u = uniforms_for_seeds([1, 2, 3], sample_count, pred_len)
    for k, p, u_ in ((1, 1.0, None), (0, 0.9, u)):  # greedy, and sampling with shared numbers
        args = (model, s1, s2, st, fst, pred_len, max_context, sample_count, 1.0, k, p, u_)
        c1, c2 = generate_graphed(*args, capture=True)
        e1, e2 = generate_graphed(*args, capture=False)
        assert torch.equal(c1, e1) and torch.equal(c2, e2)
        if dtype == torch.float32 and k == 1:  # and greedy float32 is the reference's
            r1, r2 = generate_reference(*args)
            assert torch.equal(c1, r1) and torch.equal(c2, r2)


def test_cuda_graphs_is_a_validated_setting_of_every_door(tiny_pair):
    """cuda_graphs is one ForecastSettings flag: refused off CUDA (naming the device) and
    together with int8, in the settings, the Forecaster and the predictor alike."""
    from kronos_alpha import Forecaster, KronosPredictor
    from kronos_alpha.inference.settings import ForecastSettings, SettingsError

    model, tokenizer = tiny_pair
    with pytest.raises(SettingsError, match="cuda_graphs=True .* not 'cpu'"):
        ForecastSettings(cuda_graphs=True, device="cpu")
    with pytest.raises(SettingsError, match="choose one"):
        ForecastSettings(cuda_graphs=True, int8=True)
    with pytest.raises(SettingsError, match="cuda_graphs must be True or False"):
        ForecastSettings(cuda_graphs="yes")
    assert ForecastSettings(cuda_graphs=True).cuda_graphs  # device resolved at run time
    with pytest.raises(SettingsError, match="needs a CUDA device"):
        KronosPredictor(model, tokenizer, device="cpu", cuda_graphs=True)
    with pytest.raises(SettingsError, match="needs a CUDA device"):
        Forecaster(model, tokenizer, device="cpu", cuda_graphs=True).forecast(
            make_panel(2, 40), lookback=20, horizon=2
        )


def test_sample_paths_with_graphs_runs_the_static_step(tiny_pair, monkeypatch):
    """graphs=True routes sample_paths through generate_graphed (eager on the CPU), with
    the engine's sampled paths."""
    from kronos_alpha.inference import paths

    model, tokenizer = tiny_pair
    calls = []
    graphed = paths.generate_graphed
    monkeypatch.setattr(
        paths, "generate_graphed", lambda *a, **k: calls.append(1) or graphed(*a, **k)
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 6)).astype(np.float32)
    times = pd.date_range("2024-01-01 09:30", periods=16, freq="5min")
    stamp = np.broadcast_to(time_features(times), (2, 16, 5))
    u = uniforms_for_seeds([1, 2], 3, 4)
    args = (tokenizer, model, x, stamp[:, :12], stamp[:, 12:], 64, 3, 1.0, 0, 0.9, u)
    want = paths.sample_paths(*args)
    got = paths.sample_paths(*args, graphs=True)
    assert calls == [1]
    np.testing.assert_array_equal(got, want)


def test_the_memory_estimate_counts_every_paths_static_buffers(tiny_pair):
    """With CUDA-graph steps every path holds the whole span's keys and values, so a window's
    estimate grows by the context's caches for each extra path; without, paths share them."""
    from kronos_alpha.inference.device import window_bytes

    model, tokenizer = tiny_pair
    plain = window_bytes(model, tokenizer, torch.float32, 90, 5, 10)
    graphs = window_bytes(model, tokenizer, torch.float32, 90, 5, 10, graphs=True)
    per_token = (model.n_layers + 1) * 2 * model.d_model * 4
    assert graphs - plain == per_token * (5 * 100 - (90 + 5 * 10))
