"""Open-ended generation as a chain of blank-infilling spans, each token streamed as it comes.

The model continues text by filling "context + [MASK]" (GLM): one span runs until [EOP]. It was
trained on spans of at most `max_span_len` tokens, so a longer continuation is a chain: the
span just written joins the context and a new [MASK] asks for what follows. Inside a span every
token costs one step against the KV cache (`mlot.model.generation.fill_span`); a new span
prefills its window once.

The context beyond the working window goes into memory (working cache, then episodic) before
the window is read, exactly once: `written` counts the tokens already in memory, so that a chat
turn archives only the rest (`unwritten`).
"""
from __future__ import annotations

import numpy as np

from mlot.model.generation import Sampler, fill_span, prepare_prompt


class Continuation:
    """The token sequence of a context growing by generated spans."""

    def __init__(self, model, context_ids, sampler: Sampler, stop_ids=()):
        self.model = model
        self.sampler = sampler
        self.stop_ids = frozenset(int(token) for token in stop_ids)
        self.ids = [int(token) for token in context_ids]
        self.written = 0  # ids[:written] are already in memory

    def tokens(self, max_new_tokens: int, max_spans: int | None = None):
        """Yield up to max_new_tokens new tokens; stops at a stop token (not yielded), at an
        empty span, or after max_spans spans."""
        new, spans = 0, 0
        while new < max_new_tokens and (max_spans is None or spans < max_spans):
            window = prepare_prompt(self.model, self.ids[self.written:])  # writes the overflow
            self.written = len(self.ids) - len(window)
            part_a = np.append(window, self.model.special.mask)
            span_length = 0
            for token in fill_span(self.model, part_a, len(part_a) - 1, max_new_tokens=max_new_tokens - new,
                                   sampler=self.sampler):
                if token in self.stop_ids:
                    return
                self.ids.append(token)
                new, span_length = new + 1, span_length + 1
                yield token
            spans += 1
            if span_length == 0:
                return

    def unwritten(self) -> list:
        """The tokens not yet in memory (the window of the last span and what it generated)."""
        return self.ids[self.written:]
