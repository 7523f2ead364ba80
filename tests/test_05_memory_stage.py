"""The memory and dialogue stages (05-training/memory_stage.py, dialogue_stage.py, memory_weights.py)
on tiny models: the dialogue layout, pass 1 archiving U1 into episodic memory, a frozen backbone
that stays bit-identical, memory-only weights bound to their base, and the command with its resume."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture.config import ModelConfig, read_json_object
from mlot.model.infilling import IGNORE_INDEX
from mlot.model.model import MLoTSpark
from mlot.tokenization.generate_corpus import generate_corpus
from mlot.tokenization.tokenize_data import tokenize_corpus
from mlot.tokenization.tokenizer import Tokenizer
from mlot.tokenization.dialogue_triplets import Example, encode_triplets, read_triplets
from mlot.training import memory_stage as mf
from mlot.architecture.checkpoint_file import CheckpointError, load_checkpoint
from mlot.training.checkpointing import LATEST_NAME, CheckpointManager
from mlot.model.memory_weights import load_memory_weights, save_memory_weights
from mlot.architecture.cli import run_command
from mlot.training.train import main as train_main
from mlot.training.training_loop import Trainer, TrainConfig
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "05-training" / "configs" / "tiny.json"

DIALOGUES = [
    {"U1": "I am Ann.", "M1": "Noted.", "U2": "Who am I?", "M2": "You are Ann."},
    {"U1": "My cat is Tom.", "U2": "Name my cat?", "M2": "Tom."},  # M1 left out: the neutral one
    {"U1": "I live in Ely.", "M1": "Got it.", "U2": "Where do I live?", "M2": "In Ely."},
    {"U1": "My dog is Rex.", "M1": "Okay.", "U2": "Name my dog?", "M2": "Rex."},
    {"U1": "I am Bob.", "M1": "Fine.", "U2": "Who am I?", "M2": "You are Bob."},
    {"U1": "I like red.", "M1": "Noted.", "U2": "My colour?", "M2": "Red."},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer with [USER]/[MODEL], a tiny random base checkpoint, a dialogue file."""
    folder = tmp_path_factory.mktemp("memory_stage")
    generate_corpus(folder / "corpus", seed=1, size_bytes=60_000, progress=False)
    meta = tokenize_corpus([folder / "corpus" / "documents.jsonl"], folder / "tokenized", vocab_size=400,
                           progress=False)
    special = meta["special_tokens"]
    values = read_json_object(TINY)["model"]
    values.update(segment_len=64, vocab_size=meta["vocab_size"], pad_id=special["<pad>"],
                  mask_id=special["[MASK]"], sop_id=special["[SOP]"], eop_id=special["[EOP]"])
    base_model = MLoTSpark(ModelConfig.from_dict(values), seed=3)
    CheckpointManager(folder / "base").save(
        1, {f"model.{k}": v for k, v in base_model.state_dict().items()},
        {"model_config": base_model.config.to_dict(), "dataset": str(folder / "tokenized")})
    dialogues = folder / "dialogues.jsonl"
    dialogues.write_text("".join(json.dumps(d) + "\n" for d in DIALOGUES * 4))
    return {"folder": folder, "base": folder / "base" / "latest_checkpoint.pt", "dialogues": dialogues,
            "tokenizer": Tokenizer.from_file(folder / "tokenized" / "tokenizer.json")}


def examples_of(world, model):
    return encode_triplets(world["tokenizer"], read_triplets(world["dialogues"]), model.config.segment_len)


# --- data ----------------------------------------------------------------------------------------------------
def test_pass_two_masks_m2_found_after_the_model_token(world):
    tokenizer = world["tokenizer"]
    model = MLoTSpark(load_trained_model(world["base"]).model.config)
    examples = examples_of(world, model)
    batch = mf.dialogue_batch(model, examples[:3])
    model_id, user_id = tokenizer.token_to_id("[MODEL]"), tokenizer.token_to_id("[USER]")
    for row, (example, dialogue) in enumerate(zip(examples[:3], DIALOGUES[:3])):
        m2 = example.dialogue[example.m2_start:]
        assert tokenizer.decode(m2).strip() == dialogue["M2"]
        assert tokenizer.decode(example.context) == f"[USER] {dialogue['U1']} [MODEL] {dialogue.get('M1', 'Noted.')}"
        part_a = batch.ids[row, :batch.prefix_len[row]]
        assert part_a[0] == user_id and part_a[-2] == model_id and part_a[-1] == model.special.mask
        labelled = batch.targets[row] != IGNORE_INDEX
        assert batch.targets[row][labelled].tolist() == m2.tolist() + [model.special.eop]
        assert labelled.sum() == len(m2) + 1  # nothing before M2 carries a label


