"""Memory consolidation: episodic -> semantic transfer, pruning and capacity management.

Episodic memory is per document (cleared when a row starts a new document); semantic memory is
shared and long-lived. A consolidation event moves what is worth keeping from the first into the
second and forgets the rest:

1. Semantic decay (triggered events only, so its rate is per training time, not per document):
   importances and graph edges scale by `semantic_decay`, so concepts that are not renewed lose
   their place to new ones (replacement and pruning rank by that score).
2. Promotion, per episodic store: a live entry is promoted when it was retrieved at least
   `min_access` times, or its importance (surprise) is among the top `importance_quantile`
   fraction of the store's live entries (ceil(q * live) entries, ranked by importance, ties to
   the newer write, then the lower slot; importance must be > 0). An entry is promoted once:
   it stays in episodic memory (its exact tokens still serve the current document) until
   pruned or evicted, and is not promoted again.
3. Transfer: the promoted entries of all rows, oldest write first (so the newest fact is placed
   last), go one by one into `SemanticMemory.consolidate` with key = the entry's key, value =
   the mean of its valid token states, importance = its importance. Concept formation is the
   merge into the nearest slot with cosine >= `merge_threshold`.
   Recency: a plain running mean would let an old fact outvote a newer value for the same
   concept (a key rewritten with a new value must read as the new value). So after a merge
   the slot value is set to old + w (new - old) with w = max(merge_value_rate, 1/(members+1)):
   with the default rate 0.75 the newest member weighs 3/4 and older ones fade geometrically,
   so the slot reads closer to the newest value than to any older one whenever the rate is
   above 1/2. The key keeps the running mean (the concept's identity).
   Entries of one document get co-occurrence edges between their slots, as SemanticMemory does.
4. Episodic pruning: live entries whose retention score (EpisodicMemory.retention) at the
   memory's write clock is below `episodic_prune_score` are removed, promoted or not.
5. Semantic pruning: slots scoring below `semantic_min_score` are removed, then the lowest
   until at most `semantic_capacity` remain.

Triggers (`MemoryConsolidator.step`): `interval` steps since the last event, a store at least
`full_fraction` full (once `min_gap` steps have passed since the last event, so a store that
stays full does not fire every step), or a validation plateau the caller reports. The training
loop (05) schedules it by training step, chat (07) by turn. The training loop also calls
`consolidate(memory, rows, "document_end")` for rows whose document ends, before resetting them;
those calls do not move the schedule.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from mlot.architecture.config import JsonConfig, check
from mlot.memory.chunking import pool_chunks

COUNT_NAMES = ("promoted", "merged", "allocated", "replaced", "episodic_pruned", "semantic_pruned")


@dataclasses.dataclass
class ConsolidationConfig(JsonConfig):
    """When to consolidate, what to promote, what to forget."""

    interval: int = 200                 # training steps between scheduled consolidations; 0: none
    full_fraction: float = 0.9          # a store (episodic row or semantic) this full triggers one
    min_gap: int = 10                   # steps since the last event before the full trigger may fire
    min_access: int = 2                 # entries retrieved at least this often are promoted
    importance_quantile: float = 0.1    # and so are the top fraction of a store by importance
    merge_threshold: float = 0.8        # cosine to the nearest slot at which an entry merges into it
    merge_value_rate: float = 0.75      # weight of the newest member in a merged slot's value
    episodic_prune_score: float = 0.05  # live episodic entries with retention below this are removed
    semantic_min_score: float = 0.01    # slots scoring below this are removed
    semantic_capacity: int | None = None  # at most this many live slots; None: all of them
    semantic_decay: float = 0.95        # importance and graph-edge factor at each triggered event

    def validate(self):
        check(self.interval >= 0, "interval", f"must be >= 0, got {self.interval}")
        check(0.0 < self.full_fraction <= 1.0, "full_fraction", f"must lie in (0, 1], got {self.full_fraction}")
        check(self.min_gap >= 0, "min_gap", f"must be >= 0, got {self.min_gap}")
        check(self.min_access >= 1, "min_access", f"must be >= 1, got {self.min_access}")
        check(0.0 <= self.importance_quantile <= 1.0, "importance_quantile",
              f"must lie in [0, 1], got {self.importance_quantile}")
        check(-1.0 <= self.merge_threshold <= 1.0, "merge_threshold",
              f"must lie in [-1, 1], got {self.merge_threshold}")
        check(0.0 < self.merge_value_rate <= 1.0, "merge_value_rate",
              f"must lie in (0, 1], got {self.merge_value_rate}")
        check(self.semantic_capacity is None or self.semantic_capacity >= 0, "semantic_capacity",
              f"must be >= 0 or null, got {self.semantic_capacity}")
        check(0.0 <= self.semantic_decay <= 1.0, "semantic_decay", f"must lie in [0, 1], got {self.semantic_decay}")
        for key in ("episodic_prune_score", "semantic_min_score"):
            check(math.isfinite(getattr(self, key)), key, f"must be finite, got {getattr(self, key)}")


def memory_clock(memory) -> int:
    """The step episodic retention is measured at: the model memory's write counter, or else
    (a bare MemoryCascade) the newest write step of any live entry."""
    if hasattr(memory, "write_step"):
        return int(np.asarray(memory.write_step).ravel()[0])
    steps = [int(store.write_step[store.live].max()) for store in memory.episodic if store.size]
    return max(steps, default=0)


def fullness(memory) -> float:
    """Fill fraction of the fullest store: any row's episodic store, or the semantic slots."""
    fractions = [store.size / store.capacity for store in memory.episodic if store.capacity]
    if memory.semantic.slots:
        fractions.append(memory.semantic.size / memory.semantic.slots)
    return max(fractions, default=0.0)


