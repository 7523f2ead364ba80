"""Train MLoT-Spark: one command for every stage, all through the one loop (training_loop.py).

    python 05-training/train.py                       # the default plan: pretraining, then recall practice
    python 05-training/train.py --max_steps 20        # a short first try (the schedule shrinks with it)
    python 05-training/train.py --dataset 03-tokenization/tokenized_data --model_config 05-training/config.json
    python 05-training/train.py --resume checkpoints/latest_checkpoint.pt
    python 05-training/train.py --stage recall --base checkpoints/latest_checkpoint.pt --checkpoint_dir recall/
    python 05-training/train.py --stage dialogue --base checkpoints/latest_checkpoint.pt \\
        --dataset 03-tokenization/corpus/epoch0_curriculum.jsonl --checkpoint_dir dialogue/
    python 05-training/train.py --stage memory --base dialogue/latest_checkpoint.pt \\
        --dataset 03-tokenization/corpus/epoch0_curriculum.jsonl --checkpoint_dir memory/
    mpirun -n 2 python 05-training/train.py ...       # data-parallel pretraining over MPI (pip install .[mpi])

Stages: pretrain (pretrain_stage.py: documents, curriculum, memory, consolidation), recall
(recall_stage.py: memory tasks, loss on the answers), dialogue (dialogue_stage.py: the answer form,
memory off), memory (memory_stage.py: the memory modules of a frozen base). A config file is JSON
with sections: "model" (pretraining only; a later stage's model is its --base's), "training" (the
loop: steps, batch, rate, intervals), one section named after the stage, and optionally "then": a
list of later stages, each {"stage": NAME, "training": {...}, NAME: {...}}, run one after the other,
each from the one before (a plan; --max_steps scales them all). In a plan each stage writes into a
folder named after it inside --checkpoint_dir, but the last, which writes into --checkpoint_dir
itself: its latest_checkpoint.pt is the plan's model. Defaults: 05-training/config.json for
pretraining (pretraining, then recall practice), 05-training/configs/<stage>.json for the others.

Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits; `--resume` then
continues exactly where the run stood (model, optimizer, memory, curriculum, data, every RNG).
"""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path

from mlot.architecture.cli import OneLineParser, UserError, non_negative_int, positive_int, run_command
from mlot.architecture.config import ConfigError, ModelConfig, read_json_object
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.training.checkpointing import LATEST_NAME, CheckpointManager
from mlot.training.dialogue_stage import DialogueStage
from mlot.training.distributed import init_world
from mlot.training.memory_stage import MemoryStage, base_identity
from mlot.training.pretrain_stage import PretrainStage
from mlot.training.recall_stage import RecallStage
from mlot.training.trained_model import load_trained_model
from mlot.training.training_loop import Trainer, TrainConfig, format_figures, truncate_metrics

HERE = Path(__file__).resolve().parent
STAGES = {stage.name: stage for stage in (PretrainStage, RecallStage, DialogueStage, MemoryStage)}
DEFAULT_CONFIGS = {"pretrain": HERE / "config.json", **{name: HERE / "configs" / f"{name}.json"
                                                         for name in STAGES if name != "pretrain"}}
INTERVALS = ("eval_interval", "log_interval", "save_interval")


