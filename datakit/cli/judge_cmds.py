"""CLI commands for judge (see the library modules for the work)."""

COMMANDS: list = []
