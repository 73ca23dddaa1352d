"""Training tasks: what a task's model is, what it reads from a batch, what it can be evaluated on.

`config.task` is interpreted here and nowhere else. The trainer, the config
checks, the evaluators and the tools ask the `Task` for what they need:

  build_model   `config.model` → the Flax module the task trains
  inputs        the batch fields its training forward pass takes, in order
  data_kind     the kind of training stream the input pipeline builds
  modalities    what the trained encoder embeds ("image", "text"): evaluators
                declare the modalities they need and run where they are present
  dropout_key   whether the training pass takes a dropout key (per-step masks)

Adding a task is one `register(Task(...))` call (docs/extending.md); which
losses train it is said by each loss (`big_contrast.objectives`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from flax import nnx

from big_contrast import models


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  build_model: Callable[..., nnx.Module]  # (model_cfg, *, vocab_size, text_max_len, rngs)
  inputs: tuple[str, ...]
  data_kind: str
  modalities: frozenset[str]
  dropout_key: bool = False

  @property
  def needs_tokenizer(self) -> bool:
    return "text" in self.modalities


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
  if task.name in TASKS:
    raise ValueError(f"task {task.name!r} is already registered")
  TASKS[task.name] = task
  return task


def get(name: str) -> Task:
  """The task `config.task` names; an unknown name is an error listing the known ones."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r}: expected one of {sorted(TASKS)}")
  return TASKS[name]


# CLIP and SigLIP: images and their captions, two towers.
register(
  Task(
    "image_text",
    build_model=models.two_tower,
    inputs=("image", "text"),
    data_kind="image_text",
    modalities=frozenset({"image", "text"}),
  )
)
# SimCLR and the other multi-view objectives: V augmented views of each image.
register(
  Task(
    "multiview",
    build_model=models.multi_view,
    inputs=("views",),
    data_kind="multiview",
    modalities=frozenset({"image"}),
  )
)
# SimCSE: sentences, two dropout views of each inside the model.
register(
  Task(
    "text",
    build_model=models.text_only,
    inputs=("text",),
    data_kind="text",
    modalities=frozenset({"text"}),
    dropout_key=True,
  )
)
