"""Evaluate a trained MLoT-Spark checkpoint: validation loss and span accuracy, bits per byte
beside a unigram and an xz baseline, coherence, memory statistics and long-range recall, the
memory figures beside their ablations from the same run.

    python 06-evaluation/evaluate.py --checkpoint checkpoints/latest_checkpoint.pt
    python 06-evaluation/evaluate.py --checkpoint CKPT --limit 50 --report report.json
    python 06-evaluation/evaluate.py --checkpoint CKPT --no_memory        # memory off only

The semantic slots the run consolidated are restored from the checkpoint (load_trained_model);
episodic memory starts empty for every document and recall case. Validation
(mlot.model.validation) reads each held-out document as the run validated (its checkpoint's
meta["validation"]: span scales, segment length, segments per document), segment by segment
with memory written in between, once per memory setting.

Memory settings (model.set_memory; writing goes on in all of them):
  full           working cache, episodic and semantic memory read
  episodic_only  working cache and episodic memory (semantic off)
  memory_off     nothing read from memory: each segment alone
Bits per byte does not read memory (see bits_per_byte.py), so it has one figure.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError, documented_parser, existing_file, positive_int
from mlot.evaluation.baselines import unigram_bits_per_byte, xz_bits_per_byte
from mlot.evaluation.bits_per_byte import held_out_text, model_bits_per_byte
from mlot.evaluation.recall import load_recall_cases, score_recall
from mlot.tokenization.cli import DEFAULT_CORPUS_DIR
from mlot.tokenization.generate_corpus import RECALL_FILE
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.architecture.checkpoint_file import CheckpointError
from mlot.model.masking import SpanScales
from mlot.model.validation import validate
from mlot.training.trained_model import load_trained_model

DEFAULT_RECALL = DEFAULT_CORPUS_DIR / RECALL_FILE
REPORT_VERSION = 1
SETTINGS = {
    "full": {"working": True, "episodic": True, "semantic": True},
    "episodic_only": {"working": True, "episodic": True, "semantic": False},
    "memory_off": {"working": False, "episodic": False, "semantic": False},
}


def parse_args(argv):
    parser = documented_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (.pt)")
    parser.add_argument("--dataset", type=Path, help="tokenized_data folder (default: the one the run trained on)")
    parser.add_argument("--recall_file", type=Path, default=DEFAULT_RECALL,
                        help="JSONL of {context, query, answer} cases (default: the corpus generator's recall.jsonl)")
    parser.add_argument("--limit", type=positive_int, help="score only the first N recall cases")
    parser.add_argument("--report", type=Path, help="write the JSON report here (atomically)")
    parser.add_argument("--no_memory", action="store_true", help="evaluate with memory off only (no ablations)")
    parser.add_argument("--memory_weights", type=existing_file, help="memory_weights.pt of the memory fine-tuning "
                                                                     "stage, laid over the checkpoint's memory modules")
    parser.add_argument("--val_documents", type=positive_int, help="validation documents (default: all)")
    parser.add_argument("--bpb_documents", type=positive_int,
                        help="held-out documents for bits per byte (default: all)")
    parser.add_argument("--max_span_tokens", type=positive_int, default=16,
                        help="longest recall answer generated (default: %(default)s)")
    parser.add_argument("--batch_size", type=positive_int, default=16,
                        help="rows per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the validation spans and pair order (default: %(default)s)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def load(args):
    """(trained model, dataset, recall cases, validation settings), or UserError naming what is wrong.
    The validation settings are how the run validated (meta["validation"]), as keywords of validate()."""
    if not args.recall_file.is_file():
        raise UserError(f"recall file {args.recall_file} does not exist")
    trained = load_trained_model(args.checkpoint, dataset=args.dataset, memory_weights=args.memory_weights,
                                 semantic_memory=True)
    saved = trained.meta.get("validation")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{trained.path}: the checkpoint predates meta['validation'] (how the run validates); "
                              "evaluate a checkpoint written by the current train.py")
    try:
        validation = {"scales": SpanScales(**saved["span_scales"]), "segment_tokens": int(saved["segment_tokens"]),
                      "segments_per_doc": int(saved["segments_per_doc"])}
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{trained.path}: meta['validation'] is malformed ({error!r})") from None
    folder = args.dataset or Path(trained.meta.get("dataset") or ".")
    data = TokenizedData.load(folder)
    if len(data.val) == 0 or len(data.train) == 0:
        raise UserError(f"dataset {folder} needs documents in both its train and val splits")
    cases = load_recall_cases(args.recall_file, args.limit)
    if not cases:
        raise UserError(f"recall file {args.recall_file} holds no cases")
    return trained, data, cases, validation


def evaluate(trained, data, cases, validation: dict, args) -> dict:
    """The whole report as a JSON-able dict."""
    model, tokenizer, progress = trained.model, trained.tokenizer, not args.no_progress
    started = time.perf_counter()
    text = held_out_text(data.val, tokenizer, args.bpb_documents)
    report = {"version": REPORT_VERSION, "checkpoint": str(trained.path), "step": trained.meta.get("step"),
              "dataset": str(data.folder), "recall_file": str(args.recall_file), "seed": args.seed,
              "curriculum_phase": trained.meta["validation"].get("phase"), "parameters": model.num_parameters(),
              "semantic_slots_restored": model.memory.semantic.size,
              "bits_per_byte": {"model": model_bits_per_byte(model, text, args.batch_size, progress).to_dict(),
                                "unigram": unigram_bits_per_byte(data.train.tokens, tokenizer.vocab_size,
                                                                 text.text_tokens(), len(text.text)),
                                "xz": xz_bits_per_byte(text.text), "documents": len(text.documents)},
              "settings": {}}
    for name in ["memory_off"] if args.no_memory else list(SETTINGS):
        figures = validate(model, data.val, **validation, batch_size=args.batch_size,
                           max_documents=args.val_documents, seed=args.seed, memory=SETTINGS[name], progress=progress)
        model.set_memory(**SETTINGS[name])
        model.reset_memory(batch_size=1)
        recall = score_recall(model, tokenizer, cases, args.max_span_tokens, progress, desc=f"recall {name}")
        report["settings"][name] = {"memory": SETTINGS[name], **figures, "recall": recall.to_dict(with_cases=True),
                                    "memory_stats": {k: _plain(v) for k, v in model.memory.stats().items()}}
    model.set_memory(**SETTINGS["full"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _plain(value):
    """A numpy scalar as a JSON number (a non-finite one as null)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_table(report: dict) -> str:
    """The report as a terminal table: one column per memory setting."""
    settings, bpb = report["settings"], report["bits_per_byte"]
    names = list(settings)
    width = max(14, *(len(n) + 2 for n in names))
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
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        if args.report is not None and not args.report.resolve().parent.is_dir():
            raise UserError(f"report folder {args.report.parent} does not exist")
        trained, data, cases, validation = load(args)
    except (UserError, ValueError, OSError) as error:  # CheckpointError, TokenizedDataError are UserErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = evaluate(trained, data, cases, validation, args)
    print(format_table(report))
    if args.report is not None:
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
