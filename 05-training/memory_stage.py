"""Memory fine-tuning: the memory modules of a frozen base learn to use what it stored (the notes
000-003 of ../shared/seeds: two-pass memory-seeded training, frozen base, memory-only weights).

    python 05-training/train.py --stage memory --base checkpoints/latest_checkpoint.pt \\
        --dataset 03-tokenization/corpus/epoch0_curriculum.jsonl --checkpoint_dir memory_run/

The data are two-turn dialogues {"U1", "M1" (optional), "U2", "M2"} (03-tokenization/
dialogue_triplets.py) in which M2 can only be right if U1 was kept. One step, for batch_size
dialogues side by side (one memory row each):
  pass 1 (no gradient): reset memory; read "[USER] U1 [MODEL] M1" and archive it as episodic
         entries. The stage's memory has no working cache, so every token read leaves it at
         once: what pass 2 can use was stored, not merely still in view;
  pass 2: Part A "[USER] U2 [MODEL] [MASK]", the span to fill M2 (GLM's Part B, found after the
         [MODEL] token of the tokenized dialogue); cross-entropy over the M2 tokens and the
         span's [EOP] only.
The backbone is frozen; the optimizer holds model.memory_parameters() only. A base without a
copy head gets one (04-model/copy_head.py): a pointer that copies the stored fact's tokens, which
the injection blocks alone did not learn to do. The first `alignment_steps` steps are the notes'
Stage 1: the retriever projection alone learns, by the InfoNCE of loss_functions (anchor the U2
query chunk, positive its own U1 entries, every other row's entries negatives). A base
pretrained on plain documents should first learn the dialogue form (`--stage dialogue`,
dialogue_stage.py). At the end the memory modules alone are written to memory_weights.pt.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

from mlot.architecture import no_grad
from mlot.architecture.checkpoint_file import checkpoint_info
from mlot.architecture.config import JsonConfig, check
from mlot.model.infilling import make_infill_batch
from mlot.model.memory_state import ModelMemory
from mlot.model.scoring import score_targets
from mlot.tokenization.dialogue_triplets import TripletDataError, encode_triplets, read_triplets
from mlot.tokenization.tokenizer import Tokenizer
from mlot.training.loss_functions import reconstruction_loss, retrieval_alignment_loss
from mlot.model.memory_weights import backbone_fingerprint, save_memory_weights
from mlot.training.stages import Stage, StepLoss
from mlot.training.training_loop import stream_rng

WEIGHTS_NAME = "memory_weights.pt"
MEMORY_MODES = ("off", "on", "shuffled")


def dialogue_batch(model, examples):
    """Pass 2's batch: Part A "[USER] U2 [MODEL] [MASK]", Part B "[SOP] M2", targets "M2 [EOP]"."""
    return make_infill_batch([e.dialogue for e in examples], [[(e.m2_start, len(e.dialogue))] for e in examples],
                             model.special)


# --- pass 1: memory seeded with U1 ----------------------------------------------------------------------
def seed_memory(model, contexts_by_round) -> None:
    """Pass 1: an empty memory with no working cache (see the module docstring), then per round
    read one context per row and archive it (flush), so that each context forms its own episodic
    entries. Rounds: lists of one array per row."""
    segment_len, memory, batch_size = model.config.segment_len, model.memory, len(contexts_by_round[0])
    if memory is None or memory.batch != batch_size or memory.working.capacity != 0:
        model.memory = ModelMemory(dataclasses.replace(model.config, working_cache_len=0), batch_size)
    else:
        memory.reset()
    with no_grad():
        for contexts in contexts_by_round:
            longest = max(len(c) for c in contexts)
            for start in range(0, longest, segment_len):
                model.write_memory([c[start:start + segment_len] for c in contexts])
            model.flush_memory()


