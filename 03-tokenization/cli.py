"""What the stage's command-line scripts share: sizes and the default paths (one-line errors for a user's
mistakes come from mlot.architecture.cli, as for every command)."""
import re
from pathlib import Path

from mlot.architecture.cli import UserError

STAGE_DIR = Path(__file__).resolve().parent
# The default data are written beside this stage in a source checkout (03-tokenization/corpus,
# 03-tokenization/tokenized_data); an installed package must not write into site-packages, so there
# they are folders of the current directory, as training's default checkpoints/ folder is.
DATA_DIR = STAGE_DIR if STAGE_DIR.name == "03-tokenization" else Path()
DEFAULT_CORPUS_DIR = DATA_DIR / "corpus"
DEFAULT_DATASET_DIR = DATA_DIR / "tokenized_data"


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
