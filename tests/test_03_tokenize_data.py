"""tokenize_data.py end to end: what it writes decodes back to the input documents; bad input is refused cleanly."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture.cli import run_command
from mlot.tokenization import Tokenizer
from mlot.tokenization.tokenize_data import main

SCRIPT = Path(__file__).resolve().parents[1] / "03-tokenization" / "tokenize_data.py"

DOCS_A = ["First document.\nIt has two lines.", "Zweites Dokument: Grüße! 日本語 ✓ <pad> [MASK]"]
DOCS_B = ["Para one of b.\r\nStill para one.", "Para two of b, after a blank line.", "Para three 42."]
DOCS_JSONL = ["json doc one", "json doc two with \"quotes\" and \\ backslash", "third\n\nwith blank lines inside"]


def _write_corpus(folder: Path) -> list[str]:
    """Files in the three layouts; returns the documents a run with --split blank_line must find."""
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes("\n\n".join(DOCS_A).encode())  # blank-line separated
    (folder / "sub" / "b.txt").write_bytes("\r\n\r\n".join(DOCS_B).encode() + b"\r\n")
    (folder / "sub" / "c.jsonl").write_text("\n".join(json.dumps({"text": t, "id": k}) for k, t in enumerate(DOCS_JSONL))
                                            + "\n\n", encoding="utf-8")
    (folder / ".hidden.txt").write_text("never read", encoding="utf-8")
    return DOCS_A + DOCS_B + DOCS_JSONL


def _read_split(folder: Path, split: str, meta: dict) -> list[np.ndarray]:
    """Documents of a split read the plain way: np.memmap + the offsets file."""
    tokens = np.memmap(folder / f"{split}.bin", dtype=meta["dtype"], mode="r")
    starts = np.load(folder / f"{split}_docs.npy")
    ends = np.append(starts[1:], len(tokens))
    return [tokens[a:b] for a, b in zip(starts, ends)]


def _run(argv) -> int:
    """main(argv) as the script runs it (errors become a line on stderr); returns the exit code."""
    try:
        return run_command(main, argv) or 0
    except SystemExit as stop:  # argparse's exit for a bad option
        return stop.code


def test_output_decodes_to_the_input_documents(tmp_path):
    expected = _write_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(SCRIPT), "--input", str(tmp_path / "corpus"), "--vocab_size", "300",
                             "--output", str(out), "--split", "blank_line", "--val_fraction", "0.25", "--seed", "3"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json", "train.bin", "train_docs.npy",
                                                      "val.bin", "val_docs.npy"]
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300
    assert meta["val"]["documents"] == round(0.25 * len(expected))
    tok = Tokenizer.from_file(out / "tokenizer.json")
    decoded = []
    for split in ("train", "val"):
        documents = _read_split(out, split, meta)
        assert len(documents) == meta[split]["documents"]
        assert sum(len(d) for d in documents) == meta[split]["tokens"]
        for ids in documents:
            assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
            decoded.append(tok.decode(ids[1:-1]))
    assert sorted(decoded) == sorted(expected)
    assert meta["special_tokens"]["<eos>"] == 2


def test_file_mode_and_reused_tokenizer(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    texts = ["whole file one\n\nstill file one\n", "file two"]
    for k, text in enumerate(texts):
        (corpus / f"{k}.txt").write_text(text, encoding="utf-8")
    first = tmp_path / "first"
    assert _run(["--input", str(corpus), "--vocab_size", "280", "--output", str(first), "--val_fraction", "0"]) == 0
    second = tmp_path / "second"
    assert _run(["--input", str(corpus / "0.txt"), str(corpus / "1.txt"), "--tokenizer", str(first / "tokenizer.json"),
                 "--output", str(second), "--val_fraction", "0"]) == 0
    for out in (first, second):
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(out / "tokenizer.json")
        assert [tok.decode(d[1:-1]) for d in _read_split(out, "train", meta)] == texts
        assert meta["val"] == {"tokens": 0, "documents": 0}
    assert (first / "train.bin").read_bytes() == (second / "train.bin").read_bytes()


def test_written_folder_and_files_get_the_umasks_mode(tmp_path):
    """Staging is made by mkdir and open, not tempfile's owner-only mkdtemp/mkstemp."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("one small document", encoding="utf-8")
    out = tmp_path / "out"
    before = os.umask(0o027)
    try:
        assert _run(["--input", str(corpus), "--vocab_size", "270", "--output", str(out), "--val_fraction", "0"]) == 0
    finally:
        os.umask(before)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        name: 0o640 for name in ("meta.json", "tokenizer.json", "train.bin", "train_docs.npy", "val.bin", "val_docs.npy")}

def _assert_refused(capsys, argv, message):
    code = _run(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err


def test_bad_input_is_refused_with_one_line_and_nothing_written(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _write_corpus(corpus)
    out = tmp_path / "out"
    _assert_refused(capsys, ["--input", str(tmp_path / "missing"), "--output", str(out)], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("", encoding="utf-8")
    _assert_refused(capsys, ["--input", str(empty), "--output", str(out)], "corpus is empty")
    _assert_refused(capsys, ["--input", str(corpus), "--output", str(out), "--vocab_size", "200"], "below the minimum")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\n{"body": "no text field"}\n', encoding="utf-8")
    _assert_refused(capsys, ["--input", str(bad_jsonl), "--output", str(out)], "line 2 has no field 'text'")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _write_corpus(corpus)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.bin").write_bytes(b"precious")
    _assert_refused(capsys, ["--input", str(corpus), "--output", str(out), "--vocab_size", "270"], "already holds data")
    assert (out / "train.bin").read_bytes() == b"precious"
    assert _run(["--input", str(corpus), "--output", str(out), "--vocab_size", "270", "--overwrite"]) == 0
    assert json.loads((out / "meta.json").read_text(encoding="utf-8"))["vocab_size"] == 270
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_help_runs():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--vocab_size" in result.stdout


def test_loader_checks_the_folder(tmp_path):
    from mlot.tokenization.tokenized_data import TokenizedData, TokenizedDataError
    corpus = tmp_path / "corpus"
    expected = _write_corpus(corpus)
    out = tmp_path / "out"
    assert _run(["--input", str(corpus), "--output", str(out), "--vocab_size", "300",
                 "--split", "blank_line"]) == 0
    data = TokenizedData.load(out)
    tok = data.tokenizer()
    assert data.meta["dtype"] == "uint16"
    texts = [tok.decode(split.document(i), skip_special=True) for split in (data.train, data.val)
             for i in range(len(split))]
    assert sorted(texts) == sorted(expected)
    with open(out / "train.bin", "ab") as handle:
        handle.write(b"\0\0")
    with pytest.raises(TokenizedDataError, match="train.bin"):
        TokenizedData.load(out)


def test_default_folders_lie_beside_the_stage_only_in_a_source_checkout():
    """An installed package must not write into site-packages: its defaults are folders of the current directory."""
    from mlot.tokenization import cli
    package = Path(cli.__file__).resolve().parent
    for name, folder in (("corpus", cli.DEFAULT_CORPUS_DIR), ("tokenized_data", cli.DEFAULT_DATASET_DIR)):
        if package == SCRIPT.parent:  # the editable install of this checkout
            assert folder == SCRIPT.parent / name
        else:
            assert folder == Path(name) and package not in folder.resolve().parents
