"""Config schema: JSON round trip, atomic writes, and errors that name the key (or the file)."""
import dataclasses
import json
import os
from typing import Literal

import pytest

from mlot.architecture import config as config_module
from mlot.architecture.config import ConfigError, JsonConfig, ModelConfig, check, load_dataclass


def test_defaults_are_derived_and_valid():
    config = ModelConfig(d_model=64, n_heads=2, n_layers=6)
    assert config.d_ff == 256 and config.head_dim == 32
    assert config.memory_layers == [3, 4, 5]
    assert ModelConfig(d_model=64, n_heads=2, d_ff=0).d_ff == 256
    assert ModelConfig(d_ff=100).d_ff == 100


def test_json_round_trip(tmp_path):
    config = ModelConfig(vocab_size=1000, d_model=96, n_heads=3, memory_layers=[0, 3], dropout=0.1,
                         episodic=False, gate_init=-0.5)
    path = tmp_path / "model.json"
    config.to_json(path)
    on_disk = json.loads(path.read_text())
    assert on_disk["d_model"] == 96 and on_disk["memory_layers"] == [0, 3] and on_disk["episodic"] is False
    assert ModelConfig.from_json(path) == config
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary left behind


def test_int_is_accepted_where_a_float_is_expected():
    config = ModelConfig.from_dict({"dropout": 0, "gate_init": 1})
    assert isinstance(config.dropout, float) and isinstance(config.gate_init, float)


@pytest.mark.parametrize("changes, key, reason", [
    ({"d_modle": 128}, "d_modle", "did you mean 'd_model'"),
    ({"d_model": 130, "n_heads": 4}, "n_heads", "d_model=130 is not divisible by n_heads=4"),
    ({"n_layers": -2}, "n_layers", "> 0"),
    ({"semantic_slots": 0}, "semantic_slots", "> 0"),
    ({"working_cache_len": -1}, "working_cache_len", ">= 0"),
    ({"dropout": 1.0}, "dropout", "[0, 1)"),
    ({"dropout": -0.1}, "dropout", "[0, 1)"),
    ({"memory_layers": [1, 4]}, "memory_layers", "layer index 4 out of range for n_layers=4"),
    ({"memory_layers": [-1]}, "memory_layers", "out of range"),
    ({"memory_layers": [2, 2]}, "memory_layers", "repeated"),
    ({"memory_layers": [1, "2"]}, "memory_layers", "element 1"),
    ({"vocab_size": "4096"}, "vocab_size", "expected int, got str"),
    ({"n_heads": True}, "n_heads", "expected int, got bool"),
    ({"segment_len": 64.0}, "segment_len", "expected int, got float"),
    ({"episodic": 1}, "episodic", "expected bool, got int"),
    ({"d_ff": "auto"}, "d_ff", "expected int | None"),
    ({"gnn_rounds": 3}, "gnn_rounds", "0, 1 or 2"),
    ({"retrieval_top_k": 600}, "retrieval_top_k", "exceeds episodic_capacity=512"),
    ({"semantic_top_k": 65}, "semantic_top_k", "exceeds semantic_slots=64"),
    ({"max_span_len": 200}, "max_span_len", "exceeds segment_len=128"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps", "> 0"),
    ({"gate_init": float("inf")}, "gate_init", "finite"),
])
def test_each_mistake_names_its_key(changes, key, reason):
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict(changes)
    assert str(caught.value).startswith(f"config key '{key}': ")
    assert reason in str(caught.value)
    assert caught.value.key == key and isinstance(caught.value, ValueError)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="config key 'n_heads'"):
        ModelConfig(d_model=130, n_heads=4)
    with pytest.raises(ConfigError, match="config key 'dropout': expected float, got str"):
        ModelConfig(dropout="0.1")


@pytest.mark.parametrize("text, reason", [
    ('{\n  "d_model": 128,\n  "n_heads": 4,,\n}\n', "invalid JSON at line 3"),
    ("[1, 2]", "top level must be a JSON object"),
    ('{"d_model": 64, "d_model": 128}', "config key 'd_model': duplicate key"),
    ('{"n_heads": 5}', "config key 'n_heads': d_model=256 is not divisible by n_heads=5"),
])
def test_file_errors_name_the_file(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_json(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and reason in message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        ModelConfig.from_json(tmp_path / "missing.json")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.json"
    ModelConfig(d_model=64, n_heads=2).to_json(path)
    before = path.read_bytes()

    def interrupted_replace(source, target):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(config_module.os, "replace", interrupted_replace)
    with pytest.raises(OSError, match="simulated"):
        ModelConfig(d_model=128, n_heads=2).to_json(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.json"]


# A TrainConfig-like schema, to show the machinery serves other stages.

@dataclasses.dataclass
class OptimizerSettings(JsonConfig):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def validate(self):
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")


@dataclasses.dataclass
class RunSettings(JsonConfig):
    dataset: str  # required: no default
    schedule: Literal["cosine", "constant"] = "cosine"
    optimizer: OptimizerSettings = dataclasses.field(default_factory=OptimizerSettings)
    eval_every: int | None = None
    group_lrs: dict[str, float] = dataclasses.field(default_factory=dict)


def test_load_dataclass_handles_nesting_literals_and_containers():
    settings = load_dataclass(RunSettings, {"dataset": "data/", "optimizer": {"betas": [0.8, 0.9]},
                                            "group_lrs": {"memory": 1}})
    assert settings.optimizer == OptimizerSettings(betas=(0.8, 0.9))
    assert settings.group_lrs == {"memory": 1.0} and settings.schedule == "cosine"
    assert RunSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize("mapping, message", [
    ({}, "config key 'dataset': missing required key"),
    ({"dataset": "d", "schedule": "linear"}, "config key 'schedule': expected one of ['cosine', 'constant']"),
    ({"dataset": "d", "optimizer": {"lr": -1.0}}, "config key 'optimizer.lr': must be > 0"),
    ({"dataset": "d", "optimizer": {"momentum": 0.9}}, "config key 'optimizer.momentum': unknown key"),
    ({"dataset": "d", "optimizer": {"betas": [0.9]}}, "config key 'optimizer.betas': expected 2 elements"),
    ({"dataset": "d", "optimizer": 0.1}, "config key 'optimizer': expected an object"),
    ({"dataset": "d", "group_lrs": {"memory": "fast"}}, "config key 'group_lrs.memory': expected float"),
    ({"dataset": "d", "eval_every": 2.5}, "config key 'eval_every': expected int | None"),
])
def test_load_dataclass_errors_name_the_dotted_key(mapping, message):
    with pytest.raises(ConfigError) as caught:
        load_dataclass(RunSettings, mapping)
    assert str(caught.value).startswith(message)
