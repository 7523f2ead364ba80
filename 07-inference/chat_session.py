"""One conversation with the model, its memory carrying what was said.

The memory flow of a turn (the design notes' retriever over past turns and in-layer memory
injection, with the model's own memory cascade doing both):

1. query     the user's turn "[USER] text [MODEL]" is the query: it becomes Part A of a
             blank to fill, "[USER] text [MODEL] [MASK]";
2. retrieve  while reading Part A the model attends to its working cache (the latest turns)
             and retrieves the top-k episodic entries (chunks of older turns) and semantic
             slots its chunks match, injected by the memory layers' cross-attention;
3. reply     the [MASK] is filled token by token against the KV cache (one span: the reply);
4. archive   the whole turn "[USER] text [MODEL] reply" is written to memory (`write_memory`,
             segment by segment). It enters the working cache; the tokens it pushes out of the
             cache become episodic entries, so a fact leaves the window but stays retrievable.
             No flush per turn: the conversation is one running document, so evicted tokens
             form whole chunks (a flush would cut each turn's share into fragments); the part
             of a chunk still pending waits in the chunk buffer, which the memory file keeps;
5. consolidate  now and then (`MemoryConsolidator`: every `consolidate_every` turns or when a
             store is nearly full) entries retrieved often or marked important are promoted to
             semantic slots and stale ones pruned.

Turns are token ids here; `chat.py` is the text front end.
"""
from __future__ import annotations

from mlot.inference.continuation import Continuation
from mlot.model.generation import Sampler
from mlot.memory.consolidation import ConsolidationConfig, MemoryConsolidator


class ChatSession:
    """Turns in, replies out, memory in between. `turns` counts archived turns; an episodic
    entry's doc id is the turn during which it was written (its tokens left the working cache)."""

    def __init__(self, model, user_id: int, model_id: int, stop_ids=(), sampler: Sampler | None = None,
                 max_reply_tokens: int = 48, consolidate_every: int = 8, turns: int = 0):
        self.model = model
        self.user_id, self.model_id = int(user_id), int(model_id)
        self.stop_ids = frozenset([self.user_id, self.model_id, *stop_ids])
        self.sampler = sampler or Sampler(temperature=0.0)
        self.max_reply_tokens = max_reply_tokens
        self.consolidator = MemoryConsolidator(ConsolidationConfig(interval=consolidate_every, min_gap=1))
        self.turns = turns
        if model.memory is None or model.memory.batch != 1:
            model.reset_memory(batch_size=1)

    def turn(self, user_ids, on_token=None) -> list:
        """Reply to the user's tokens (each reply token passed to on_token as it comes), then
        archive the turn; returns the reply tokens."""
        continuation = Continuation(self.model, self.prompt(user_ids), self.sampler, self.stop_ids)
        reply = []
        for token in continuation.tokens(self.max_reply_tokens, max_spans=1):
            reply.append(token)
            if on_token is not None:
                on_token(token)
        self._archive(continuation.unwritten())
        return reply

    def prompt(self, user_ids) -> list:
        """The query of a turn: [USER] text [MODEL]."""
        return [self.user_id, *map(int, user_ids), self.model_id]

    def archive(self, user_ids, reply_ids) -> None:
        """Write a turn the model did not reply to itself (a scripted one) to memory."""
        self._archive(self.prompt(user_ids) + [int(token) for token in reply_ids])

    def _archive(self, turn_ids) -> None:
        self.turns += 1
        segment = self.model.config.segment_len
        for start in range(0, len(turn_ids), segment):
            self.model.write_memory([turn_ids[start:start + segment]], doc_ids=[self.turns])
        self.consolidator.step(self.model.memory, self.turns)

    def forget(self) -> None:
        """Clear every memory tier, semantic included, and the turn count."""
        self.model.memory = None
        self.model.reset_memory(batch_size=1)
        self.consolidator = MemoryConsolidator(self.consolidator.config)
        self.turns = 0
