"""MLoT-Spark: a pre-LN transformer over one segment doing blank infilling, with the working →
episodic → semantic memory cascade wired in.

When memory is read and written within a step (see README):
  read   during `forward`, before the first block: each chunk of Part A (its mean token
         embedding through the retriever) retrieves the top-k episodic entries of its own row
         (each read with the entry archived after it, its continuation), and the segment the
         top-k semantic slots (refined by the GNN); the injection blocks of
         the memory layers attend to them. Every block's self-attention also sees the working
         cache of its layer.
  write  in `write_memory`, after the step: a no-grad pass over the clean segment pushes each
         layer's inputs into the working cache; tokens leaving the cache are cut into chunks
         and written as episodic entries: the source layer's (first memory layer's) input
         states as values, the retriever's projection of their mean token embedding as key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mlot.architecture import Tensor, concat, nn, no_grad
from mlot.architecture import functional as F
from mlot.architecture.threads import fit_threads_to_load
from mlot.memory.chunking import pool_chunks
from mlot.memory.episodic import normalize_rows
from mlot.memory.gnn import MemoryGNN
from mlot.model.blocks import AttentionFrame, Block, MemoryInjectionBlock
from mlot.model.copy_head import MemoryCopyHead, shared_tokens
from mlot.model.infilling import InfillBatch, SpecialIds, make_infill_batch
from mlot.model.memory_state import SIDE_CHANNELS, ModelMemory


@dataclass
class ModelOutput:
    hidden: Tensor               # (B, L, d) final normalised states
    segment_states: Tensor       # (B, d) mean Part A state; segment_vector() of it orders segments
    read: "MemoryRead"           # what was read from memory, and the pooled query chunks
    frame: AttentionFrame        # where the keys sat (decoding continues from it)
    presents: list               # per layer (keys, values) attended to, rotated (a KV cache)
    layer_inputs: list | None    # per layer (B, L, d) inputs, when collected


@dataclass
class MemoryRead:
    """What one forward read from episodic and semantic memory."""
    tokens: Tensor | None        # (B, M, d): semantic slots first, then episodic tokens, then padding
    count: np.ndarray            # (B,) valid memory tokens per row
    retrieved: list              # per row, the episodic entries read
    query_pooled: np.ndarray | None = None
    query_valid: np.ndarray | None = None
    token_ids: np.ndarray | None = None  # (B, M): each memory token's id, -1 for slots and padding
    token_previous_ids: np.ndarray | None = None  # (B, M, c): the ids of the c tokens before it, nearest first
    pointer_tokens: Tensor | None = None  # (B, P, d): what the copy head points at (memory, cache, Part A)
    pointer_ids: np.ndarray | None = None  # (B, P): their token ids, -1 where none
    pointer_previous_ids: np.ndarray | None = None  # (B, P, c): the ids of the c tokens before each, -1 where none

    @classmethod
    def empty(cls, batch_size: int, query_pooled=None, query_valid=None) -> "MemoryRead":
        return cls(None, np.zeros(batch_size, np.int64), [np.zeros(0, np.int64)] * batch_size,
                   query_pooled, query_valid)


class MLoTSpark(nn.Module):
    def __init__(self, config, *, seed: int = 0):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed)
        d, out_std = config.d_model, 0.02 / np.sqrt(2 * config.n_layers)  # GPT-2's scaled residual init
        self.special = SpecialIds(config.pad_id, config.mask_id, config.sop_id, config.eop_id)
        self.wte = nn.Embedding(config.vocab_size, d, rng=rng)
        self.span_pos = nn.Embedding(config.segment_len + 2, d, rng=rng)  # position inside a span; 0 = Part A
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.d_ff, config.dropout, config.layer_norm_eps,
                                          rng, out_std) for _ in range(config.n_layers))
        self.injections = nn.ModuleList(MemoryInjectionBlock(d, config.n_heads, config.gate_init,
                                                             config.layer_norm_eps, rng)
                                        for _ in config.memory_layers)
        self.ln_f = nn.LayerNorm(d, config.layer_norm_eps)
        self.retriever = nn.Linear(d, config.retriever_dim, bias=False, rng=rng, init_std=d ** -0.5)
        self.gnn = MemoryGNN(d, config.gnn_rounds, rng=rng) if config.semantic else None
        self.segment_head = nn.Linear(d, d, rng=rng)
        self.coherence_head = nn.Linear(d, 1, rng=rng)  # a segment's "earliness" in its document
        self.copy_head = MemoryCopyHead(d, rng) if config.copy_head else None
        self.injection_of_layer = {layer: i for i, layer in enumerate(config.memory_layers)}
        self.source_layer = min(config.memory_layers) if config.memory_layers else 0  # episodic values: its inputs
        self.use_working = config.working_cache_len > 0
        self.use_episodic, self.use_semantic = config.episodic, config.semantic
        self.memory: ModelMemory | None = None

    # --- memory switches and state --------------------------------------------------------------
    def set_memory(self, working: bool | None = None, episodic: bool | None = None,
                   semantic: bool | None = None) -> None:
        """Switch memory tiers on or off for reading (ablations); writing goes on regardless."""
        if working is not None:
            self.use_working = working and self.config.working_cache_len > 0
        if episodic is not None:
            self.use_episodic = episodic and self.config.episodic
        if semantic is not None:
            self.use_semantic = semantic and self.config.semantic

    def reset_memory(self, batch_size: int | None = None, rows=None) -> None:
        """Start new documents: all rows (a fresh memory of `batch_size` rows when given) or `rows`.

        Semantic memory survives a reset of rows; a new batch size keeps it too.
        """
        if batch_size is not None and (self.memory is None or self.memory.batch != batch_size):
            fresh = ModelMemory(self.config, batch_size)
            if self.memory is not None:
                fresh.cascade.semantic = self.memory.semantic
            self.memory = fresh
        elif self.memory is None:
            raise RuntimeError("reset_memory: give batch_size the first time")
        else:
            self.memory.reset(rows)

    # --- parameters by memory system ----------------------------------------------------------------
    def parameter_groups(self) -> dict:
        """backbone / episodic (retriever, injection blocks) / semantic (GNN) / gates, disjoint."""
        gates = [injection.gate for injection in self.injections]
        gate_ids = {id(g) for g in gates}
        episodic = self.retriever.parameters() + [p for p in self.injections.parameters() if id(p) not in gate_ids]
        if self.copy_head is not None:
            episodic += self.copy_head.parameters()
        semantic = self.gnn.parameters() if self.gnn is not None else []
        memory_ids = {id(p) for p in episodic + semantic + gates}
        backbone = [p for p in self.parameters() if id(p) not in memory_ids]
        return {"backbone": backbone, "episodic": episodic, "semantic": semantic, "gates": gates}

    def add_copy_head(self, seed: int = 0) -> None:
        """Give a model trained without a copy head a fresh one (a memory module: memory
        fine-tuning adds it to a frozen base, and memory weights that hold one bring it back)."""
        if self.copy_head is None:
            self.config = dataclasses.replace(self.config, copy_head=True)
            self.copy_head = MemoryCopyHead(self.config.d_model, np.random.default_rng(seed))

    def memory_parameters(self) -> list:
        groups = self.parameter_groups()
        return groups["episodic"] + groups["semantic"] + groups["gates"]

    def backbone_parameters(self) -> list:
        return self.parameter_groups()["backbone"]

    # --- forward -------------------------------------------------------------------------------------
    def forward(self, batch: InfillBatch, read_memory: bool = True, collect_layer_inputs: bool = False,
                record_access: bool = True) -> ModelOutput:
        """One pass over a batch of segments; reads memory (see the module docstring).

        record_access=False reads without counting accesses or adding co-retrieval edges, so
        that repeated passes see identical memory (gradient checks, recomputation).
        """
        fit_threads_to_load()  # every caller, training or not: a pool sized to busy cores waits on them (threads.py)
        memory = self.memory if read_memory else None
        if memory is not None and memory.batch != batch.batch_size:
            raise ValueError(f"MLoTSpark: a batch of {batch.batch_size} rows for a memory of {memory.batch} rows; "
                             "call reset_memory(batch_size)")
        caches, cache_lengths = self._working_caches(memory, batch.batch_size)
        n_cache = 0 if caches is None else caches[0].shape[1]
        frame = self.attention_frame(batch.pos_a, batch.prefix_len, n_cache - cache_lengths, n_cache)
        pooled, valid = self.query_chunks(batch.ids, batch.prefix_len)
        read = self._read_memory(memory, pooled, valid, record_access) if memory is not None \
            else MemoryRead.empty(batch.batch_size, pooled, valid)
        layer_inputs = []
        x = self.wte(batch.ids) + self.span_pos(batch.pos_b)  # (B, L, d)
        hidden, presents = self._layers(x, frame, caches, read, layer_inputs=layer_inputs)
        if self.copy_head is not None:
            read.pointer_tokens, read.pointer_ids, read.pointer_previous_ids = self._copyable_tokens(
                memory, read, layer_inputs[self.source_layer], batch)
        return ModelOutput(hidden, self.pool_segment(hidden, batch.prefix_len), read, frame, presents,
                           [states.data for states in layer_inputs] if collect_layer_inputs else None)

    def _layers(self, x: Tensor, frame: AttentionFrame, caches, read: "MemoryRead", past=None, layer_inputs=None):
        """The blocks, with the memory read injected in the memory layers; returns
        (ln_f(x), per-layer keys/values)."""
        presents = []
        for layer, block in enumerate(self.blocks):
            if read.tokens is not None and layer in self.injection_of_layer:
                x = self.injections[self.injection_of_layer[layer]](x, read.tokens, read.count)
            if layer_inputs is not None:
                layer_inputs.append(x)
            x, present = block(x, frame, cache=None if caches is None else caches[layer],
                               past=None if past is None else past[layer])
            presents.append(present)
        return self.ln_f(x), presents

    def logits(self, hidden: Tensor) -> Tensor:
        """Token logits from final states (the output projection is the tied embedding)."""
        return hidden @ self.wte.weight.T

    def output_logits(self, hidden: Tensor, read: "MemoryRead", rows, before: np.ndarray | None = None) -> Tensor:
        """What the model predicts from final states hidden (N, d) of batch rows `rows` (N,): the
        logits, or with the copy head log p of the mixture with its pointer over `read`'s memory
        tokens (either way softmax, cross-entropy and argmax apply as to logits). before (N,
        copy_context): the text before each predicted token (`text_before`), which the pointer
        matches against the text before each token it can copy; None: not known."""
        logits = self.logits(hidden)
        if self.copy_head is None or read.pointer_tokens is None:
            return logits
        rows = np.asarray(rows)
        previous = read.pointer_previous_ids
        # constants: the pointer's gradient through every predecessor moved the tied embeddings, which
        # retrieval keys are pooled from, and copying got worse with training (tests/test_04_copy_head.py)
        nearest = previous[:, :, 0]
        previous_tokens = Tensor(self.wte.weight.data[np.maximum(nearest, 0)] * (nearest >= 0)[:, :, None])
        context = Tensor(self.pool_embeddings(previous, previous >= 0)[0])
        shared = None if before is None else shared_tokens(before, previous, rows)
        return self.copy_head(hidden, logits, read.pointer_tokens, read.pointer_ids, rows, previous_tokens, context,
                              shared)

    def text_before(self, batch: InfillBatch, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, copy_context): the text before the token predicted at each (row, col) of batch, nearest
        first (see `preceding_text`)."""
        before = np.empty((len(rows), self.config.copy_context), dtype=np.int64)
        for n, (row, col) in enumerate(zip(rows, cols)):
            step = batch.pos_b[row, col]  # a Part B input at span step j holds span token j - 1 (j = 1: [SOP])
            before[n] = preceding_text(self, batch.ids[row, :batch.prefix_len[row]], batch.pos_a[row, col],
                                       batch.ids[row, col - step + 2:col + 1] if step else ())
        return before

    def _copyable_tokens(self, memory: ModelMemory | None, read: "MemoryRead", segment_states: Tensor,
                         batch: InfillBatch):
        """What the copy head points at: the memory tokens read, the working cache's tokens and the
        segment's own Part A tokens (source-layer states, each part centred per row like the
        episodic ones), so that a fact in view is copied the way one fetched from the store is;
        with the copy_context tokens before each in its text (an entry's first tokens have the ones
        stored with the entry; a run stops at the start of the cache and of Part A and at a
        [MASK]): the nearest tells the token after "the pass key is" from "is" itself, the
        others which key a value follows ("the code of the red box is").
        Returns tokens (B, P, d), ids (B, P), previous ids (B, P, copy_context)."""
        parts, ids, previous = [], [], []
        if read.tokens is not None:
            parts.append(read.tokens)
            ids.append(read.token_ids)
            previous.append(read.token_previous_ids)
        if memory is not None and self.use_working:
            states, lengths = memory.working.read(self.source_layer)
            width = states.shape[1]
            if width:
                valid = np.arange(width)[None, :] < lengths[:, None]  # (B, C): valid first
                mean = states.sum(axis=1, keepdims=True) / np.maximum(lengths, 1)[:, None, None]
                parts.append(Tensor(np.where(valid[:, :, None], states - mean, np.float32(0))))
                ids.append(np.where(valid, np.rint(memory.side.read(0)[0][:, :width, 0]).astype(np.int64), -1))
                previous.append(_preceding(ids[-1], self.config.copy_context))
        width = int(batch.prefix_len.max())
        part_a = batch.ids[:, :width]
        copyable = batch.part_a_mask()[:, :width] & (part_a != self.special.mask) & (part_a != self.special.pad)
        weights = copyable / np.maximum(copyable.sum(axis=1, keepdims=True), 1)
        states = segment_states[:, :width]
        mean = (states * Tensor(weights[:, :, None].astype(np.float32))).sum(axis=1).reshape(len(part_a), 1, -1)
        parts.append((states - mean) * Tensor(copyable[:, :, None].astype(np.float32)))
        ids.append(np.where(copyable, part_a, -1))
        previous.append(_preceding(ids[-1], self.config.copy_context))
        ids, previous = np.concatenate(ids, axis=1), np.concatenate(previous, axis=1)
        tokens = concat(parts, axis=1) if len(parts) > 1 else parts[0]
        return tokens, ids, np.where(ids[:, :, None] >= 0, previous, -1)

    @staticmethod
    def pool_segment(hidden: Tensor, prefix_len: np.ndarray) -> Tensor:
        """Mean of the Part A states: (B, d)."""
        weights = (np.arange(hidden.shape[1])[None, :] < prefix_len[:, None]).astype(hidden.dtype)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1)
        return (hidden * Tensor(weights[:, :, None])).sum(axis=1)

    def segment_vector(self, segment_states: Tensor) -> Tensor:
        """gelu(W mean(Part A states) + b): one vector per segment (not tanh: the mean states share a
        large common direction that saturated a tanh, the same vector for every segment)."""
        return F.gelu(self.segment_head(segment_states))

    def order_logit(self, earlier_states: Tensor, later_states: Tensor) -> Tensor:
        """(N,) logit that segments with mean Part A states earlier_states (N, d) come before
        later_states (N, d) in their document: h(earlier) - h(later), h = the order head's
        "earliness" of a segment vector. Antisymmetric: a swapped pair gets the negated logit,
        and what every segment shares cancels out."""
        earliness = self.coherence_head(self.segment_vector(earlier_states)) - \
            self.coherence_head(self.segment_vector(later_states))  # (N, 1)
        return earliness.reshape(-1)

    def attention_frame(self, pos_a: np.ndarray, prefix_len: np.ndarray, key_start: np.ndarray,
                        n_cache: int, n_past: int = 0) -> AttentionFrame:
        """Rotary tables and mask bounds for tokens at `pos_a` behind n_cache cached states
        (right-aligned, at positions -n_cache..-1, the first key_start[b] of row b padding) and
        n_past keys of a KV cache."""
        B = pos_a.shape[0]
        cache_positions = np.broadcast_to(np.arange(n_cache) - n_cache, (B, n_cache))
        key_positions = np.concatenate([cache_positions, pos_a], axis=1)  # (B, C + T)
        cos_q, sin_q = F.rotary_tables(pos_a[:, None], self.config.head_dim, self.config.rope_base)
        cos_k, sin_k = F.rotary_tables(key_positions[:, None], self.config.head_dim, self.config.rope_base)
        return AttentionFrame(cos_q, sin_q, cos_k, sin_k, n_cache, n_cache + n_past + prefix_len,
                              key_start, n_cache + n_past)

    def _working_caches(self, memory, batch_size):
        """Per layer the cached states right-aligned to (B, C, d), and the valid lengths (B,)."""
        if memory is None or not self.use_working:
            return None, np.zeros(batch_size, np.int64)
        caches = []
        for layer in range(self.config.n_layers):
            states, lengths = memory.working.read(layer)  # valid first, oldest first
            C = states.shape[1]
            if C == 0:
                return None, np.zeros(batch_size, np.int64)
            source = np.arange(C)[None, :] - (C - lengths)[:, None]  # (B, C): where each slot comes from
            aligned = np.take_along_axis(states, np.maximum(source, 0)[:, :, None], axis=1)
            caches.append(np.where((source >= 0)[:, :, None], aligned, np.float32(0)))
        return caches, lengths

    def query_chunks(self, ids: np.ndarray, prefix_len: np.ndarray):
        """Mean token embedding of each chunk_len window of Part A: (B, Q, d) and validity (B, Q).

        Retrieval is lexical-semantic: a chunk is found by the embeddings of its tokens (through
        the trainable retriever), which name the people, places and numbers a question shares
        with the passage that answers it; the values read are contextual states.
        """
        B = ids.shape[0]
        chunk = self.config.chunk_len
        Q = max(1, -(-int(prefix_len.max()) // chunk))
        padded = np.zeros((B, Q * chunk), dtype=np.int64)
        width = min(ids.shape[1], Q * chunk)
        padded[:, :width] = ids[:, :width]
        in_part_a = np.arange(Q * chunk)[None, :] < prefix_len[:, None]  # (B, Q*chunk)
        return self.pool_embeddings(padded.reshape(B, Q, chunk), in_part_a.reshape(B, Q, chunk))

    def pool_embeddings(self, ids: np.ndarray, valid: np.ndarray):
        """Mean token direction of the valid tokens of each chunk: ids/valid (..., chunk) -> (..., d), any-valid (...).

        Each embedding is centred on the vocabulary mean and scaled to unit length first: the
        embeddings share a large common direction that would otherwise make every chunk look
        alike, and every token should count once, whatever its norm.
        """
        table = self.wte.weight.data
        directions = table[np.where(valid, ids, 0)] - table.mean(axis=0)  # only the rows used
        directions /= np.maximum(np.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
        weights = valid.astype(np.float32)
        counts = weights.sum(axis=-1)
        summed = np.einsum("...t,...td->...d", weights, directions)
        return (summed / np.maximum(counts, 1)[..., None]).astype(np.float32), counts > 0

    def retrieval_queries(self, pooled: np.ndarray) -> np.ndarray:
        """Unit retrieval vectors from pooled states (no gradient: for searching)."""
        return normalize_rows((pooled @ self.retriever.weight.data.T).reshape(-1, self.config.retriever_dim)) \
            .reshape(*pooled.shape[:-1], self.config.retriever_dim)

    def _read_memory(self, memory: ModelMemory, query_pooled: np.ndarray, query_valid: np.ndarray,
                     record: bool = True) -> "MemoryRead":
        """Memory tokens (B, M, d): the top semantic slots (refined by the GNN), then the tokens of
        the episodic entries each row's query chunks retrieved; plus valid counts and entry ids."""
        B, d = query_pooled.shape[0], self.config.d_model
        queries = self.retrieval_queries(query_pooled)  # (B, Q, r)
        retrieved = [np.zeros(0, np.int64)] * B
        episodic_tokens = [np.zeros((0, d), np.float32)] * B
        episodic_ids = [np.zeros(0, np.int64)] * B
        context = self.config.copy_context
        episodic_previous = [np.zeros((0, context), np.int64)] * B
        if self.use_episodic:
            for row, store in enumerate(memory.episodic):
                if store.size and query_valid[row].any():
                    slots, scores = store.search(queries[row][query_valid[row]], self.config.retrieval_top_k, record)
                    retrieved[row] = _with_continuations(_union_by_score(slots, scores), memory.entry_serial[row],
                                                         store.live, self.config.retrieval_continuation)
                    episodic_tokens[row] = store.gather(retrieved[row])[0]
                    in_entry = np.arange(store.chunk_len) < store.lengths[retrieved[row], None]
                    texts = memory.entry_tokens[row, retrieved[row]]  # (n, chunk_len)
                    episodic_ids[row] = texts[in_entry]
                    before = memory.entry_previous[row, retrieved[row]]
                    episodic_previous[row] = _preceding(texts, context, before)[in_entry]
        counts = np.array([len(t) for t in episodic_tokens], dtype=np.int64)
        parts = []
        semantic = memory.semantic
        if self.use_semantic and semantic.size:
            segment_queries = np.stack([q[v].mean(axis=0) if v.any() else np.zeros_like(q[0])
                                        for q, v in zip(queries, query_valid)])  # (B, r)
            adjacency = semantic.adjacency()  # the graph before this read's co-retrieval edges
            slots, _ = semantic.search(segment_queries, self.config.semantic_top_k, record)  # (B, k')
            refined = self.gnn(Tensor(semantic.values), adjacency)  # (S, d)
            parts.append(refined[slots])  # (B, k', d)
            counts = counts + slots.shape[1]
        if counts.max() == 0:
            return MemoryRead(None, counts, retrieved, query_pooled, query_valid)
        width = max(1, max(len(t) for t in episodic_tokens))
        packed = np.zeros((B, width, d), dtype=np.float32)
        packed_ids = np.full((B, width), -1, dtype=np.int64)
        packed_previous = np.full((B, width, context), -1, dtype=np.int64)
        for row, (tokens, ids) in enumerate(zip(episodic_tokens, episodic_ids)):
            if len(tokens):  # centred over the row's tokens: hidden states share a large common part
                packed[row, :len(tokens)] = tokens - tokens.mean(axis=0)
                packed_ids[row, :len(ids)] = ids
                packed_previous[row, :len(ids)] = episodic_previous[row]
        parts.append(Tensor(packed))
        tokens = parts[0] if len(parts) == 1 else concat(parts, axis=1)
        slot_ids = np.full((B, tokens.shape[1] - width), -1, dtype=np.int64)  # semantic slots: no token
        slot_previous = np.full((*slot_ids.shape, context), -1, dtype=np.int64)
        return MemoryRead(tokens, counts, retrieved, query_pooled, query_valid,
                          np.concatenate([slot_ids, packed_ids], axis=1),
                          np.concatenate([slot_previous, packed_previous], axis=1))

    # --- writing memory --------------------------------------------------------------------------------
    def write_memory(self, segments, surprise=None, doc_ids=None) -> None:
        """Read clean segments (one per row; an empty array writes nothing) into memory.

        surprise: per row an array of per-token reconstruction losses (or None: ones); it rides
        along the working cache and becomes the importance of the episodic entry its tokens form.
        """
        memory = self.memory
        if memory is None or len(segments) != memory.batch:
            raise ValueError(f"write_memory: {len(segments)} segments for a memory of "
                             f"{None if memory is None else memory.batch} rows")
        if doc_ids is not None:
            memory.doc_ids[:] = doc_ids
        batch = make_infill_batch(segments, [[] for _ in segments], self.special)
        with no_grad():
            out = self.forward(batch, collect_layer_inputs=True)
        lengths = batch.prefix_len
        for layer, states in enumerate(out.layer_inputs):
            evicted = memory.working.append(layer, states, lengths)
            if layer == self.source_layer:
                source_evicted = evicted
        side = np.ones((memory.batch, batch.ids.shape[1], SIDE_CHANNELS), dtype=np.float32)  # (id, surprise)
        side[:, :, 0] = batch.ids
        for row, values in enumerate(surprise or []):
            side[row, :len(values), 1] = values
        evicted_side = memory.side.append(0, side, lengths)
        self._store_chunks(memory, memory.cascade.chunks.push(source_evicted), memory.side_chunks.push(evicted_side))

    def flush_memory(self, rows=None) -> None:
        """Write the pending partial chunk of the given rows (documents ending, or a context read)."""
        memory = self.memory
        self._store_chunks(memory, memory.cascade.chunks.flush(rows), memory.side_chunks.flush(rows),
                           rows=range(memory.batch) if rows is None else np.atleast_1d(rows))

    def _store_chunks(self, memory: ModelMemory, chunks, side_chunks, rows=None) -> None:
        rows = range(memory.batch) if rows is None else rows
        for row, (values, lengths), (side, _) in zip(rows, chunks, side_chunks):
            if len(values) == 0:
                continue
            token_ids = np.rint(side[:, :, 0]).astype(np.int64)  # (n, chunk_len)
            valid = np.arange(self.config.chunk_len)[None, :] < lengths[:, None]
            context = self.config.copy_context  # the chunks follow each other in the text
            stream = np.r_[memory.last_archived[row], token_ids[valid]]
            starts = context + np.r_[0, np.cumsum(lengths)[:-1]]
            before = stream[starts[:, None] + np.arange(-context, 0)[None, :]]  # (n, context), oldest first
            memory.last_archived[row] = stream[-context:]
            pooled, _ = self.pool_embeddings(token_ids, valid)  # (n, d)
            importance = pool_chunks(side[:, :, 1:], lengths)[:, 0]
            slots = memory.episodic[row].write(values, lengths, self.retrieval_queries(pooled), pooled,
                                               int(memory.doc_ids[row]), int(memory.write_step[0]), importance)
            written = slots >= 0
            memory.entry_tokens[row, slots[written]] = np.where(valid, token_ids, -1)[written]
            memory.entry_previous[row, slots[written]] = before[written]
            memory.entry_serial[row, slots[written]] = (memory.chunks_archived[row] + np.arange(len(slots)))[written]
            memory.chunks_archived[row] += len(slots)
        memory.write_step += 1

    def read_document(self, token_ids, doc_id: int = 0) -> None:
        """Stream one document through memory row 0, segment by segment (a batch-1 memory)."""
        if self.memory is None or self.memory.batch != 1:
            self.reset_memory(batch_size=1)
        token_ids = np.asarray(token_ids, dtype=np.int64)
        for start in range(0, len(token_ids), self.config.segment_len):
            self.write_memory([token_ids[start:start + self.config.segment_len]], doc_ids=[doc_id])
        self.flush_memory()


    # --- using the model -------------------------------------------------------------------------------
    def generate(self, prompt_ids, max_new_tokens: int = 32, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None) -> list:
        """Continuation tokens of prompt_ids (KV cache; see generation.py, which also streams)."""
        from mlot.model.generation import generate  # generation builds on this module
        return list(generate(self, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed))

    def infill(self, ids_with_masks, max_span_tokens: int = 16) -> list:
        """The tokens of every [MASK] span of ids_with_masks, filled greedily in order."""
        from mlot.model.generation import infill
        return infill(self, ids_with_masks, max_span_tokens)


def preceding_text(model: MLoTSpark, part_a, mask_position: int, span_tokens=()) -> np.ndarray:
    """(copy_context,) the tokens before a span's next token, nearest first: the span's tokens so far,
    then Part A's before its [MASK]; -1 from the first [MASK] (another span) or the start on."""
    text = np.r_[np.asarray(part_a[:mask_position], dtype=np.int64), np.asarray(span_tokens, dtype=np.int64), -1]
    text = np.where(text == model.special.mask, -1, text)  # the last -1 holds the place of the token predicted
    return _preceding(text[None], model.config.copy_context)[0, -1]


def _preceding(ids: np.ndarray, context: int, before=None) -> np.ndarray:
    """The `context` tokens before each token of runs of text ids (B, n), nearest first: (B, n, context).

    before (B, context), oldest first: what came before each run (None: nothing). A token's
    context stops at a -1 (the start of a run, a [MASK], padding): what lies beyond it is not
    the text just before the token."""
    if before is None:
        before = np.full((len(ids), context), -1, dtype=np.int64)
    stream = np.concatenate([before, ids], axis=1)  # (B, context + n)
    positions = context + np.arange(ids.shape[1])[:, None] - 1 - np.arange(context)[None, :]  # (n, context)
    previous = stream[:, positions]
    return np.where(np.logical_and.accumulate(previous >= 0, axis=-1), previous, -1)


def _with_continuations(slots: np.ndarray, serial: np.ndarray, live: np.ndarray, n: int) -> np.ndarray:
    """Each retrieved slot followed by the live entries archived right after it (up to n), each once."""
    if n == 0 or len(slots) == 0:
        return slots
    wanted = serial[slots][:, None] + np.arange(1, n + 1)[None, :]  # (k, n)
    match = (serial == wanted[:, :, None]) & live & (serial[slots] >= 0)[:, None, None]  # (k, n, capacity)
    chain = np.concatenate([slots[:, None], np.where(match.any(axis=2), match.argmax(axis=2), -1)], axis=1).ravel()
    chain = chain[chain >= 0]
    _, first = np.unique(chain, return_index=True)
    return chain[np.sort(first)]


def _union_by_score(slots: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Distinct slots of several queries' top-k lists, best score first (ties: lower slot)."""
    slots, scores = slots.ravel(), scores.ravel()
    order = np.lexsort((slots, -scores))
    ranked = slots[order]
    _, first = np.unique(ranked, return_index=True)
    return ranked[np.sort(first)]
