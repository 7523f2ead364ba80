"""Memory fine-tuning: the memory modules of a frozen base learn to use what it stored (the notes
000-003 of ../shared/seeds: two-pass memory-seeded training, frozen base, memory-only weights).

    python 05-training/train.py --stage memory --base checkpoints/latest_checkpoint.pt \\
        --dataset 03-tokenization/corpus/epoch0_curriculum.jsonl --checkpoint_dir memory_run/

The data are two-turn dialogues {"U1", "M1" (optional), "U2", "M2"} in which M2 can only be right
if U1 was kept. One step, for batch_size dialogues side by side (one memory row each):
  pass 1 (no gradient): reset memory; read "[USER] U1 [MODEL] M1" and archive it as episodic
         entries. The stage's memory has no working cache, so every token read leaves it at
         once: what pass 2 can use was stored, not merely still in view;
  pass 2: Part A "[USER] U2 [MODEL] [MASK]", the span to fill M2 (GLM's Part B, found after the
         [MODEL] token of the tokenized dialogue); cross-entropy over the M2 tokens and the
         span's [EOP] only (every other label is IGNORE_INDEX).
The backbone is frozen (requires_grad=False); the optimizer holds model.memory_parameters()
only. A base without a copy head gets one (`copy_head`, 04-model/copy_head.py): a pointer that
copies the stored fact's tokens, which the injection blocks alone did not learn to do. The first
`alignment_steps` steps are the notes' Stage 1: the retriever projection alone learns, by the
InfoNCE of loss_functions (a triplet loss with every other row's entries as negatives: anchor the
U2 query chunk, positive its own U1 entries). A base pretrained on plain documents should first
learn the dialogue form: `--stage dialogue` (dialogue_finetune.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from mlot.architecture import no_grad
from mlot.architecture.config import ConfigError, JsonConfig, ModelConfig, check, read_json_object
from mlot.architecture.optim import AdamW, WarmupCosine, clip_grad_norm_, grads_are_finite
from mlot.model.infilling import IGNORE_INDEX, make_infill_batch
from mlot.model.memory_state import ModelMemory
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenizer import Tokenizer
from mlot.architecture.checkpoint_file import CheckpointError, checkpoint_info, load_checkpoint
from mlot.training.checkpointing import LATEST_NAME, CheckpointManager
from mlot.training.loss_functions import reconstruction_loss, retrieval_alignment_loss
from mlot.training.memory_weights import backbone_fingerprint, save_memory_weights
from mlot.training.trained_model import load_trained_model
from mlot.training.training_loop import append_metrics, restore_model_and_optimizer, truncate_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "memory_finetune.json"
STAGE = "memory"
WEIGHTS_NAME = "memory_weights.pt"
NEUTRAL_ACKNOWLEDGEMENT = "Noted."  # M1 when a line gives none: it must not repeat the fact


class TripletDataError(Exception):
    """A dialogue file that cannot be used; the message names the file, the line and the fault."""


# --- data ------------------------------------------------------------------------------------------------
class Triplet(NamedTuple):
    line: int
    u1: str
    m1: str
    u2: str
    m2: str


class Example(NamedTuple):
    """A dialogue as token ids."""
    context: np.ndarray   # "[USER] U1 [MODEL] M1", read in pass 1
    dialogue: np.ndarray  # "[USER] U2 [MODEL] M2"
    m2_start: int         # where M2 begins in dialogue: after its last [MODEL] token


def read_triplets(path) -> list:
    """The dialogues of a JSONL file, blank lines skipped; a bad line raises TripletDataError."""
    path = Path(path)
    if not path.is_file():
        raise TripletDataError(f"dataset {path} does not exist (expected a JSONL file of "
                               "{\"U1\", \"M1\", \"U2\", \"M2\"} dialogues)")
    triplets = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.strip():
                triplets.append(_parse_line(f"{path}, line {number}", number, raw))
    if not triplets:
        raise TripletDataError(f"dataset {path} holds no dialogues")
    return triplets


def _parse_line(where: str, number: int, raw: bytes) -> Triplet:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TripletDataError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise TripletDataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise TripletDataError(f"{where}: expected a JSON object with U1, U2, M2 (M1 optional), "
                               f"got a {type(record).__name__}")
    missing = [key for key in ("U1", "U2", "M2") if key not in record]
    if missing:
        raise TripletDataError(f"{where}: missing {', '.join(missing)}")
    for key in ("U1", "M1", "U2", "M2"):
        if key in record and not (isinstance(record[key], str) and record[key].strip()):
            raise TripletDataError(f"{where}: {key} must be a non-empty string, got {record[key]!r}")
    return Triplet(number, record["U1"], record.get("M1", NEUTRAL_ACKNOWLEDGEMENT), record["U2"], record["M2"])


def encode_triplets(tokenizer: Tokenizer, triplets, max_tokens: int, source: str = "dataset") -> list:
    """Examples of the triplets; a field holding a special token's text, or a dialogue longer
    than one segment (max_tokens), raises TripletDataError naming its line."""
    model_id = tokenizer.token_to_id("[MODEL]")
    if model_id is None or tokenizer.token_to_id("[USER]") is None:
        raise TripletDataError("the base's tokenizer has no [USER] / [MODEL] tokens")
    for triplet in triplets:
        for key, text in zip(("U1", "M1", "U2", "M2"), triplet[1:]):
            found = [token for token in tokenizer.special_tokens if token in text]
            if found:
                raise TripletDataError(f"{source}, line {triplet.line}: {key} contains the special token {found[0]}")
    contexts = tokenizer.encode_batch([f"[USER] {t.u1} [MODEL] {t.m1}" for t in triplets], allow_special=True)
    dialogues = tokenizer.encode_batch([f"[USER] {t.u2} [MODEL] {t.m2}" for t in triplets], allow_special=True)
    examples = []
    for triplet, context, dialogue in zip(triplets, contexts, dialogues):
        if len(dialogue) > max_tokens:
            raise TripletDataError(f"{source}, line {triplet.line}: U2 and M2 take {len(dialogue)} tokens, "
                                   f"more than the model's segment of {max_tokens}")
        m2_start = len(dialogue) - dialogue[::-1].index(model_id)
        examples.append(Example(np.array(context, np.int64), np.array(dialogue, np.int64), m2_start))
    return examples


def dialogue_batch(model, examples):
    """Pass 2's batch: Part A "[USER] U2 [MODEL] [MASK]", Part B "[SOP] M2", targets "M2 [EOP]"."""
    return make_infill_batch([e.dialogue for e in examples], [[(e.m2_start, len(e.dialogue))] for e in examples],
                             model.special)


