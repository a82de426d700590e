"""User-facing errors.

Anything the user can fix (a bad file, a bad option, an unreachable endpoint, a wrong key) is
raised as :class:`UserError`. The CLI prints its one-line message and exits with code 2, never a
traceback. Library callers catch it like any other exception.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can act on; ``str(err)`` is the one line shown to them."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"{field}: "
        super().__init__(where + message)


class TeacherError(UserError):
    """A teacher endpoint that cannot be used at all (unreachable, rejected key, unknown model)."""