# --- pass 1 -------------------------------------------------------------------------------------------------
def test_pass_one_archives_each_context_as_episodic_entries_beyond_the_working_cache(world):
    model = load_trained_model(world["base"]).model
    examples = examples_of(world, model)[:4]
    mf.seed_memory(model, mf.storage_rounds(examples, 0, np.random.default_rng(0)))
    C = model.config.chunk_len
    assert model.memory.working.lengths.max() == 0
    for row, example in enumerate(examples):
        store = model.memory.episodic[row]
        live = np.flatnonzero(store.live)
        stored = model.memory.entry_tokens[row, live]  # (entries, C), -1 past each entry's length
        assert len(live) == -(-len(example.context) // C)
        assert stored[stored >= 0].tolist() == example.context.tolist()


def test_distractor_rounds_store_the_own_context_once_among_others():
    examples = [Example(np.array([row]), np.array([0]), 0) for row in range(5)]
    rounds = mf.storage_rounds(examples, 2, np.random.default_rng(4))
    assert len(rounds) == 3
    for row in range(5):
        stored = sorted(int(rounds[k][row][0]) for k in range(3))
        assert stored == sorted([row, (row + 1) % 5, (row + 2) % 5])


def test_retrieval_top1_on_known_answers(world):
    model = load_trained_model(world["base"]).model
    examples = [examples_of(world, model)[i] for i in (0, 1, 2, 3, 5)]  # distinct U2s (4 repeats 0's)
    batch = mf.dialogue_batch(model, examples)
    # contexts equal to each query's own Part A: the own entry scores exactly 1, so always found
    mirrored = [Example(batch.ids[row, :batch.prefix_len[row]], e.dialogue, e.m2_start)
                for row, e in enumerate(examples)]
    assert mf.retrieval_top1(model, mirrored, 5) == 1.0
    # each query's Part A stored as its neighbour's context: the own entry never wins
    shifted = [Example(mirrored[(row + 1) % 5].context, e.dialogue, e.m2_start) for row, e in enumerate(mirrored)]
    assert mf.retrieval_top1(model, shifted, 5) == 0.0


# --- training -----------------------------------------------------------------------------------------------
def test_training_moves_only_memory_parameters_and_the_backbone_stays_bit_identical(world):
    model = load_trained_model(world["base"]).model
    backbone_before = [p.data.copy() for p in model.backbone_parameters()]
    memory_before = {name: p.data.copy() for name, p in model.named_parameters()
                     if id(p) in {id(q) for q in model.memory_parameters()}}
    train = TrainConfig(batch_size=4, max_steps=6, warmup_steps=0)
    stage = mf.MemoryStage(model, world["folder"] / "tokenized", world["dialogues"], train,
                           mf.MemoryStageConfig(alignment_steps=2, val_examples=4), {"base": "b", "base_fingerprint": "f"})
    trainer = Trainer(model, stage, train)
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.memory_parameters()}
    assert not any(p.requires_grad for p in model.backbone_parameters())
    terms = [trainer.train_step() for _ in range(6)]
    assert ["loss_alignment" in t for t in terms] == [True] * 2 + [False] * 4
    assert all("loss_memory" in t for t in terms[2:])
    for before, param in zip(backbone_before, model.backbone_parameters()):
        assert np.array_equal(before, param.data)
    after = dict(model.named_parameters())
    changed = {name for name, array in memory_before.items() if not np.array_equal(array, after[name].data)}
    assert "retriever.weight" in changed  # Stage 1
    assert any(name.startswith("injections.") and "gate" not in name for name in changed)
    assert any(name.endswith("gate") for name in changed)


def test_memory_weights_load_onto_their_base_only(world, tmp_path):
    trained = load_trained_model(world["base"]).model
    for param in trained.memory_parameters():
        param.data = param.data + np.float32(0.5)
    path = save_memory_weights(tmp_path / "memory_weights.pt", trained, str(world["base"]))
    loaded = load_trained_model(world["base"], memory_weights=path).model
    for mine, theirs in zip(loaded.parameters(), trained.parameters()):
        assert np.array_equal(mine.data, theirs.data)
    other = MLoTSpark(trained.config, seed=99)  # same shapes, another backbone
    before = [p.data.copy() for p in other.parameters()]
    with pytest.raises(CheckpointError, match="not its base"):
        load_memory_weights(other, path)
    assert all(np.array_equal(b, p.data) for b, p in zip(before, other.parameters()))
    with pytest.raises(CheckpointError, match="not a memory weights file"):
        load_memory_weights(other, world["base"].parent / "ckpt_00000001.pt")


