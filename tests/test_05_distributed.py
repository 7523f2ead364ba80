"""Data-parallel training over MPI: `mpirun -n 2 train.py` on configs/tiny.json gives the weights of
the single-process run over the same global batches (to float32 round-off), both ranks hold the
same weights bit for bit, and a run resumes with another number of ranks (2 -> 1, 1 -> 2).
Without a launcher nothing of MPI is imported."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture.config import ModelConfig
from mlot.model.memory_state import ModelMemory
from mlot.training.checkpointing import CheckpointManager
from mlot.training.distributed import DistributedError, MpiWorld, row_block

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "05-training" / "train.py"
TINY = ROOT / "05-training" / "configs" / "tiny.json"
STEPS, SAVE = 8, 4  # a checkpoint at step 4 to resume from, a validation at steps 4 and 8
ROWS = 5  # split 3 + 2 over two ranks: the ranks' shares of the losses' normalisers differ

# one BLAS / Numba thread per rank; Open MPI refuses root (CI runs as root) without these two
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

DUMP_WEIGHTS = """
import sys
import numpy as np
from mlot.training.distributed import init_world
from mlot.training.train import new_run, parse_args
trainer, manager = new_run(parse_args(sys.argv[2:]), init_world())
trainer.run(manager, manager.directory / "metrics.jsonl", progress=False)
np.savez(f"{sys.argv[1]}/rank{trainer.world.rank}.npz", **trainer.model.state_dict())
"""


def _has_mpi() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpirun") is not None


needs_mpi = pytest.mark.skipif(not _has_mpi(), reason="needs Open MPI (mpirun) and mpi4py")


# --- without MPI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, ranks", [(4, 2), (5, 2), (7, 3), (3, 3), (8, 1)])
def test_row_blocks_cover_the_batch_once_in_order(batch_size, ranks):
    blocks = [row_block(batch_size, ranks, rank) for rank in range(ranks)]
    assert [row for block in blocks for row in range(block.start, block.stop)] == list(range(batch_size))
    sizes = [block.stop - block.start for block in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_fewer_rows_than_ranks_is_refused():
    with pytest.raises(DistributedError, match="batch_size 1 is smaller than the 2 MPI ranks"):
        row_block(1, 2, 0)


def test_without_a_launcher_training_is_single_process_and_mpi4py_is_not_imported():
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OMPI_", "PMI"))}
    code = ("import sys; from mlot.training.distributed import init_world; world = init_world(); "
            "print(type(world).__name__, world.size, 'mpi4py' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["World", "1", "False"]


class _FakeComm:
    """allgather answers with the states the other ranks would send."""

    def __init__(self, rank, size, gathered=None):
        self.rank, self.size, self.gathered = rank, size, gathered

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, value):
        return self.gathered


def test_memory_split_over_ranks_and_gathered_back_is_the_global_memory():
    config = ModelConfig.from_dict({**_tiny_model(), "vocab_size": 50})
    rng = np.random.default_rng(0)
    global_state = {name: (rng.standard_normal(array.shape).astype(array.dtype) if array.dtype.kind == "f"
                           else rng.integers(0, 5, array.shape).astype(array.dtype))
                    for name, array in ModelMemory(config, 3).state_dict().items()}
    locals_ = [MpiWorld(_FakeComm(rank, 2)).local_memory(global_state, config, 3) for rank in range(2)]
    assert [len(state["doc_ids"]) for state in locals_] == [2, 1]
    for state, batch in zip(locals_, (2, 1)):  # each part has the layout of a memory of its rows
        expected = ModelMemory(config, batch).state_dict()
        assert {name: array.shape for name, array in state.items()} == \
               {name: array.shape for name, array in expected.items()}
    gathered = MpiWorld(_FakeComm(0, 2, gathered=locals_)).gather_memory(ModelMemory(config, 2), config)
    assert sorted(gathered) == sorted(global_state)
    for name, array in global_state.items():
        np.testing.assert_array_equal(gathered[name], array, err_msg=name)


def _tiny_model() -> dict:
    import json
    return json.loads(TINY.read_text())["model"]


# --- under mpirun -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


def _common(dataset):
    return ["--no_progress", "--model_config", TINY, "--dataset", dataset, "--max_steps", STEPS,
            "--save_interval", SAVE, "--eval_interval", SAVE, "--batch_size", ROWS]


def _run(command, ranks=1):
    launcher = ["mpirun", "--oversubscribe", "-n", str(ranks)] if ranks > 1 else []
    result = subprocess.run(launcher + [sys.executable, *map(str, command)], capture_output=True, text=True,
                            cwd=ROOT, env=ENV, timeout=300)
    if result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    _run([TRAIN, *_common(dataset), "--checkpoint_dir", folder / "run"])
    return folder / "run"


@pytest.fixture(scope="module")
def two_ranks(dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    _run(["-c", DUMP_WEIGHTS, folder, *_common(dataset), "--checkpoint_dir", folder / "run"], ranks=2)
    return folder


def _latest(folder: Path):
    return CheckpointManager(folder).load_latest()


def _assert_same_run(found, expected):
    """Weights, optimizer and memory to float32 round-off; data position, step and counters exactly."""
    assert found.meta["step"] == expected.meta["step"] and found.meta["tokens"] == expected.meta["tokens"]
    assert found.meta["stage_state"]["rng"] == expected.meta["stage_state"]["rng"]
    assert found.meta["stage_state"]["consolidator"] == expected.meta["stage_state"]["consolidator"]
    assert sorted(found.arrays) == sorted(expected.arrays)
    for name, array in expected.arrays.items():
        if np.asarray(array).dtype.kind == "f":
            np.testing.assert_allclose(found.arrays[name], array, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(found.arrays[name], array, err_msg=name)


@needs_mpi
def test_two_ranks_train_the_single_process_weights_and_agree_bitwise(single, two_ranks):
    rank0, rank1 = np.load(two_ranks / "rank0.npz"), np.load(two_ranks / "rank1.npz")
    assert sorted(rank0.files) == sorted(rank1.files)
    for name in rank0.files:
        assert np.array_equal(rank0[name], rank1[name]), name  # bit for bit
    reference = _latest(single)
    for name in rank0.files:
        np.testing.assert_allclose(rank0[name], reference.arrays[f"model.{name}"], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    _assert_same_run(_latest(two_ranks / "run"), reference)  # the checkpoint rank 0 wrote: global layout
    metrics = (two_ranks / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # steps 2, 4, 6, 8 (tiny's log_interval 2), written by rank 0 alone


def _resume_from_step(source: Path, destination: Path, ranks: int):
    shutil.copytree(source, destination)
    for path in destination.glob("ckpt_*.pt"):
        if path.name > f"ckpt_{SAVE:08d}.pt":
            path.unlink()
    _run([TRAIN, "--no_progress", "--resume", destination / f"ckpt_{SAVE:08d}.pt"], ranks=ranks)
    return _latest(destination)


@needs_mpi
def test_a_two_rank_run_resumes_on_one_rank(single, two_ranks, tmp_path):
    _assert_same_run(_resume_from_step(two_ranks / "run", tmp_path / "resumed", ranks=1), _latest(single))


@needs_mpi
def test_a_one_rank_run_resumes_on_two_ranks(single, tmp_path):
    _assert_same_run(_resume_from_step(single, tmp_path / "resumed", ranks=2), _latest(single))
