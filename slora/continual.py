"""One continual sequence: the stage loop shared by pipelines/run.py and every Ray Train worker.

A stage is the learner's begin_task (S-LoRA: grow the head, add a direction) -> train -> end_task (S-LoRA: absorb,
or freeze and normalise; every method hands back the plain model as trained) -> evaluate that model on every class
seen so far. The evaluation uses the merged plain-timm model, so
a stage's accuracy is exactly what the exported checkpoint scores.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .backbone import create_backbone
from .config import RunConfig
from .data import Benchmark
from .data.batches import eval_batches, train_batches
from .export import UNIT_MEAN, UNIT_STD
from .learner import Task
from .learners import build_learner
from .metrics import accuracy, average_incremental_accuracy, block_accuracies, forgetting
from .training import build_optimizer, predict, train_epoch

EVAL_BATCH = 256


@dataclass
class StageResult:
    stage: int  # 1-based, the MLflow step
    # `<split>_<score>` for each split the benchmark has (slora.config.SPLIT_SCORES): accuracy over all seen
    # classes (sample-weighted), accuracy_old (earlier tasks' classes; NaN at stage 1), accuracy_new, forgetting,
    # average_incremental_accuracy
    scores: dict[str, float]
    stored_parameters: int
    stage_seconds: float
    train_loss: float
    lora_rank: int  # rank of this task's direction
    absorbed: bool  # KD absorbed this task's direction into the old magnitudes

    def metrics(self) -> dict[str, float]:
        plain = {k: float(v) for k, v in asdict(self).items() if k != "scores"}
        return {"stage": plain.pop("stage"), **self.scores, **plain}


@dataclass
class ContinualState:
    """What a stage-boundary checkpoint holds besides the adapter tensors."""

    stages_done: int = 0
    block_accuracy: dict[str, list[list[float]]] = field(default_factory=dict)  # split -> [stage][task block]
    curve: dict[str, list[float]] = field(default_factory=dict)  # split -> accuracy after each stage
    results: list[dict] = field(default_factory=list)


class ContinualRun:
    """Builds the model for a config and runs its stages; restartable from any stage boundary."""

    def __init__(
        self,
        cfg: RunConfig,
        bench: Benchmark,
        device: torch.device | str = "cpu",
        ddp_rank: int = 0,
        world_size: int = 1,
        wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    ):
        self.cfg, self.device, self.wrap = cfg, torch.device(device), wrap
        self.ddp_rank, self.world_size = ddp_rank, world_size
        channels, size, _ = bench.image_shape
        vit = create_backbone(cfg.backbone, image_size=size, in_chans=channels, seed=cfg.seed)
        self.mean, self.std = input_normalisation(vit, cfg.data.input_scaling, channels)
        self.learner = build_learner(cfg, vit.to(self.device))
        self.bench = bench.as_joint() if self.learner.joint else bench
        self.state = ContinualState()
        self.last_merged: nn.Module | None = None  # the evaluated (and exported) model of the last stage

    @property
    def num_stages(self) -> int:
        return self.bench.num_tasks

    def restore(self, learner_state: dict[str, torch.Tensor], state: ContinualState) -> None:
        self.learner.load_learner_state({k: v.to(self.device) for k, v in learner_state.items()})
        self.state = state

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """In place: every caller hands a fresh float batch (to_float), and a float copy of a 256-image batch at
        224 px is 154 MB of a process's memory."""
        return images.sub_(self.mean.to(images.device)).div_(self.std.to(images.device))

    def run_stage(self) -> StageResult:
        stage = self.state.stages_done
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed * 1000 + stage)  # the new direction's init: same on every rank and resume
        classes = self.bench.task_classes(stage)
        images, labels = self.bench.train_split(stage)
        task = Task(index=stage, num_new_classes=len(classes), known=classes.start, data=lambda: (
            (self._normalise(x), y.to(self.device)) for x, y in zip(eval_batches(images, EVAL_BATCH, self.device),
                                                                   labels.split(EVAL_BATCH))),
                    num_tasks=self.num_stages)
        self.learner.begin_task(task)
        loss = self._train(task, images, labels) if self.learner.trains else math.nan
        self.last_merged, absorbed = self.learner.end_task(task)
        result = self._evaluate(self.last_merged, stage, self.learner.task_rank, absorbed, loss,
                                time.perf_counter() - start)
        self.state.stages_done += 1
        self.state.results.append(result.metrics())
        return result

    def _train(self, task: Task, images: torch.Tensor, labels: torch.Tensor) -> float:
        """The task's epochs; -> the last epoch's mean loss."""
        stage, optim = task.index, self.cfg.optim
        epochs = optim.first_task_epochs if stage == 0 and optim.first_task_epochs else optim.epochs
        forward = self.wrap(self.learner)
        lr_scale = optim.first_task_lr_scale if stage == 0 else 1.0
        optimizer, scheduler = build_optimizer(self.learner, optim, epochs, lr_scale)
        loss = math.nan
        for epoch in _progress(range(epochs), f"stage {stage + 1}/{self.num_stages}",
                               self.cfg.progress and self.ddp_rank == 0):
            batches = (
                (self._normalise(x), y)
                for x, y in train_batches(images, labels, optim.batch_size,
                                          seed=(self.cfg.seed * 1000 + stage) * 1000 + epoch, ddp_rank=self.ddp_rank,
                                          world_size=self.world_size, augment=self.bench.augment, device=self.device)
            )
            loss = train_epoch(forward, self.learner, batches, optimizer, known=task.known, grad_clip=optim.grad_clip,
                               precision=self.cfg.precision)
            scheduler.step()
        return loss

    def _evaluate(self, merged: nn.Module, stage: int, lora_rank: int, absorbed: bool, loss: float,
                  seconds: float) -> StageResult:
        scores = {}
        for split in self.bench.splits:
            images, labels = self.bench.split_seen(split, stage)
            predictions = predict(merged, (self._normalise(x) for x in eval_batches(images, EVAL_BATCH, self.device)),
                                  self.cfg.precision)
            blocks = block_accuracies(predictions, labels, self.bench.task_sizes)
            self.state.block_accuracy.setdefault(split, []).append(blocks[: stage + 1])
            curve = self.state.curve.setdefault(split, [])
            curve.append(accuracy(predictions, labels))
            old = labels < self.bench.task_classes(stage).start
            scores.update({
                f"{split}_accuracy": curve[-1],
                f"{split}_accuracy_old": accuracy(predictions[old], labels[old]),
                f"{split}_accuracy_new": accuracy(predictions[~old], labels[~old]),
                f"{split}_forgetting": forgetting(self.accuracy_matrix(split), stage),
                f"{split}_average_incremental_accuracy": average_incremental_accuracy(curve),
            })
        return StageResult(stage=stage + 1, scores=scores, stored_parameters=self.learner.stored_parameters(),
                           stage_seconds=seconds, train_loss=loss, lora_rank=lora_rank, absorbed=absorbed)

    def accuracy_matrix(self, split: str = "test") -> list[list[float]]:
        """matrix[j][k]: accuracy on task j's classes of the split after stage k (NaN where j > k)."""
        n = self.num_stages
        done = self.state.block_accuracy.get(split, [])
        return [[done[k][j] if k < len(done) and j < len(done[k]) else math.nan for k in range(n)] for j in range(n)]


def input_normalisation(vit: nn.Module, scaling: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """unit: pixels in [0,1] as every published number used; backbone: the timm weights' own mean/std."""
    if scaling == "unit":
        mean, std = [UNIT_MEAN] * channels, [UNIT_STD] * channels
    else:
        cfg = getattr(vit, "pretrained_cfg", {})
        mean, std = list(cfg.get("mean", [0.5] * channels)), list(cfg.get("std", [0.5] * channels))
        mean, std = (mean * channels)[:channels], (std * channels)[:channels]
    shape = (1, channels, 1, 1)
    return torch.tensor(mean).reshape(shape), torch.tensor(std).reshape(shape)


def _progress(iterable, description: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, unit="epoch")
