"""The semantic memory a training run consolidated, restored from its checkpoint.

`load_trained_model` gives the model's parameters with an empty memory. Episodic memory is per
document and rightly starts empty, but the semantic slots are what training distilled from all
the documents it read (05-training/memory_transfer.py): without them the "full memory" setting
would read nothing more than "episodic only". The checkpoint keeps them under
`memory.cascade.semantic.*`.
"""
from __future__ import annotations

from mlot.architecture.checkpoint_file import load_checkpoint

SEMANTIC_PREFIX = "memory.cascade.semantic."


def restore_semantic_memory(model, checkpoint_path) -> int:
    """Load the checkpoint's semantic slots into model.memory; returns the live slots (0 when the
    checkpoint holds none)."""
    arrays = load_checkpoint(checkpoint_path).arrays
    state = {name[len(SEMANTIC_PREFIX):]: array for name, array in arrays.items() if name.startswith(SEMANTIC_PREFIX)}
    if not state:
        return 0
    model.memory.semantic.load_state_dict(state)
    return model.memory.semantic.size
