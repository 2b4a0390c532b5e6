"""The one exception every command turns into a one-line message (no traceback)."""


class SdllmError(Exception):
    """A user-facing error: the message names the thing, the limit and the value."""
