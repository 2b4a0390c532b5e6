"""What every backend does with each token it generates: hand it to a callback as it comes
(streaming), and stop after the end-of-sequence token."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    n_prompt: int
    eos_id: int | None = None  # stop after generating this token (None: run to max_new_tokens)
    on_token: Callable[[int], None] | None = None  # called with each generated token id, in order

    def produced(self, position: int, token: int) -> bool:
        """The logits of `position` chose `token` (the token at position + 1). True: stop here."""
        if position + 1 < self.n_prompt:
            return False
        if self.on_token is not None:
            self.on_token(int(token))
        return self.eos_id is not None and int(token) == self.eos_id

    def needs_tokens(self) -> bool:
        """Whether a backend must look at each token as it comes (else it may read them at the end)."""
        return self.eos_id is not None or self.on_token is not None
