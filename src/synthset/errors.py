"""The one exception type users see: a one-line message naming the field and the fix, and the
helper that shortens a library's exception to that one line."""


class SynthsetError(Exception):
    """A user-facing error; the CLI prints its message on one line, without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (or its type's name)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
