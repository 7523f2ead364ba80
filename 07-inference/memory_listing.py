"""What a chat's memory holds, as a table a person can read (the chat's /memory command)."""
from __future__ import annotations

import numpy as np


def episodic_entries(memory, row: int = 0) -> list[dict]:
    """The live episodic entries of a row, oldest write first: slot, turn (doc id: the turn
    during which it was written), token ids,
    importance, access count, age (in memory writes) and retention score."""
    store = memory.episodic[row]
    clock = int(memory.write_step[0])
    retention = store.retention(clock)
    slots = np.flatnonzero(store.live)
    slots = slots[np.lexsort((slots, store.write_step[slots]))]
    return [{"slot": int(slot), "turn": int(store.doc_id[slot]),
             "tokens": [int(t) for t in memory.entry_tokens[row, slot] if t >= 0],
             "importance": float(store.importance[slot]), "accesses": int(store.access_count[slot]),
             "age": clock - int(store.write_step[slot]), "retention": float(retention[slot])}
            for slot in slots]


def describe_memory(model, tokenizer, row: int = 0) -> str:
    """A summary line per tier, then one line per episodic entry with its scores and text."""
    memory, config = model.memory, model.config
    working = int(memory.working.lengths[:, row].max()) if memory.working.capacity else 0
    store = memory.episodic[row]
    pending = int(memory.side_chunks.pending_lengths[row])
    lines = [f"working cache: {working}/{config.working_cache_len} tokens (the latest turns); "
             f"{pending} more waiting to fill an episodic chunk",
             f"episodic: {store.size}/{store.capacity} entries of up to {config.chunk_len} tokens, "
             f"{store.hits} retrievals so far",
             f"semantic: {memory.semantic.size}/{memory.semantic.slots} slots"]
    entries = episodic_entries(memory, row)
    if entries:
        lines.append(f"{'slot':>5} {'turn':>5} {'age':>5} {'reads':>5} {'importance':>10} {'retention':>9}  text"
                     "   (turn: when it left the working cache; age: in memory writes)")
    for entry in entries:
        text = tokenizer.decode(entry["tokens"]).replace("\n", "\\n")
        lines.append(f"{entry['slot']:>5} {entry['turn']:>5} {entry['age']:>5} {entry['accesses']:>5} "
                     f"{entry['importance']:>10.2f} {entry['retention']:>9.2f}  {text!r}")
    return "\n".join(lines)