def storage_rounds(examples, distractors: int, rng: np.random.Generator) -> list:
    """Each row stores its own context and those of the `distractors` rows after it, its own in a
    random round; the reads of pass 2 must then pick the right entries."""
    B = len(examples)
    own_round = rng.integers(0, distractors + 1, size=B)
    shifts = [(k - own_round) % (distractors + 1) for k in range(distractors + 1)]  # (B,): 0 in the own round
    return [[examples[(row + shift[row]) % B].context for row in range(B)] for shift in shifts]


# --- measures -----------------------------------------------------------------------------------------------
def span_scores(model, out, batch, contexts) -> dict:
    """Sums over a batch: M2 token hits and count (greedy prediction under teacher forcing), the
    same over the M2 tokens that occur in the row's U1 context (the facts memory must supply),
    exact matches (every M2 token and the [EOP] right: the greedy fill is M2 exactly), loss."""
    scores = score_targets(model, out, batch)
    rows, targets, hit = scores.rows, scores.targets, scores.hits
    is_m2 = targets != model.special.eop
    context_ids = np.full((batch.batch_size, max(len(c) for c in contexts)), -1, np.int64)
    for row, context in enumerate(contexts):
        context_ids[row, :len(context)] = context
    is_fact = is_m2 & (context_ids[rows] == targets[:, None]).any(axis=1)
    misses_per_row = np.bincount(rows, weights=~hit, minlength=batch.batch_size)
    return {"token_hits": int(hit[is_m2].sum()), "tokens": int(is_m2.sum()), "fact_hits": int(hit[is_fact].sum()),
            "facts": int(is_fact.sum()), "exact": int((misses_per_row == 0).sum()), "rows": batch.batch_size,
            "loss_sum": float(scores.nll.sum()), "targets": len(targets)}


def evaluate(model, examples, batch_size: int, memory: str = "on", distractors: int = 0, seed: int = 0) -> dict:
    """M2 token accuracy (all tokens, and those that also occur in U1), exact match and loss on
    held-out dialogues, with memory "on", "off" (no memory read at all: the frozen model alone) or
    "shuffled" (each row seeded with another dialogue's U1: what the memory modules give without
    the right fact)."""
    totals, rng = {}, stream_rng(seed, "validation")
    with no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = dialogue_batch(model, chunk)
            if memory != "off":
                stored = chunk if memory == "on" else chunk[1:] + chunk[:1]
                seed_memory(model, storage_rounds(stored, min(distractors, len(chunk) - 1), rng))
            scores = span_scores(model, model(batch, read_memory=memory != "off"), batch, [e.context for e in chunk])
            totals = {key: totals.get(key, 0) + value for key, value in scores.items()}
    return {"m2_token_accuracy": totals["token_hits"] / max(totals["tokens"], 1),
            "m2_fact_token_accuracy": totals["fact_hits"] / max(totals["facts"], 1),
            "m2_exact_match": totals["exact"] / max(totals["rows"], 1),
            "m2_loss": totals["loss_sum"] / max(totals["targets"], 1)}


def retrieval_top1(model, examples, group_size: int) -> float:
    """Fraction of U2 queries whose best-scoring U1 entry, among the entries of their group of
    `group_size` dialogues (a batch: chance 1/group_size), is one of their own, scored as the model
    scores them: retriever keys of pooled chunk embeddings. (Over a larger pool the figure says
    little: "What is my name?" is the same query for every name dialogue.)"""
    hits = [_own_entry_is_best(model, examples[start:start + group_size])
            for start in range(0, len(examples), group_size)]
    return float(np.mean(np.concatenate(hits)))


