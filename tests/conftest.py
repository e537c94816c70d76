"""Shared test fixtures: the upstream-tiny checkpoint, the shared market data, tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# KRONOS_SHARED points elsewhere (e.g. a copy carried to a GPU machine); KRONOS_TEST_DEVICE
# runs the device-aware tests (fixture goldens, engine == reference) on cuda.
SHARED = Path(os.environ.get("KRONOS_SHARED", ROOT.parent / "shared"))
DEVICE = os.environ.get("KRONOS_TEST_DEVICE", "cpu")
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
DATA = SHARED / "data"

TINY_MODEL = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=4, ff_dim=64, ffn_dropout_p=0.0,
                  attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)  # fmt: skip
TINY_TOKENIZER = dict(d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=2, n_dec_layers=2,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4, s2_bits=4,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)  # fmt: skip


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
