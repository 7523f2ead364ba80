"""The MLoT-Spark model: layout, gradients through the memory read path, gates, capacities,
resets, and generation with a KV cache against full recomputation."""
import numpy as np
import pytest

from mlot.architecture import ModelConfig, gradcheck, no_grad
from mlot.architecture import functional as F
from mlot.model.generation import fill_span
from mlot.model.infilling import IGNORE_INDEX, SpecialIds, make_infill_batch
from mlot.model.model import MLoTSpark

SPECIAL = SpecialIds(pad=0, mask=3, sop=5, eop=6)


def tiny_config(**overrides):
    base = dict(vocab_size=40, d_model=16, n_layers=2, n_heads=2, segment_len=12, max_span_len=4, chunk_len=4,
                working_cache_len=8, episodic_capacity=6, retrieval_top_k=2, semantic_slots=4, semantic_top_k=2,
                retriever_dim=8, memory_layers=[1], gate_init=0.5)
    base.update(overrides)
    return ModelConfig.from_dict(base)


def filled_model(seed=0, batch=2, **overrides):
    """A model whose working, episodic and semantic memory all hold something."""
    model = MLoTSpark(tiny_config(**overrides), seed=seed)
    model.reset_memory(batch_size=batch)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        model.write_memory([rng.integers(10, 40, 12) for _ in range(batch)])
    store = model.memory.episodic[0]
    live = np.flatnonzero(store.live)
    model.memory.semantic.consolidate(store.keys[live], store.pooled[live], np.ones(len(live)), merge_threshold=0.99)
    return model


