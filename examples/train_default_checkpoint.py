"""Train the project's offline default checkpoint (kronos_alpha/assets/default/).

Data: daily OHLCV of AAPL, GOOG, IBM and MSFT, 2000-03 .. 2013-03, from the PyPI package
``bokeh-sampledata`` (module ``bokeh_sampledata.stocks``; Quandl WIKI prices, public
domain). Prices are split- and dividend-adjusted with the source's ``adj_close / close``
factor (volume divided by it), so splits do not show up as crashes.

Both modules start fresh and are trained with ``kronos_alpha.finetune`` on the CPU:
tokenizer first, then the predictor on the frozen tokenizer's tokens. Train 2000-03-01 ..
2010-12-31, valid 2011-01-01 .. 2013-03-01, lookback 90 / horizon 10.

    pip install bokeh-sampledata   # (the dev extra)
    python examples/train_default_checkpoint.py [--out runs/default_checkpoint] [--no-install]

Writes the run to --out and, unless --no-install, copies config.json + model.safetensors of
both best checkpoints to kronos_alpha/assets/default/{tokenizer,model}/ plus training.json
(losses, data report, config, timings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from kronos_alpha.finetune import FinetuneConfig, run_finetune

from kronos_alpha import files

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "kronos_alpha" / "assets" / "default"
TICKERS = ["AAPL", "GOOG", "IBM", "MSFT"]

CONFIG = dict(
    seed=2024,
    device="cpu",
    max_context=512,
    num_threads=1,
    data=dict(
        source="panel",
        lookback=90,
        horizon=10,
        clip=5.0,
        train=["2000-03-01", "2010-12-31"],
        valid=["2011-01-01", "2013-03-01"],
    ),
    tokenizer=dict(
        init="fresh",
        config=dict(
            d_model=64, n_heads=4, ff_dim=128, n_enc_layers=3, n_dec_layers=3, s1_bits=8, s2_bits=8
        ),
        epochs=2,
        batch_size=50,
        samples_per_epoch=3000,
        val_samples=1000,
        lr=2e-3,
        patience=2,
    ),
    predictor=dict(
        init="fresh",
        config=dict(
            d_model=128,
            n_heads=4,
            ff_dim=256,
            n_layers=4,
            s1_bits=8,
            s2_bits=8,
            ffn_dropout_p=0.1,
            attn_dropout_p=0.0,
            resid_dropout_p=0.1,
            token_dropout_p=0.0,
            learn_te=True,
        ),  # fmt: skip
        epochs=4,
        batch_size=50,
        samples_per_epoch=3000,
        val_samples=1000,
        lr=2e-3,
        patience=2,
    ),
)


def load_panel() -> dict[str, pd.DataFrame]:
    """{ticker: adjusted daily OHLCV indexed by date} from bokeh-sampledata."""
    from bokeh_sampledata.stocks import data

    out = {}
    for t in TICKERS:
        df = data[data["ticker"] == t].set_index("date").sort_index()
        factor = df["adj_close"] / df["close"]
        adj = df[["open", "high", "low", "close"]].mul(factor, axis=0)
        adj["volume"] = df["volume"] / factor
        out[t] = adj
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=str(ROOT / "runs" / "default_checkpoint"))
    ap.add_argument(
        "--no-install", action="store_true", help="do not copy into kronos_alpha/assets/default"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    cfg = FinetuneConfig.from_dict(
        {**CONFIG, "output_dir": args.out, "progress": not args.no_progress}
    )
    t0 = time.perf_counter()
    result = run_finetune(cfg, load_panel(), restart=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(
        json.dumps(
            {k: result[k] for k in ("tokenizer", "predictor", "wall_s")}, indent=2, default=str
        )
    )
    if args.no_install:
        return
    for src, dst in ((result["tokenizer_path"], "tokenizer"), (result["model_path"], "model")):
        for name in ("config.json", "model.safetensors"):
            files.atomic_write(ASSETS / dst / name, (Path(src) / name).read_bytes())
    keep = ("val_loss_before", "val_loss_best", "best_epoch", "val_history", "global_step", "train_windows",
            "val_windows", "samples_per_s")  # fmt: skip
    summary = {
        "data": "bokeh-sampledata stocks: "
        + ", ".join(TICKERS)
        + " (adjusted with adj_close/close)",
        "windows": result["data"],
        "tokenizer": {k: result["tokenizer"][k] for k in keep},
        "predictor": {k: result["predictor"][k] for k in keep},
        "wall_s": result["wall_s"],
        "config": cfg.to_dict(),
    }
    files.write_json(ASSETS / "training.json", summary)
    print(f"installed into {ASSETS}")


if __name__ == "__main__":
    main()
