"""Fixtures shared by the test files of several stages."""
import os

import pytest

# A fixed thread count for the suite and the commands it runs: by default the pools follow the
# machine's load (mlot.architecture.threads), and sums split over another number of threads differ
# in their last bits, where the resume tests compare losses exactly.
os.environ.setdefault("MLOT_THREADS", "1")

from mlot.tokenization.generate_corpus import generate_corpus
from mlot.tokenization.tokenize_data import tokenize_corpus


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tokenized_data folder of a small generated corpus (150 kB, vocabulary 400), built once per
    session; its corpus is the sibling folder `corpus`."""
    folder = tmp_path_factory.mktemp("tiny_dataset")
    generate_corpus(folder / "corpus", seed=1, size_bytes=150_000, progress=False)
    tokenize_corpus([folder / "corpus" / "documents.jsonl"], folder / "tokenized", vocab_size=400, progress=False)
    return folder / "tokenized"
