"""``kronos-alpha finetune --config FILE``: fine-tune the tokenizer and the predictor.

Runs on the CPU, one GPU, or several under ``torchrun --nproc_per_node N -m
kronos_alpha.cli finetune --config FILE``. Re-running the same command resumes.
"""

from __future__ import annotations

from . import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune the tokenizer and the predictor from a YAML config",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--config", required=True, help="YAML file (see examples/finetune_csi300.yaml)")
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard a saved run in output_dir instead of resuming",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from kronos_alpha.finetune import FinetuneConfig, run_finetune
    from kronos_alpha.finetune.run import print_summary
    from kronos_alpha.inference import distributed

    cfg = FinetuneConfig.from_yaml(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.no_progress:
        cfg.progress = False
    result = run_finetune(cfg, restart=args.restart)
    if distributed.rank() == 0:
        print_summary(result)
    distributed.shutdown()  # the trainer started it under torchrun
    return 0
