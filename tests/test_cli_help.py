"""``--help`` shows the defaults everywhere: every option of every ``kronos-alpha`` subcommand
(and of ``qlib-data``'s actions) that has a default prints it as "(default: X)"."""

from __future__ import annotations

import argparse

import pytest

from kronos_alpha.cli import build_parser, main


def subparsers(parser: argparse.ArgumentParser, path=()):
    """(command path, parser) for every subcommand below ``parser``, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subparsers(sub, (*path, name))


def with_default(parser: argparse.ArgumentParser):
    """The options whose default is a value to show (not None, not an off switch)."""
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        yield action


COMMANDS = [path for path, _ in subparsers(build_parser())]


def test_every_subcommand_is_listed():
    assert {p[0] for p in COMMANDS} >= {"info", "forecast", "evaluate", "qlib-data", "qrun"}
    assert ("qlib-data", "check") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_each_default(path, capsys):
    parser = dict(subparsers(build_parser()))[path]
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), path
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for action in with_default(parser):
        # the option's own lines of --help, as the subcommand's formatter writes them
        fmt = parser._get_formatter()
        fmt.add_argument(action)
        block = " ".join(fmt.format_help().split())
        assert block in text, f"{' '.join(path)} --help does not list {action.option_strings}"
        assert f"(default: {action.default})" in block, (
            f"{' '.join(path)} {action.option_strings[0]}: --help does not show its default "
            f"{action.default!r}: {block!r}"
        )