def parse_args(argv):
    parser = OneLineParser(description=__doc__.splitlines()[0], epilog=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=tuple(STAGES), default="pretrain",
                        help="what to train (default: pretrain; see below)")
    parser.add_argument("--model_config", type=Path, help="the config file (JSON sections 'model', 'training' "
                                                          "and the stage's; default: see below)")
    parser.add_argument("--dataset", type=Path, help="pretrain: a tokenized_data folder (default: the embedded "
                                                     "corpus, built if missing); dialogue/memory: a JSONL file of "
                                                     "{U1, M1, U2, M2} dialogues")
    parser.add_argument("--base", type=Path, help="recall/dialogue/memory: the checkpoint to start from")
    parser.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoints"),
                        help="where checkpoints and metrics.jsonl go (default: %(default)s)")
    parser.add_argument("--resume", type=Path, help="a checkpoint to continue from (a damaged one falls back "
                                                   "to the newest valid checkpoint beside it)")
    parser.add_argument("--max_steps", type=positive_int, help="override training.max_steps; warm-up, curriculum "
                                                               "phases and the stage's step counts scale with it")
    parser.add_argument("--batch_size", type=positive_int, help="override training.batch_size")
    parser.add_argument("--seed", type=non_negative_int, help="override training.seed")
    for name in INTERVALS:
        parser.add_argument(f"--{name}", type=positive_int, help=f"override training.{name}")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def read_config(path: Path, stage: str) -> tuple[dict | None, dict, dict, list]:
    """(model section or None, training section, the stage's section, later stages) of a config file."""
    document = read_json_object(path)
    then = later_stages(document.pop("then", []), str(path))
    unknown = set(document) - {"model", "training", *STAGES}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected 'model', 'training' and a stage's "
                          f"({', '.join(STAGES)})", source=str(path))
    if stage != "pretrain" and "model" in document:
        raise ConfigError(f"a 'model' section is for pretraining; --stage {stage} takes the model of its --base",
                          source=str(path))
    for section in ("model", "training", stage):
        if not isinstance(document.get(section, {}), dict):
            raise ConfigError(f"section '{section}' must be a JSON object", source=str(path))
    return document.get("model"), dict(document.get("training", {})), dict(document.get(stage, {})), then


def later_stages(then, source: str) -> list:
    """A plan's "then" list, every entry's sections checked now (not after hours of the stages before)."""
    later = [name for name in STAGES if name != "pretrain"]
    if not isinstance(then, list):
        raise ConfigError("'then' must be a list of later stages", source=source)
    for entry in then:
        if not isinstance(entry, dict) or entry.get("stage") not in later:
            raise ConfigError(f"each entry of 'then' is {{\"stage\": NAME, ...}} with NAME one of "
                              f"{', '.join(later)}, got {entry!r}", source=source)
        name = entry["stage"]
        if set(entry) - {"stage", "training", name}:
            raise ConfigError(f"unknown key(s) {sorted(set(entry) - {'stage', 'training', name})} in the 'then' "
                              f"entry of {name}; expected 'training' and '{name}'", source=source)
        for section, config_class in (("training", TrainConfig), (name, STAGES[name].config_class)):
            if not isinstance(entry.get(section, {}), dict):
                raise ConfigError(f"section '{section}' of the 'then' entry of {name} must be a JSON object",
                                  source=source)
            _loaded(config_class, entry.get(section, {}), source, f"then.{name}.{section}")
    return then


def with_overrides(train: dict, section: dict, stage_class, args, source: str):
    """(TrainConfig, stage config) with the command line's overrides. A new --max_steps carries the
    schedule with it: warm-up and the stage's step counts scale, intervals are clamped to the run."""
    train_config = _loaded(TrainConfig, train, source, "training")
    stage_config = _loaded(stage_class.config_class, section, source, stage_class.name)
    values = train_config.to_dict()
    values.update({name: getattr(args, name) for name in ("batch_size", "seed", *INTERVALS)
                   if getattr(args, name) is not None})
    if args.max_steps is not None and args.max_steps != train_config.max_steps:
        factor = args.max_steps / train_config.max_steps
        values["max_steps"] = args.max_steps
        values["warmup_steps"] = min(round(train_config.warmup_steps * factor), args.max_steps - 1)
        for name in INTERVALS:
            values[name] = min(values[name], args.max_steps)
        if hasattr(stage_config, "scaled"):
            stage_config = stage_class.config_class.from_dict(stage_config.scaled(factor))
        print(f"--max_steps {args.max_steps} (config: {train_config.max_steps}): warm-up {train_config.warmup_steps} "
              f"-> {values['warmup_steps']} steps; {stage_class.name} step counts scaled by {factor:.3g}; "
              + ", ".join(f"{name} {values[name]}" for name in INTERVALS), file=sys.stderr)
    return _loaded(TrainConfig, values, source, "training"), stage_config


def _loaded(config_class, values: dict, source: str, section: str):
    try:
        return config_class.from_dict(values)
    except ConfigError as error:
        key = error.reason if error.key is None else f"config key '{section}.{error.key}': {error.reason}"
        raise ConfigError(key, source=source) from None


