"""The dialogue form: a base learns how answers go before its memory modules learn to fill them in.

    python 05-training/train.py --stage dialogue --base checkpoints/latest_checkpoint.pt \\
        --dataset 03-tokenization/corpus/epoch0_curriculum.jsonl --checkpoint_dir dialogue_run/

The notes' base is a chat model; ours was pretrained on plain documents and never saw
"[USER] ... [MODEL] ...". With memory off it fills "[USER] What is my parrot called? [MODEL] [MASK]"
with " is a story"; memory fine-tuning on such a base spends the memory modules on the answer's
form (05-training/README.md, measured). This stage trains the backbone on pass 2 of the same
dialogues with no memory read at all: it learns the form ("Your parrot is called") but cannot
learn the facts, since U1 is never shown, so the memory stage on its result still has every
fact to fetch. Its checkpoint is the --base of `--stage memory`; the memory modules do not train.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from mlot.architecture.config import JsonConfig, check
from mlot.training.checkpointing import LATEST_NAME
from mlot.training.loss_functions import reconstruction_loss
from mlot.training.memory_stage import MemoryStage, dialogue_batch, evaluate, print_figures
from mlot.training.stages import StepLoss


@dataclasses.dataclass
class DialogueStageConfig(JsonConfig):
    """The `dialogue` section (training.lr is the backbone's rate)."""
    val_examples: int = 256         # the file's last dialogues, held out

    def validate(self):
        check(self.val_examples > 0, "val_examples", f"must be > 0, got {self.val_examples}")


class DialogueStage(MemoryStage):
    """The memory stage's data and measures, training the backbone with memory off."""

    name = "dialogue"
    config_class = DialogueStageConfig
    trains = "the backbone (memory is not read)"

    def parameter_groups(self, train) -> list:
        for param in self.model.memory_parameters():
            param.requires_grad = False
        return [{"name": "backbone", "params": self.model.backbone_parameters(), "lr": train.lr,
                 "weight_decay": train.weight_decay}]

    def loss(self, step: int) -> StepLoss:
        examples = self.batch_at(step)
        batch = dialogue_batch(self.model, examples)
        loss = reconstruction_loss(self.model, self.model(batch, read_memory=False), batch)[0]
        return StepLoss(loss, {"loss": loss.item(), "loss_dialogue": loss.item()},
                        int(sum(len(e.dialogue) for e in examples)))

    def validate(self) -> dict:
        """Held-out M2 figures with memory off: all this stage can change."""
        scores = evaluate(self.model, self.val, self.train_config.batch_size, "off", seed=self.train_config.seed)
        return {f"{name}_memory_off": value for name, value in scores.items()}

    def log_fields(self, step_result: dict) -> dict:
        return {}

    def finish(self, directory, first: dict, last: dict) -> None:
        print_figures(len(self.val), first, last)
        print(f"the base for --stage memory: {Path(directory) / LATEST_NAME}", file=sys.stderr)
