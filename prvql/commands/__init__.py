"""Subcommands of the ``prvql`` CLI, one module each (see :mod:`prvql.cli`)."""
