"""The command-line layer: the only code that parses arguments or prints reports (one module per
command). `guarded` is what every command does with a user-facing error or Ctrl-C: one line,
no traceback."""

import sys

from sdllm.errors import SdllmError


def guarded(prog: str, body) -> int:
    """Run body(); SdllmError -> 'prog: error: ...' and exit code 2, Ctrl-C -> exit code 130."""
    try:
        return body() or 0
    except SdllmError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing half-written is left, no process left running", file=sys.stderr)
        return 130
