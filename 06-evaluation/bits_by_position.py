"""Bits per byte by position in the document: held-out long documents read the way the model reads
them, scored in segment 1, 2-4, 5-16 and 17+, with full memory, episodic only and memory off, beside xz.

    python 06-evaluation/bits_by_position.py --checkpoint CKPT                        # every held-out document
    python 06-evaluation/bits_by_position.py --checkpoint CKPT --max_docs 3 --max_segments 64 --report r.json --plot r.png

Memory-augmented models are judged by where they gain (Transformer-XL, Compressive Transformer and
Memorizing Transformers on PG-19): a token late in a long document has more behind it to remember.
Each document is cut into segments of the model's segment_len tokens, read in order from a fresh
memory (the checkpoint's semantic slots restored), each segment written to memory after it is
scored, as in training and validation. A segment's tokens are scored as bits_per_byte.py scores
text, by continuation: blocks of max_span_len tokens, each the span after [SOP] behind a Part A of
the segment's tokens before it and a [MASK]; what lies before the segment reaches the model only
through memory (the working cache, episodic entries, semantic slots). Settings as in evaluate.py:
  full           working cache, episodic and semantic memory read
  episodic_only  working cache and episodic memory (semantic off)
  memory_off     nothing read from memory: each segment alone
A bucket's bits per byte is the -log2 p of its text tokens (<bos>/<eos> are context, never scored)
over their UTF-8 bytes. xz on the same bytes, by position: per document, the size of its text
compressed through the bucket's last token minus through the end of the bucket before (the empty
text: 0). The compressor is xz's LZMA2 at preset 9 | PRESET_EXTREME (`xz -9e`) writing a raw stream,
without the .xz container, whose ~56 bytes per document would otherwise all fall on segment 1.
"""
from __future__ import annotations

import json
import lzma
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture import no_grad
from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError, documented_parser, positive_int, run_command
from mlot.evaluation.baselines import XZ_PRESET
from mlot.evaluation.bits_per_byte import LN2, held_out_text
from mlot.evaluation.evaluate import SETTINGS
from mlot.model.infilling import make_infill_batch
from mlot.model.scoring import score_targets
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.training.trained_model import load_trained_model

REPORT_VERSION = 1
RAW_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET}]  # xz -9e's compressor, no container
BUCKET_STARTS = np.array([1, 2, 5, 17])  # first segment (1-based) of each bucket; the last runs to the end


def bucket_labels() -> list[str]:
    """'1', '2-4', '5-16', '17+': each bucket runs to the segment before the next one starts."""
    starts = BUCKET_STARTS.tolist()
    return [f"{first}+" if following is None else str(first) if following == first + 1 else f"{first}-{following - 1}"
            for first, following in zip(starts, [*starts[1:], None])]


def bucket_of_segments(n_segments: int) -> np.ndarray:
    """(n_segments,) the bucket of each segment, segment 0 being the document's first."""
    return np.searchsorted(BUCKET_STARTS, np.arange(1, n_segments + 1), side="right") - 1


