"""The one loop with its stages: recall practice resumes exactly after SIGKILL, a non-finite loss or
gradient never reaches the weights, and a short --max_steps on the default config carries the
schedule with it."""
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture import Tensor
from mlot.architecture.checkpoint_file import load_checkpoint
from mlot.architecture.config import ModelConfig, read_json_object
from mlot.inference.chat_session import ChatSession
from mlot.model.model import MLoTSpark
from mlot.tokenization.synthetic_documents import practice_recall_case, recall_case
from mlot.tokenization.synthetic_world import build_world
from mlot.training.checkpointing import CheckpointManager
from mlot.model.infilling import IGNORE_INDEX
from mlot.tokenization.chat_scripts import KINDS as CHAT_KINDS, chat_script
from mlot.training.recall_stage import CHAT_REPLY_SHARE, TRAINING_SEED_BASE, RecallConfig, RecallStage, practice_case
from mlot.training.stages import StepLoss
from mlot.training.training_loop import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "05-training" / "train.py"
TINY = ROOT / "05-training" / "configs" / "tiny.json"


@pytest.fixture(scope="module")
def base(tiny_dataset, tmp_path_factory):
    """A random tiny model saved as a checkpoint of the tiny dataset: the --base of later stages."""
    meta = json.loads((tiny_dataset / "meta.json").read_text())
    special = meta["special_tokens"]
    values = {**read_json_object(TINY)["model"], "vocab_size": meta["vocab_size"], "pad_id": special["<pad>"],
              "mask_id": special["[MASK]"], "sop_id": special["[SOP]"], "eop_id": special["[EOP]"]}
    model = MLoTSpark(ModelConfig.from_dict(values), seed=5)
    folder = tmp_path_factory.mktemp("base")
    CheckpointManager(folder).save(1, {f"model.{k}": v for k, v in model.state_dict().items()},
                                   {"model_config": model.config.to_dict(), "dataset": str(tiny_dataset)})
    return folder / "latest_checkpoint.pt"


