"""The ``kronos-alpha`` command line.

Each subcommand is one module of this package (``kronos_alpha/cli/<name>.py``, listed in
``COMMAND_MODULES``) with a ``register(subparsers)`` function that adds its parser and sets
``func``. Every listed module is imported to build the parser; each imports what its
command needs beyond the ``kronos_alpha`` package (pandas, qlib, the adapters, matplotlib)
inside its ``run``, so ``--help`` loads no more than the package itself. The subcommands are
the top of the import layering (core <- finetune <- strategies <- adapters <- cli): they may
import anything, nothing imports them.

A ``ValueError`` (the input boundary's ``InputError`` and ``ForecastSettings``'
``SettingsError`` are ones), a missing file or an unknown key ends the command with one
line on stderr naming the subcommand, and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kronos_alpha.files import WriteError

# (module, ...) each providing register(subparsers); order is the order in --help.
COMMAND_MODULES = [
    "kronos_alpha.cli.info",
    "kronos_alpha.cli.forecast",
    "kronos_alpha.cli.evaluate",
    "kronos_alpha.cli.finetune",
    "kronos_alpha.cli.qlib_data",
    "kronos_alpha.cli.walk_forward",
    "kronos_alpha.cli.qrun",
]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` appends each option's default; a None default or an off switch is left to
    the option's own help text (which says what "not given" means)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kronos-alpha",
        description="Kronos candlestick foundation models for Qlib, backtrader and vectorbt.",
        formatter_class=DefaultsHelpFormatter,
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
    except (ValueError, FileNotFoundError, KeyError, WriteError) as exc:
        print(f"kronos-alpha {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
