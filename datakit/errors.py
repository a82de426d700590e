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


# what a full or read-only place looks like to the user: one line, and what to do about it
_OS_ERRORS = {
    "ENOSPC": "no space left on device; free some space and rerun the same command to resume",
    "EDQUOT": "disk quota exceeded; free some space and rerun the same command to resume",
    "EFBIG": "file too large for this system's file size limit (ulimit -f); rerun with a higher limit",
    "EROFS": "read-only file system; write somewhere else",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
}


def from_os_error(e: OSError) -> UserError | None:
    """The one-line :class:`UserError` for an ``OSError`` a user can fix (a full disk, a file size
    limit, a read-only or forbidden place), naming the path; None for any other OSError."""
    import errno

    name = errno.errorcode.get(e.errno or -1, "")
    if name not in _OS_ERRORS:
        return None
    path = e.filename if e.filename is not None else None
    return UserError(_OS_ERRORS[name], path=str(path) if path is not None else None)
