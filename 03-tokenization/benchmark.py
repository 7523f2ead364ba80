"""Training time and encode throughput of our BPE, against HF `tokenizers` on the same corpus when installed.

    python 03-tokenization/benchmark.py [--corpus documents.jsonl] [--vocab_size 4096] [--repeats 3]

The corpus defaults to the generated default corpus (03-tokenization/corpus/documents.jsonl,
generated in a temporary folder if absent). Both tokenizers train the same vocabulary size with
the same special tokens; encoding uses one file (ours, saved) loaded by both, one thread each
(HF with TOKENIZERS_PARALLELISM=false), a freshly loaded tokenizer (cold word cache) per repeat,
loading not timed, and the best of the repeats. HF training runs with its default parallelism (all cores). The ids of the
two encoders are compared, so a speed figure never hides a wrong answer.
"""
import json
import os
import tempfile
import sys
import time
from pathlib import Path

from mlot.architecture.cli import documented_parser, existing_file, positive_int, run_command
from mlot.tokenization.cli import DEFAULT_CORPUS_DIR
from mlot.tokenization.generate_corpus import DOCUMENTS_FILE, generate_corpus
from mlot.tokenization.special_tokens import SPECIAL_TOKENS
from mlot.tokenization.tokenizer import Tokenizer
from mlot.tokenization.trainer import check_training_request, train


def _best_seconds(run, repeats: int, setup=lambda: None) -> float:
    """Best wall time of run(setup()) over the repeats; setup is not timed."""
    best = float("inf")
    for _ in range(repeats):
        prepared = setup()
        start = time.perf_counter()
        run(prepared)
        best = min(best, time.perf_counter() - start)
    return best


def _load_documents(corpus: Path | None) -> list[str]:
    if corpus is None:
        corpus = DEFAULT_CORPUS_DIR / DOCUMENTS_FILE
        if not corpus.exists():
            corpus = Path(tempfile.mkdtemp(prefix="mlot-bench-corpus-")) / DOCUMENTS_FILE
            generate_corpus(corpus.parent, progress=False)
    with open(corpus, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def _hf_figures(documents, vocab_size, tokenizer_path, repeats):
    """(train seconds, encode seconds, ids) of HF tokenizers, or None when it is not installed."""
    try:
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        return None

    def hf_train():
        model = tokenizers.Tokenizer(models.BPE())
        model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        model.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        model.train_from_iterator(documents, trainer)

    train_seconds = _best_seconds(lambda _: hf_train(), repeats)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by tokenizers at every call: one thread from here on
    fast = hasattr(tokenizers.Tokenizer, "encode_batch_fast")
    result = {}

    def hf_encode(model):
        encodings = model.encode_batch_fast(documents) if fast else model.encode_batch(documents)
        result["ids"] = [encoding.ids for encoding in encodings]

    encode_seconds = _best_seconds(hf_encode, repeats, lambda: tokenizers.Tokenizer.from_file(str(tokenizer_path)))
    return train_seconds, encode_seconds, result["ids"], tokenizers.__version__


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--corpus", type=existing_file,
                        help="a JSONL file with a 'text' field (default: the generated corpus)")
    parser.add_argument("--vocab_size", type=positive_int, default=4096,
                        help="tokens in the trained vocabulary (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs of each measure, the best is shown (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        check_training_request(args.vocab_size, SPECIAL_TOKENS)
    except ValueError as error:
        parser.error(f"argument --vocab_size: {error}")
    documents = _load_documents(args.corpus)
    megabytes = sum(len(text.encode("utf-8")) for text in documents) / 1e6
    print(f"corpus: {megabytes:.2f} MB in {len(documents)} documents; vocab_size {args.vocab_size}; "
          f"{os.cpu_count()} cores")

    train(documents[:20], 300).encode_batch(documents[:20])  # load / compile the kernels outside the timings
    ours = {}
    train_seconds = _best_seconds(lambda _: ours.update(tokenizer=train(documents, args.vocab_size)), args.repeats)
    tokenizer_path = Path(tempfile.mkdtemp(prefix="mlot-bench-")) / "tokenizer.json"
    ours["tokenizer"].save(tokenizer_path)

    def our_encode(tokenizer):
        ours["ids"] = tokenizer.encode_batch(documents)

    encode_seconds = _best_seconds(our_encode, args.repeats, lambda: Tokenizer.from_file(tokenizer_path))
    print(f"ours:  train {train_seconds:7.3f} s   encode {megabytes / encode_seconds:8.2f} MB/s (1 thread)")

    hf = _hf_figures(documents, args.vocab_size, tokenizer_path, args.repeats)
    if hf is None:
        print("HF tokenizers is not installed: no reference figures")
        return
    hf_train_seconds, hf_encode_seconds, hf_ids, version = hf
    print(f"HF {version}: train {hf_train_seconds:7.3f} s   encode {megabytes / hf_encode_seconds:8.2f} MB/s "
          f"(1 thread; training on all cores)")
    print(f"ratios: training time ours/HF = {train_seconds / hf_train_seconds:.2f} (target <= 2.0); "
          f"encode throughput ours/HF = {hf_encode_seconds / encode_seconds:.2f} (target >= 1.0)")
    print(f"ids identical to HF on all {len(documents)} documents: {'yes' if hf_ids == ours['ids'] else 'NO'}")


if __name__ == "__main__":
    sys.exit(run_command(main))