def _own_entry_is_best(model, examples) -> np.ndarray:
    C = model.config.chunk_len
    owners, windows, valid = [], [], []
    for index, example in enumerate(examples):
        n = -(-len(example.context) // C)
        padded = np.zeros(n * C, np.int64)
        padded[:len(example.context)] = example.context
        windows.append(padded.reshape(n, C))  # (n, C): the entries archiving this context makes
        valid.append((np.arange(n * C) < len(example.context)).reshape(n, C))
        owners += [index] * n
    entry_keys = model.retrieval_queries(model.pool_embeddings(np.concatenate(windows), np.concatenate(valid))[0])
    batch = dialogue_batch(model, examples)
    pooled, query_valid = model.query_chunks(batch.ids, batch.prefix_len)  # (N, Q, d), (N, Q)
    scores = np.einsum("nqr,er->nqe", model.retrieval_queries(pooled), entry_keys)
    scores[~query_valid] = -np.inf
    best_entry = scores.reshape(len(examples), -1).argmax(axis=1) % len(owners)
    return np.asarray(owners)[best_entry] == np.arange(len(examples))


# --- configuration ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class MemoryStageConfig(JsonConfig):
    """The `memory` section (training.lr is the injection blocks' and copy head's rate)."""
    alignment_steps: int = 100      # Stage 1 (retriever only) before the two-pass steps
    retriever_lr: float = 3e-3
    semantic_lr: float = 3e-3       # GNN
    gate_lr: float = 3e-2           # no weight decay: the gates must be free to open
    alignment_temperature: float = 0.1
    distractors: int = 0            # other dialogues' U1 stored beside each row's own
    copy_head: bool = True          # give a base without one a copy head (04-model/copy_head.py) to train
    val_examples: int = 256         # the file's last dialogues, held out

    def validate(self):
        for key, least in (("alignment_steps", 0), ("val_examples", 1), ("distractors", 0)):
            check(getattr(self, key) >= least, key, f"must be >= {least}, got {getattr(self, key)}")
        for key in ("retriever_lr", "semantic_lr", "gate_lr", "alignment_temperature"):
            check(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key,
                  f"must be a finite number > 0, got {getattr(self, key)}")

    def scaled(self, factor: float) -> dict:
        return {**self.to_dict(), "alignment_steps": round(self.alignment_steps * factor)}


# --- the stage -----------------------------------------------------------------------------------------
class MemoryStage(Stage):
    """Two-pass steps over dialogues, backbone frozen. Batches are a function of the step (a fresh
    permutation per epoch), so a resumed run sees the same ones."""

    name = "memory"
    config_class = MemoryStageConfig
    validate_before_training = True
    trains = "the memory modules (the backbone is frozen)"

    def __init__(self, model, tokenizer_folder, triplets, train, config, base: dict):
        super().__init__(model, config)
        self.train_config, self.base = train, base  # base: {"base", "base_fingerprint"}
        self.dataset, self.triplets = str(tokenizer_folder), str(triplets)
        tokenizer = Tokenizer.from_file(Path(tokenizer_folder) / "tokenizer.json")
        dialogues, held_out = read_triplets(triplets), config.val_examples  # the file's last ones: deterministic
        if len(dialogues) <= held_out:
            raise TripletDataError(f"{triplets}: {len(dialogues)} dialogues, not more than the {held_out} "
                                   "held out for validation (lower val_examples)")
        examples = encode_triplets(tokenizer, dialogues, model.config.segment_len, str(triplets))
        self.train, self.val = examples[:-held_out], examples[-held_out:]
        if train.batch_size < 2:
            raise TripletDataError(f"training.batch_size must be >= 2 for --stage {self.name} (rows are each "
                                   f"other's negatives), got {train.batch_size}")
        if len(self.train) < train.batch_size:
            raise TripletDataError(f"{triplets}: {len(self.train)} training dialogues after holding out "
                                   f"{len(self.val)}, fewer than one batch of {train.batch_size}")

    def parameter_groups(self, train) -> list:
        model, config = self.model, self.config
        if config.copy_head:
            model.add_copy_head(train.seed)  # a no-op for a model that has one (a resumed run)
        for param in model.backbone_parameters():
            param.requires_grad = False
        groups, decay = model.parameter_groups(), train.weight_decay
        retriever_ids = {id(p) for p in model.retriever.parameters()}
        table = [("retriever", model.retriever.parameters(), config.retriever_lr, decay),
                 ("injection", [p for p in groups["episodic"] if id(p) not in retriever_ids], train.lr, decay),
                 ("semantic", groups["semantic"], config.semantic_lr, decay),
                 ("gates", groups["gates"], config.gate_lr, 0.0)]  # no weight decay: the gates must be free to open
        return [dict(zip(("name", "params", "lr", "weight_decay"), group)) for group in table]

    def batch_at(self, step: int) -> list:
        B, n = self.train_config.batch_size, len(self.train)  # B <= n: a step spans at most two epochs
        orders = {epoch: stream_rng(self.train_config.seed, "data_order", epoch).permutation(n)
                  for epoch in range(step * B // n, ((step + 1) * B - 1) // n + 1)}
        return [self.train[orders[i // n][i % n]] for i in range(step * B, (step + 1) * B)]

    def loss(self, step: int) -> StepLoss:
        model, config, examples = self.model, self.config, self.batch_at(step)
        aligning = step < config.alignment_steps
        rng = stream_rng(self.train_config.seed, "batches", step)
        seed_memory(model, storage_rounds(examples, 0 if aligning else config.distractors, rng))
        batch = dialogue_batch(model, examples)
        tokens = int(sum(len(e.context) + len(e.dialogue) for e in examples))
        if aligning:
            with no_grad():
                out = model(batch)
            loss = retrieval_alignment_loss(model, out, config.alignment_temperature)
            value = float("nan") if loss is None else loss.item()
            return StepLoss(loss, {"loss": value, "loss_alignment": value}, tokens)
        loss = reconstruction_loss(model, model(batch), batch)[0]
        return StepLoss(loss, {"loss": loss.item(), "loss_memory": loss.item()}, tokens)

    def validate(self) -> dict:
        """Held-out figures: retrieval top-1, and M2 accuracy / exact match / loss per memory mode."""
        model, B = self.model, self.train_config.batch_size
        result = {"retrieval_top1": retrieval_top1(model, self.val, B)}
        for mode in MEMORY_MODES:
            scores = evaluate(model, self.val, B, mode, self.config.distractors, self.train_config.seed)
            result.update({f"{name}_memory_{mode}": value for name, value in scores.items()})
        return result

    def log_fields(self, step_result: dict) -> dict:
        return {"gates": [float(np.tanh(g.data[0])) for g in self.model.parameter_groups()["gates"]]}

    def identity(self) -> dict:
        return {**self.base, "dataset": self.dataset, "triplets": self.triplets}

    def finish(self, directory, first: dict, last: dict) -> None:
        print_figures(len(self.val), first, last)
        weights_path = Path(directory) / WEIGHTS_NAME
        save_memory_weights(weights_path, self.model, self.base["base"],
                            {"triplets": self.triplets, "stage_config": self.config.to_dict(),
                             "before": first, "after": last})
        base_bytes = checkpoint_info(self.base["base"])["chain_file_bytes"]
        backbone_bytes = sum(p.data.nbytes for p in self.model.backbone_parameters())
        print(f"{weights_path}: {weights_path.stat().st_size / 1e6:.2f} MB (memory modules only); base checkpoint "
              f"{self.base['base']}: {base_bytes / 1e6:.2f} MB with the checkpoints it inherits from (its backbone "
              f"parameters alone: {backbone_bytes / 1e6:.2f} MB)", file=sys.stderr)


def base_identity(base_path, model) -> dict:
    """What a fine-tuning checkpoint names of its base: the file and its backbone's fingerprint."""
    return {"base": str(Path(base_path).resolve()), "base_fingerprint": backbone_fingerprint(model)}


def print_figures(held_out: int, before: dict, after: dict) -> None:
    """The held-out figures before and after, one line each."""
    print(f"{'held-out (%d dialogues)' % held_out:<40}{'before':>10}{'after':>10}", file=sys.stderr)
    for key in after:
        if key.startswith(("retrieval", "m2_")) and not key.startswith("m2_loss"):
            print(f"{key:<40}{before.get(key, float('nan')):>10.3f}{after[key]:>10.3f}", file=sys.stderr)