class MemoryConsolidator:
    """Runs consolidation events on a ModelMemory (or MemoryCascade) and counts them."""

    def __init__(self, config: ConsolidationConfig | None = None):
        self.config = config or ConsolidationConfig()
        self.last_step = 0
        self.totals = {"events": 0, **{name: 0 for name in COUNT_NAMES}}
        self._promoted = set()  # (row, slot, write_step) of entries already promoted

    # --- scheduling ------------------------------------------------------------------------------
    def triggers(self, memory, step: int, plateau: bool = False) -> list:
        """Names of the triggers that fire at `step`: "interval", "full", "plateau"."""
        since = step - self.last_step
        fired = []
        if self.config.interval and since >= self.config.interval:
            fired.append("interval")
        if since >= self.config.min_gap and fullness(memory) >= self.config.full_fraction:
            fired.append("full")
        if plateau:
            fired.append("plateau")
        return fired

    def step(self, memory, step: int, plateau: bool = False):
        """If a trigger fires at training `step`: decay semantic memory, consolidate all rows and
        return the event's counts (reason = the fired triggers joined by "+"); else None."""
        fired = self.triggers(memory, step, plateau)
        if not fired:
            return None
        self.last_step = int(step)
        memory.semantic.decay(self.config.semantic_decay)
        return self.consolidate(memory, reason="+".join(fired))

    # --- one event -------------------------------------------------------------------------------
    def consolidate(self, memory, rows=None, reason: str = "manual") -> dict:
        """Promote, transfer and prune for the given rows (all when None); returns the counts.

        counts: reason, promoted, merged, allocated, replaced, episodic_pruned, semantic_pruned
        (promoted = merged + allocated + replaced). `totals` adds them up, with "events" and one
        "events_<trigger>" per trigger named in `reason` (split on "+").
        """
        config, semantic = self.config, memory.semantic
        rows = range(len(memory.episodic)) if rows is None else [int(row) for row in np.atleast_1d(rows)]
        clock = memory_clock(memory)
        self._forget_stale_promotions(memory)
        counts = dict.fromkeys(COUNT_NAMES, 0)
        if semantic.slots:
            entries = sorted((int(memory.episodic[row].write_step[slot]), row, int(slot))
                             for row in rows for slot in self.promotion_candidates(memory.episodic[row], row))
            counts.update(self._transfer(memory, entries))
        for row in rows:
            store = memory.episodic[row]
            doomed = np.flatnonzero(store.live & (store.retention(clock) < config.episodic_prune_score))
            store.remove(doomed)
            counts["episodic_pruned"] += len(doomed)
        counts["semantic_pruned"] = semantic.prune(config.semantic_min_score)
        capacity = semantic.slots if config.semantic_capacity is None else config.semantic_capacity
        counts["semantic_pruned"] += semantic.keep_within(capacity)
        self._forget_stale_promotions(memory)
        self.totals["events"] += 1
        for trigger in reason.split("+"):  # each fired trigger counted on its own
            self.totals[f"events_{trigger}"] = self.totals.get(f"events_{trigger}", 0) + 1
        for name in COUNT_NAMES:
            self.totals[name] += counts[name]
        return {"reason": reason, **counts}

    def promotion_candidates(self, store, row: int) -> np.ndarray:
        """Slots of the store's live entries the promotion rule names, not promoted before (ascending)."""
        live = np.flatnonzero(store.live)
        frequent = store.access_count[live] >= self.config.min_access
        n_top = math.ceil(self.config.importance_quantile * len(live) - 1e-9)
        by_importance = np.lexsort((live, -store.write_step[live], -store.importance[live].astype(np.float64)))
        important = np.zeros(len(live), dtype=bool)
        important[by_importance[:n_top]] = True
        important &= store.importance[live] > 0
        fresh = np.array([(row, int(slot), int(store.write_step[slot])) not in self._promoted for slot in live],
                         dtype=bool)
        return live[(frequent | important) & fresh]

    def _transfer(self, memory, entries: list) -> dict:
        """Place each (write_step, row, slot) entry in semantic memory, in order; link same-document slots."""
        semantic, counts = memory.semantic, dict.fromkeys(("promoted", "merged", "allocated", "replaced"), 0)
        entry_slots, doc_ids = np.full(len(entries), -1, dtype=np.int64), np.zeros(len(entries), dtype=np.int64)
        for index, (write_step, row, slot) in enumerate(entries):
            store = memory.episodic[row]
            value = pool_chunks(store.values[slot:slot + 1], store.lengths[slot:slot + 1])  # (1, dim)
            target, action = self._place(semantic, store.keys[slot:slot + 1], value, store.importance[slot:slot + 1])
            if action == "replaced":
                entry_slots[entry_slots == target] = -1  # earlier entries left with the replaced concept
            entry_slots[index], doc_ids[index] = target, store.doc_id[slot]
            counts[action] += 1
            counts["promoted"] += 1
            self._promoted.add((row, slot, write_step))
        for doc in np.unique(doc_ids):
            semantic.graph.add_edges(entry_slots[doc_ids == doc], semantic.co_occurrence_weight)
        return counts

    def _place(self, semantic, key, value, importance):
        """One entry into semantic memory; returns (slot, "merged" | "allocated" | "replaced").

        The slot is read off the documented rules: a merge raises exactly one member count, an
        allocation takes the lowest free slot, a replacement the lowest-scored one. A merge then
        moves the slot value towards the new value by the recency weight (module docstring).
        """
        members_before, values_before = semantic.member_count.copy(), semantic.values.copy()
        free_before, victim = np.flatnonzero(~semantic.live), int(np.argmin(semantic.score()))
        merged, allocated, _ = semantic.consolidate(key, value, importance, self.config.merge_threshold)
        if allocated:
            return int(free_before[0]), "allocated"
        if not merged:
            return victim, "replaced"
        slot = int(np.flatnonzero(semantic.member_count != members_before)[0])
        weight = max(self.config.merge_value_rate, 1.0 / float(members_before[slot] + 1))
        old = values_before[slot]
        semantic.values[slot] = old + np.float32(weight) * (value[0] - old)
        return slot, "merged"

    def _forget_stale_promotions(self, memory) -> None:
        """Drop the marks of entries that were since removed, evicted or overwritten."""
        self._promoted = {(row, slot, step) for row, slot, step in self._promoted
                          if row < len(memory.episodic) and memory.episodic[row].live[slot]
                          and memory.episodic[row].write_step[slot] == step}

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-able: the last scheduled event's step, the totals and the promotion marks."""
        return {"last_step": self.last_step, "totals": dict(self.totals),
                "promoted": [list(mark) for mark in sorted(self._promoted)]}

    def load_state_dict(self, state: dict) -> None:
        missing = {"last_step", "totals", "promoted"} - set(state)
        if missing:
            raise KeyError(f"MemoryConsolidator.load_state_dict: missing {sorted(missing)}")
        totals = {str(name): int(count) for name, count in state["totals"].items()}
        promoted = {tuple(int(v) for v in mark) for mark in state["promoted"]}
        if any(len(mark) != 3 for mark in promoted):
            raise ValueError("MemoryConsolidator.load_state_dict: 'promoted' must hold [row, slot, write_step] triples")
        self.last_step, self.totals, self._promoted = int(state["last_step"]), totals, promoted
