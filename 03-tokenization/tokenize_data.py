"""Corpus -> tokenized_data/: train (or reuse) a BPE tokenizer and write the token files of DESIGN §4.

    python 03-tokenization/tokenize_data.py --input FILES_OR_DIRS --vocab_size 4096 --output DIR
    python 03-tokenization/tokenize_data.py          # the embedded default corpus -> 03-tokenization/tokenized_data

Two streaming passes over the input: the first counts documents (and the words the trainer
needs), the second encodes documents in batches and appends them to train.bin / val.bin.
Memory stays bounded by one batch of text plus the distinct-word table, whatever the corpus size.
A document is a whole file (a book stays one document, however long), a JSONL record or, with
--split blank_line, a block. Documents go to val whole and at random (exactly
round(val_fraction * n) of them, seeded); meta.json names them ("val_documents") and the
command prints their names.
"""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture.cli import UserError, documented_parser, existing_file, positive_int, run_command
from mlot.tokenization.cli import DEFAULT_CORPUS_DIR, DEFAULT_DATASET_DIR, folder_holds_data
from mlot.tokenization.corpus import SPLIT_MODES, iter_documents, resolve_inputs
from mlot.tokenization.generate_corpus import DOCUMENTS_FILE, generate_corpus
from mlot.tokenization.special_tokens import SPECIAL_TOKENS
from mlot.tokenization.tokenized_data import TokenizedDataError, TokenizedDataWriter
from mlot.tokenization.tokenizer import Tokenizer
from mlot.tokenization.trainer import WordCounter, check_training_request, train_from_counts

DEFAULT_VOCAB_SIZE = 4096
BATCH_CHARS = 1 << 22  # characters of text encoded per kernel call in the second pass


SHOWN_NAMES = 5  # held-out documents named on the terminal (meta.json lists them all)


def _documents_by_file(files, split, jsonl_field, bar):
    """Documents of all files; the progress bar (in bytes) advances document by document."""
    for path in files:
        size = path.stat().st_size
        shown = 0
        for document in iter_documents([path], split, jsonl_field):
            step = min(len(document.text), size - shown)
            bar.update(step)
            shown += step
            yield document
        bar.update(size - shown)


def _batches(documents, max_chars: int):
    """Lists of consecutive whole documents holding about max_chars characters each (a longer
    document is a batch of its own, never cut)."""
    batch: list = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document.text)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _validation_mask(n_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """Which documents go to val: round(val_fraction * n), at least 1 and at most n - 1 when n >= 2."""
    n_val = round(val_fraction * n_documents)
    if val_fraction > 0 and n_documents >= 2:
        n_val = min(max(n_val, 1), n_documents - 1)
    mask = np.zeros(n_documents, dtype=np.bool_)
    mask[np.random.default_rng(seed).choice(n_documents, size=n_val, replace=False)] = True
    return mask


def _check_request(inputs, output: Path, vocab_size, tokenizer_path, val_fraction, overwrite):
    """Every check that needs no reading of the corpus, done before any work; returns the loaded tokenizer."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    if output.exists() and not output.is_dir():
        raise UserError(f"output path {output} is a file, not a folder")
    if folder_holds_data(output) and not overwrite:
        raise UserError(f"output folder {output} already holds data; pass --overwrite to replace it")
    resolve_inputs(inputs)
    if tokenizer_path is not None:
        return Tokenizer.from_file(tokenizer_path)
    try:
        check_training_request(vocab_size, SPECIAL_TOKENS)
    except ValueError as error:
        raise UserError(str(error)) from None
    return None


def tokenize_corpus(inputs, output, vocab_size: int = DEFAULT_VOCAB_SIZE, tokenizer_path=None,
                    val_fraction: float = 0.05, seed: int = 0, jsonl_field: str = "text", split: str = "file",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Write `output` (a tokenized_data folder) from the documents of `inputs`; returns its meta.json."""
    output = Path(output)
    files = resolve_inputs(inputs)  # a missing input is named before anything about the output
    tokenizer = _check_request(inputs, output, vocab_size, tokenizer_path, val_fraction, overwrite)
    total_bytes = sum(path.stat().st_size for path in files)
    counter = WordCounter() if tokenizer is None else None
    n_documents = 0
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading", disable=not progress) as bar:
        for document in _documents_by_file(files, split, jsonl_field, bar):
            n_documents += 1
            if counter is not None:
                counter.add(document.text)
    if n_documents == 0:
        raise UserError(f"the corpus is empty: no non-empty document in {', '.join(map(str, inputs))}")
    if tokenizer is None:
        if progress:
            print(f"training a {vocab_size}-token BPE on {counter.n_distinct} distinct words", file=sys.stderr)
        tokenizer = train_from_counts(counter, vocab_size, SPECIAL_TOKENS)
    in_val = _validation_mask(n_documents, val_fraction, seed)
    counts = {"train": int(n_documents - in_val.sum()), "val": int(in_val.sum())}
    val_names = []
    with TokenizedDataWriter(output, tokenizer, counts, overwrite) as writer:
        index = 0
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="encoding", disable=not progress) as bar:
            for batch in _batches(_documents_by_file(files, split, jsonl_field, bar), BATCH_CHARS):
                ids, ends = tokenizer.encode_flat([document.text for document in batch])
                starts = np.concatenate([[0], ends[:-1]])
                for document, start, end in zip(batch, starts.tolist(), ends.tolist()):
                    if index == n_documents:
                        raise TokenizedDataError("more documents than counted; did the input change while reading?")
                    writer.add("val" if in_val[index] else "train", ids[start:end])
                    if in_val[index]:
                        val_names.append(document.name)
                    index += 1
        return writer.commit({
            "sources": [str(name) for name in inputs], "source_files": len(files),
            "tokenizer_source": str(tokenizer_path) if tokenizer_path else "trained",
            "val_fraction": val_fraction, "seed": seed, "split": split, "jsonl_field": jsonl_field,
            "val_documents": val_names,
        })


