"""Memory-only weights: the trained memory modules of a frozen base, apart from the base.

`memory_weights.pt` is a checkpoint file (same safe ZIP-of-.npy format, read with
`load_checkpoint`) holding only `model.memory_parameters()` — retriever, injection blocks,
gates, GNN, copy head — under their parameter names (a copy head the stage added to a base
trained without one is added back on loading). Its meta names the base: the base's model_config and
a fingerprint, the SHA-256 over every backbone array (name, dtype, shape, bytes, in name order).
The memory modules learned to read what *that* backbone writes and to speak to *its* layers, so
loading them onto any other backbone is refused, with one line naming both fingerprints.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mlot.architecture.checkpoint_file import CheckpointError, load_checkpoint, save_arrays
from mlot.model.copy_head import MemoryCopyHead

FORMAT = "mlot-memory-weights"


def memory_parameter_names(model) -> list:
    """Names (as in model.state_dict()) of the memory parameters, in model order."""
    memory_ids = {id(p) for p in model.memory_parameters()}
    return [name for name, param in model.named_parameters() if id(param) in memory_ids]


def backbone_fingerprint(model) -> str:
    """SHA-256 over the backbone arrays: equal exactly when the backbones are bit-identical."""
    memory = set(memory_parameter_names(model))
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if name not in memory:
            array = np.ascontiguousarray(param.data)
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array)
    return digest.hexdigest()


def save_memory_weights(path, model, base: str, extra_meta: dict | None = None) -> Path:
    """Write the memory parameters of `model` (atomically), naming `base` and its fingerprint."""
    state = model.state_dict()
    arrays = {name: state[name] for name in memory_parameter_names(model)}
    meta = {"format": FORMAT, "base": str(base), "base_fingerprint": backbone_fingerprint(model),
            "model_config": model.config.to_dict(), **(extra_meta or {})}
    return save_arrays(path, arrays, meta)


def load_memory_weights(model, path) -> dict:
    """Load memory-only weights onto `model` (its base); returns their meta.

    Raises CheckpointError with one line when the file is missing, damaged, not memory weights,
    or made for another backbone; the model is unchanged then.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"memory weights {path} do not exist")
    loaded = load_checkpoint(path)
    meta = loaded.meta
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a memory weights file (its meta format is {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    fingerprint = backbone_fingerprint(model)
    if meta.get("base_fingerprint") != fingerprint:
        raise CheckpointError(f"{path}: trained on base {meta.get('base')} (backbone "
                              f"{str(meta.get('base_fingerprint'))[:12]}), this model's backbone is "
                              f"{fingerprint[:12]}: not its base")
    expected = set(memory_parameter_names(model))
    adds_copy_head = model.copy_head is None and bool(meta.get("model_config", {}).get("copy_head"))
    if adds_copy_head:  # the stage gave the base a copy head; these weights bring it back
        expected |= {f"copy_head.{name}" for name in MemoryCopyHead(model.config.d_model, np.random.default_rng(0))
                     .state_dict()}
    if set(loaded.arrays) != expected:
        raise CheckpointError(f"{path}: holds arrays {sorted(set(loaded.arrays) ^ expected)[:3]} the model's "
                              "memory modules do not match")
    if adds_copy_head:
        model.add_copy_head()
    try:
        model.load_state_dict(loaded.arrays, strict=False)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return meta
