"""A chat's memory on disk, so that a conversation can go on in a later session.

The file is a checkpoint of the project's safe format (`mlot.architecture.checkpoint_file`: a ZIP of
.npy arrays and a manifest with each array's SHA-256, written atomically, no pickle) holding the
model's whole memory state (`ModelMemory.state_dict()`: working cache, pending chunk, episodic
store, semantic slots and graph, entry texts), so a reloaded session continues exactly where the
last one stopped. The manifest's meta records what the file is, the model config it was written
with (memory arrays only fit a model of that shape), a fingerprint of the model's weights
(episodic values are that model's hidden states: another model reads them poorly, so a
mismatch warns), the number of turns and the consolidator's state.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from mlot.architecture.checkpoint_file import CheckpointError, array_sha256, load_checkpoint, save_arrays

MEMORY_FILE_KIND = "mlot-chat-memory"
MEMORY_FILE_VERSION = 3  # 2: entries keep the token before their text; 3: the copy_context tokens before it


class LoadedMemory(NamedTuple):
    turns: int                 # turns archived so far (over all sessions)
    consolidator: dict | None  # MemoryConsolidator.state_dict() when it was saved
    same_model: bool           # False: written by a model with other weights


def model_fingerprint(model) -> str:
    """SHA-256 over the model's parameter names and array digests."""
    digest = hashlib.sha256()
    for name, array in sorted(model.state_dict().items()):
        digest.update(f"{name}:{array_sha256(array)};".encode())
    return digest.hexdigest()


def save_memory_file(path, model, turns: int, consolidator: dict | None = None,
                     fingerprint: str | None = None) -> Path:
    """Write the model's memory state to `path` atomically."""
    meta = {"kind": MEMORY_FILE_KIND, "version": MEMORY_FILE_VERSION, "model_config": model.config.to_dict(),
            "model_fingerprint": fingerprint or model_fingerprint(model), "turns": int(turns),
            "consolidator": consolidator}
    return save_arrays(path, model.memory.state_dict(), meta)


def load_memory_file(path, model, fingerprint: str | None = None) -> LoadedMemory:
    """Verify `path` and load it into the model's (batch-1) memory; CheckpointError names the fault."""
    loaded = load_checkpoint(path)  # every array's SHA-256, dtype and shape checked; no pickle
    meta = loaded.meta
    if meta.get("kind") != MEMORY_FILE_KIND:
        raise CheckpointError(f"{path}: not a chat memory file (kind {meta.get('kind')!r})")
    if meta.get("version") != MEMORY_FILE_VERSION:
        raise CheckpointError(f"{path}: chat memory version {meta.get('version')!r}, this program reads "
                              f"{MEMORY_FILE_VERSION}")
    if meta.get("model_config") != model.config.to_dict():
        raise CheckpointError(f"{path}: written for a model of another shape; its memory cannot be read by this one")
    if model.memory is None or model.memory.batch != 1:
        model.reset_memory(batch_size=1)
    try:
        model.memory.load_state_dict(loaded.arrays)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: memory state does not fit the model: {error}") from None
    same_model = meta.get("model_fingerprint") == (fingerprint or model_fingerprint(model))
    return LoadedMemory(int(meta.get("turns", 0)), meta.get("consolidator"), same_model)
