"""CLI commands for train (see the library modules for the work)."""

COMMANDS: list = []
