"""A class-incremental benchmark: images as uint8 tensors, labels remapped to positions in the class order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .views import ImageView


@dataclass
class Benchmark:
    name: str
    # uint8 (N, C, H, W): the loader's arrays; load_benchmark makes them ImageViews (slora/data/views.py), so the
    # masks below select index arrays and never copy images
    train_images: torch.Tensor | ImageView
    train_labels: torch.Tensor  # int64, position of the class in class_order
    test_images: torch.Tensor | ImageView
    test_labels: torch.Tensor
    class_order: list[int]  # original class ids, in the order tasks meet them
    class_names: list[str]  # names of the original class ids
    task_sizes: list[int]  # classes per task, in order
    augment: str = "none"  # "none" or "crop_flip" (RandomResizedCrop + flip, applied on tensors)
    order_seed: int = -1  # the seed class_order drew class_order from
    val_images: torch.Tensor | ImageView | None = None  # held out of the training images (DataConfig.val_fraction)
    val_labels: torch.Tensor | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits every stage is scored on."""
        return ("test",) if self.val_labels is None else ("val", "test")

    @property
    def num_tasks(self) -> int:
        return len(self.task_sizes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def task_classes(self, task: int) -> range:
        start = sum(self.task_sizes[:task])
        return range(start, start + self.task_sizes[task])

    def seen_classes(self, task: int) -> int:
        return sum(self.task_sizes[: task + 1])

    def train_split(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.task_classes(task)
        mask = (self.train_labels >= classes.start) & (self.train_labels < classes.stop)
        return self.train_images[mask], self.train_labels[mask]

    def split_seen(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The val or test images of every class seen up to ``task``."""
        images, labels = (self.val_images, self.val_labels) if split == "val" else (self.test_images, self.test_labels)
        mask = labels < self.seen_classes(task)
        return images[mask], labels[mask]

    def as_joint(self) -> "Benchmark":
        """The same data as one task holding every class (the `joint` upper bound)."""
        return Benchmark(**{**self.__dict__, "task_sizes": [sum(self.task_sizes)]})


def class_order(num_classes: int, seed: int) -> list[int]:
    """The official code's order: NumPy's global RNG seeded, then one permutation (docs/method.md §9)."""
    state = np.random.get_state()
    np.random.seed(seed)
    order = np.random.permutation(num_classes).tolist()
    np.random.set_state(state)  # leave the caller's global RNG as it was
    return order


def split_tasks(num_classes: int, num_tasks: int = 0, classes_per_task: int = 0) -> list[int]:
    """Classes per task. ``classes_per_task``: tasks of that size, a remainder one extra last task (as the paper's
    code does); else ``num_tasks`` equal tasks, the remainder added to the last one."""
    if classes_per_task <= 0:
        if num_tasks <= 0 or num_tasks > num_classes:
            raise ValueError(f"num_tasks={num_tasks}: must lie in 1..{num_classes} (the number of classes)")
        classes_per_task = num_classes // num_tasks
        sizes = [classes_per_task] * num_tasks
        sizes[-1] += num_classes - classes_per_task * num_tasks
        return sizes
    if classes_per_task > num_classes:
        raise ValueError(f"classes_per_task={classes_per_task}: more than the {num_classes} classes")
    sizes = [classes_per_task] * (num_classes // classes_per_task)
    if num_classes % classes_per_task:
        sizes.append(num_classes % classes_per_task)
    return sizes


def remap(labels: np.ndarray, order: list[int]) -> torch.Tensor:
    position = np.empty(len(order), dtype=np.int64)
    position[np.asarray(order)] = np.arange(len(order))
    return torch.from_numpy(position[labels])
