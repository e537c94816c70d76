"""The ``kronos-alpha`` command line.

Each subcommand lives next to the feature it drives, in a module with a
``register(subparsers)`` function that adds its parser and sets ``func``. Modules are
imported only when listed here, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, ...) each providing register(subparsers); order is the order in --help.
COMMAND_MODULES = [
    "kronos_alpha.cli.info",
    "kronos_alpha.cli.forecast",
    "kronos_alpha.cli.evaluate",
    "kronos_alpha.cli.finetune",
    "kronos_alpha.cli.qlib_data",
    "kronos_alpha.cli.walk_forward",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kronos-alpha",
        description="Kronos candlestick foundation models for Qlib, backtrader and vectorbt.",
    )
    from kronos_alpha import __version__

    parser.add_argument("--version", action="version", version=f"kronos-alpha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"kronos-alpha {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
