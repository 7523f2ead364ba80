"""A training run's checkpoints: one directory of ``ckpt_<step>.pt`` files in the format of
01-architecture/checkpoint_file.py, ``latest_checkpoint.pt`` naming the newest, retention, and
fallback to the newest valid checkpoint.

``CheckpointManager`` writes ``ckpt_<step:08d>.pt`` — incremental against its previous save,
full every ``full_every`` saves — then rewrites ``latest_checkpoint.pt`` as a tiny checkpoint that
stores no arrays and names the new file as its parent (so ``--resume .../latest_checkpoint.pt``
is a plain path), then deletes checkpoints beyond the newest ``keep_last`` that no kept
checkpoint needs. Every file is written under a temporary name in the same directory, flushed,
fsynced, renamed over the target and the directory fsynced: a crash at any instant leaves
``latest_checkpoint.pt`` naming a complete checkpoint (the old one or the new one).
``load_latest`` tries ``latest_checkpoint.pt``, then every ``ckpt_*.pt`` from the highest step
down, and reports what it skipped with ``warnings.warn(..., CheckpointRecoveryWarning)`` — one
line naming each damaged file and the checkpoint used. One manager per directory at a time.

Command line: ``python 05-training/checkpointing.py inspect PATH... [--verify]`` prints sizes and
the parent chain; ``python 05-training/checkpointing.py bench [--megabytes 20]`` times saving
and loading a synthetic state against ``np.savez``/``np.load``.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mlot.architecture.checkpoint_file import (ArchiveReader, Checkpoint, CheckpointError, CheckpointRecoveryWarning,
                                               IncrementalBase, checked_meta, checked_step, checkpoint_info,
                                               describe_arrays, load_chain, load_checkpoint, manifest_of,
                                               write_archive, write_checkpoint)
from mlot.architecture.cli import OneLineParser, positive_float, run_command

LATEST_NAME = "latest_checkpoint.pt"
_CHECKPOINT_NAME = re.compile(r"ckpt_(\d{8,})\.pt")
_TEMPORARY_NAME = re.compile(r"\.(ckpt_\d{8,}\.pt|latest_checkpoint\.pt)\.[0-9a-f]{8}\.tmp")


# ---------------------------------------------------------------------------------- manager
class CheckpointManager:
    """Saves and restores the training state in one directory (see the module docstring).

    keep_last: how many of the newest ``ckpt_*.pt`` to keep (plus the parents they need).
    full_every: every this-many saves in a chain is a full checkpoint (1: all full).
    compress: deflate the members that shrink (see ``_worth_deflating``).
    verify: read back the arrays a save stored before ``latest_checkpoint.pt`` names it."""

    def __init__(self, directory, keep_last: int = 3, full_every: int = 5, compress: bool = True, verify: bool = True):
        for label, value in (("keep_last", keep_last), ("full_every", full_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CheckpointManager: {label} must be an integer >= 1, got {value!r}")
        self.directory = Path(directory)
        self.latest_path = self.directory / LATEST_NAME
        self.keep_last, self.full_every, self.compress, self.verify = keep_last, full_every, compress, verify
        self.directory.mkdir(parents=True, exist_ok=True)
        self._base = None
        for entry in os.scandir(self.directory):  # left by a save that was killed
            if _TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def checkpoint_paths(self) -> list:
        """The ``ckpt_<step>.pt`` files of the directory, lowest step first."""
        found = [(int(match.group(1)), self.directory / entry.name) for entry in os.scandir(self.directory)
                 if (match := _CHECKPOINT_NAME.fullmatch(entry.name)) and entry.is_file()]
        return [path for _, path in sorted(found)]

    def save(self, step: int, arrays: dict, meta: dict) -> Path:
        """Save, point ``latest_checkpoint.pt`` at it, apply retention; returns the new file's path.
        Nothing is written if the input is refused (``CheckpointError`` naming the array or meta key)."""
        step = checked_step(step)
        if step is None:
            raise CheckpointError("step must be a non-negative integer, got None")
        checked_meta(meta)
        descriptions = describe_arrays(arrays)
        path, base = self.directory / f"ckpt_{step:08d}.pt", self._base
        if (base is None or base.depth + 1 >= self.full_every or base.name == path.name
                or not (self.directory / base.name).is_file()):
            base = None  # save in full: a chain full_every long, the same step again, or the base file gone
        parent = write_checkpoint(path, step, arrays, meta, descriptions, base, self.compress)
        if self.verify:
            with ArchiveReader(path) as reader:
                for name, member in reader.members.items():
                    if member is not None:
                        reader.read_array(name)
        write_archive(self.latest_path, manifest_of(step, path.name, meta, descriptions, {}), {}, self.compress)
        self._base = IncrementalBase(path.name, descriptions, 0 if parent is None else base.depth + 1)
        self._apply_retention()
        return path

    def load(self, path) -> Checkpoint:
        """``load_checkpoint(path)``; when the file lives in this directory, later saves are
        incremental against it."""
        checkpoint, chain = load_chain(Path(path))
        self._adopt(chain)
        return checkpoint

    def load_latest(self) -> Checkpoint:
        """The newest valid state, falling back as the module docstring says; CheckpointError if none."""
        candidates, problems = self.checkpoint_paths()[::-1], []
        if self.latest_path.exists():
            candidates.insert(0, self.latest_path)
        elif candidates:
            problems.append(f"{LATEST_NAME} skipped (missing)")
        for candidate in candidates:
            try:
                checkpoint, chain = load_chain(candidate)
            except CheckpointError as error:
                problems.append(f"{candidate.name} skipped ({error})")
                continue
            if problems:
                warnings.warn(f"{'; '.join(problems)}; resumed from {candidate} (step {checkpoint.step})",
                              CheckpointRecoveryWarning, stacklevel=2)
            self._adopt(chain)
            return checkpoint
        detail = "; ".join(problems) if problems else "it holds no checkpoint"
        raise CheckpointError(f"{self.directory}: no valid checkpoint: {detail}")

    def _adopt(self, chain: list) -> None:
        """Take the first ``ckpt_*.pt`` of a loaded chain in this directory as the next base."""
        for depth_above, reader in enumerate(chain):
            if (_CHECKPOINT_NAME.fullmatch(reader.path.name)
                    and os.path.realpath(reader.path.parent) == os.path.realpath(self.directory)):
                self._base = IncrementalBase(reader.path.name, reader.descriptions, len(chain) - depth_above - 1)
                return

    def _apply_retention(self) -> None:
        paths = self.checkpoint_paths()
        needed = {name for root in paths[-self.keep_last:] + [self.latest_path] for name in _chain_names(root)}
        for path in paths:
            if path.name not in needed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _chain_names(path: Path) -> list:
    """File names of `path` and the parents its manifest chain names, as far as they can be read."""
    names = []
    while path is not None and path.name not in names:
        names.append(path.name)
        try:
            with ArchiveReader(path) as reader:
                path = None if reader.parent is None else path.with_name(reader.parent)
        except CheckpointError:
            break
    return names


# ---------------------------------------------------------------------------------- command line
def _megabytes(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def _inspect(args) -> int:
    for path in args.paths:
        info = checkpoint_info(path)
        print(f"{info['path']}: step {info['step']}, format {info['format_version']}, "
              f"{_megabytes(info['file_bytes'])} on disk")
        print(f"  own arrays:       {info['own_arrays']:6d}  ({_megabytes(info['own_array_bytes'])} uncompressed)")
        print(f"  inherited arrays: {info['inherited_arrays']:6d}  ({_megabytes(info['inherited_array_bytes'])} "
              "uncompressed)")
        chain = " <- ".join(f"{Path(link['path']).name} ({_megabytes(link['file_bytes'])}, "
                            f"{link['own_arrays']} arrays)" for link in info["chain"])
        print(f"  chain: {chain}; {_megabytes(info['chain_file_bytes'])} in all")
        if args.verify:
            load_checkpoint(path)
            print("  verified: every array read and its SHA-256 checked")
    return 0


def _bench(args) -> int:
    """Time full and incremental saves and a load of a synthetic state against np.savez/np.load."""
    rng = np.random.default_rng(0)
    count = max(1, int(args.megabytes * 1e6 / 4 / 3 / 16))
    arrays = {}
    for index in range(16):  # weights, first and second moments: dense float32
        arrays[f"model.w{index}"] = rng.standard_normal(count, dtype=np.float32)
        arrays[f"optim.w{index}.exp_avg"] = rng.standard_normal(count, dtype=np.float32) * 1e-3
        arrays[f"optim.w{index}.exp_avg_sq"] = np.abs(rng.standard_normal(count, dtype=np.float32)) * 1e-6

    def timed(action):
        start = time.perf_counter()
        result = action()
        return time.perf_counter() - start, result

    with tempfile.TemporaryDirectory() as folder:
        manager = CheckpointManager(folder, keep_last=3, full_every=5)
        full_time, full_path = timed(lambda: manager.save(1, arrays, {"step": 1}))
        changed = {name: (array if name.startswith("model.") else array * np.float32(0.9))  # frozen backbone
                   for name, array in arrays.items()}
        incremental_time, incremental_path = timed(lambda: manager.save(2, changed, {"step": 2}))
        load_time, _ = timed(lambda: CheckpointManager(folder).load_latest())
        reference = Path(folder) / "reference.npz"
        savez_time, _ = timed(lambda: np.savez(reference, **arrays))
        npload_time, _ = timed(lambda: {name: value for name, value in np.load(reference).items()})
        print(f"state: {len(arrays)} float32 arrays, {_megabytes(sum(a.nbytes for a in arrays.values()))}")
        print(f"full save        {full_time:6.3f} s  {_megabytes(full_path.stat().st_size)} on disk "
              f"(np.savez, no hashes or fsync: {savez_time:.3f} s, ratio {full_time / savez_time:.2f})")
        print(f"incremental save {incremental_time:6.3f} s  {_megabytes(incremental_path.stat().st_size)} on disk "
              "(model weights unchanged, optimizer moments changed)")
        print(f"load latest      {load_time:6.3f} s  (chain of 2, every array verified; "
              f"np.load {npload_time:.3f} s: ratio {load_time / npload_time:.2f})")
    return 0


def main(argv=None) -> int:
    parser = OneLineParser(description="Inspect MLoT checkpoints, or time checkpoint saving and loading.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="print a checkpoint's size, own vs inherited arrays, and its chain")
    inspect.add_argument("paths", nargs="+", help="checkpoint files (*.pt)")
    inspect.add_argument("--verify", action="store_true", help="also load every array and check its SHA-256")
    bench = commands.add_parser("bench", help="time saving and loading a synthetic state")
    bench.add_argument("--megabytes", type=positive_float, default=20.0,
                       help="size of the synthetic state (default %(default)s)")
    args = parser.parse_args(argv)
    return run_command(_inspect if args.command == "inspect" else _bench, args)


if __name__ == "__main__":
    sys.exit(main())
