"""Train MLoT-Spark.

    python 05-training/train.py                       # the default config on the default data (built if missing)
    python 05-training/train.py --dataset ../03-tokenization/tokenized_data --model_config config.json
    python 05-training/train.py --resume checkpoints/latest_checkpoint.pt
    mpirun -n 2 python 05-training/train.py ...       # data-parallel over MPI (distributed.py; pip install .[mpi])

Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits; `--resume` then
continues exactly where the run stood (model, optimizer, memory, curriculum, data, RNG).
"""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path

from mlot.architecture.config import ConfigError, ModelConfig, read_json_object
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenized_data import TokenizedData, TokenizedDataError
from mlot.architecture.checkpoint_file import CheckpointError
from mlot.training.checkpointing import LATEST_NAME, CheckpointManager
from mlot.training.distributed import DistributedError, init_world
from mlot.training.dialogue_finetune import DialogueFinetuner
from mlot.training.memory_finetune import MemoryFinetuner, checkpoint_stage, run_stage
from mlot.training.training_loop import Trainer, TrainConfig, truncate_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.json"
OVERRIDES = ("max_steps", "seed", "eval_interval", "log_interval", "save_interval", "batch_size")


class UserError(Exception):
    """A mistake of the user's: reported as one line, exit code 2."""


FINETUNE_STAGES = {"memory": MemoryFinetuner, "dialogue": DialogueFinetuner}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dataset", type=Path, help="a tokenized_data folder (default: the embedded corpus)")
    parser.add_argument("--model_config", type=Path, help=f"JSON with 'model' and 'training' sections "
                                                          f"(default: {DEFAULT_CONFIG.name} beside this script)")
    parser.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoints"))
    parser.add_argument("--resume", type=Path, help="a checkpoint to continue from (a damaged one falls back "
                                                   "to the newest valid checkpoint beside it)")
    for name in OVERRIDES:
        parser.add_argument(f"--{name}", type=int, help=f"override the config's training.{name}")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--stage", choices=tuple(FINETUNE_STAGES) + ("pretrain",), default="pretrain",
                        help="memory: fine-tune the memory modules of a frozen --base on --dataset FILE.jsonl "
                             "dialogues (memory_finetune.py; --model_config then defaults to "
                             "configs/memory_finetune.json); dialogue: teach the backbone of --base the "
                             "answer form of those dialogues first, memory off (dialogue_finetune.py)")
    parser.add_argument("--base", type=Path, help="--stage memory/dialogue: the checkpoint to start from")
    return parser.parse_args(argv)


def load_config(path: Path) -> tuple[ModelConfig, TrainConfig]:
    document = read_json_object(path)
    unknown = set(document) - {"model", "training"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected 'model' and 'training'", source=str(path))
    return ModelConfig.from_dict(document.get("model", {})), TrainConfig.from_dict(document.get("training", {}))


def with_overrides(train_config: TrainConfig, args) -> TrainConfig:
    values = train_config.to_dict()
    values.update({name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None})
    return TrainConfig.from_dict(values)


def fit_to_dataset(model_config: ModelConfig, meta: dict) -> ModelConfig:
    """The vocabulary and special ids come from the tokenizer the data was made with."""
    special = meta["special_tokens"]
    values = model_config.to_dict()
    values.update(vocab_size=meta["vocab_size"], pad_id=special["<pad>"], mask_id=special["[MASK]"],
                  sop_id=special["[SOP]"], eop_id=special["[EOP]"])
    return ModelConfig.from_dict(values)


def load_dataset(folder: Path | None) -> TokenizedData:
    if folder is None:
        from mlot.tokenization.tokenize_data import ensure_default_dataset
        folder = ensure_default_dataset()
    if not Path(folder).is_dir():
        raise UserError(f"dataset folder {folder} does not exist")
    data = TokenizedData.load(folder)
    if len(data.train) == 0 or len(data.val) == 0:
        raise UserError(f"dataset {folder} needs documents in both train and val splits")
    return data


def build(args):
    """(trainer, checkpoint manager) for a new run or a resumed one; under `mpirun -n N` each of the
    N processes builds its own, and only the first one prints or touches files."""
    world = init_world()
    if args.resume is not None:
        if not args.resume.exists():
            raise UserError(f"checkpoint {args.resume} does not exist")
        checkpoint_dir = args.resume.resolve().parent
        manager = CheckpointManager(checkpoint_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checkpoint = manager.load_latest() if args.resume.name == LATEST_NAME else manager.load(args.resume)
        for warning in caught if world.is_root else []:
            print(f"warning: {warning.message}", file=sys.stderr)
        meta = checkpoint.meta
        model_config = ModelConfig.from_dict(meta["model_config"])
        train_config = with_overrides(TrainConfig.from_dict(meta["train_config"]), args)
        data = load_dataset(args.dataset or Path(meta["dataset"]))
        trainer = Trainer(MLoTSpark(model_config, seed=train_config.seed), data.train, data.val, train_config,
                          dataset=data.folder, world=world)
        trainer.load_state(checkpoint.arrays, meta)
        if world.is_root:
            truncate_metrics(checkpoint_dir / "metrics.jsonl", trainer.step)
            print(f"resumed from {checkpoint.path.name} at step {trainer.step}", file=sys.stderr)
        return trainer, manager
    model_config, train_config = load_config(args.model_config or DEFAULT_CONFIG)
    train_config = with_overrides(train_config, args)
    data = load_dataset(args.dataset)
    model_config = fit_to_dataset(model_config, data.meta)
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir.exists() and any(checkpoint_dir.glob("*.pt")):
        raise UserError(f"{checkpoint_dir} already holds checkpoints; pass --resume {checkpoint_dir / LATEST_NAME} "
                        "or choose another --checkpoint_dir")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model = MLoTSpark(model_config, seed=train_config.seed)
    if world.is_root:
        (checkpoint_dir / "metrics.jsonl").unlink(missing_ok=True)
        print(f"model: {model.num_parameters():,} parameters ({len(model.memory_parameters())} memory tensors); "
              f"data: {data.meta['train']['tokens']:,} training tokens in {len(data.train)} documents"
              + (f"; {world.size} MPI ranks" if world.size > 1 else ""), file=sys.stderr)
    manager = CheckpointManager(checkpoint_dir, keep_last=train_config.keep_checkpoints,
                                full_every=train_config.full_checkpoint_every)
    return Trainer(model, data.train, data.val, train_config, dataset=data.folder, world=world), manager


def main(argv=None) -> int:
    args = parse_args(argv)
    stage = checkpoint_stage(args.resume) if args.resume is not None else args.stage
    if stage in FINETUNE_STAGES:
        return run_stage(args, {name: getattr(args, name) for name in OVERRIDES}, FINETUNE_STAGES[stage])
    try:
        trainer, manager = build(args)
    except (UserError, ConfigError, CheckpointError, TokenizedDataError, OSError, DistributedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True  # the step under way finishes, then a checkpoint is saved

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.run(manager, manager.directory / "metrics.jsonl", trainer.config.max_steps,
                    progress=not args.no_progress, should_stop=lambda: stop["requested"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not trainer.world.is_root:
        return 0
    last = trainer.last_validation
    summary = ", ".join(f"{k} {v:.3f}" for k, v in last.items())
    print(f"{'stopped' if stop['requested'] else 'finished'} at step {trainer.step}; checkpoint "
          f"{manager.directory / LATEST_NAME}" + (f"; last validation: {summary}" if summary else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