def test_infill_layout_by_hand():
    batch = make_infill_batch([np.array([10, 11, 12, 13, 14, 15])], [[(1, 3), (4, 5)]], SPECIAL)
    # Part A: 10 [M] 13 [M] 15 ; Part B: [SOP] 11 12 [SOP] 14
    np.testing.assert_array_equal(batch.ids[0], [10, 3, 13, 3, 15, 5, 11, 12, 5, 14])
    np.testing.assert_array_equal(batch.pos_a[0], [0, 1, 2, 3, 4, 1, 1, 1, 3, 3])
    np.testing.assert_array_equal(batch.pos_b[0], [0, 0, 0, 0, 0, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(batch.targets[0], [IGNORE_INDEX] * 5 + [11, 12, 6, 14, 6])
    assert batch.prefix_len[0] == 5 and batch.lengths[0] == 10


def test_infill_layout_pads_rows_and_refuses_bad_spans():
    batch = make_infill_batch([np.arange(10, 16), np.arange(10, 13)], [[(0, 2)], []], SPECIAL)
    assert batch.ids.shape == (2, 8) and batch.lengths.tolist() == [8, 3]
    assert (batch.ids[1, 3:] == SPECIAL.pad).all() and (batch.targets[1] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="sorted, disjoint"):
        make_infill_batch([np.arange(6)], [[(2, 4), (3, 5)]], SPECIAL)


def test_memory_is_read_from_every_tier():
    model = filled_model()
    batch = make_infill_batch([np.arange(10, 22), np.arange(20, 28)], [[(3, 5)], [(1, 2)]], SPECIAL)
    out = model(batch)
    assert model.memory.semantic.size > 0
    assert all(len(r) > 0 for r in out.read.retrieved)
    # count = semantic top-k + retrieved episodic tokens
    expected = [2 + model.memory.episodic[row].lengths[r].sum() for row, r in enumerate(out.read.retrieved)]
    assert out.read.count.tolist() == expected


@pytest.mark.parametrize("copy_head", [False, True])
def test_gradients_through_the_whole_model_and_memory_read_path(copy_head):
    model = filled_model(batch=1, copy_head=copy_head)
    model.to_dtype(np.float64)
    batch = make_infill_batch([np.arange(12, 24)], [[(2, 4), (7, 8)]], SPECIAL)
    params = dict(model.named_parameters())
    checked = [params[name] for name in (
        "wte.weight", "span_pos.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc.bias",
        "injections.0.q_proj.weight", "injections.0.cross_attention.k_proj.weight",
        "injections.0.cross_attention.v_proj.weight", "injections.0.cross_attention.o_proj.weight",
        "injections.0.cross_attention.memory_norm.weight", "injections.0.post_memory_layernorm.bias",
        "injections.0.gate", "gnn.rounds.0.combine.weight", "gnn.rounds.0.update.weight",
        "segment_head.weight")]
    if copy_head:  # its keys read the embeddings of predecessors as constants: wte's gradient leaves that out
        checked = [p for p in checked if p is not params["wte.weight"]]
        checked += [params[f"copy_head.{name}.weight"] for name in ("k_proj", "previous_proj", "switch")]
    gnn_update = params["gnn.rounds.0.update.weight"]
    gnn_update.data = np.random.default_rng(1).normal(0, 0.3, gnn_update.shape)  # off its zero start

    rows, cols = np.nonzero(batch.targets >= 0)

    def loss_terms(*_):
        out = model(batch, record_access=False)  # with a copy head, its pointer covers Part A's states too
        logits = model.output_logits(out.hidden[rows, cols], out.read, rows, model.text_before(batch, rows, cols))
        ce = F.cross_entropy(logits, batch.targets[rows, cols])
        vector = model.segment_vector(out.segment_states)
        return ce + (vector * vector).sum()

    assert model(batch, record_access=False).read.count[0] > 2  # semantic and episodic both read
    assert gradcheck(loss_terms, checked, atol=1e-6, rtol=1e-4, max_checks=12)


def test_closed_gates_compute_exactly_the_model_without_memory():
    model = filled_model(gate_init=0.0)
    batch = make_infill_batch([np.arange(10, 22), np.arange(15, 25)], [[(3, 5)], [(1, 2)]], SPECIAL)
    with no_grad():
        with_memory = model(batch, record_access=False)
        assert with_memory.read.count.min() > 0
        model.set_memory(episodic=False, semantic=False)
        without = model(batch, record_access=False)
    assert without.read.count.max() == 0
    np.testing.assert_array_equal(model.logits(with_memory.hidden).data, model.logits(without.hidden).data)


def test_closed_gate_still_receives_gradient():
    model = filled_model(gate_init=0.0)
    batch = make_infill_batch([np.arange(10, 22), np.arange(15, 25)], [[(3, 5)], [(1, 2)]], SPECIAL)
    F.cross_entropy(model.logits(model(batch).hidden), batch.targets).backward()
    assert abs(model.injections[0].gate.grad[0]) > 0


def test_capacities_are_never_exceeded_and_reset_clears_only_its_rows():
    model = MLoTSpark(tiny_config(), seed=3)
    model.reset_memory(batch_size=2)
    rng = np.random.default_rng(3)
    for step in range(12):
        model.write_memory([rng.integers(10, 40, 12), rng.integers(10, 40, int(rng.integers(1, 12)))])
        memory = model.memory
        assert memory.working.lengths.max() <= model.config.working_cache_len
        assert all(store.size <= model.config.episodic_capacity for store in memory.episodic)
        if step == 5:
            store = memory.episodic[1]
            live = np.flatnonzero(store.live)
            memory.semantic.consolidate(store.keys[live], store.pooled[live], np.ones(len(live)))
    assert 0 < memory.semantic.size <= model.config.semantic_slots
    semantic_before = {k: v.copy() for k, v in memory.semantic.state_dict().items()}
    row1_working = memory.working.read(0)[0][1].copy()
    row1_entries = memory.episodic[1].size
    model.reset_memory(rows=[0])
    assert memory.working.lengths[:, 0].max() == 0 and memory.episodic[0].size == 0
    np.testing.assert_array_equal(memory.working.read(0)[0][1, :len(row1_working)], row1_working)
    assert memory.episodic[1].size == row1_entries
    for key, value in memory.semantic.state_dict().items():
        np.testing.assert_array_equal(value, semantic_before[key], err_msg=key)


def test_short_document_still_writes_one_entry():
    model = MLoTSpark(tiny_config(working_cache_len=0), seed=0)
    model.read_document(np.array([11, 12, 13]))  # shorter than one chunk
    store = model.memory.episodic[0]
    assert store.size == 1 and store.lengths[store.live][0] == 3


class ForcedSampler:
    """Returns a fixed token sequence and records the logits it was shown."""

    def __init__(self, tokens):
        self.tokens, self.seen = list(tokens), []

    def __call__(self, logits):
        self.seen.append(logits.copy())
        return self.tokens[len(self.seen) - 1]


@pytest.mark.parametrize("copy_head", [False, True])
def test_kv_cache_generation_equals_full_recomputation(copy_head):
    tokens = [12, 30, 7, 19, 25, 11, 33]
    runs = []
    for use_cache in (True, False):
        model = filled_model(batch=1, copy_head=copy_head)
        sampler = ForcedSampler(tokens)
        part_a = np.array([14, 15, 16, 3, 17, 18])
        produced = list(fill_span(model, part_a, 3, part_b=[([20, 21], 3)], max_new_tokens=len(tokens),
                                  sampler=sampler, use_cache=use_cache))
        assert produced == tokens
        runs.append(np.stack(sampler.seen))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4, atol=1e-5)
    assert runs[0].argmax(axis=1).tolist() == runs[1].argmax(axis=1).tolist()


def test_memory_state_round_trip_gives_identical_outputs():
    model = filled_model()
    state = {k: v.copy() for k, v in model.memory.state_dict().items()}
    batch = make_infill_batch([np.arange(10, 22), np.arange(15, 25)], [[(3, 5)], [(1, 2)]], SPECIAL)
    with no_grad():
        before = model.logits(model(batch, record_access=False).hidden).data
        model.reset_memory(batch_size=2)
        model.memory.semantic.reset_all()
        model.memory.load_state_dict(state)
        after = model.logits(model(batch, record_access=False).hidden).data
    np.testing.assert_array_equal(before, after)


def test_parameter_groups_are_disjoint_and_complete():
    model = MLoTSpark(tiny_config(), seed=0)
    groups = model.parameter_groups()
    ids = [id(p) for group in groups.values() for p in group]
    assert len(ids) == len(set(ids)) == len(model.parameters())
    assert {id(p) for p in model.memory_parameters()} == {id(p) for g in ("episodic", "semantic", "gates")
                                                        for p in groups[g]}
    assert id(model.wte.weight) in {id(p) for p in model.backbone_parameters()}


def greedy_by_hand(model, part_a, position, limit):
    """The span at part_a[position] filled greedily, each token from a full forward of the infill
    layout: Part A with its [MASK], Part B = [SOP] + tokens so far + a placeholder the causal
    Part B hides from the position read."""
    tokens = []
    with no_grad():
        while len(tokens) < limit:
            segment = np.concatenate([part_a[:position], tokens, [0], part_a[position + 1:]]).astype(np.int64)
            batch = make_infill_batch([segment], [[(position, position + len(tokens) + 1)]], SPECIAL)
            out = model(batch, record_access=False)
            column = batch.prefix_len[0] + len(tokens)  # [SOP], then the last token chosen
            token = int(model.logits(out.hidden).data[0, column].argmax())
            if token == SPECIAL.eop:
                break
            tokens.append(token)
    return tokens


def test_generate_and_infill_equal_greedy_decoding_by_hand():
    prompt = np.arange(14, 22)  # fits the window: nothing goes to memory first
    expected = greedy_by_hand(filled_model(batch=1), np.append(prompt, SPECIAL.mask), len(prompt), 6)
    assert len(expected) >= 2
    assert filled_model(batch=1).generate(prompt, max_new_tokens=6, temperature=0.0) == expected
    ids = np.array([11, 3, 12, 13, 3, 14])
    first = greedy_by_hand(filled_model(batch=1), ids, 1, 3)
    spans = filled_model(batch=1).infill(ids, max_span_tokens=3)
    assert len(spans) == 2 and spans[0] == first and len(spans[1]) <= 3


def test_each_retrieved_entry_is_read_with_the_one_archived_after_it():
    """The continuation of a hit is the entry whose text came next in the row's stream (found here by
    text, not by the serial numbers the model keeps), read right after it; evicted ones are skipped."""
    model = filled_model()  # 40 tokens per row archived in chunks of 4 into 6 slots: four evicted
    batch = make_infill_batch([np.arange(10, 22), np.arange(20, 28)], [[(3, 5)], [(1, 2)]], SPECIAL)
    read = model(batch, record_access=False).read
    r = np.random.default_rng(0)
    written = [[r.integers(10, 40, 12) for _ in range(2)] for _ in range(4)]  # as filled_model wrote them
    queries = model.retrieval_queries(read.query_pooled)
    chunk, continued = model.config.chunk_len, 0
    for row in range(2):
        archived = np.concatenate([segments[row] for segments in written])[:-model.config.working_cache_len]
        store, texts = model.memory.episodic[row], model.memory.entry_tokens[row]
        place = {int(e): next(i for i in range(0, len(archived), chunk) if (archived[i:i + chunk] == texts[e]).all())
                 for e in np.flatnonzero(store.live)}
        after = {start: e for e, start in place.items()}
        assert store.size == 6 and len(archived) // chunk == 10
        slots, scores = store.search(queries[row][read.query_valid[row]], model.config.retrieval_top_k, record=False)
        best = {}
        for slot, score in zip(slots.ravel(), scores.ravel()):
            best[int(slot)] = max(best.get(int(slot), -np.inf), score)
        expected = []
        for hit in sorted(best, key=lambda s: (-best[s], s)):
            following = after.get(place[hit] + chunk)
            continued += following is not None
            expected += [s for s in (hit, following) if s is not None and s not in expected]
        assert read.retrieved[row].tolist() == expected
    assert continued > 0
