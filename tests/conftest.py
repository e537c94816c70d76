"""Shared test fixtures and helpers: the upstream-tiny checkpoint, the shared market data,
tiny models, synthetic panels (``make_panel``) and bars (``make_bars``), the tiny fine-tuning
configuration. Test modules import these (``from conftest import DATA, make_panel``), never
from one another. ``KRONOS_SHARED`` relocates the shared folder for every module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_alpha.sample_data import shared_folder

ROOT = Path(__file__).resolve().parents[1]
# KRONOS_SHARED points elsewhere (e.g. a copy carried to a GPU machine); KRONOS_TEST_DEVICE
# runs the device-aware tests (fixture goldens, engine == reference) on cuda.
SHARED = shared_folder()  # $KRONOS_SHARED, else ../shared
DEVICE = os.environ.get("KRONOS_TEST_DEVICE", "cpu")
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
DATA = SHARED / "data"

TINY_MODEL = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=4, ff_dim=64, ffn_dropout_p=0.0,
                  attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)  # fmt: skip
TINY_TOKENIZER = dict(d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=2, n_dec_layers=2,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)  # fmt: skip
# Fine-tuning: ``config:`` overrides of the fresh tokenizer and predictor (finetune tests).
FINETUNE_TOK = dict(
    d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2, s1_bits=4, s2_bits=4
)
FINETUNE_PRED = dict(d_model=16, n_heads=2, ff_dim=32, n_layers=1, s1_bits=4, s2_bits=4)  # fmt: skip


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURE / "cases.json").exists():
        pytest.skip(f"upstream-tiny fixture not found at {FIXTURE}")
    return FIXTURE


@pytest.fixture(scope="session")
def upstream_tiny(fixture_dir):
    from kronos_alpha import Kronos, KronosTokenizer

    return Kronos.from_pretrained(fixture_dir / "model"), KronosTokenizer.from_pretrained(
        fixture_dir / "tokenizer"
    )


@pytest.fixture(scope="session")
def intraday_bars() -> pd.DataFrame:
    path = DATA / "intraday" / "sh600977_5min_2024.csv"
    if not path.exists():
        pytest.skip(f"shared intraday data not found at {path}")
    return pd.read_csv(path, parse_dates=["timestamps"])


@pytest.fixture(scope="session")
def golden_cases(fixture_dir) -> list[dict]:
    return json.loads((fixture_dir / "cases.json").read_text())


@pytest.fixture
def tiny_pair():
    """A random tiny model and tokenizer, seeded."""
    from kronos_alpha import Kronos, KronosTokenizer

    torch.manual_seed(0)
    return Kronos(**TINY_MODEL).eval().to(DEVICE), KronosTokenizer(**TINY_TOKENIZER).eval().to(
        DEVICE
    )


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """A folder with model/ and tokenizer/ of a seeded random tiny pair, in the Hub format."""
    from kronos_alpha import Kronos, KronosTokenizer

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    Kronos(**TINY_MODEL).save_pretrained(root / "model")
    KronosTokenizer(**TINY_TOKENIZER).save_pretrained(root / "tokenizer")
    return root


def token_inputs(tokenizer, n, context, pred_len, seed=0, device=DEVICE):
    """Tokens of n random contexts and five-minute stamps for generation tests: (s1, s2,
    context stamps, future stamps), on ``device``."""
    from kronos_alpha.inference.data import time_features

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, context, 6, generator=g).to(device)
    times = pd.date_range("2024-01-01 09:30", periods=context + pred_len, freq="5min")
    stamp = torch.from_numpy(time_features(times)).expand(n, -1, -1).contiguous().to(device)
    with torch.no_grad():
        s1, s2 = tokenizer.to(device).encode(x)
    return s1, s2, stamp[:, :context], stamp[:, context:]


def make_bars(n: int, seed: int, start: str = "2021-01-04") -> pd.DataFrame:
    """Synthetic daily OHLCV bars (a random walk) with a date column, for provider folders."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(1e5, 1e6, n).round()
    return pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def make_panel(
    n_series: int = 3,
    n_bars: int = 400,
    *,
    names=None,
    seed: int = 0,
    start: str = "2020-01-01",
    freq: str = "B",
    price: float = 100.0,
    sigma: float = 0.01,
    open_style: str = "linear",
    open_sd: float = 0.002,
    wick: float = 0.003,
    volume: tuple[float, float] = (1e5, 2e5),
) -> dict[str, pd.DataFrame]:
    """A synthetic OHLCV panel {name: frame indexed by ``n_bars`` timestamps from ``start``}.

    Names default to S0..S{n_series-1}. One ``default_rng(seed)`` draws, series after series:
    the closes (a log random walk from ``price``, step sd ``sigma``), the opens, the volumes
    (uniform in ``volume``). Opens: ``"linear"`` close * (1 + e), ``"log"`` close * exp(e),
    e ~ N(0, ``open_sd``); ``"flat"`` 0.999 * close, with no draw. High and low:
    max/min(open, close) * (1 +/- ``wick``); with ``"flat"``, close * (1 +/- ``wick``).
    """
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_bars, freq=freq)
    out = {}
    for name in names if names is not None else [f"S{k}" for k in range(n_series)]:
        c = price * np.exp(np.cumsum(rng.normal(0, sigma, n_bars)))
        if open_style == "linear":
            o = c * (1 + rng.normal(0, open_sd, n_bars))
        elif open_style == "log":
            o = c * np.exp(rng.normal(0, open_sd, n_bars))
        elif open_style == "flat":
            o = c * 0.999
        else:
            raise ValueError(f"open_style {open_style!r}")
        top, bottom = (c, c) if open_style == "flat" else (np.maximum(o, c), np.minimum(o, c))
        out[name] = pd.DataFrame(
            {
                "open": o,
                "high": top * (1 + wick),
                "low": bottom * (1 - wick),
                "close": c,
                "volume": rng.uniform(*volume, n_bars),
            },
            index=index,
        )
    return out


def finetune_config(tmp_path, **over) -> dict:
    """The tiny fine-tuning run (as a config dict) on ``make_panel()``'s dates; ``over``
    replaces top-level fields and merges into the sections that are dicts."""
    d = dict(
        output_dir=str(tmp_path / "run"),
        seed=0,
        device="cpu",
        progress=False,
        max_context=64,
        data=dict(lookback=20, horizon=5, train=["2020-01-01", "2020-12-31"], valid=["2021-01-01", "2021-07-31"]),
        tokenizer=dict(epochs=2, batch_size=8, samples_per_epoch=48, val_samples=32, save_every=2, config=FINETUNE_TOK),
        predictor=dict(
            epochs=2, batch_size=4, accum_steps=2, samples_per_epoch=48, val_samples=32, lr=1e-3, save_every=2,
            config={**FINETUNE_PRED, "ffn_dropout_p": 0.2, "token_dropout_p": 0.1},
        ),
    )  # fmt: skip
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d
