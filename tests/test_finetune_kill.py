"""Resume after SIGKILL: a CLI run killed mid-way and re-run ends with the same weights and
the same loss log as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from conftest import finetune_config, make_panel
from safetensors.torch import load_file


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = tmp_path / "csv"
    data.mkdir()
    for name, df in make_panel(3).items():
        df.rename_axis("timestamps").reset_index().to_csv(data / f"{name}.csv", index=False)
    cmds = {}
    for run in ("a", "b"):
        cfg = finetune_config(
            tmp_path / run, data=dict(source="csv", csv_dir=str(data)), num_threads=1
        )
        cfg["tokenizer"].update(epochs=1)
        cfg["predictor"].update(epochs=3, samples_per_epoch=200, save_every=3)
        path = tmp_path / f"{run}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmds[run] = [
            sys.executable,
            "-m",
            "kronos_alpha.cli",
            "finetune",
            "--config",
            str(path),
            "--no-progress",
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmds["a"], check=True, capture_output=True, env=env, timeout=240)

    log = tmp_path / "b" / "run" / "predictor" / "log.csv"
    proc = subprocess.Popen(
        cmds["b"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count(",train,") >= 20:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = log.read_text().count(",train,")
    assert killed_at < 75  # 75 = 3 epochs x 25 steps
    subprocess.run(cmds["b"], check=True, capture_output=True, env=env, timeout=240)

    for stage in ("tokenizer", "predictor"):
        a = load_file(str(tmp_path / "a" / "run" / stage / "best" / "model.safetensors"))
        b = load_file(str(tmp_path / "b" / "run" / stage / "best" / "model.safetensors"))
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage} {k}"
    la = pd.read_csv(tmp_path / "a" / "run" / "predictor" / "log.csv")
    lb = pd.read_csv(log)
    assert la["step"].tolist() == lb["step"].tolist()  # no lost or repeated steps
    assert (la["loss"].to_numpy() == lb["loss"].to_numpy()).all()