# --- pass 1: memory seeded with U1 ----------------------------------------------------------------------
def reset_archive_memory(model, batch_size: int) -> None:
    """An empty memory of batch_size rows whose working cache holds nothing (see the module docstring)."""
    memory = model.memory
    if memory is None or memory.batch != batch_size or memory.working.capacity != 0:
        model.memory = ModelMemory(dataclasses.replace(model.config, working_cache_len=0), batch_size)
    else:
        memory.reset()


def seed_memory(model, contexts_by_round) -> None:
    """Pass 1: reset memory, then per round read one context per row and archive it (flush), so
    that each context forms its own episodic entries. Rounds: lists of one array per row."""
    segment_len = model.config.segment_len
    reset_archive_memory(model, len(contexts_by_round[0]))
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
    rounds = []
    for k in range(distractors + 1):
        shift = (k - own_round) % (distractors + 1)  # (B,): 0 for the own context's round
        rounds.append([examples[(row + shift[row]) % B].context for row in range(B)])
    return rounds


# --- measures -----------------------------------------------------------------------------------------------
def span_scores(model, out, batch, contexts) -> dict:
    """Sums over a batch: M2 token hits and count (greedy prediction under teacher forcing), the
    same over the M2 tokens that occur in the row's U1 context (the facts memory must supply),
    exact matches (every M2 token and the [EOP] right: the greedy fill is M2 exactly), loss."""
    rows, cols = np.nonzero(batch.targets != IGNORE_INDEX)
    logits = model.output_logits(out.hidden[rows, cols], out.read, rows).data.astype(np.float64)  # (N, V)
    targets = batch.targets[rows, cols]
    peak = logits.max(axis=1)
    losses = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1)) - logits[np.arange(len(targets)), targets]
    hit = logits.argmax(axis=1) == targets
    is_m2 = targets != model.special.eop
    context_ids = np.full((batch.batch_size, max(len(c) for c in contexts)), -1, np.int64)
    for row, context in enumerate(contexts):
        context_ids[row, :len(context)] = context
    is_fact = is_m2 & (context_ids[rows] == targets[:, None]).any(axis=1)
    misses_per_row = np.bincount(rows, weights=~hit, minlength=batch.batch_size)
    return {"token_hits": int(hit[is_m2].sum()), "tokens": int(is_m2.sum()),
            "fact_hits": int(hit[is_fact].sum()), "facts": int(is_fact.sum()),
            "exact": int((misses_per_row == 0).sum()), "rows": batch.batch_size, "loss_sum": float(losses.sum()),
            "targets": len(targets)}


