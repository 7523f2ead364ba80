"""Real text as a folder of books: the KJV writer, a long file kept as one document, a held-out
split by whole documents that names them.

tests/data/kjv holds six short books of the King James Bible (public domain) as kjv_books.py
writes them from Debian's bible-kjv-text."""
import shutil
from collections import Counter
from pathlib import Path

import pytest

from mlot.architecture.cli import UserError
from mlot.tokenization import tokenize_data
from mlot.tokenization.kjv_books import book_file_name, split_books, write_kjv_books
from mlot.tokenization.tokenize_data import tokenize_corpus
from mlot.tokenization.tokenized_data import TokenizedData

SAMPLE = Path(__file__).resolve().parent / "data" / "kjv"

PRINTOUT = """
Song of Solomon 8

  14 Make haste, my beloved.

Isaiah 1

  1 The vision of Isaiah.

Isaiah 2

  1 The word that Isaiah saw.
"""


def test_books_are_cut_where_the_book_changes():
    books = split_books(PRINTOUT)
    assert [name for name, _ in books] == ["Song of Solomon", "Isaiah"]
    assert books[0][1] == "Song of Solomon 8\n\n  14 Make haste, my beloved.\n"
    assert books[1][1] == "Isaiah 1\n\n  1 The vision of Isaiah.\n\nIsaiah 2\n\n  1 The word that Isaiah saw.\n"
    assert book_file_name(22, "Song of Solomon") == "22_song_of_solomon.txt"


@pytest.mark.skipif(shutil.which("bible") is None or not Path("/usr/lib/bible.data").is_file(),
                    reason="the KJV is not installed (sudo apt-get install bible-kjv bible-kjv-text)")
def test_the_installed_kjv_becomes_66_books_and_the_sample_is_taken_from_them(tmp_path):
    paths = write_kjv_books(tmp_path / "kjv")
    assert len(paths) == 66 and paths[0].name == "01_genesis.txt" and paths[-1].name == "66_revelation.txt"
    assert paths[0].read_text(encoding="utf-8").startswith(
        "Genesis 1\n\n  1 In the beginning God created the heaven and the earth.\n")
    for sample in SAMPLE.iterdir():
        assert (tmp_path / "kjv" / sample.name).read_bytes() == sample.read_bytes()
    with pytest.raises(UserError, match="already holds data"):
        write_kjv_books(tmp_path / "kjv")


def _decoded_documents(data: TokenizedData, split: str) -> list[str]:
    tokenizer, documents = data.tokenizer(), getattr(data, split)
    return [tokenizer.decode(documents.document(i)[1:-1].tolist()) for i in range(len(documents))]


def test_a_long_file_is_one_document_and_val_holds_whole_named_documents(tmp_path, monkeypatch):
    corpus = tmp_path / "books"
    shutil.copytree(SAMPLE, corpus)
    books = {path.name: path.read_text(encoding="utf-8") for path in sorted(SAMPLE.iterdir())}
    books["99_all.txt"] = "\n".join(books.values())  # ~27 KB, 25 times the batch below
    (corpus / "99_all.txt").write_text(books["99_all.txt"], encoding="utf-8")
    monkeypatch.setattr(tokenize_data, "BATCH_CHARS", 1_000)  # encoding batches far shorter than the long file
    assert tokenize_corpus([corpus], tmp_path / "vocab", vocab_size=300, progress=False)["vocab_size"] == 300
    val_seen = set()
    for seed in range(5):
        out = tmp_path / f"data{seed}"
        meta = tokenize_corpus([corpus], out, tokenizer_path=out.parent / "vocab" / "tokenizer.json",
                               val_fraction=0.3, seed=seed, progress=False)
        data = TokenizedData.load(out)
        train, val = _decoded_documents(data, "train"), _decoded_documents(data, "val")
        assert Counter(train + val) == Counter(books.values())  # every file whole, once, in one split
        named = {Path(name).name for name in meta["val_documents"]}
        assert len(val) == 2 and Counter(val) == Counter(books[name] for name in named)
        assert not named & {name for name, text in books.items() if text in train}
        val_seen |= named
    assert "99_all.txt" in val_seen  # one of the seeds held the long file out, whole
