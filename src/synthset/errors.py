"""The one exception type users see: a one-line message naming the field and the fix, and the
helper that shortens a library's exception to that one line."""

import errno


class SynthsetError(Exception):
    """A user-facing error; the CLI prints its message on one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (or its type's name)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


#: OS errors that no retry fixes: the disk or the folder, not the batch, is at fault.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(exc: BaseException) -> SynthsetError | None:
    """A one-line error for a full disk, a quota or an unwritable folder; None for others."""
    if not isinstance(exc, OSError) or exc.errno not in _STORAGE_ERRNOS:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the filesystem is read-only",
    }.get(exc.errno, "permission denied")
    return SynthsetError(
        f"{why}{where}: free space or fix the folder's permissions (or pass --out on another "
        "disk); every finished image stays valid, and rerunning the command resumes"
    )