def fit_to_dataset(model_config: ModelConfig, meta: dict) -> ModelConfig:
    """The vocabulary and special ids come from the tokenizer the data was made with."""
    special = meta["special_tokens"]
    return ModelConfig.from_dict({**model_config.to_dict(), "vocab_size": meta["vocab_size"],
                                  "pad_id": special["<pad>"], "mask_id": special["[MASK]"],
                                  "sop_id": special["[SOP]"], "eop_id": special["[EOP]"]})


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


def make_stage(stage_class, model, train, stage_config, sources: dict, world):
    """The stage object over its data: `sources` names them (dataset, base, triplets)."""
    if stage_class is PretrainStage:
        return PretrainStage(model, load_dataset(sources["dataset"]), train, stage_config, world)
    if world.size > 1:
        raise UserError(f"--stage {stage_class.name} runs in one process (MPI is for pretraining)")
    # what the stage records of its base; "validation" (how pretraining validated) lets 06 evaluate a later stage
    base = {key: sources[key] for key in ("base", "base_fingerprint", "validation") if sources.get(key) is not None}
    if stage_class is RecallStage:
        return RecallStage(model, sources["dataset"], train, stage_config, base)
    if sources.get("triplets") is None:
        raise UserError(f"--stage {stage_class.name} needs --dataset FILE.jsonl of dialogues")
    return stage_class(model, sources["dataset"], sources["triplets"], train, stage_config, base)


def new_run(args, world):
    path = args.model_config or DEFAULT_CONFIGS[args.stage]
    model_section, train_section, stage_section, then = read_config(path, args.stage)
    directory = args.checkpoint_dir
    if directory.exists() and any(directory.rglob("*.pt")):
        raise UserError(f"{directory} already holds checkpoints; pass --resume {directory / LATEST_NAME} "
                        "or choose another --checkpoint_dir")
    trainer, manager = start_stage(STAGES[args.stage], model_section, train_section, stage_section, str(path), args,
                                   args.base, directory / args.stage if then else directory, world)
    configured = _loaded(TrainConfig, train_section, str(path), "training").max_steps
    factor = 1.0 if args.max_steps is None else args.max_steps / configured
    trainer.plan = {"then": then, "directory": str(directory), "step_factor": factor, "source": str(path)}
    return trainer, manager


def next_stage(plan: dict, base: Path, args, world):
    """The plan's next stage, from `base` (the stage before's last checkpoint)."""
    entry, rest = plan["then"][0], plan["then"][1:]
    stage_class, directory = STAGES[entry["stage"]], Path(plan["directory"])
    train_section = dict(entry.get("training", {}))
    steps = _loaded(TrainConfig, train_section, plan["source"], "training").max_steps
    overrides = argparse.Namespace(**{**vars(args), "max_steps": None if plan["step_factor"] == 1.0
                                      else max(1, round(steps * plan["step_factor"])), "dataset": None})
    trainer, manager = start_stage(stage_class, None, train_section, dict(entry.get(stage_class.name, {})),
                                   plan["source"], overrides, base, directory / entry["stage"] if rest else directory,
                                   world)
    trainer.plan = {**plan, "then": rest}
    return trainer, manager


def start_stage(stage_class, model_section, train_section: dict, stage_section: dict, source: str, args, base,
                checkpoint_dir: Path, world):
    """A new run of one stage: its config with the command line's overrides, its model (new for
    pretraining, else --base's), its data, its checkpoint folder."""
    train, stage_config = with_overrides(train_section, stage_section, stage_class, args, source)
    if stage_class is PretrainStage:
        if base is not None:
            raise UserError("--base is for the later stages; pretraining starts from random weights")
        data = load_dataset(args.dataset)
        model = MLoTSpark(fit_to_dataset(_loaded(ModelConfig, model_section or {}, source, "model"), data.meta),
                          seed=train.seed)
        stage = PretrainStage(model, data, train, stage_config, world)
        described = f"data: {data.meta['train']['tokens']:,} training tokens in {len(data.train)} documents"
    else:
        if base is None:
            raise UserError(f"--stage {stage_class.name} needs --base CHECKPOINT (a pretraining or earlier stage's)")
        loaded = load_trained_model(base, semantic_memory=stage_class.semantic_from_base)
        model = loaded.model
        sources = {**base_identity(base, model), "validation": loaded.meta.get("validation"),
                   "dataset": str(Path(loaded.meta["dataset"]).resolve()),
                   "triplets": None if args.dataset is None else str(args.dataset.resolve())}
        stage = make_stage(stage_class, model, train, stage_config, sources, world)
        described = f"base {base}; trains {stage_class.trains}"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if world.is_root:
        (checkpoint_dir / "metrics.jsonl").unlink(missing_ok=True)
        print(f"{stage_class.name}: {model.num_parameters():,} parameters; {described}"
              + (f"; {world.size} MPI ranks" if world.size > 1 else ""), file=sys.stderr)
    manager = CheckpointManager(checkpoint_dir, keep_last=train.keep_checkpoints, full_every=train.full_checkpoint_every)
    return Trainer(model, stage, train, world), manager