def evaluate(model, examples, batch_size: int, memory: str = "on", distractors: int = 0, seed: int = 0) -> dict:
    """M2 token accuracy (all tokens, and those that also occur in U1), exact match and loss on
    held-out dialogues, with memory "on", "off" (no memory read at all: the frozen model alone) or
    "shuffled" (each row seeded with another dialogue's U1: what the memory modules give without
    the right fact)."""
    totals = {}
    rng = np.random.default_rng([seed, 11])
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
class MemoryFinetuneConfig(JsonConfig):
    """How to fine-tune the memory modules (the model is the base's)."""
    batch_size: int = 16            # dialogues side by side, one memory row each
    max_steps: int = 900
    alignment_steps: int = 100      # Stage 1 (retriever only) before the two-pass steps
    retriever_lr: float = 3e-3
    injection_lr: float = 3e-3      # injection blocks and copy head (3e-2 left the copy head unlearned)
    semantic_lr: float = 3e-3       # GNN
    gate_lr: float = 3e-2           # no weight decay: the gates must be free to open
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    alignment_temperature: float = 0.1
    distractors: int = 0            # other dialogues' U1 stored beside each row's own
    copy_head: bool = True          # give a base without one a copy head (04-model/copy_head.py) to train
    backbone_lr: float = 1e-3       # --stage dialogue only: the backbone learns the dialogue form
    val_examples: int = 256         # the file's last dialogues, held out
    eval_interval: int = 300
    log_interval: int = 10
    save_interval: int = 300
    keep_checkpoints: int = 3
    seed: int = 0

    def validate(self):
        for key in ("max_steps", "eval_interval", "log_interval", "save_interval", "keep_checkpoints",
                    "val_examples"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        check(self.batch_size >= 2, "batch_size", f"must be >= 2 (rows are each other's negatives), "
                                                  f"got {self.batch_size}")
        for key in ("retriever_lr", "injection_lr", "semantic_lr", "gate_lr", "backbone_lr", "grad_clip",
                    "alignment_temperature"):
            check(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key,
                  f"must be a finite number > 0, got {getattr(self, key)}")
        check(0 <= self.alignment_steps <= self.max_steps, "alignment_steps",
              f"must lie in [0, max_steps={self.max_steps}], got {self.alignment_steps}")
        check(0 <= self.warmup_steps < self.max_steps, "warmup_steps",
              f"must lie in [0, max_steps={self.max_steps}), got {self.warmup_steps}")
        check(0 <= self.weight_decay < 1, "weight_decay", f"must lie in [0, 1), got {self.weight_decay}")
        check(0 <= self.distractors < self.batch_size, "distractors",
              f"must lie in [0, batch_size={self.batch_size}), got {self.distractors}")


# --- the stage -----------------------------------------------------------------------------------------
class MemoryFinetuner:
    """Model (backbone frozen), optimizer over the memory parameters, schedules, data order; the
    whole state round-trips through `state()` / `load_state()`."""

    stage = STAGE
    default_config = DEFAULT_CONFIG
    trains = "the memory modules (trained; the backbone is frozen)"

    def __init__(self, model, train, val, config: MemoryFinetuneConfig, identity: dict):
        self.model, self.train, self.val, self.config = model, train, val, config
        self.identity = identity  # base, base_fingerprint, dataset (tokenizer folder), triplets
        if len(train) < config.batch_size:
            raise TripletDataError(f"{identity['triplets']}: {len(train)} training dialogues after holding out "
                                   f"{len(val)}, fewer than one batch of {config.batch_size}")
        self.optimizer = AdamW([{"name": name, "params": params, "lr": lr, "weight_decay": decay}
                                for name, (params, lr, decay) in self.trained_groups().items() if params])
        self.schedules = [WarmupCosine(self.optimizer, config.warmup_steps, config.max_steps, group=group["name"])
                          for group in self.optimizer.param_groups]
        self.step = self.skipped = 0
        self._epoch_order = (-1, None)  # (epoch, its permutation of the training dialogues)
        self.before: dict = {}
        self.last_validation: dict = {}

    def trained_groups(self) -> dict:
        """name -> (parameters, lr, weight decay) of the optimizer; everything else is frozen."""
        model, config = self.model, self.config
        if config.copy_head:
            model.add_copy_head(config.seed)  # a no-op for a model that has one (a resumed run)
        for param in model.backbone_parameters():
            param.requires_grad = False
        groups = model.parameter_groups()
        retriever_ids = {id(p) for p in model.retriever.parameters()}
        return {"retriever": (model.retriever.parameters(), config.retriever_lr, config.weight_decay),
                "injection": ([p for p in groups["episodic"] if id(p) not in retriever_ids], config.injection_lr,
                              config.weight_decay),
                "semantic": (groups["semantic"], config.semantic_lr, config.weight_decay),
                "gates": (groups["gates"], config.gate_lr, 0.0)}

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train)))
        return self._epoch_order[1]

    def batch_at(self, step: int) -> list:
        """The dialogues of a step: a fresh permutation per epoch, so a resumed run sees the same."""
        B, n = self.config.batch_size, len(self.train)
        return [self.train[self._order(i // n)[i % n]] for i in range(step * B, (step + 1) * B)]

    def step_loss(self, examples) -> tuple:
        """(what this step trains, its loss) for a batch of dialogues."""
        model, config = self.model, self.config
        aligning = self.step < config.alignment_steps
        rng = np.random.default_rng([config.seed, self.step])
        seed_memory(model, storage_rounds(examples, 0 if aligning else config.distractors, rng))
        batch = dialogue_batch(model, examples)
        if aligning:
            with no_grad():
                out = model(batch)
            return "alignment", retrieval_alignment_loss(model, out, config.alignment_temperature)
        return "memory", reconstruction_loss(model, model(batch), batch)[0]

    def train_step(self) -> dict:
        config = self.config
        self.model.train()
        stage, loss = self.step_loss(self.batch_at(self.step))
        self.optimizer.zero_grad()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        finite = loss is not None and math.isfinite(loss.item()) and loss.requires_grad
        if finite:
            loss.backward()
            finite = grads_are_finite(params)
        grad_norm = clip_grad_norm_(params, config.grad_clip) if finite else float("nan")
        if finite:
            self.optimizer.step()
        else:
            self.skipped += 1
        for schedule in self.schedules:
            schedule.step()
        self.step += 1
        return {"stage": stage, "loss": loss.item() if loss is not None else float("nan"), "grad_norm": grad_norm}

    def measure(self, memory_modes=("off", "on", "shuffled")) -> dict:
        """Held-out figures: retrieval top-1, and M2 accuracy / exact match / loss per memory mode."""
        model, config = self.model, self.config
        model.eval()
        result = {"retrieval_top1": retrieval_top1(model, self.val, config.batch_size)}
        for mode in memory_modes:
            scores = evaluate(model, self.val, config.batch_size, mode, config.distractors, config.seed)
            result.update({f"{name}_memory_{mode}": value for name, value in scores.items()})
        return result

    def run(self, manager: CheckpointManager, metrics_path: Path, progress: bool = True, should_stop=lambda: False):
        config = self.config
        if not self.before:
            self.before = self.measure()
            append_metrics(metrics_path, {"step": 0, **self.before})
        bar = tqdm(total=config.max_steps, initial=self.step, unit="step", desc="memory", disable=not progress,
                   dynamic_ncols=True)
        try:
            while self.step < config.max_steps and not should_stop():
                result = self.train_step()
                validation = self.measure(("on",)) if self.step % config.eval_interval == 0 else {}
                if validation:
                    self.last_validation = validation
                if self.step % config.log_interval == 0 or validation:
                    append_metrics(metrics_path, {"step": self.step, **result, **validation,
                                                  "gates": [float(np.tanh(g.data[0])) for g in
                                                            self.model.parameter_groups()["gates"]],
                                                  "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups},
                                                  "skipped_steps": self.skipped})
                if self.step % config.save_interval == 0:
                    manager.save(self.step, *self.state())
                bar.update(1)
                bar.set_postfix(stage=result["stage"], loss=f"{result['loss']:.3f}")
        finally:
            bar.close()
        if self.step % config.save_interval != 0:
            manager.save(self.step, *self.state())

    def finish(self, manager: CheckpointManager) -> None:
        report(self, manager.directory / WEIGHTS_NAME)

    def state(self) -> tuple[dict, dict]:
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        arrays.update({f"optim.{k}": v for k, v in optimizer["arrays"].items()})
        meta = {"stage": self.stage, **self.identity, "model_config": self.model.config.to_dict(),
                "train_config": self.config.to_dict(), "step": self.step, "skipped": self.skipped,
                "optimizer": optimizer["meta"], "schedules": [s.state_dict() for s in self.schedules],
                "before": self.before, "last_validation": self.last_validation}
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        restore_model_and_optimizer(self.model, self.optimizer, self.schedules, arrays, meta)
        self.step, self.skipped = meta["step"], meta["skipped"]
        self.before, self.last_validation = meta["before"], meta["last_validation"]


# --- the command (train.py --stage memory) -------------------------------------------------------------
def load_config(path, overrides: dict) -> MemoryFinetuneConfig:
    document = read_json_object(path) if path is not None else {}
    document.update({k: v for k, v in overrides.items() if v is not None})
    return MemoryFinetuneConfig.from_dict(document)


def split_examples(tokenizer, triplets_path, model_config, val_examples: int):
    """(train, val): the last val_examples dialogues of the file are held out (deterministic)."""
    triplets = read_triplets(triplets_path)
    if len(triplets) <= val_examples:
        raise TripletDataError(f"{triplets_path}: {len(triplets)} dialogues, not more than the {val_examples} "
                               "held out for validation (lower val_examples)")
    examples = encode_triplets(tokenizer, triplets, model_config.segment_len, str(triplets_path))
    return examples[:-val_examples], examples[-val_examples:]


def checkpoint_stage(path) -> str | None:
    """The stage a checkpoint's meta names (None for pretraining or an unreadable file)."""
    try:
        return load_checkpoint(path).meta.get("stage")
    except (CheckpointError, OSError):
        return None


def build(args, overrides: dict, kind=None):
    """(finetuner, checkpoint manager) for a new run from --base or a resumed one; `kind` is the
    stage's class (MemoryFinetuner, or dialogue_finetune.DialogueFinetuner)."""
    kind = kind or MemoryFinetuner
    if args.resume is not None:
        manager = CheckpointManager(args.resume.resolve().parent)
        checkpoint = manager.load_latest() if args.resume.name == LATEST_NAME else manager.load(args.resume)
        meta = checkpoint.meta
        if meta.get("stage") != kind.stage:
            raise TripletDataError(f"{args.resume}: not a {kind.stage} fine-tuning checkpoint")
        model = MLoTSpark(ModelConfig.from_dict(meta["model_config"]))
        tokenizer = Tokenizer.from_file(Path(meta["dataset"]) / "tokenizer.json")
        config = MemoryFinetuneConfig.from_dict({**meta["train_config"],
                                                 **{k: v for k, v in overrides.items() if v is not None}})
        identity = {k: meta[k] for k in ("base", "base_fingerprint", "dataset", "triplets")}
        if args.dataset is not None:
            identity["triplets"] = str(args.dataset.resolve())
        train, val = split_examples(tokenizer, identity["triplets"], model.config, config.val_examples)
        finetuner = kind(model, train, val, config, identity)
        try:
            finetuner.load_state(checkpoint.arrays, meta)
        except (KeyError, ValueError) as error:  # a state this code does not take
            raise CheckpointError(f"{checkpoint.path}: cannot be resumed by this code: {error}") from None
        truncate_metrics(manager.directory / "metrics.jsonl", finetuner.step)
        print(f"resumed from {checkpoint.path.name} at step {finetuner.step}", file=sys.stderr)
        return finetuner, manager
    if args.base is None or args.dataset is None:
        raise TripletDataError(f"--stage {kind.stage} needs --base CHECKPOINT and --dataset FILE.jsonl")
    try:
        base = load_trained_model(args.base)
    except (KeyError, ValueError) as error:  # arrays this model code does not take
        raise CheckpointError(f"base {args.base} does not fit this model: {error}") from None
    config = load_config(args.model_config or kind.default_config, overrides)
    train, val = split_examples(base.tokenizer, args.dataset, base.model.config, config.val_examples)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir.exists() and any(checkpoint_dir.glob("*.pt")):
        raise TripletDataError(f"{checkpoint_dir} already holds checkpoints; pass --resume "
                               f"{checkpoint_dir / LATEST_NAME} or choose another --checkpoint_dir")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / "metrics.jsonl").unlink(missing_ok=True)
    identity = {"base": str(Path(args.base).resolve()), "base_fingerprint": backbone_fingerprint(base.model),
                "dataset": str(Path(base.meta["dataset"]).resolve()), "triplets": str(args.dataset.resolve())}
    finetuner = kind(base.model, train, val, config, identity)
    trainable = sum(p.size for group in finetuner.optimizer.param_groups for p in group["params"])
    print(f"base {args.base}: {base.model.num_parameters():,} parameters, {trainable:,} in {kind.trains}; "
          f"{len(train)} training and {len(val)} held-out dialogues", file=sys.stderr)
    return finetuner, CheckpointManager(checkpoint_dir, keep_last=config.keep_checkpoints)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.2f} MB"


def print_figures(finetuner, after: dict) -> None:
    """The held-out figures before and after, one line each."""
    print(f"{'held-out (%d dialogues)' % len(finetuner.val):<40}{'before':>10}{'after':>10}", file=sys.stderr)
    for key in after:
        if key.startswith(("retrieval", "m2_")) and not key.startswith("m2_loss"):
            print(f"{key:<40}{finetuner.before.get(key, float('nan')):>10.3f}{after[key]:>10.3f}", file=sys.stderr)


def report(finetuner: MemoryFinetuner, weights_path: Path) -> None:
    """Before/after figures and the memory-only file's size beside the base checkpoint's."""
    after = finetuner.measure()
    before = finetuner.before
    print_figures(finetuner, after)
    save_memory_weights(weights_path, finetuner.model, finetuner.identity["base"],
                        {"step": finetuner.step, "triplets": finetuner.identity["triplets"],
                         "train_config": finetuner.config.to_dict(), "before": before, "after": after})
    base = checkpoint_info(finetuner.identity["base"])
    backbone_bytes = sum(p.data.nbytes for p in finetuner.model.backbone_parameters())
    print(f"{weights_path}: {_megabytes(weights_path.stat().st_size)} (memory modules only); base checkpoint "
          f"{finetuner.identity['base']}: {_megabytes(base['chain_file_bytes'])} with the checkpoints it "
          f"inherits from (its backbone parameters alone: {_megabytes(backbone_bytes)})", file=sys.stderr)


def run_stage(args, overrides: dict, kind=None) -> int:
    """train.py --stage memory (or dialogue): build or resume, train, report (and for the memory
    stage write memory_weights.pt)."""
    try:
        finetuner, manager = build(args, overrides, kind)
    except (TripletDataError, ConfigError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        finetuner.run(manager, manager.directory / "metrics.jsonl", progress=not args.no_progress,
                      should_stop=lambda: stop["requested"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop["requested"]:
        print(f"stopped at step {finetuner.step}; resume with --resume {manager.latest_path}", file=sys.stderr)
        return 0
    finetuner.finish(manager)
    return 0
