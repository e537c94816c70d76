"""One trainer for the CPU, one GPU, and several GPUs under torchrun (DDP).

It trains an *objective* (``objectives.py``): a module whose ``forward(x, stamp)`` returns
the loss dict of ``KronosTokenizer.loss`` or ``Kronos.loss``. Per optimizer step:
``accum_steps`` micro-batches, gradient clipping, AdamW and a OneCycle schedule stepped once.

Resume: every ``save_every`` steps and at each epoch end the model, optimizer, scheduler,
grad scaler, counters, best val loss and every rank's RNG states are written atomically, as
one pickle-free file (``state.py``), so a kill at any moment leaves a state whose parts belong
to the same step. The epoch order is a pure function of (seed, epoch), so a resumed run
continues at the exact step it stopped after and ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kronos_alpha import files
from kronos_alpha.inference import distributed
from kronos_alpha.model.hub import CheckpointError

from .checkpoint import save_pretrained_atomic
from .config import StageConfig
from .objectives import PredictorObjective, TokenizerObjective  # noqa: F401 (re-exported)
from .runtime import Runtime
from .state import LEGACY_NAME, STATE_NAME, capture_rng, load_state, restore_rng, save_state_atomic
from .windows import WindowDataset, epoch_order, eval_subset


class StopTraining(Exception):
    """Raised by a step callback to stop after saving the training state (tests, schedulers)."""


class Trainer:
    """Trains ``objective.trained`` on ``train_set``; keeps the best by val loss in ``out_dir/best``."""

    def __init__(
        self,
        name: str,
        objective: nn.Module,
        train_set: WindowDataset,
        val_set: WindowDataset,
        cfg: StageConfig,
        out_dir,
        seed: int,
        runtime: Runtime,
    ):
        self.name, self.cfg, self.seed, self.rt = name, cfg, seed, runtime
        self.train_set, self.val_set = train_set, val_set
        self.out_dir = Path(out_dir)
        self.best_dir = self.out_dir / "best"
        self.state_path = self.out_dir / "state" / STATE_NAME
        self.log_path = self.out_dir / "log.csv"
        self.objective = objective.to(runtime.device)
        self.module = objective.trained
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.ddp = None
        if runtime.world > 1:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        per_step = cfg.batch_size * cfg.accum_steps * runtime.world
        samples = cfg.samples_per_epoch or len(train_set)
        self.steps_per_epoch = max(1, math.ceil(samples / per_step))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=cfg.lr,
            total_steps=self.total_steps,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        self.val_index = eval_subset(len(val_set), cfg.val_samples, seed)
        self.state = {
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_val": math.inf,
            "best_epoch": None,
            "bad_epochs": 0,
            "val_before": None,
            "val_history": [],
            "done": False,
            "stopped_early": False,
        }
        self.writer = None

    # -- pieces ------------------------------------------------------------------------
    def _autocast(self):
        if self.rt.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.rt.device.type, dtype=self.rt.amp_dtype)

    def _batch(self, indices, dataset):
        x, stamp = dataset.batch(indices)
        return x.to(self.rt.device, non_blocking=True), stamp.to(self.rt.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the validation windows (shared across DDP ranks)."""
        self.objective.eval()
        mine = self.val_index[self.rt.rank :: self.rt.world]
        total = torch.zeros(2, dtype=torch.float64, device=self.rt.device)
        bs = self.cfg.batch_size
        for i in range(0, len(mine), bs):
            idx = mine[i : i + bs]
            x, stamp = self._batch(idx, self.val_set)
            with self._autocast():
                loss = self.objective(x, stamp)["loss"]
            total += torch.tensor(
                [float(loss) * len(idx), len(idx)], dtype=torch.float64, device=self.rt.device
            )
        distributed.all_reduce_sum(total)
        self.objective.train()
        return float(total[0] / total[1])

    def _log(self, row: dict) -> None:
        if not self.rt.main:
            return
        new = not self.log_path.exists()
        with open(self.log_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "split") and v not in ("", None):
                    self.writer.add_scalar(f"{self.name}/{row['split']}/{k}", float(v), row["step"])

    def _truncate_log(self, step: int) -> None:
        """After a resume, drop log rows of steps the saved state does not include."""
        if not self.rt.main or not self.log_path.exists():
            return
        with open(self.log_path, newline="") as f:  # a row cut by a kill has missing fields
            rows = [
                r for r in csv.DictReader(f) if None not in r.values() and int(r["step"]) <= step
            ]
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
        files.write_text(self.log_path, text.getvalue())

    def save_state(self) -> None:
        rng = distributed.gather([capture_rng()])  # every rank's, into rank 0's one file
        if self.rt.main:
            save_state_atomic(
                {
                    "module": self.module.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "trainer": dict(self.state),
                    "rng": rng,
                    "world": self.rt.world,
                    "total_steps": self.total_steps,
                },
                self.state_path,
            )
        distributed.barrier()

    def resume(self) -> bool:
        legacy = self.state_path.with_name(LEGACY_NAME)
        if legacy.exists() and not self.state_path.exists():
            raise CheckpointError(
                f"{legacy} is a pickled training state of an earlier version, which is not "
                "loaded; delete it (or restart: --restart) to train from the start"
            )
        saved = load_state(self.state_path)
        if saved is None:
            return False
        if saved["total_steps"] != self.total_steps or saved["world"] != self.rt.world:
            raise ValueError(
                f"{self.state_path}: saved run has {saved['total_steps']} steps on {saved['world']} process(es), "
                f"this one {self.total_steps} on {self.rt.world}; restart in a new output_dir"
            )
        self.module.load_state_dict(saved["module"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state.update(saved["trainer"])
        restore_rng(saved["rng"][self.rt.rank])
        self._truncate_log(self.state["global_step"])
        return True

    # -- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool = True, on_step=None) -> dict:
        """Train to the end or until early stopping; returns a summary.

        ``on_step(global_step)`` runs after each optimizer step; raising ``StopTraining``
        there saves the state and returns with ``summary["stopped"] = True``.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = resume and self.resume()
        if self.rt.tensorboard and self.rt.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        st = self.state
        if st["val_before"] is None:
            st["val_before"] = self.evaluate()
            self._log({"step": 0, "epoch": 0, "split": "val", "loss": st["val_before"]})
        cfg, rt = self.cfg, self.rt
        B, A = cfg.batch_size, cfg.accum_steps
        per_epoch = self.steps_per_epoch * B * A * rt.world
        self.objective.train()
        stopped = False
        started = time.perf_counter()
        steps_run = 0
        try:
            while not st["done"] and st["epoch"] < cfg.epochs:
                order = epoch_order(len(self.train_set), per_epoch, self.seed, st["epoch"])[
                    rt.rank :: rt.world
                ]
                bar = None
                if rt.progress and rt.main:
                    from tqdm.auto import tqdm

                    bar = tqdm(
                        total=self.steps_per_epoch,
                        initial=st["step_in_epoch"],
                        desc=f"{self.name} epoch {st['epoch'] + 1}/{cfg.epochs}",
                        leave=False,
                    )
                while st["step_in_epoch"] < self.steps_per_epoch:
                    j = st["step_in_epoch"]
                    parts = self._step(order[j * B * A : (j + 1) * B * A])
                    st["step_in_epoch"] += 1
                    st["global_step"] += 1
                    steps_run += 1
                    row = {
                        "step": st["global_step"],
                        "epoch": st["epoch"] + 1,
                        "split": "train",
                        **parts,
                    }
                    row["lr"] = self.scheduler.get_last_lr()[0]
                    self._log(row)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{parts['loss']:.4f}")
                    if st["global_step"] % cfg.save_every == 0:
                        self.save_state()
                    if on_step is not None:
                        on_step(st["global_step"])
                if bar is not None:
                    bar.close()
                self._end_epoch()
        except StopTraining:
            self.save_state()
            stopped = True
        finally:
            if self.writer is not None:
                self.writer.close()
        elapsed = time.perf_counter() - started
        return {
            "stage": self.name,
            "resumed": resumed,
            "stopped": stopped,
            "done": st["done"],
            "stopped_early": st["stopped_early"],
            "global_step": st["global_step"],
            "total_steps": self.total_steps,
            "val_loss_before": st["val_before"],
            "val_loss_best": None if math.isinf(st["best_val"]) else st["best_val"],
            "best_epoch": st["best_epoch"],
            "val_history": list(st["val_history"]),
            "train_windows": len(self.train_set),
            "val_windows": int(len(self.val_index)),
            "steps_this_run": steps_run,
            "samples_per_s": steps_run * B * A * rt.world / elapsed
            if elapsed > 0 and steps_run
            else None,
            "best_dir": str(self.best_dir),
        }

    def _step(self, idx: np.ndarray) -> dict:
        cfg = self.cfg
        micro = [idx[a * cfg.batch_size : (a + 1) * cfg.batch_size] for a in range(cfg.accum_steps)]
        sums: dict[str, float] = {}
        for a, mb in enumerate(micro):
            x, stamp = self._batch(mb, self.train_set)
            last = a == len(micro) - 1
            sync = (
                self.ddp.no_sync()
                if (self.ddp is not None and not last)
                else contextlib.nullcontext()
            )
            with sync:
                with self._autocast():
                    out = (self.ddp or self.objective)(x, stamp)
                self.scaler.scale(out["loss"] / len(micro)).backward()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / len(micro)
        self.scaler.unscale_(self.optimizer)
        sums["grad_norm"] = float(
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.module.parameters() if p.requires_grad], cfg.clip_grad
            )
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return sums

    def _end_epoch(self) -> None:
        st = self.state
        val = self.evaluate()
        st["val_history"].append(val)
        self._log(
            {"step": st["global_step"], "epoch": st["epoch"] + 1, "split": "val", "loss": val}
        )
        if val < st["best_val"]:
            st["best_val"], st["best_epoch"], st["bad_epochs"] = val, st["epoch"] + 1, 0
            if self.rt.main:
                save_pretrained_atomic(self.module, self.best_dir)
        else:
            st["bad_epochs"] += 1
        st["epoch"] += 1
        st["step_in_epoch"] = 0
        if st["bad_epochs"] >= self.cfg.patience:
            st["stopped_early"] = True
            st["done"] = True
        if st["epoch"] >= self.cfg.epochs:
            st["done"] = True
        self.save_state()

    def load_best(self):
        """The best weights (from ``best/``), loaded into the trained module."""
        from safetensors.torch import load_file

        from kronos_alpha.model.hub import WEIGHTS_NAME

        distributed.barrier()
        state = load_file(str(self.best_dir / WEIGHTS_NAME), device=str(self.rt.device))
        self.module.load_state_dict(state)
        return self.module


LOG_FIELDS = [
    "step", "epoch", "split", "loss", "lr", "grad_norm",
    "recon_from_s1_mse", "recon_full_mse", "bsq_loss", "ce_s1", "ce_s2",
]  # fmt: skip
