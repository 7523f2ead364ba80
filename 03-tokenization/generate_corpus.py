"""Write the embedded default corpus: synthetic documents, memory dialogues and recall cases.

    python 03-tokenization/generate_corpus.py [--seed 0] [--size 5M] [--output DIR] [--overwrite]

Writes (deterministically for a seed) into DIR (default 03-tokenization/corpus/):
  documents.jsonl         {"text", "level", "kind"}: the pre-training documents, levels 1-4
  epoch0_curriculum.jsonl {"U1", "M1", "U2", "M2", "kind"}: dialogues whose M2 depends on U1
  recall.jsonl            {"context", "query", "answer", "kind", "level"}: held-out recall cases
  manifest.json           seed, size and counts
"""
import json
import random
import sys
from pathlib import Path

from tqdm import tqdm

from mlot.architecture.atomic import atomic_output, atomic_write_text
from mlot.architecture.cli import UserError, documented_parser, run_command
from mlot.tokenization.cli import DEFAULT_CORPUS_DIR, folder_holds_data, parse_size
from mlot.tokenization.synthetic_dialogues import dialogue
from mlot.tokenization.synthetic_documents import (compound_document, recall_case, simple_document,
                                                   story_document)
from mlot.tokenization.synthetic_world import build_world

DEFAULT_SIZE = 5_000_000
DOCUMENTS_FILE = "documents.jsonl"
CURRICULUM_FILE = "epoch0_curriculum.jsonl"
RECALL_FILE = "recall.jsonl"
MANIFEST_FILE = "manifest.json"
LEVEL_WEIGHTS = (0.3, 0.25, 0.25, 0.2)  # share of documents at levels 1, 2, 3, 4
_KIND_OF_LEVEL = {1: "simple", 2: "compound", 3: "story", 4: "story"}


def _write_jsonl(path: Path, records) -> None:
    with atomic_output(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _documents(world, seed: int, size_bytes: int, progress: bool):
    """Documents until their text reaches size_bytes (at least one of each level)."""
    rng = random.Random(f"mlot-documents-{seed}")
    written = 0
    count = 0
    with tqdm(total=size_bytes, unit="B", unit_scale=True, desc="documents", disable=not progress) as bar:
        while written < size_bytes or count < 4:
            level = count + 1 if count < 4 else rng.choices((1, 2, 3, 4), weights=LEVEL_WEIGHTS)[0]
            if level == 1:
                text = simple_document(world, rng)
            elif level == 2:
                text = compound_document(world, rng)
            else:
                text = story_document(world, rng, level)
            size = len(text.encode("utf-8"))
            written += size
            count += 1
            bar.update(size)
            yield {"text": text, "level": level, "kind": _KIND_OF_LEVEL[level]}


def generate_corpus(output_dir, seed: int = 0, size_bytes: int = DEFAULT_SIZE, overwrite: bool = False,
                    progress: bool = True) -> dict:
    """Write the corpus files into output_dir; returns the manifest. Refuses a non-empty folder unless overwrite."""
    output_dir = Path(output_dir)
    if folder_holds_data(output_dir) and not overwrite:
        raise UserError(f"output folder {output_dir} already holds data; pass --overwrite to replace it")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"output path {output_dir} is a file, not a folder")
    if size_bytes <= 0:
        raise UserError(f"--size must be positive, got {size_bytes}")
    output_dir.mkdir(parents=True, exist_ok=True)
    world = build_world(seed)
    counts = {"documents": 0}

    def counted(records):
        for record in records:
            counts["documents"] += 1
            yield record

    _write_jsonl(output_dir / DOCUMENTS_FILE, counted(_documents(world, seed, size_bytes, progress)))
    n_dialogues = max(50, size_bytes // 1000)
    dialogue_rng = random.Random(f"mlot-dialogues-{seed}")
    _write_jsonl(output_dir / CURRICULUM_FILE, (dialogue(dialogue_rng) for _ in range(n_dialogues)))
    n_recall = max(20, min(500, size_bytes // 20_000))
    recall_rng = random.Random(f"mlot-recall-{seed}")
    _write_jsonl(output_dir / RECALL_FILE, (recall_case(world, recall_rng) for _ in range(n_recall)))
    manifest = {
        "generator": "mlot.tokenization.generate_corpus", "format_version": 1, "seed": seed,
        "size_bytes": size_bytes, "documents": counts["documents"], "dialogues": n_dialogues,
        "recall_cases": n_recall, "people": len(world.people), "towns": len(world.towns),
        "files": [DOCUMENTS_FILE, CURRICULUM_FILE, RECALL_FILE],
    }
    atomic_write_text(output_dir / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of every text (default 0)")
    parser.add_argument("--size", default="5M", help="approximate size of documents.jsonl text, e.g. 5M, 200K")
    parser.add_argument("--output", type=Path, default=DEFAULT_CORPUS_DIR, help="folder to write (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a folder that holds data")
    args = parser.parse_args(argv)
    manifest = generate_corpus(args.output, args.seed, parse_size(args.size), args.overwrite,
                               progress=sys.stderr.isatty())
    print(f"wrote {manifest['documents']} documents, {manifest['dialogues']} dialogues and "
          f"{manifest['recall_cases']} recall cases to {args.output}")


if __name__ == "__main__":
    sys.exit(run_command(main))
