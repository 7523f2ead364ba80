"""Data-parallel training over MPI (mpi4py on Open MPI): the communicator, row sharding, one
flat-buffer gradient Allreduce, and the merging of per-rank memory into the global state.

    mpirun -n 2 python 05-training/train.py --model_config 05-training/configs/tiny.json

The run's global batch (`batch_size` document rows) is split into contiguous blocks, one per
rank. Everything *global* is computed identically on every rank: the DocumentStream position
(cheap index bookkeeping), the Trainer's RNG draws (spans and swaps are drawn for every global
row, then each rank keeps its own; dropout masks likewise), the curriculum, schedules, optimizer
and weights. Everything *per row* lives on the rank that owns the row: working cache, episodic
store, previous segment vector. So a run resumed with another number of ranks continues the same
global data order, and a checkpoint always holds the global layout (rows gathered in order).

Exactness: the loss of a rank is its terms' means re-weighted by the rank's share of the global
normaliser (targets for reconstruction, ordered pairs for coherence), so that the sum of the
ranks' gradients is the gradient of the single-process loss of the global batch, up to float32
round-off, and each rank applies the same update. Semantic memory is shared: the counters a read
records (slot usage, co-retrieval edges) are summed over ranks after every step, and a
consolidation event runs on the global set of rows (all ranks' episodic entries, gathered) on
every rank, then rank 0's semantic state is broadcast so every rank reads the same slots bit for
bit. One thing stays per rank: the in-batch negatives of the retrieval-alignment (InfoNCE) term
are the rank's own rows.

Without a launcher (no MPI environment variables), or with one rank, `init_world()` returns the
single-process `World` and mpi4py is never imported: training is exactly the program without MPI.
"""
from __future__ import annotations

import copy
import os
import re
import sys
import types

import numpy as np

from mlot.architecture.cli import UserError
from mlot.memory.consolidation import MemoryConsolidator
from mlot.model.infilling import IGNORE_INDEX
from mlot.model.memory_state import ModelMemory

# environment variables an MPI launcher sets in every rank: Open MPI, then MPICH / Intel MPI (Hydra)
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_EPISODIC_KEY = re.compile(r"^cascade\.episodic\.(\d+)\.(.+)$")
_TRIGGER_ORDER = ("interval", "full", "plateau")  # MemoryConsolidator.triggers' order


class DistributedError(UserError, RuntimeError):
    """A data-parallel run that cannot start: mpi4py missing, or fewer rows than ranks."""


def init_world() -> "World":
    """The communicator of this process: MpiWorld under `mpirun -n N` (N > 1), else World()."""
    sizes = [int(os.environ[name]) for name in _LAUNCHER_SIZE_VARIABLES if os.environ.get(name, "").isdigit()]
    if not sizes or sizes[0] <= 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise DistributedError(f"launched by mpirun with {sizes[0]} ranks, but mpi4py is not installed "
                               "(pip install '.[mpi]')") from error
    return MpiWorld(MPI.COMM_WORLD)