def resumed_run(args, world):
    if not args.resume.exists():
        raise UserError(f"checkpoint {args.resume} does not exist")
    manager = CheckpointManager(args.resume.resolve().parent)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint = manager.load_latest() if args.resume.name == LATEST_NAME else manager.load(args.resume)
    for warning in caught if world.is_root else []:
        print(f"warning: {warning.message}", file=sys.stderr)
    meta = checkpoint.meta
    if meta.get("stage") not in STAGES or "stage_state" not in meta:
        raise UserError(f"{checkpoint.path}: not a checkpoint this version of train.py can resume "
                        "(made by an older version, or not a training checkpoint)")
    stage_class = STAGES[meta["stage"]]
    source = str(checkpoint.path)
    train = _loaded(TrainConfig, {**meta["train_config"], **{name: getattr(args, name) for name in
                                  ("max_steps", "batch_size", "seed", *INTERVALS) if getattr(args, name) is not None}},
                    source, "training")
    stage_config = _loaded(stage_class.config_class, meta["stage_config"], source, stage_class.name)
    model = MLoTSpark(ModelConfig.from_dict(meta["model_config"]), seed=train.seed)
    sources = {**meta, "triplets": meta.get("triplets")}
    if args.dataset is not None:  # the data moved: a tokenized folder for pretraining, else the dialogue file
        sources["dataset" if stage_class is PretrainStage else "triplets"] = str(args.dataset)
    trainer = Trainer(model, make_stage(stage_class, model, train, stage_config, sources, world), train, world)
    trainer.plan = meta.get("plan")
    try:
        trainer.load_state(checkpoint.arrays, meta)
    except (KeyError, ValueError) as error:  # a state this code does not take
        raise UserError(f"{checkpoint.path}: cannot be resumed by this code: {error}") from None
    if world.is_root:
        truncate_metrics(manager.directory / "metrics.jsonl", trainer.step)
        print(f"resumed from {checkpoint.path.name} at step {trainer.step} ({stage_class.name})", file=sys.stderr)
    return trainer, manager


def main(argv=None) -> int:
    args = parse_args(argv)
    world = init_world()
    trainer, manager = resumed_run(args, world) if args.resume is not None else new_run(args, world)
    while run_stage(trainer, manager, args, world) and trainer.plan and trainer.plan["then"]:
        if world.size > 1:  # the later stages run in one process
            if world.is_root:
                print(f"the plan's next stages run in one process: python 05-training/train.py --resume "
                      f"{manager.latest_path}", file=sys.stderr)
            break
        trainer, manager = next_stage(trainer.plan, manager.latest_path, args, world)
    return 0


def run_stage(trainer, manager, args, world) -> bool:
    """Train one stage to its end (True) or until Ctrl-C / SIGTERM (False)."""
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True  # the step under way finishes, then a checkpoint is saved

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.run(manager, manager.directory / "metrics.jsonl", progress=not args.no_progress,
                    should_stop=lambda: stop["requested"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop["requested"]:
        if world.is_root:
            print(f"stopped at step {trainer.step}; resume with --resume {manager.latest_path}", file=sys.stderr)
        return False
    if world.is_root:
        trainer.stage.finish(manager.directory, trainer.first_validation, trainer.last_validation)
        print(f"finished {trainer.stage.name} at step {trainer.step}; checkpoint {manager.latest_path}; "
              f"last validation: {format_figures(trainer.last_validation)}", file=sys.stderr)
    return True


if __name__ == "__main__":
    sys.exit(run_command(main))
