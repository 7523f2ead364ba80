"""Generation and infilling: fill a [MASK] span token by token, with a KV cache.

Plain generation is blank infilling of "prompt + [MASK]": Part A is the prompt (its earlier
part, beyond the working window, is first read into memory), Part B opens with [SOP] and
grows one sampled token at a time until [EOP]. The prompt is processed once (prefill); each
new token then attends to the cached keys and values of every layer, and to the memory read
at prefill. `use_cache=False` recomputes the whole sequence at each step instead (the
reference the cache is tested against).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlot.architecture import no_grad
from mlot.model.infilling import InfillBatch, make_infill_batch
from mlot.model.model import MemoryRead, MLoTSpark, preceding_text


@dataclass
class Sampler:
    """temperature 0 is greedy; top_k / top_p restrict the candidates before sampling."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = logits.astype(np.float64)
        if self.temperature == 0:
            return int(np.argmax(logits))
        logits = logits / self.temperature
        if self.top_k is not None and self.top_k < logits.size:
            cutoff = np.partition(logits, -self.top_k)[-self.top_k]
            logits = np.where(logits >= cutoff, logits, -np.inf)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-probs, kind="stable")
            keep = np.cumsum(probs[order]) - probs[order] < self.top_p  # the smallest head reaching top_p
            probs[order[~keep]] = 0.0
            probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))


@dataclass
class DecodeState:
    past: list           # per layer (keys, values) (1, H, P, D), rotated
    read: MemoryRead     # the memory read at prefill, reused by every step
    key_start: np.ndarray


def prepare_prompt(model: MLoTSpark, prompt_ids) -> np.ndarray:
    """Read the part of the prompt that does not fit the window into memory; return the rest."""
    if model.memory is None or model.memory.batch != 1:
        model.reset_memory(batch_size=1)
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
    window = model.config.segment_len - 1  # room for the [MASK]
    overflow = len(prompt_ids) - window
    if overflow > 0:
        for start in range(0, overflow, model.config.segment_len):
            model.write_memory([prompt_ids[start:min(start + model.config.segment_len, overflow)]])
        model.flush_memory()
    return prompt_ids[max(overflow, 0):]


def fill_span(model: MLoTSpark, part_a, mask_position: int, part_b=(), max_new_tokens: int = 32,
              sampler: Sampler | None = None, use_cache: bool = True):
    """Yield the tokens of the span at `mask_position` of Part A until [EOP] or the limit.

    part_b: earlier (tokens, mask_position) spans already filled, kept as context (GLM).
    """
    sampler = sampler or Sampler(temperature=0.0)
    limit = min(max_new_tokens, model.config.segment_len)
    tokens: list[int] = []
    before = lambda span: preceding_text(model, part_a, mask_position, span)[None]  # noqa: E731
    with no_grad():
        batch = _layout(model, part_a, part_b, mask_position, tokens)
        out = model(batch)
        state = DecodeState(out.presents, out.read, out.frame.key_start)
        logits = model.output_logits(out.hidden[:, -1], out.read, [0], before(tokens)).data[0]
        while len(tokens) < limit:
            token = sampler(logits)
            if token == model.special.eop:
                return
            tokens.append(token)
            yield token
            if len(tokens) == limit:
                return
            if use_cache:
                logits = _decode_step(model, token, mask_position, len(tokens) + 1, state, before(tokens))
            else:
                batch = _layout(model, part_a, part_b, mask_position, tokens)
                out = model(batch, record_access=False)
                logits = model.output_logits(out.hidden[:, -1], out.read, [0], before(tokens)).data[0]


def _layout(model, part_a, part_b, mask_position, tokens) -> InfillBatch:
    """[Part A | earlier spans | [SOP] tokens so far] as one row."""
    batch = make_infill_batch([np.asarray(part_a)], [[]], model.special)
    ids, pos_a, pos_b = [list(batch.ids[0])], [list(batch.pos_a[0])], [list(batch.pos_b[0])]
    for span_tokens, position in list(part_b) + [(tokens, mask_position)]:
        span = [model.special.sop] + list(span_tokens)
        ids[0] += span
        pos_a[0] += [position] * len(span)
        pos_b[0] += list(range(1, len(span) + 1))
    length = len(ids[0])
    return InfillBatch(np.array(ids), np.array(pos_a), np.array(pos_b), np.full((1, length), -100),
                       batch.prefix_len, np.array([length]))


def _decode_step(model: MLoTSpark, token: int, mask_position: int, span_position: int, state: DecodeState,
                 before: np.ndarray):
    """Run one new token against the KV cache; returns its logits and extends the cache."""
    n_past = state.past[0][0].shape[2]
    # the left-padded part of the cached working memory, now inside the past keys, stays hidden
    frame = model.attention_frame(np.array([[mask_position]]), np.zeros(1, np.int64), state.key_start, 0,
                                  n_past=n_past)
    x = model.wte(np.array([[token]])) + model.span_pos(np.array([[span_position]]))
    hidden, state.past = model._layers(x, frame, None, state.read, past=state.past)
    return model.output_logits(hidden[:, -1], state.read, [0], before).data[0]


def generate(model: MLoTSpark, prompt_ids, max_new_tokens: int = 32, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             use_cache: bool = True):
    """Yield up to max_new_tokens continuation tokens of `prompt_ids` (stops at [EOP])."""
    part_a = np.append(prepare_prompt(model, prompt_ids), model.special.mask)
    sampler = Sampler(temperature, top_k, top_p, seed)
    yield from fill_span(model, part_a, len(part_a) - 1, max_new_tokens=max_new_tokens, sampler=sampler,
                         use_cache=use_cache)


def infill(model: MLoTSpark, ids_with_masks, max_span_tokens: int = 16, sampler: Sampler | None = None,
           on_token=None) -> list:
    """Fill every [MASK] of `ids_with_masks` in order, each span seeing the ones before; returns the spans.

    on_token(span_number, token), when given, is called as each token is chosen (streaming).
    """
    part_a = prepare_prompt(model, ids_with_masks)
    spans = []
    for span_number, position in enumerate(np.flatnonzero(part_a == model.special.mask)):
        tokens = []
        for token in fill_span(model, part_a, int(position), part_b=spans, max_new_tokens=max_span_tokens,
                               sampler=sampler):
            tokens.append(token)
            if on_token is not None:
                on_token(span_number, token)
        spans.append((tokens, int(position)))
    return [tokens for tokens, _ in spans]