def row_block(batch_size: int, size: int, rank: int) -> slice:
    """The contiguous block of global rows rank `rank` of `size` owns (the first batch_size % size
    ranks take one row more)."""
    if batch_size < size:
        raise DistributedError(f"batch_size {batch_size} is smaller than the {size} MPI ranks: every rank needs a row")
    base, extra = divmod(batch_size, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class World:
    """One process: every collective is the identity, so the training loop runs unchanged."""

    rank, size, is_root = 0, 1, True

    def rows(self, batch_size: int) -> slice:
        return row_block(batch_size, self.size, self.rank)

    # --- what the Trainer calls ----------------------------------------------------------------------
    def any(self, flag: bool) -> bool:
        return bool(flag)

    def consolidator(self, config, batch_size: int) -> MemoryConsolidator:
        return MemoryConsolidator(config)

    def loss_weights(self, weights: dict, batch, has_previous: np.ndarray) -> dict:
        return weights

    def average_gradients(self, params, finite: bool, terms: dict) -> tuple[bool, dict]:
        return finite, terms

    def semantic_reads(self, memory):
        return None

    def merge_semantic_reads(self, memory, before) -> None:
        pass

    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        return array

    def local_rows(self, array: np.ndarray) -> np.ndarray:
        return array

    def gather_memory(self, memory: ModelMemory, model_config) -> dict:
        return memory.state_dict()

    def local_memory(self, state: dict, model_config, batch_size: int) -> dict:
        return state

    def memory_stats(self, memory: ModelMemory) -> dict:
        return memory.stats()

    def shard_dropout(self, model, batch_size: int) -> None:
        pass


class MpiWorld(World):
    """Ranks of an MPI communicator training one global batch together."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self._batch_axes = None
        self._shares = {}  # this step's local normalisers (loss_weights), to weight the logged terms
        report = sys.excepthook

        def abort_every_rank(kind, error, trace):  # the other ranks would wait in a collective forever
            report(kind, error, trace)
            comm.Abort(1)

        sys.excepthook = abort_every_rank

    # --- the step ----------------------------------------------------------------------------------
    def any(self, flag: bool) -> bool:
        return any(self.comm.allgather(bool(flag)))

    def consolidator(self, config, batch_size: int) -> MemoryConsolidator:
        return GlobalConsolidator(config, self, batch_size)

    def loss_weights(self, weights: dict, batch, has_previous: np.ndarray) -> dict:
        """Weights times ranks x this rank's share of each mean's normaliser (Exactness, above): reconstruction
        over Part B targets, coherence over rows with a previous segment; consistency stays per rank."""
        local = np.array([np.count_nonzero(batch.targets != IGNORE_INDEX), np.count_nonzero(has_previous)],
                         dtype=np.float64)
        total = np.sum(self.comm.allgather(local), axis=0)
        shares = np.divide(local * self.size, total, out=np.zeros(2), where=total > 0)
        self._shares = dict(zip(("reconstruction", "coherence"), local))
        return {**weights, "reconstruction": weights["reconstruction"] * shares[0],
                "coherence": weights["coherence"] * shares[1]}

    def average_gradients(self, params, finite: bool, terms: dict) -> tuple[bool, dict]:
        """One Allreduce over [every gradient | has-gradient flags | non-finite flag]; the mean
        gradient lands in each parameter's .grad (None where no rank had one). Returns (every
        rank finite, the loss terms of the global batch)."""
        ends = np.cumsum([param.data.size for param in params], dtype=np.int64)
        starts, n_values = ends - [param.data.size for param in params], int(ends[-1]) if len(ends) else 0
        buffer = np.zeros(n_values + len(params) + 1, dtype=np.float32)  # [gradients | flags | non-finite]
        for index, (param, start, end) in enumerate(zip(params, starts, ends)):
            if param.grad is not None:
                buffer[start:end] = param.grad.ravel()
                buffer[n_values + index] = 1.0
        buffer[-1] = 0.0 if finite else 1.0
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        gradients = buffer[:n_values] / np.float32(self.size)
        for index, (param, start, end) in enumerate(zip(params, starts, ends)):
            param.grad = gradients[start:end].reshape(param.data.shape) if buffer[n_values + index] > 0 else None
        finite = buffer[-1] == 0 and bool(np.isfinite(gradients).all())
        return finite, self._global_terms(terms)

    def _global_terms(self, terms: dict) -> dict:
        """The logged terms of the global batch: the total and the consistency term averaged over
        ranks (their weights already carry the shares), reconstruction and coherence weighted by
        their normalisers, anything else averaged over the ranks that report it."""
        gathered = self.comm.allgather((terms, self._shares))
        result = {"loss": sum(t["loss"] for t, _ in gathered) / self.size}
        for name in sorted({name for t, _ in gathered for name in t} - {"loss"}):
            normaliser = name.removeprefix("loss_")  # "reconstruction" and "coherence" have one
            pairs = [(t[name], shares.get(normaliser, 1.0)) for t, shares in gathered if name in t]
            total_weight = sum(w for _, w in pairs)
            result[name] = sum(v * w for v, w in pairs) / total_weight if total_weight else 0.0
        return result

    def semantic_reads(self, memory):
        """The semantic counters a read records (usage, co-retrieval edges, hits), before this step's reads."""
        semantic = memory.semantic
        return {"usage_count": semantic.usage_count.copy(), "graph": semantic.graph.weights.copy(),
                "hits": semantic.hits, "queries": semantic.queries}

    def merge_semantic_reads(self, memory, before) -> None:
        """Every rank adds the other ranks' recorded reads."""
        semantic, mine = memory.semantic, self.semantic_reads(memory)
        gathered = self.comm.allgather({name: mine[name] - before[name] for name in mine})
        for name in mine:
            value = before[name] + sum(delta[name] for delta in gathered)
            if name == "graph":
                semantic.graph.weights = value
            else:
                setattr(semantic, name, int(value) if name in ("hits", "queries") else value)

    # --- the global layout of per-row state -----------------------------------------------------------
    def gather_rows(self, array: np.ndarray) -> np.ndarray:
        return np.concatenate(self.comm.allgather(np.asarray(array)), axis=0)

    def local_rows(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)[self.rows(len(array))]

    def gather_memory(self, memory: ModelMemory, model_config) -> dict:
        """The memory state of the global batch: rows of every rank in order, shared parts once."""
        states = self.comm.allgather(memory.state_dict())
        merged, first_row = {}, 0
        for state in states:
            for name, array in state.items():
                match = _EPISODIC_KEY.match(name)
                if match:
                    merged[f"cascade.episodic.{first_row + int(match[1])}.{match[2]}"] = array
            first_row += len(state["doc_ids"])
        for name, axis in self._axes(model_config).items():
            merged[name] = states[0][name] if axis is None else np.concatenate([s[name] for s in states], axis=axis)
        return merged

    def local_memory(self, state: dict, model_config, batch_size: int) -> dict:
        """This rank's part of a global memory state (its rows, renumbered from 0)."""
        own, axes, local = self.rows(batch_size), self._axes(model_config), {}
        for name, array in state.items():
            match = _EPISODIC_KEY.match(name)
            if match:
                if own.start <= int(match[1]) < own.stop:
                    local[f"cascade.episodic.{int(match[1]) - own.start}.{match[2]}"] = array
            elif axes.get(name) is None:
                local[name] = array
            else:
                local[name] = np.take(array, np.arange(own.start, own.stop), axis=axes[name])
        return local

    def _axes(self, model_config) -> dict:
        """Per non-episodic memory array, its batch axis (None: shared by all rows), read off the
        shapes of a one-row and a two-row memory of the same configuration."""
        if self._batch_axes is None:
            one, two = ModelMemory(model_config, 1).state_dict(), ModelMemory(model_config, 2).state_dict()
            self._batch_axes = {}
            for name, array in one.items():
                if _EPISODIC_KEY.match(name):
                    continue
                differs = [axis for axis, (a, b) in enumerate(zip(array.shape, two[name].shape)) if a != b]
                self._batch_axes[name] = differs[0] if differs else None
        return self._batch_axes

    def shard_dropout(self, model, batch_size: int) -> None:
        """Each dropout generator (shared ones stay shared) draws for every global row and hands this
        rank its rows: every rank's generator state stays that of the single-process run."""
        sharded, rows = {}, self.rows(batch_size)
        for _, module in model.named_modules():
            if hasattr(module, "rng"):
                module.rng = sharded.setdefault(id(module.rng), RowShardedGenerator(module.rng, rows, batch_size))

    def memory_stats(self, memory: ModelMemory) -> dict:
        """Memory statistics of the global batch: semantic ones are shared, hit and query counts
        summed over ranks, the rest (working usage, episodic size, diversity) averaged over rows."""
        gathered = self.comm.allgather((memory.stats(), memory.batch))
        rows = sum(batch for _, batch in gathered)
        result = {}
        for name, value in gathered[0][0].items():
            if name.startswith("semantic_"):
                result[name] = value
            elif name.endswith(("_hits", "_queries")):
                result[name] = sum(stats[name] for stats, _ in gathered)
            else:
                result[name] = sum(stats[name] * batch for stats, batch in gathered) / rows
        return result