# --- the command ----------------------------------------------------------------------------------------------
@pytest.fixture
def run_train(capsys):
    """train.py's main in this process: (exit code, stderr)."""
    def run(*args):
        capsys.readouterr()
        code = train_main(["--no_progress", *map(str, args)])
        return code, capsys.readouterr().err
    return run


def step_losses(folder: Path) -> dict:
    records = map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def stage_config(path: Path, training: dict, stage: str, section: dict) -> Path:
    path.write_text(json.dumps({"training": {"warmup_steps": 1, "log_interval": 1, "eval_interval": 100, **training},
                                stage: section}))
    return path


def test_command_runs_resumes_exactly_and_writes_memory_weights(world, tmp_path, run_train):
    config = stage_config(tmp_path / "stage.json", {"batch_size": 4, "max_steps": 6, "save_interval": 2}, "memory",
                          {"alignment_steps": 2, "val_examples": 4})
    common = ["--stage", "memory", "--base", world["base"], "--dataset", world["dialogues"], "--model_config", config]
    code, stderr = run_train(*common, "--checkpoint_dir", tmp_path / "straight")
    assert code == 0, stderr
    assert "memory_weights.pt:" in stderr and "base checkpoint" in stderr and "m2_exact_match_memory_on" in stderr
    loaded = load_trained_model(world["base"], memory_weights=tmp_path / "straight" / "memory_weights.pt")
    base_config = load_trained_model(world["base"]).model.config
    assert not base_config.copy_head  # the stage gave the base a copy head; its weights bring it back
    assert loaded.model.config == dataclasses.replace(base_config, copy_head=True)
    weights = load_checkpoint(tmp_path / "straight" / "memory_weights.pt").arrays
    np.testing.assert_array_equal(loaded.model.copy_head.q_proj.weight.data, weights["copy_head.q_proj.weight"])

    reference = step_losses(tmp_path / "straight")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]
    code, stderr = run_train("--resume", tmp_path / "straight" / "ckpt_00000004.pt")  # redo steps 5 and 6
    assert code == 0 and "resumed from ckpt_00000004.pt at step 4 (memory)" in stderr, stderr
    assert step_losses(tmp_path / "straight") == reference  # bit for bit


def test_dialogue_stage_trains_the_backbone_only_and_makes_a_base_for_the_memory_stage(world, tmp_path, run_train):
    config = stage_config(tmp_path / "dialogue.json", {"batch_size": 4, "max_steps": 8, "lr": 0.01, "save_interval": 4},
                          "dialogue", {"val_examples": 4})
    code, stderr = run_train("--stage", "dialogue", "--base", world["base"], "--dataset", world["dialogues"],
                             "--model_config", config, "--checkpoint_dir", tmp_path / "dialogue")
    assert code == 0, stderr
    assert "m2_token_accuracy_memory_off" in stderr and "retrieval_top1" not in stderr
    before, after = load_trained_model(world["base"]).model, load_trained_model(tmp_path / "dialogue" / LATEST_NAME)
    memory = {id(p) for p in before.memory_parameters()}
    for (name, old), new in zip(before.named_parameters(), after.model.parameters()):
        if id(old) in memory:
            assert np.array_equal(old.data, new.data), name  # the memory modules do not train
        elif name.startswith(("wte.", "blocks.")):
            assert not np.array_equal(old.data, new.data), name  # the backbone's token path does
    val = examples_of(world, before)[-4:]  # the held-out dialogues: their M2 loss with memory off fell
    assert (mf.evaluate(after.model, val, 4, "off")["m2_loss"] < mf.evaluate(before, val, 4, "off")["m2_loss"])
    memory_config = stage_config(tmp_path / "memory.json", {"batch_size": 4, "max_steps": 2}, "memory",
                                 {"alignment_steps": 1, "val_examples": 4})
    code, stderr = run_train("--stage", "memory", "--base", tmp_path / "dialogue" / LATEST_NAME, "--dataset",
                             world["dialogues"], "--model_config", memory_config, "--checkpoint_dir", tmp_path / "memory")
    assert code == 0 and (tmp_path / "memory" / "memory_weights.pt").is_file(), stderr


def test_command_errors_are_one_line(world, tmp_path, capfd):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(DIALOGUES[0]) + "\n" + '{"U1": "x"}\n')
    for args, message in [
        (["--base", world["base"], "--dataset", bad], "line 2: missing U2, M2"),
        (["--base", world["base"], "--dataset", tmp_path / "none.jsonl"], "does not exist"),
        (["--base", world["base"]], "needs --dataset FILE.jsonl"),
        ([], "--stage memory needs --base CHECKPOINT"),
    ]:
        code = run_command(train_main, ["--no_progress", "--stage", "memory", *map(str, args),
                                        "--checkpoint_dir", str(tmp_path / "run")])
        lines = capfd.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
