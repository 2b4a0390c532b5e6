"""The one exception every command turns into a one-line message (no traceback)."""


class SdllmError(Exception):
    """A user-facing error: the message names the thing, the limit and the value."""


class OutOfRange(SdllmError, OverflowError):
    """An integer computation would leave the range it is exact in: the values it was given (a
    damaged or hostile build's scales, say) are out of bounds for it."""
