"""CLI commands for generate (see the library modules for the work)."""

COMMANDS: list = []
