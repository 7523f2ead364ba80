"""Write the King James Bible installed by Debian's bible-kjv-text as a folder of books, one .txt per book.

    python 03-tokenization/kjv_books.py --output kjv                      # 66 files: 01_genesis.txt .. 66_revelation.txt
    python 03-tokenization/tokenize_data.py --input kjv --output kjv_data

Real long text that installs on every machine (`sudo apt-get install bible-kjv bible-kjv-text`):
the package keeps the text in its own compressed format, which only its `bible` program reads,
so this asks that program for the whole text (Genesis 1:1 to Revelation 22:21, 4.3 MB) and cuts
it where the book changes. Each file holds its book as `bible` prints it, one verse a line:

    Genesis 1

      1 In the beginning God created the heaven and the earth.
      2 And the earth was without form, and void; ...

File names start with the book's place in the canon, so a folder read in sorted order reads the
books in order, and tokenize_data.py's seeded held-out split names the same books on every machine.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlot.architecture.atomic import atomic_write_text
from mlot.architecture.cli import UserError, documented_parser, run_command
from mlot.tokenization.cli import folder_holds_data

WHOLE_TEXT = "Gen1:1-Rev22:21"
BOOKS = 66
INSTALL_HINT = "sudo apt-get install bible-kjv bible-kjv-text"
CHAPTER_HEADING = re.compile(r"(?P<book>\S.*) (?P<chapter>\d+)")  # "1 Samuel 3": a line not indented


def kjv_text(bible_program: str = "bible") -> str:
    """The whole KJV as the `bible` program prints it, each verse on one line."""
    if shutil.which(bible_program) is None:
        raise UserError(f"the KJV reader `{bible_program}` is not installed: {INSTALL_HINT}")
    result = subprocess.run([bible_program, "-l", "1000000", WHOLE_TEXT], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        raise UserError(f"`{bible_program}` could not print the KJV ({reason}): {INSTALL_HINT}")
    return result.stdout


def split_books(text: str) -> list[tuple[str, str]]:
    """(book name, its text) in canonical order: a book starts at the first heading of its name."""
    books: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        heading = None if line.startswith(" ") else CHAPTER_HEADING.fullmatch(line)
        if heading and (not books or books[-1][0] != heading["book"]):
            books.append((heading["book"], []))
        if books:
            books[-1][1].append(line)
    return [(name, "\n".join(lines).strip("\n") + "\n") for name, lines in books]


def book_file_name(index: int, name: str) -> str:
    """'22_song_of_solomon.txt' for the 22nd book, Song of Solomon."""
    return f"{index:02d}_{name.lower().replace(' ', '_')}.txt"


def write_kjv_books(output, overwrite: bool = False, bible_program: str = "bible") -> list[Path]:
    """Write the 66 books into the folder `output` (refused if it holds data, unless overwrite)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"output path {output} is a file, not a folder")
    if folder_holds_data(output) and not overwrite:
        raise UserError(f"output folder {output} already holds data; pass --overwrite to replace it")
    books = split_books(kjv_text(bible_program))
    if len(books) != BOOKS:
        raise UserError(f"`{bible_program}` printed {len(books)} books, expected the KJV's {BOOKS}")
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, text) in enumerate(books, start=1):
        paths.append(output / book_file_name(index, name))
        atomic_write_text(paths[-1], text)
    return paths


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--output", type=Path, required=True, help="folder to write the 66 book files into")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a folder that holds data")
    args = parser.parse_args(argv)
    paths = write_kjv_books(args.output, args.overwrite)
    size = sum(path.stat().st_size for path in paths)
    print(f"wrote {args.output}: {len(paths)} books, {size:,} bytes ({paths[0].name} .. {paths[-1].name})")


if __name__ == "__main__":
    sys.exit(run_command(main))
