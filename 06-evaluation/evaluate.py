"""Evaluate a trained MLoT-Spark checkpoint: validation loss and span accuracy, bits per byte
beside a unigram and an xz baseline, coherence, memory statistics and long-range recall, the
memory figures beside their ablations from the same run.

    python 06-evaluation/evaluate.py --checkpoint checkpoints/latest_checkpoint.pt
    python 06-evaluation/evaluate.py --checkpoint CKPT --limit 50 --report report.json
    python 06-evaluation/evaluate.py --checkpoint CKPT --no_memory        # memory off only

The semantic slots the run consolidated are restored from the checkpoint (trained_memory.py);
episodic memory starts empty for every document and recall case.

Memory settings (model.set_memory; writing goes on in all of them):
  full           working cache, episodic and semantic memory read
  episodic_only  working cache and episodic memory (semantic off)
  memory_off     nothing read from memory: each segment alone
Bits per byte does not read memory (see bits_per_byte.py), so it has one figure.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from mlot.architecture.atomic import atomic_output
from mlot.evaluation.baselines import unigram_bits_per_byte, xz_bits_per_byte
from mlot.evaluation.bits_per_byte import held_out_text, model_bits_per_byte
from mlot.evaluation.recall import load_recall_cases, score_recall
from mlot.evaluation.trained_memory import restore_semantic_memory
from mlot.evaluation.validation import checkpoint_phase, validate
from mlot.tokenization.tokenized_data import TokenizedData, TokenizedDataError
from mlot.architecture.checkpoint_file import CheckpointError
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECALL = ROOT / "03-tokenization" / "corpus" / "recall.jsonl"
REPORT_VERSION = 1
SETTINGS = {
    "full": {"working": True, "episodic": True, "semantic": True},
    "episodic_only": {"working": True, "episodic": True, "semantic": False},
    "memory_off": {"working": False, "episodic": False, "semantic": False},
}


class UserError(Exception):
    """A mistake of the user's: one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one `error: ...` line and exit code 2, like every other user error."""

    def error(self, message):
        raise UserError(message)


def parse_args(argv):
    parser = OneLineParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (.pt)")
    parser.add_argument("--dataset", type=Path, help="tokenized_data folder (default: the one the run trained on)")
    parser.add_argument("--recall_file", type=Path, default=DEFAULT_RECALL,
                        help="JSONL of {context, query, answer} cases (default: the corpus generator's recall.jsonl)")
    parser.add_argument("--limit", type=_positive_int, help="score only the first N recall cases")
    parser.add_argument("--report", type=Path, help="write the JSON report here (atomically)")
    parser.add_argument("--no_memory", action="store_true", help="evaluate with memory off only (no ablations)")
    parser.add_argument("--memory_weights", type=Path, help="memory_weights.pt of the memory fine-tuning stage, "
                                                             "laid over the checkpoint's memory modules")
    parser.add_argument("--val_documents", type=_positive_int, help="validation documents (default: all)")
    parser.add_argument("--bpb_documents", type=_positive_int, help="held-out documents for bits per byte "
                                                                    "(default: all)")
    parser.add_argument("--max_span_tokens", type=_positive_int, default=16, help="longest recall answer generated")
    parser.add_argument("--batch_size", type=_positive_int, default=16, help="rows per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation spans and pair order")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def load(args):
    """(trained model, dataset, recall cases), or UserError naming what is wrong."""
    if args.memory_weights is not None and not args.memory_weights.is_file():
        raise UserError(f"memory weights {args.memory_weights} do not exist")
    if not args.recall_file.is_file():
        raise UserError(f"recall file {args.recall_file} does not exist")
    trained = load_trained_model(args.checkpoint, dataset=args.dataset, memory_weights=args.memory_weights)
    restore_semantic_memory(trained.model, trained.path)
    folder = args.dataset or Path(trained.meta.get("dataset") or ".")
    data = TokenizedData.load(folder)
    if len(data.val) == 0 or len(data.train) == 0:
        raise UserError(f"dataset {folder} needs documents in both its train and val splits")
    cases = load_recall_cases(args.recall_file, args.limit)
    if not cases:
        raise UserError(f"recall file {args.recall_file} holds no cases")
    return trained, data, cases


