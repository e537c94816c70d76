"""DDP on the CPU: two gloo ranks under torchrun train the tiny config end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml
from conftest import finetune_config, make_panel
from kronos_alpha.finetune import load_state


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    data = tmp_path / "csv"
    data.mkdir()
    for name, df in make_panel(3).items():
        df.rename_axis("timestamps").reset_index().to_csv(data / f"{name}.csv", index=False)
    cfg = finetune_config(tmp_path, data=dict(source="csv", csv_dir=str(data)), num_threads=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", "29533", "-m", "kronos_alpha.cli"]
    cmd += ["finetune", "--config", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    result = json.loads(out[out.index("{") :])  # printed once, by rank 0
    assert out.count('"model_path"') == 1
    for stage in ("tokenizer", "predictor"):
        s = result[stage]
        # 48 samples per epoch over 2 ranks: half the optimizer steps of one process
        assert s["done"] and s["val_loss_best"] < s["val_loss_before"]
    assert result["predictor"]["total_steps"] == 2 * 3  # ceil(48 / (4 * 2 * 2)) * 2 epochs
    state = load_state(tmp_path / "run" / "predictor" / "state" / "training_state.safetensors")
    assert len(state["rng"]) == 2  # both ranks' generators, in the one atomic file
