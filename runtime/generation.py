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


class Generations:
    """A run's sequences (one, or a batch's, side by side: `sdllm.schedule.Timeline`), each with
    its own `Generation`; how many positions each keeps (up to its end-of-sequence token)."""

    def __init__(self, timeline, generations: list):
        self.timeline, self.generations = timeline, list(generations)
        self.ranges = timeline.sequences
        self.kept = [stop - first for first, stop in self.ranges]
        self.stopped = [False] * len(self.ranges)
        self._index = {first: s for s, (first, _) in enumerate(self.ranges)}

    def produced(self, position: int, token: int) -> bool:
        """position's logits chose `token`. True: every sequence has stopped (the run may end)."""
        first = int(self.timeline.first[position])
        s = self._index[first]
        if not self.stopped[s] and self.generations[s].produced(position - first, int(token)):
            self.stopped[s], self.kept[s] = True, position - first + 1
        return all(self.stopped)
