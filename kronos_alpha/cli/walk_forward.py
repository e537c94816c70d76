"""``kronos-alpha walk-forward --config FILE``: rolling-window evaluation of Kronos and baselines.

Re-running the same command resumes: finished windows are read back from the output folder.
"""

from __future__ import annotations

from . import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "walk-forward",
        help="walk-forward evaluation of Kronos against baselines (report in the output folder)",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", required=True, help="YAML file (see examples/walk_forward_csi300.yaml)"
    )
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument(
        "--restart", action="store_true", help="discard finished windows instead of resuming"
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import yaml

    from kronos_alpha.strategies.walk_forward import run_walk_forward

    path = Path(args.config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the top level must be a mapping of fields")
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    if args.no_progress:
        cfg["progress"] = False
    summary = run_walk_forward(cfg, restart=args.restart)
    table = summary.pop("table")
    summary.pop("paired", None)
    for k, v in summary.items():
        print(f"{k}: {v}")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    return 0