def losses(folder: Path) -> dict:
    records = map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_recall_practice_resumes_exactly_after_sigkill(base, tmp_path):
    config = tmp_path / "recall.json"
    config.write_text(json.dumps({"training": {"batch_size": 4, "max_steps": 48, "warmup_steps": 5, "log_interval": 1,
                                               "save_interval": 3, "eval_interval": 24},
                                  "recall": {"max_windows": 2, "val_cases": 8, "replay_rows": 2, "story_share": 0.2,
                                             "chat_share": 0.2}}))
    command = [sys.executable, str(TRAIN), "--no_progress", "--stage", "recall", "--base", str(base),
               "--model_config", str(config), "--checkpoint_dir"]
    subprocess.run(command + [str(tmp_path / "straight")], check=True, capture_output=True, cwd=ROOT)
    reference = losses(tmp_path / "straight")
    assert sorted(reference) == list(range(1, 49))

    killed = tmp_path / "killed"
    process = subprocess.Popen(command + [str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "ckpt_00000006.pt").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # it was still running: it died by the signal
    assert max(losses(killed)) < 48  # before its end
    resumed = subprocess.run([sys.executable, str(TRAIN), "--no_progress", "--resume",
                              str(killed / "latest_checkpoint.pt")], capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0 and "(recall)" in resumed.stderr, resumed.stderr
    assert losses(killed) == reference  # every step's loss, bit for bit


def test_recall_practice_masks_exactly_the_answer_after_reading_the_context(base, tiny_dataset):
    model = MLoTSpark(ModelConfig.from_dict(load_checkpoint(base).meta["model_config"]), seed=5)
    config = RecallConfig()
    stage = RecallStage(model, tiny_dataset, TrainConfig(), config, {"base": "b", "base_fingerprint": "f"})
    batch, tokens = stage.question_batch(TRAINING_SEED_BASE, 3)
    tokenizer = stage.tokenizer
    count = lambda text: len(tokenizer.encode(text))  # noqa: E731
    cases = [practice_case(TRAINING_SEED_BASE + row, model.config.working_cache_len, config, count) for row in range(3)]
    assert tokens == sum(count(case["context"]) for case in cases)
    for row, case in enumerate(cases):
        targets = [t for t in batch.targets[row] if t != IGNORE_INDEX]
        assert targets == tokenizer.encode(" " + case["answer"]) + [model.special.eop]
        assert tokenizer.decode(list(batch.ids[row, :batch.prefix_len[row]])) == case["query"] + "[MASK]"
        assert model.memory.episodic[row].size > 0  # the context was read into this row's memory


def test_a_story_batch_asks_what_each_story_stated(base, tiny_dataset):
    """story_share 1: every row reads a story of the corpus's world and is asked a fact stated in it,
    answered as evaluate.py wants it (with its full stop); none is a case of the held-out recall file."""
    model = MLoTSpark(ModelConfig.from_dict(load_checkpoint(base).meta["model_config"]), seed=5)
    stage = RecallStage(model, tiny_dataset, TrainConfig(), RecallConfig(story_share=1.0),
                        {"base": "b", "base_fingerprint": "f"})
    batch, tokens = stage.question_batch(TRAINING_SEED_BASE, 2)
    rng = random.Random("mlot-recall-0")  # the default corpus's held-out recall file, drawn as generate_corpus does
    held_out = [recall_case(build_world(0), rng) for _ in range(250)]
    for row in range(2):
        case = practice_recall_case(TRAINING_SEED_BASE + row)
        assert case["kind"] == "episodic" and case["answer"].endswith(".")
        assert case["answer"].rstrip(".") in case["context"]
        assert (case["context"], case["query"]) not in {(c["context"], c["query"]) for c in held_out}
        targets = [t for t in batch.targets[row] if t != IGNORE_INDEX]
        assert targets == stage.tokenizer.encode(" " + case["answer"]) + [model.special.eop]
    contexts = [practice_recall_case(TRAINING_SEED_BASE + r)["context"] for r in range(2)]
    assert tokens == sum(len(stage.tokenizer.encode(context)) for context in contexts)


@pytest.mark.parametrize("asked", ["the fact", "a reply"])
def test_a_chat_batch_is_archived_as_chat_session_archives_a_chat(base, tiny_dataset, asked):
    """chat_share 1: row 0's memory after reading holds the turns exactly where a ChatSession that
    archived the same chat holds them (entry texts, working cache), and the blank is the answer
    naming the fact, or in some batches the reply to the last turn of talk."""
    config = ModelConfig.from_dict(load_checkpoint(base).meta["model_config"])
    model = MLoTSpark(config, seed=5)
    stage = RecallStage(model, tiny_dataset, TrainConfig(), RecallConfig(chat_share=1.0),
                        {"base": "b", "base_fingerprint": "f"})
    replies = lambda seed: np.random.default_rng([seed, 2]).random(2)[1] < CHAT_REPLY_SHARE  # noqa: E731
    seed = next(s for s in range(TRAINING_SEED_BASE, TRAINING_SEED_BASE + 100) if replies(s) == (asked == "a reply"))
    batch, tokens = stage.question_batch(seed, 2)
    turns, question, answer = stage.chat_case(seed, seed)
    script = chat_script(seed, CHAT_KINDS[seed % len(CHAT_KINDS)], len(turns) - (asked == "the fact"))
    tokenizer = stage.tokenizer
    alone = MLoTSpark(config, seed=5)
    session = ChatSession(alone, tokenizer.user_id, tokenizer.model_id, consolidate_every=10 ** 6)
    for turn in turns:
        user_end = turn.index(tokenizer.model_id)
        session.archive(turn[1:user_end], turn[user_end + 1:])
    texts = lambda memory: sorted(tuple(t) for t, live in zip(memory.entry_tokens[0], memory.episodic[0].live)  # noqa
                                  if live)
    assert texts(model.memory) == texts(alone.memory) and len(texts(alone.memory)) > 0
    np.testing.assert_array_equal(model.memory.side.read(0)[0][0], alone.memory.side.read(0)[0][0])
    assert tokenizer.decode(list(batch.ids[0, :batch.prefix_len[0]])) == tokenizer.decode(question) + "[MASK]"
    assert [t for t in batch.targets[0] if t != IGNORE_INDEX] == answer + [model.special.eop]
    if asked == "the fact":
        assert tokenizer.decode(question).strip() == f"[USER] {script.question} [MODEL]"
        assert all(word in script.fact_turn[0] for word in tokenizer.decode(answer).strip(" .").split())
    else:
        assert tokenizer.decode(question).strip() == f"[USER] {script.other_turns[-1][0]} [MODEL]"
        assert tokenizer.decode(answer).strip() == script.other_turns[-1][1]


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_a_non_finite_step_is_skipped_and_training_goes_on(base, tiny_dataset, fault):
    model = MLoTSpark(ModelConfig.from_dict(load_checkpoint(base).meta["model_config"]), seed=5)
    train = TrainConfig(batch_size=2, max_steps=10, warmup_steps=0)
    stage = RecallStage(model, tiny_dataset, train, RecallConfig(max_windows=1), {"base": "b", "base_fingerprint": "f"})
    trainer = Trainer(model, stage, train)
    clean_loss = stage.loss

    def faulty_loss(step):
        result = clean_loss(step)
        if step != 1:
            return result
        if fault == "loss":  # NaN in the loss itself
            return StepLoss(result.total * float("nan"), {**result.terms, "loss": float("nan")}, result.tokens)
        weight = model.parameter_groups()["backbone"][0]  # sqrt at 0: a finite loss whose gradient is NaN
        return StepLoss(result.total + (weight.sum() * Tensor(np.float32(0.0))).sqrt(), result.terms, result.tokens)

    stage.loss = faulty_loss
    trainer.train_step()
    before = [p.data.copy() for p in model.parameters()]
    moments = {k: v.copy() for k, v in trainer.optimizer.state_dict()["arrays"].items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        result = trainer.train_step()
    assert trainer.skipped == 1 and np.isnan(result["grad_norm"])
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    assert all(np.array_equal(v, trainer.optimizer.state_dict()["arrays"][k]) for k, v in moments.items())
    trainer.train_step()
    assert trainer.skipped == 1
    assert not all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_a_short_max_steps_on_the_default_config_scales_the_schedule(tiny_dataset, tmp_path):
    result = subprocess.run([sys.executable, str(TRAIN), "--no_progress", "--dataset", str(tiny_dataset),
                             "--max_steps", "20", "--checkpoint_dir", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    default = read_json_object(ROOT / "05-training" / "config.json")
    assert default["training"]["max_steps"] == 2600 and default["training"]["warmup_steps"] == 100
    assert "--max_steps 20 (config: 2600): warm-up 100 -> 1 steps" in result.stderr
    meta = load_checkpoint(tmp_path / "run" / "pretrain" / "latest_checkpoint.pt").meta
    assert meta["step"] == 20 and meta["train_config"]["warmup_steps"] == 1
    assert meta["train_config"]["eval_interval"] == 20  # clamped: the run validates at its end
    assert meta["stage_config"]["curriculum"]["min_steps_per_phase"] == round(300 * 20 / 2600)
    assert "val_loss" in meta["last_validation"]
    (recall,) = default["then"]  # the plan's last stage, scaled alike, writes the run's model
    final = load_checkpoint(tmp_path / "run" / "latest_checkpoint.pt").meta
    assert final["stage"] == "recall" and final["step"] == round(recall["training"]["max_steps"] * 20 / 2600)
    assert final["base"] == str((tmp_path / "run" / "pretrain" / "latest_checkpoint.pt").resolve())
    slots = [load_checkpoint(tmp_path / "run" / where / "latest_checkpoint.pt").arrays for where in ("pretrain", ".")]
    names = [name for name in slots[0] if name.startswith("memory.cascade.semantic.")]
    assert names and all(np.array_equal(slots[0][name], slots[1][name]) for name in names)  # kept for the model


def test_a_plan_resumed_after_its_first_stage_runs_the_rest_alike(tiny_dataset, tmp_path):
    """Resuming the first stage's last checkpoint goes on with the plan: the later stage's losses
    are those of the run that went through in one go."""
    config = read_json_object(TINY)
    config["then"] = [{"stage": "recall", "training": {"batch_size": 2, "max_steps": 12, "warmup_steps": 1,
                                                       "eval_interval": 4},
                       "recall": {"val_cases": 2, "max_windows": 1}}]
    (tmp_path / "plan.json").write_text(json.dumps(config))
    command = [sys.executable, str(TRAIN), "--no_progress", "--max_steps", "6"]
    whole = tmp_path / "whole"
    subprocess.run(command + ["--dataset", str(tiny_dataset), "--model_config", str(tmp_path / "plan.json"),
                              "--checkpoint_dir", str(whole)], check=True, capture_output=True, cwd=ROOT)
    for name in ["latest_checkpoint.pt", "metrics.jsonl", *(p.name for p in whole.glob("ckpt_*.pt"))]:
        (whole / name).rename(tmp_path / name)  # the recall stage's files, set aside
    result = subprocess.run(command + ["--resume", str(whole / "pretrain" / "latest_checkpoint.pt")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "finished recall" in result.stderr
    assert losses(whole) == losses(tmp_path) and len(losses(whole)) > 0


def test_a_bad_later_stage_is_named_before_anything_trains(tmp_path):
    config = read_json_object(TINY)
    config["then"] = [{"stage": "recall", "recall": {"max_windows": 0}}]
    (tmp_path / "plan.json").write_text(json.dumps(config))
    result = subprocess.run([sys.executable, str(TRAIN), "--model_config", str(tmp_path / "plan.json"),
                             "--checkpoint_dir", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'plan.json'}: config key "
                                                  "'then.recall.recall.max_windows': must be >= 1, got 0"]
