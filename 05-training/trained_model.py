"""A trained model for use (evaluation, generation, chat): the parameters of a training checkpoint,
its config, and the tokenizer of the data it was trained on.

    trained = load_trained_model("checkpoints/latest_checkpoint.pt")
    trained.model, trained.tokenizer, trained.meta
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from mlot.architecture.checkpoint_file import CheckpointError, load_checkpoint
from mlot.architecture.config import ModelConfig
from mlot.model.memory_weights import load_memory_weights
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenizer import Tokenizer
from mlot.training.checkpointing import LATEST_NAME, CheckpointManager
from mlot.training.training_loop import arrays_under

SEMANTIC_PREFIX = "memory.cascade.semantic."  # where a checkpoint keeps the semantic slots a run consolidated


class TrainedModel(NamedTuple):
    model: MLoTSpark
    tokenizer: Tokenizer
    meta: dict            # the checkpoint's meta (model_config, train_config, dataset, step, ...)
    path: Path            # the checkpoint actually loaded (latest may have fallen back)


def load_trained_model(checkpoint, dataset=None, memory_weights=None, semantic_memory: bool = False) -> TrainedModel:
    """Load the model of a training checkpoint with its memory reset (batch 1), in eval mode.

    `memory_weights`: a memory_weights.pt of the memory fine-tuning stage, laid over the
    checkpoint's memory modules (refused with a CheckpointError unless made for this backbone).
    `semantic_memory`: restore the semantic slots the run consolidated (`memory.cascade.semantic.*`
    of the checkpoint). Episodic memory is per document and rightly starts empty, but the slots
    are what training distilled from every document it read: without them "full memory" would
    read nothing more than "episodic only".

    `latest_checkpoint.pt` falls back to the newest valid checkpoint beside it (with a warning);
    the tokenizer is `tokenizer.json` of `dataset` (default: the dataset the run recorded).
    Raises CheckpointError with one readable line for a missing or unusable file."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    loaded = CheckpointManager(path.parent).load_latest() if path.name == LATEST_NAME else load_checkpoint(path)
    meta = loaded.meta
    if "model_config" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint (its meta has no model_config)")
    model = MLoTSpark(ModelConfig.from_dict(meta["model_config"]))
    try:
        model.load_state_dict(arrays_under(loaded.arrays, "model."))
    except (KeyError, ValueError) as error:  # another version of the model: names or shapes differ
        raise CheckpointError(f"{path}: its parameters do not fit this version of the model ({error})") from None
    if memory_weights is not None:
        load_memory_weights(model, memory_weights)
    model.eval()
    model.reset_memory(batch_size=1)
    slots = arrays_under(loaded.arrays, SEMANTIC_PREFIX)
    if semantic_memory and slots:
        model.memory.semantic.load_state_dict(slots)
    tokenizer_path = Path(dataset if dataset is not None else meta.get("dataset") or ".") / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CheckpointError(f"no tokenizer at {tokenizer_path}: pass the dataset folder the model was trained on")
    tokenizer = Tokenizer.from_file(tokenizer_path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} tokens, the model "
                              f"{model.config.vocab_size}: not the dataset this model was trained on")
    return TrainedModel(model, tokenizer, meta, loaded.path)
