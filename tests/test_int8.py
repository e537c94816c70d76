"""int8 weight mode (inference.quantize): off by default, a quantised copy, the engine's
layouts through the int8 kernel, forecasts close to float32, CPU/float32 only."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY_MODEL, TINY_TOKENIZER, make_panel
from torch import nn

from kronos_alpha import Forecaster, Kronos, KronosPredictor, KronosTokenizer
from kronos_alpha.inference import quantize, step
from kronos_alpha.inference.quantize import Int8Linear, Int8Weight, is_int8, quantize_int8
from kronos_alpha.inference.settings import ForecastSettings, SettingsError

pytestmark = pytest.mark.filterwarnings("ignore:calendar=")  # business days, as meant
DEFAULT = ROOT / "kronos_alpha" / "assets" / "default"  # the bundled checkpoint, offline


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return Kronos(**TINY_MODEL).eval(), KronosTokenizer(**TINY_TOKENIZER).eval()


def settings(**kw):
    base = dict(lookback=32, horizon=4, sample_count=4, progress=False, calendar="business")
    return dict(base, **kw)


def linears(model) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear]


def test_off_by_default(pair):
    model, tok = pair
    assert ForecastSettings().int8 is False
    fc = Forecaster(model, tok, progress=False).load()
    assert fc.model_ is model and not is_int8(fc.model_)
    assert not is_int8(KronosPredictor(model, tok, device="cpu").model)


def test_quantised_copy_leaves_the_callers_model_alone(pair):
    model, _ = pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = linears(model)
    q = quantize_int8(model)
    assert q is not model and len(names) == 7 * TINY_MODEL["n_layers"] + 7  # all the Linears
    assert linears(q) == []
    assert [n for n, m in q.named_modules() if isinstance(m, Int8Linear)] == names
    assert linears(model) == names and not is_int8(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Embeddings and norms stay float32, shared with nothing.
    assert q.embedding.emb_s1.weight.dtype == torch.float32
    assert q.embedding.emb_s1.weight.data_ptr() != model.embedding.emb_s1.weight.data_ptr()
    # Each weight is within half a quantisation step of the original.
    for name in names:
        w, w8 = model.get_submodule(name).weight, q.get_submodule(name).weight
        assert isinstance(w8, Int8Weight) and w8.shape == w.shape
        step = q.get_submodule(name).scale[:, None]
        assert torch.all((w8.dequantize() - w).abs() <= step / 2 + 1e-7)


def test_refuses_other_dtypes():
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        quantize_int8(nn.Linear(4, 4).to(torch.bfloat16))


def test_the_engines_layouts_stay_int8_and_match_the_kernel(monkeypatch):
    """The stacking and re-layout step._step_weights applies (cat, the (in, out)
    layout, the per-thread blocks) give the same products as the stacked int8 matrix, each
    layout packed once however many products it runs."""
    packs = []
    prepack = quantize._prepack
    monkeypatch.setattr(quantize, "_prepack", lambda *a: packs.append(1) or prepack(*a))
    torch.manual_seed(1)
    a, b = (Int8Linear.from_linear(nn.Linear(16, 8)) for _ in range(2))
    x, bias = torch.randn(3, 16), torch.randn(16)
    stacked = torch.cat([a.weight, b.weight])
    assert isinstance(stacked, Int8Weight) and stacked.shape == (16, 16)
    want = F.linear(x, stacked, bias)
    dense = F.linear(x, stacked.dequantize(), bias)
    assert (want - dense).abs().max() < 0.05 * dense.abs().max()  # activations in 7 bits
    for parts in (1, 2, 4):
        laid = step._laid_out(a.weight, b.weight, parts=parts)
        assert isinstance(laid, Int8Weight)
        packs.clear()
        for _ in range(3):
            assert torch.equal(step._product(x, laid, bias), want)
        assert len(packs) == 1
    # Any other operation sees the dequantised matrix.
    assert torch.equal(stacked * 2, stacked.dequantize() * 2)
    assert torch.equal(stacked.t() @ x.t()[:16], stacked.dequantize().t() @ x.t()[:16])


@pytest.mark.parametrize("which, bound", [("tiny", 0.1), ("default", 0.2)])
def test_forecasts_are_finite_and_close_to_float32(pair, which, bound):
    """Greedy forecasts of 6 series x 10 dates, int8 against float32. Tolerance, in units
    of the spread (std) of the float32 forecasts, which is what a ranking sees: int8 moves
    the logits by about 1% (weights in 8 bits per row, inputs in 7), so it flips a greedy
    token only where two were nearly tied. Measured: mean |delta pred_return| 0.034 of the
    spread on the random tiny model and 0.052 on the bundled (trained) checkpoint; with
    the row scales scrambled (a broken quantisation) 0.155 and 1.1, outside the bounds.
    (With sampling, the shared uniforms hide even broken weights on the random model.)"""
    model, tok = pair if which == "tiny" else (str(DEFAULT), None)
    panel = make_panel(6, 80, seed=1)
    dates = panel["S0"].index[-10:]
    greedy = settings(sample_count=1, top_k=1)
    fp32 = Forecaster(model, tok, **greedy).forecast(panel, dates=dates)
    fc = Forecaster(model, tok, **dict(greedy, int8=True))
    int8 = fc.forecast(panel, dates=dates)
    assert is_int8(fc.model_) and not is_int8(fc.tokenizer_)
    assert fc.report["int8_weights"] is True and fc.report["dtype"] == "float32"
    a, b = fp32["pred_return"].to_numpy(), int8["pred_return"].to_numpy()
    assert np.isfinite(int8.to_numpy()).all() and len(a) == len(b) == 60
    assert np.abs(a - b).mean() < bound * a.std()
    assert np.corrcoef(a, b)[0, 1] > 0.99 - bound / 2
    # The cache tells them apart: the weights digest covers the int8 buffers.
    assert fc.weights_digest() != Forecaster(model, tok, **greedy).weights_digest()


def test_predictor_int8(pair):
    model, tok = pair
    panel = make_panel(1, 60, seed=2)["S0"]
    future = pd.bdate_range(panel.index[-1], periods=5)[1:]
    predictor = KronosPredictor(model, tok, device="cpu", int8=True)
    assert predictor.int8 and is_int8(predictor.model) and not is_int8(model)
    out = predictor.predict(panel, panel.index.to_series(), future.to_series(), 4, seed=0)
    assert out.shape == (4, 6) and np.isfinite(out.to_numpy()).all()


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(int8=True, device="cuda"), ["int8", "cuda"]),
        (dict(int8=True, device="mps"), ["int8", "mps"]),
        (dict(int8=True, dtype="bf16"), ["int8", "bfloat16"]),
        (dict(int8=True, dtype="fp16"), ["int8", "float16"]),
        (dict(int8="yes"), ["int8", "True or False"]),
    ],
)
def test_int8_off_the_cpu_or_in_half_precision_is_a_settings_error(pair, kw, words):
    model, tok = pair
    for make in (lambda: ForecastSettings(**kw), lambda: Forecaster(model, tok, **kw)):
        with pytest.raises(SettingsError) as info:
            make()
        assert all(w in str(info.value) for w in words)
    fc = Forecaster(model, tok, device=kw.get("device", "cpu"), dtype=kw.get("dtype"))
    with pytest.raises(SettingsError, match="int8"):
        fc.int8 = kw["int8"]
    if "device" in kw:
        with pytest.raises(SettingsError, match=kw["device"]):
            KronosPredictor(model, tok, device=kw["device"], int8=True)
        assert next(model.parameters()).device.type == "cpu"  # not moved first


def test_pickle_copy_and_params(pair):
    model, tok = pair
    fc = Forecaster(model, tok, **settings(int8=True)).load()
    assert fc.get_params()["int8"] is True
    back = pickle.loads(pickle.dumps(fc))
    assert back.int8 and back._loaded is None and is_int8(back.load().model_)
    clone = copy.deepcopy(fc)
    assert is_int8(clone.model_) and clone.model_ is not fc.model_
    fc.set_params(int8=False)
    assert fc._loaded is None and not is_int8(fc.model_)
    assert fc.with_settings(fc.settings.replace(int8=True))._loaded is None