def evaluate(trained, data, cases, args) -> dict:
    """The whole report as a JSON-able dict."""
    model, tokenizer, progress = trained.model, trained.tokenizer, not args.no_progress
    started = time.perf_counter()
    phase = checkpoint_phase(trained.meta)
    text = held_out_text(data.val, tokenizer, args.bpb_documents)
    report = {
        "version": REPORT_VERSION,
        "checkpoint": str(trained.path), "step": trained.meta.get("step"), "dataset": str(data.folder),
        "recall_file": str(args.recall_file), "seed": args.seed, "curriculum_phase": phase.name,
        "parameters": model.num_parameters(), "semantic_slots_restored": model.memory.semantic.size,
        "bits_per_byte": {
            "model": model_bits_per_byte(model, text, args.batch_size, progress).to_dict(),
            "unigram": unigram_bits_per_byte(data.train.tokens, tokenizer.vocab_size, text.text_tokens(),
                                             text.n_bytes),
            "xz": xz_bits_per_byte(text.text),
            "documents": len(text.documents),
        },
        "settings": {},
    }
    for name in ["memory_off"] if args.no_memory else list(SETTINGS):
        model.set_memory(**SETTINGS[name])
        model.reset_memory(batch_size=1)
        validation = validate(model, data.val, phase, args.batch_size, args.val_documents, args.seed, progress)
        recall = score_recall(model, tokenizer, cases, args.max_span_tokens, progress, desc=f"recall {name}")
        report["settings"][name] = {"memory": SETTINGS[name], **validation,
                                    "recall": recall.to_dict(with_cases=True),
                                    "memory_stats": _plain(model.memory.stats())}
    model.set_memory(**SETTINGS["full"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _plain(stats: dict) -> dict:
    """numpy scalars to JSON numbers (non-finite ones to null)."""
    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return {key: plain(value) for key, value in stats.items()}


def format_table(report: dict) -> str:
    """The report as a terminal table: one column per memory setting."""
    settings = report["settings"]
    names = list(settings)
    width = max(14, *(len(n) + 2 for n in names))
    bpb = report["bits_per_byte"]
    lines = [f"checkpoint {report['checkpoint']} (step {report['step']}, {report['parameters']:,} parameters, "
             f"phase {report['curriculum_phase']})",
             f"bits per byte on {bpb['model']['bytes']:,} held-out bytes ({bpb['documents']} documents): "
             f"model {bpb['model']['bits_per_byte']:.3f}   unigram {bpb['unigram']['bits_per_byte']:.3f}   "
             f"xz {bpb['xz']['bits_per_byte']:.3f}", ""]
    lines.append(f"{'':28}" + "".join(f"{name:>{width}}" for name in names))
    rows = [("val loss (nats/target)", lambda s: f"{s['val_loss']:.4f}"),
            ("val span accuracy", lambda s: f"{s['val_span_accuracy']:.4f}"),
            ("coherence score", lambda s: f"{s['coherence_score']:.4f}"),
            ("recall exact match", lambda s: f"{s['recall']['exact_match']:.3f}"),
            ("recall correct / cases", lambda s: f"{s['recall']['correct']}/{s['recall']['total']}")]
    kinds = sorted({kind for s in settings.values() for kind in s["recall"]["by_kind"]})
    if len(kinds) > 1:
        rows += [(f"  recall {kind}", lambda s, kind=kind: _kind_cell(s, kind)) for kind in kinds]
    rows += [(f"memory: {key}", lambda s, key=key: _number(s["memory_stats"].get(key)))
             for key in settings[names[0]]["memory_stats"]]
    for label, cell in rows:
        lines.append(f"{label:28}" + "".join(f"{cell(settings[name]):>{width}}" for name in names))
    lines.append(f"({report['seconds']} s)")
    return "\n".join(lines)


def _kind_cell(setting: dict, kind: str) -> str:
    group = setting["recall"]["by_kind"].get(kind)
    return "-" if group is None else f"{group['exact_match']:.3f} ({group['total']})"


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(path: Path, report: dict) -> None:
    with atomic_output(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(report, indent=1) + "\n")


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        if args.report is not None and not args.report.resolve().parent.is_dir():
            raise UserError(f"report folder {args.report.parent} does not exist")
        trained, data, cases = load(args)
    except (UserError, CheckpointError, TokenizedDataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = evaluate(trained, data, cases, args)
    print(format_table(report))
    if args.report is not None:
        write_report(args.report, report)
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