def build_default_dataset(output=DEFAULT_DATASET_DIR, overwrite: bool = False, seed: int = 0,
                          vocab_size: int = DEFAULT_VOCAB_SIZE, progress: bool = True) -> dict:
    """The embedded default: generate the synthetic corpus if missing, then tokenize it into `output`."""
    if folder_holds_data(Path(output)) and not overwrite:
        raise UserError(f"output folder {output} already holds data; pass --overwrite to replace it")
    corpus_file = DEFAULT_CORPUS_DIR / DOCUMENTS_FILE
    if not corpus_file.exists():
        generate_corpus(DEFAULT_CORPUS_DIR, seed=seed, progress=progress)
    return tokenize_corpus([corpus_file], output, vocab_size, seed=seed, overwrite=overwrite, progress=progress)


def ensure_default_dataset(progress: bool = True) -> Path:
    """Path of the default tokenized_data folder, built first if it has no meta.json yet."""
    if not (DEFAULT_DATASET_DIR / "meta.json").exists():
        build_default_dataset(progress=progress)
    return DEFAULT_DATASET_DIR


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--input", nargs="+", metavar="FILE_OR_DIR",
                        help="text files, .jsonl files or folders (searched recursively)")
    parser.add_argument("--vocab_size", type=positive_int, default=DEFAULT_VOCAB_SIZE,
                        help="tokens in the trained vocabulary, special and byte tokens included (default %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_DATASET_DIR, help="folder to write (default %(default)s)")
    parser.add_argument("--tokenizer", type=existing_file, help="reuse this tokenizer.json instead of training one")
    parser.add_argument("--val_fraction", type=float, default=0.05, help="share of documents for val (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (and of the default corpus)")
    parser.add_argument("--jsonl_field", default="text", help="field holding the text in .jsonl files (default text)")
    parser.add_argument("--split", choices=SPLIT_MODES, default="file",
                        help="documents of non-JSONL files: one per file, or one per blank-line separated block")
    parser.add_argument("--overwrite", action="store_true", help="replace an output folder that already holds data")
    args = parser.parse_args(argv)
    progress = sys.stderr.isatty()
    if args.input is None:
        if args.tokenizer is not None:
            raise UserError("--tokenizer needs --input (the default corpus always trains its own tokenizer)")
        meta = build_default_dataset(args.output, args.overwrite, args.seed, args.vocab_size, progress)
    else:
        meta = tokenize_corpus(args.input, args.output, args.vocab_size, args.tokenizer, args.val_fraction,
                               args.seed, args.jsonl_field, args.split, args.overwrite, progress)
    print(f"wrote {args.output}: vocab {meta['vocab_size']} ({meta['dtype']}), "
          f"train {meta['train']['documents']} documents / {meta['train']['tokens']} tokens, "
          f"val {meta['val']['documents']} documents / {meta['val']['tokens']} tokens")
    names = meta["val_documents"]
    if names:
        more = f" and {len(names) - SHOWN_NAMES} more (meta.json names all)" if len(names) > SHOWN_NAMES else ""
        print(f"held out: {', '.join(names[:SHOWN_NAMES])}{more}")


if __name__ == "__main__":
    sys.exit(run_command(main))
