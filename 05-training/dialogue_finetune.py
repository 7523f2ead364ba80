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

import sys

from mlot.training.checkpointing import CheckpointManager
from mlot.training.loss_functions import reconstruction_loss
from mlot.training.memory_finetune import HERE, MemoryFinetuner, dialogue_batch, evaluate, print_figures


class DialogueFinetuner(MemoryFinetuner):
    """The memory stage's machinery (data order, schedules, checkpoints, resume) on the backbone."""

    stage = "dialogue"
    default_config = HERE / "configs" / "dialogue_finetune.json"
    trains = "the backbone (memory is not read)"

    def trained_groups(self) -> dict:
        for param in self.model.memory_parameters():
            param.requires_grad = False
        return {"backbone": (self.model.backbone_parameters(), self.config.backbone_lr, self.config.weight_decay)}

    def step_loss(self, examples) -> tuple:
        batch = dialogue_batch(self.model, examples)
        return "dialogue", reconstruction_loss(self.model, self.model(batch, read_memory=False), batch)[0]

    def measure(self, memory_modes=None) -> dict:
        """Held-out M2 figures with memory off: all this stage can change."""
        self.model.eval()
        scores = evaluate(self.model, self.val, self.config.batch_size, "off", seed=self.config.seed)
        return {f"{name}_memory_off": value for name, value in scores.items()}

    def finish(self, manager: CheckpointManager) -> None:
        print_figures(self, self.measure())
        print(f"the base for --stage memory: {manager.latest_path}", file=sys.stderr)
