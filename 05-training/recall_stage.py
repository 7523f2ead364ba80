"""Recall practice: memory tasks read into memory, the loss on the answer only.

    python 05-training/train.py --stage recall --base checkpoints/latest_checkpoint.pt --checkpoint_dir recall_run/

Random-span reconstruction spends nearly all of its loss on filler, and a model trained with it
alone never learned to copy a pass key (06-evaluation/README.md). Here each row reads, segment by
segment with the working cache on as the memory benchmarks do, a context on a training seed
(never the benchmarks'): a memory task (03-tokenization/memory_tasks.py: pass keys, key-value
pairs with overwrites, facts over several sentences; 1..max_windows working windows), or in a
story_share of batches a corpus story asking what it stated hundreds of tokens before, or in a
chat_share a chat laid out as ChatSession archives it. Part A is the question, the answer masked;
the loss covers the answer only. Every parameter but the memory gates trains; beside the
questions, replay_rows documents of the base's data get pretraining's objectives (replay_loss),
without which practice wore the language model away (bits per byte 0.85 -> 2.61 in 600 steps).
Validation: held-out cases, answer loss and exact match under teacher forcing.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from mlot.architecture import no_grad
from mlot.architecture.config import JsonConfig, check
from mlot.model.infilling import make_infill_batch
from mlot.model.masking import SpanScales, sample_spans
from mlot.model.scoring import score_targets
from mlot.tokenization.chat_scripts import KINDS as CHAT_KINDS, chat_script
from mlot.tokenization.memory_tasks import associative_recall_case, fact_case, passkey_case
from mlot.tokenization.synthetic_documents import practice_recall_case
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.tokenization.tokenizer import Tokenizer
from mlot.training.loss_functions import DEFAULT_WEIGHTS, coherence_loss, reconstruction_loss
from mlot.training.stages import Stage, StepLoss
from mlot.training.trained_model import SEMANTIC_PREFIX
from mlot.training.training_loop import arrays_under, stream_rng

TRAINING_SEED_BASE = 2 * 10 ** 9    # apart from the benchmark (< 10^9) and the corpus (10^9 + index)
VALIDATION_SEED_BASE = 3 * 10 ** 9
CHAT_REPLY_SHARE = 0.25             # of chat batches: a reply to talk as the target (a chat answers statements too)
PRACTICE_MEMORY = {"working": True, "episodic": True, "semantic": False}
REPLAY_SCALES = SpanScales(mask_ratio=0.15, short_span_fraction=0.6, short_span_max=3, long_span_mean=6.0)


@dataclasses.dataclass
class RecallConfig(JsonConfig):
    """The `recall` section (training.lr is every parameter's rate but the gates')."""
    gate_lr: float = 0.0            # memory gates, no weight decay; 0: kept as the base's (05 README)
    max_windows: int = 4            # contexts of 1..max_windows working windows (retrieval is by content)
    passkey_share: float = 0.4      # the rest: associative recall 0.4, facts 0.2 of what remains
    story_share: float = 0.0        # of batches: corpus stories asking an earlier fact (evaluate.py's recall)
    chat_share: float = 0.0         # of batches: chats asking a fact told turns before (the chat benchmark)
    val_cases: int = 64             # held-out cases per validation
    replay_rows: int = 0            # training documents reconstructed beside the questions each step (0: none)

    def validate(self):
        check(math.isfinite(self.gate_lr) and self.gate_lr >= 0, "gate_lr", f"must be finite, >= 0: {self.gate_lr}")
        for key, least in (("max_windows", 1), ("val_cases", 1), ("replay_rows", 0)):
            check(getattr(self, key) >= least, key, f"must be >= {least}, got {getattr(self, key)}")
        for key in ("passkey_share", "story_share", "chat_share"):
            check(0 <= getattr(self, key) <= 1, key, f"must lie in [0, 1], got {getattr(self, key)}")
        check(self.story_share + self.chat_share <= 1, "chat_share",
              f"story_share + chat_share must be <= 1, got {self.story_share + self.chat_share}")


def practice_case(seed: int, window: int, config: RecallConfig, count_tokens) -> dict:
    """The task case of a seed: its kind and length drawn from the seed alone."""
    rng = np.random.default_rng([seed, 0])
    n_tokens = int(rng.integers(1, config.max_windows + 1)) * window
    kind = rng.random()
    if kind < config.passkey_share:
        return passkey_case(seed, float(rng.random()), n_tokens, count_tokens)
    if kind < config.passkey_share + (1 - config.passkey_share) * 2 / 3:
        return associative_recall_case(seed, int(rng.integers(2, 7)), n_tokens, bool(rng.random() < 0.3),
                                       count_tokens)
    return fact_case(seed, int(rng.integers(1, 4)), n_tokens, count_tokens=count_tokens)


class RecallStage(Stage):
    name = "recall"
    config_class = RecallConfig
    trains = "every parameter (the memory gates only with recall.gate_lr > 0)"
    semantic_from_base = True  # practice reads none, but the plan's model should hold what pretraining distilled

    def __init__(self, model, tokenizer_folder, train, config: RecallConfig, base: dict):
        super().__init__(model, config)
        self.train_config, self.base, self.dataset = train, base, str(tokenizer_folder)
        self.tokenizer = Tokenizer.from_file(Path(tokenizer_folder) / "tokenizer.json")
        self.replay = TokenizedData.load(tokenizer_folder).train if config.replay_rows else None

    def parameter_groups(self, train) -> list:
        groups = self.model.parameter_groups()
        for gate in groups["gates"]:
            gate.requires_grad = self.config.gate_lr > 0
        return [{"name": "model", "params": groups["backbone"] + groups["episodic"] + groups["semantic"],
                 "lr": train.lr, "weight_decay": train.weight_decay},
                {"name": "gates", "params": groups["gates"], "lr": self.config.gate_lr, "weight_decay": 0.0}]

    def question_batch(self, first_seed: int, count: int):
        """Read the contexts of cases first_seed.. into memory rows; the questions, answers masked. A batch
        is of one sort (a long story in one row would make every row read as long), drawn from its seed."""
        model, tokenizer, config = self.model, self.tokenizer, self.config
        sort = np.random.default_rng([first_seed, 1]).random()
        if config.story_share <= sort < config.story_share + config.chat_share:
            cases, flush = [self.chat_case(first_seed + i, first_seed) for i in range(count)], False
        else:
            count_tokens = lambda text: len(tokenizer.encode(text))  # noqa: E731
            texts = [practice_recall_case(first_seed + i) if sort < config.story_share else
                     practice_case(first_seed + i, model.config.working_cache_len, config, count_tokens)
                     for i in range(count)]
            cases, flush = [([tokenizer.encode(case["context"])], tokenizer.encode(case["query"]),
                             tokenizer.encode(" " + case["answer"])) for case in texts], True
        segment = model.config.segment_len
        model.set_memory(**PRACTICE_MEMORY)
        model.reset_memory(batch_size=count)
        for piece in range(len(cases[0][0])):  # chats: turn by turn, as ChatSession archives them
            pieces = [np.asarray(case[0][piece], dtype=np.int64) for case in cases]
            for start in range(0, max(map(len, pieces)), segment):
                model.write_memory([ids[start:start + segment] for ids in pieces])
        if flush:
            model.flush_memory()
        questions = [np.asarray(query + answer, dtype=np.int64) for _, query, answer in cases]
        spans = [[(len(query), len(query) + len(answer))] for _, query, answer in cases]
        return make_infill_batch(questions, spans, model.special), sum(len(p) for case in cases for p in case[0])

    def chat_case(self, seed: int, batch_seed: int):
        """(turns, question, answer) ids of a chat as ChatSession archives it: the fact, other talk (as many
        turns in every row of a batch), the question; or in CHAT_REPLY_SHARE of batches the reply to talk."""
        batch_rng = np.random.default_rng([batch_seed, 2])
        other_turns = int(batch_rng.integers(2, 13))
        script = chat_script(seed, CHAT_KINDS[seed % len(CHAT_KINDS)], other_turns)
        tokenizer = self.tokenizer
        prompt = lambda text: [tokenizer.user_id, *tokenizer.encode(f" {text} "), tokenizer.model_id]  # noqa: E731
        told = [script.fact_turn, *script.other_turns]
        if batch_rng.random() < CHAT_REPLY_SHARE:
            (user, reply), told = told[-1], told[:-1]
            question, answer = prompt(user), tokenizer.encode(f" {reply}")
        else:
            question, answer = prompt(script.question), tokenizer.encode(" " + " ".join(script.answer_words) + ".")
        return [prompt(user) + tokenizer.encode(f" {reply}") for user, reply in told], question, answer

    def loss(self, step: int) -> StepLoss:
        B = self.train_config.batch_size
        batch, tokens = self.question_batch(TRAINING_SEED_BASE + step * B, B)
        answer = reconstruction_loss(self.model, self.model(batch), batch)[0]
        terms = {"loss_answer": answer.item()}
        if self.replay is not None:
            replay, read = self.replay_loss(step)
            terms["loss_replay"], answer, tokens = replay.item(), answer + replay, tokens + read
        return StepLoss(answer, {"loss": answer.item(), **terms}, tokens)

    def replay_loss(self, step: int):
        """Pretraining's objectives on replay_rows documents: a segment reconstructed from a fresh memory,
        written, the next reconstructed with it (odd rows: its end, a continuation as bits per byte
        scores it, which practice's answers had worn away), the pair's order judged as validation
        judges it. Returns (loss, tokens read)."""
        model, split, rng = self.model, self.replay, stream_rng(self.train_config.seed, "replay", step)
        segment, span = model.config.segment_len, model.config.max_span_len
        firsts, seconds = [], []
        for doc in rng.integers(len(split), size=self.config.replay_rows):
            text = np.asarray(split.document(int(doc)), dtype=np.int64)
            start = int(rng.integers(segment, len(text) - 1)) if len(text) > segment + 1 else 0  # where the
            firsts.append(text[max(start - segment, 0):start])                                    # second starts
            seconds.append(text[start:start + segment])
        model.reset_memory(batch_size=len(firsts))
        loss, previous = 0.0, None
        for part, segments in enumerate((firsts, seconds)):
            spans = [sample_spans(len(ids), REPLAY_SCALES, rng, span) if part == 0 or row % 2 == 0 or len(ids) < 2
                     else [(max(1, len(ids) - span), len(ids))] for row, ids in enumerate(segments)]
            batch = make_infill_batch(segments, spans, model.special)
            out = model(batch)
            loss = loss + reconstruction_loss(model, out, batch)[0]
            if part == 0:
                previous = out.segment_states.data
                model.write_memory(firsts)
        has_previous, swapped = np.array([len(ids) > 0 for ids in firsts]), rng.random(len(firsts)) < 0.5
        coherence = coherence_loss(model, out.segment_states, previous, has_previous, swapped)[0]
        weight = DEFAULT_WEIGHTS["coherence"] / DEFAULT_WEIGHTS["reconstruction"]
        return (loss if coherence is None else loss + coherence * weight), sum(map(len, firsts + seconds))

    def validate(self) -> dict:
        B, total, nll, targets, exact = self.train_config.batch_size, self.config.val_cases, 0.0, 0, 0
        with no_grad():
            for first in range(0, total, B):
                batch, _ = self.question_batch(VALIDATION_SEED_BASE + first, min(B, total - first))
                scores = score_targets(self.model, self.model(batch), batch)
                misses = np.bincount(scores.rows, weights=~scores.hits, minlength=batch.batch_size)
                nll, targets = nll + float(scores.nll.sum()), targets + scores.count
                exact += int((misses == 0).sum())
        return {"val_answer_loss": nll / max(targets, 1), "val_answer_exact": exact / total}

    def state(self) -> tuple[dict, dict]:
        return {f"{SEMANTIC_PREFIX}{k}": v for k, v in self.model.memory.semantic.state_dict().items()}, {}

    def load_state(self, arrays: dict, meta: dict) -> None:
        if self.model.memory is None:
            self.model.reset_memory(batch_size=1)
        self.model.memory.semantic.load_state_dict(arrays_under(arrays, SEMANTIC_PREFIX))

    def identity(self) -> dict:
        return {**self.base, "dataset": self.dataset}
