"""What the stage's command-line scripts share: one-line errors for user mistakes, sizes, paths."""
import re
import sys
from pathlib import Path

STAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CORPUS_DIR = STAGE_DIR / "corpus"
DEFAULT_DATASET_DIR = STAGE_DIR / "tokenized_data"


class UserError(Exception):
    """A mistake in what the user asked for; reported as one `error: ...` line, without a traceback."""


def run_main(main) -> None:
    """Run main(); a UserError, a file-system error or Ctrl-C becomes one line on stderr and a non-zero exit."""
    try:
        main()
    except (UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)


def parse_size(text: str) -> int:
    """'5M', '200K', '1.5MB', '12000' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*", text)
    if not match:
        raise UserError(f"--size {text!r} is not a size like 5M, 200K or 12000")
    scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def folder_holds_data(path: Path) -> bool:
    """Whether path exists and is anything but an empty directory."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))