class GlobalConsolidator(MemoryConsolidator):
    """A MemoryConsolidator over the global batch: triggers fire on every rank when they fire on
    any; an event sees every rank's episodic stores (gathered) in global row order, so promotion
    order, semantic placement and the promotion marks (global rows) are those of one process."""

    def __init__(self, config, world: MpiWorld, batch_size: int):
        super().__init__(config)
        self.world, self.batch_size, self.own = world, batch_size, world.rows(batch_size)

    def triggers(self, memory, step: int, plateau: bool = False) -> list:
        fired = set().union(*self.world.comm.allgather(super().triggers(memory, step, plateau)))
        return [name for name in _TRIGGER_ORDER if name in fired]

    def consolidate(self, memory, rows=None, reason: str = "manual") -> dict:
        """`rows` are global rows (all when None)."""
        counts = super().consolidate(self._global_view(memory, rows), rows, reason)
        memory.semantic.load_state_dict(self.world.comm.bcast(memory.semantic.state_dict(), root=0))
        return counts

    def _global_view(self, memory, rows):
        """A memory whose episodic list holds every global row: this rank's own stores, full copies
        of other ranks' stores being consolidated, and (live, write_step) of the rest, which is all
        that forgetting stale promotion marks reads."""
        wanted = set(range(self.batch_size)) if rows is None else {int(row) for row in np.atleast_1d(rows)}
        mine = {row: store.state_dict() if row in wanted else {"live": store.live, "write_step": store.write_step}
                for row, store in zip(range(self.own.start, self.own.stop), memory.episodic)}
        episodic = []
        for rank, states in enumerate(self.world.comm.allgather(mine)):
            for row in sorted(states):
                if rank == self.world.rank:
                    episodic.append(memory.episodic[row - self.own.start])
                elif row in wanted:
                    store = copy.copy(memory.episodic[0])  # same shapes; loading rebinds every array
                    store.load_state_dict(states[row])
                    episodic.append(store)
                else:
                    episodic.append(types.SimpleNamespace(**states[row]))
        return types.SimpleNamespace(episodic=episodic, semantic=memory.semantic, write_step=memory.write_step)


class RowShardedGenerator:
    """A generator whose draws for an array of this rank's rows (leading axis) are those rows of
    the same draw for the global batch; other shapes (validation runs the global batch on every
    rank) draw as they are."""

    def __init__(self, generator: np.random.Generator, rows: slice, batch_size: int):
        self.generator, self.rows, self.batch_size = generator, rows, batch_size

    @property
    def bit_generator(self):  # the state checkpoints save and restore
        return self.generator.bit_generator

    def random(self, size, dtype=np.float64):
        if len(size) and size[0] == self.rows.stop - self.rows.start and size[0] != self.batch_size:
            return self.generator.random((self.batch_size, *size[1:]), dtype=dtype)[self.rows]
        return self.generator.random(size, dtype=dtype)


def take_rows(batch, rows: slice):
    """The rows of an InfillBatch (same width, so each row's layout is that of the global batch)."""
    return type(batch)(**{name: getattr(batch, name)[rows] for name in batch.__dataclass_fields__})