def model_bits_by_segment(model, documents: list, is_text: list, batch_size: int = 8, progress: bool = False,
                          desc: str = "bits by position") -> list:
    """Per document, (segments,) float64 bits of its text tokens in each segment, read in order with
    the model's current memory switches. Rows of a batch are documents, each with its own memory."""
    segment_len, span_len = model.config.segment_len, min(model.config.max_span_len, model.config.segment_len)
    semantic = model.memory.semantic.state_dict()
    bits = [np.zeros(-(-len(doc) // segment_len)) for doc in documents]
    total = sum(len(b) for b in bits)
    with no_grad(), tqdm(total=total, desc=desc, unit="segment", disable=not progress, leave=False) as bar:
        for first in range(0, len(documents), batch_size):
            rows = range(first, min(first + batch_size, len(documents)))
            model.reset_memory(batch_size=len(rows))
            model.memory.semantic.load_state_dict(semantic)  # each batch from the checkpoint's slots
            for segment in range(max(len(bits[row]) for row in rows)):
                where = slice(segment * segment_len, (segment + 1) * segment_len)
                segments = [documents[row][where] for row in rows]
                masks = [is_text[row][where] for row in rows]
                blocks = range(0, max(len(s) for s in segments), span_len)
                for start in blocks:
                    # accesses counted once per segment (by its last block), as training reads a segment once
                    scores = _score_block(model, segments, masks, start, span_len, record_access=start == blocks[-1])
                    bits_of = np.bincount(scores.rows, weights=scores.nll / LN2, minlength=len(rows))
                    for index, row in enumerate(rows):
                        if segment < len(bits[row]):
                            bits[row][segment] += bits_of[index]
                model.write_memory(segments)
                bar.update(sum(segment < len(bits[row]) for row in rows))
    return bits


def _score_block(model, segments, masks, start: int, span_len: int, record_access: bool):
    """Scores of the text tokens [start, start + span_len) of each segment (rows without them: none),
    each behind the segment's tokens before it (scoring.TargetScores, rows = the segments' order)."""
    layout, spans = [], []
    for segment in segments:
        end = min(start + span_len, len(segment))
        layout.append(segment[:end] if start < end else segment[:0])
        spans.append([(start, end)] if start < end else [])
    batch = make_infill_batch(layout, spans, model.special)
    scored = np.zeros_like(batch.targets, dtype=bool)  # (B, L): span tokens that are text
    for row, (row_spans, mask) in enumerate(zip(spans, masks)):
        for span_start, span_end in row_spans:
            sop = batch.prefix_len[row]  # targets: the span's tokens from the [SOP] on, then [EOP]
            scored[row, sop:sop + span_end - span_start] = mask[span_start:span_end]
    return score_targets(model, model(batch, record_access=record_access), batch, where=scored)


def text_bytes_by_segment(documents: list, is_text: list, token_bytes: np.ndarray, segment_len: int) -> list:
    """Per document, (segments,) UTF-8 bytes of its text tokens in each segment."""
    return [np.add.reduceat(np.where(mask, token_bytes[doc], 0), np.arange(0, len(doc), segment_len))
            for doc, mask in zip(documents, is_text)]


def xz_bits_by_bucket(texts: list, byte_counts: list) -> np.ndarray:
    """(buckets,) xz bits summed over documents: per document, the compressed size of its text
    through the bucket's last segment minus through the end of the bucket before (0 before the first)."""
    totals = np.zeros(len(BUCKET_STARTS))
    for text, counts in zip(texts, byte_counts):
        buckets, ends = bucket_of_segments(len(counts)), np.cumsum(counts)
        compressed_before = 0
        for bucket in np.unique(buckets):
            compressed = len(lzma.compress(text[:ends[buckets == bucket][-1]], format=lzma.FORMAT_RAW,
                                           filters=RAW_XZ_FILTERS))
            totals[bucket] += 8.0 * (compressed - compressed_before)
            compressed_before = compressed
    return totals


def by_bucket(per_document: list) -> np.ndarray:
    """(buckets,) sums over documents of per-segment values, bucket by bucket."""
    totals = np.zeros(len(BUCKET_STARTS))
    for values in per_document:
        np.add.at(totals, bucket_of_segments(len(values)), values)
    return totals


def bits_by_position(trained, data: TokenizedData, max_docs: int | None, max_segments: int | None,
                     batch_size: int, progress: bool) -> dict:
    """The report: bytes, tokens and segments per bucket; bits and bits per byte per setting and xz."""
    model, tokenizer = trained.model, trained.tokenizer
    segment_len = model.config.segment_len
    text = held_out_text(data.val, tokenizer, max_docs)
    keep = slice(None) if max_segments is None else slice(0, max_segments * segment_len)
    documents, is_text = [doc[keep] for doc in text.documents], [mask[keep] for mask in text.is_text]
    token_bytes = np.array([len(tokenizer.decode_bytes([i])) for i in range(tokenizer.vocab_size)], dtype=np.int64)
    byte_counts = text_bytes_by_segment(documents, is_text, token_bytes, segment_len)
    texts = [tokenizer.decode_bytes(doc[mask]) for doc, mask in zip(documents, is_text)]
    n_bytes = by_bucket(byte_counts)
    n_tokens = by_bucket([np.add.reduceat(mask.astype(np.int64), np.arange(0, len(mask), segment_len))
                          for mask in is_text])
    report = {"version": REPORT_VERSION, "checkpoint": str(trained.path), "step": trained.meta.get("step"),
              "dataset": str(data.folder), "documents": len(documents),
              "document_names": data.meta.get("val_documents", [])[:len(documents)],
              "segment_len": segment_len, "span_len": min(model.config.max_span_len, segment_len),
              "max_segments": max_segments, "buckets": bucket_labels(),
              "bytes": n_bytes.astype(int).tolist(), "tokens": n_tokens.astype(int).tolist(),
              "segments": by_bucket([np.ones(len(counts)) for counts in byte_counts]).astype(int).tolist(),
              "settings": {}}
    started = time.perf_counter()
    for name, switches in {**SETTINGS, "xz": None}.items():
        if switches is None:
            bits = xz_bits_by_bucket(texts, byte_counts)
        else:
            model.set_memory(**switches)
            bits = by_bucket(model_bits_by_segment(model, documents, is_text, batch_size, progress, desc=name))
        report["settings"][name] = {"bits": bits.tolist(), "bits_per_byte": bucket_ratios(bits, n_bytes),
                                    "all": float(bits.sum() / n_bytes.sum()) if n_bytes.sum() else None}
    model.set_memory(**SETTINGS["full"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def bucket_ratios(bits: np.ndarray, n_bytes: np.ndarray) -> list:
    """bits / bytes per bucket; None where a bucket has no bytes (documents too short to reach it)."""
    return [float(b / n) if n else None for b, n in zip(bits, n_bytes)]


def format_table(report: dict) -> str:
    buckets = report["buckets"]
    lines = [f"bits per byte by position: {report['documents']} held-out documents in segments of "
             f"{report['segment_len']} tokens (checkpoint step {report['step']})",
             f"{'segments':16}" + "".join(f"{label:>10}" for label in buckets) + f"{'all':>10}",
             f"{'bytes':16}" + "".join(f"{n:>10,}" for n in report["bytes"]) + f"{sum(report['bytes']):>10,}"]
    for name, setting in report["settings"].items():
        cells = ["-" if value is None else f"{value:.3f}" for value in setting["bits_per_byte"] + [setting["all"]]]
        lines.append(f"{name:16}" + "".join(f"{cell:>10}" for cell in cells))
    lines.append(f"({report['seconds']} s)")
    return "\n".join(lines)


def plot_report(report: dict, output) -> None:
    """Bits per byte against position bucket, one line per setting (xz dashed), saved as PNG."""
    from mlot.training.monitor import load_pyplot
    plt = load_pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    positions = np.arange(len(report["buckets"]))
    for name, setting in report["settings"].items():
        values = [np.nan if value is None else value for value in setting["bits_per_byte"]]
        axis.plot(positions, values, marker="o", linestyle="--" if name == "xz" else "-", label=name)
    axis.set_xticks(positions, report["buckets"])
    axis.set_xlabel(f"segment of the document ({report['segment_len']} tokens each)")
    axis.set_ylabel("bits per byte")
    axis.set_title(f"held-out bits per byte by position ({report['documents']} documents)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_output(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (.pt)")
    parser.add_argument("--dataset", type=Path, help="tokenized_data folder (default: the one the run trained on)")
    parser.add_argument("--max_docs", type=positive_int, help="the first N held-out documents (default: all)")
    parser.add_argument("--max_segments", type=positive_int,
                        help="read at most N segments of each document (default: all of it)")
    parser.add_argument("--batch_size", type=positive_int, default=8,
                        help="documents read side by side (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="write the JSON report here (atomically)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the curves to a PNG (needs matplotlib)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for path in (args.report, args.plot):
        if path is not None and not path.resolve().parent.is_dir():
            raise UserError(f"folder {path.parent} does not exist")
    if args.plot is not None:
        from mlot.training.monitor import load_pyplot
        load_pyplot()  # a missing matplotlib is said before minutes of scoring
    trained = load_trained_model(args.checkpoint, dataset=args.dataset, semantic_memory=True)
    folder = args.dataset or Path(trained.meta.get("dataset") or ".")
    data = TokenizedData.load(folder)
    if len(data.val) == 0:
        raise UserError(f"dataset {folder} has no held-out (val) documents")
    report = bits_by_position(trained, data, args.max_docs, args.max_segments, args.batch_size,
                              progress=not args.no_progress and sys.stderr.isatty())
    print(format_table(report))
    if args.report is not None:
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")
    if args.plot is not None:
        plot_report(report, args.plot)


if __name__ == "__main__":
    sys.exit(run_command(main))
