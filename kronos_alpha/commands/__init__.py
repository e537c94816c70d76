"""Subcommands of the ``kronos-alpha`` CLI, one module each (see kronos_alpha.cli)."""
