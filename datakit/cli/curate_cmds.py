"""CLI commands for curate (see the library modules for the work)."""

COMMANDS: list = []
