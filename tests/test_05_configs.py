"""Every config file shipped in 05-training loads as train.py reads it: known sections and keys,
values that pass their config class's checks (a bad shipped config would fail only when a user
runs it)."""
from pathlib import Path

import pytest

from mlot.architecture.config import ModelConfig, read_json_object
from mlot.training.train import STAGES, read_config
from mlot.training.training_loop import TrainConfig

STAGE_DIR = Path(__file__).resolve().parents[1] / "05-training"
CONFIGS = [STAGE_DIR / "config.json", *sorted((STAGE_DIR / "configs").glob("*.json"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_shipped_config_loads(path):
    stage = next(name for name in STAGES if name in read_json_object(path))  # the section named after its stage
    model, train, section, _ = read_config(path, stage)  # also checks every later stage of a plan
    if model is not None:
        ModelConfig.from_dict(model)
    TrainConfig.from_dict(train)
    STAGES[stage].config_class.from_dict(section)


def test_real_text_reads_books_whole():
    _, train, section, then = read_config(STAGE_DIR / "configs" / "real_text.json", "pretrain")
    pretrain = STAGES["pretrain"].config_class.from_dict(section)
    assert pretrain.document_window > 0 and not then
