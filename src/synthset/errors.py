"""The one exception type users see: a one-line message naming the field and the fix."""


class SynthsetError(Exception):
    """A user-facing error; the CLI prints its message on one line, without a traceback."""
