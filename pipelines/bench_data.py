"""The data path against the training step: ``python pipelines/bench.py data [benchmark=omniglot batch_size=64]``.

Times the loader (cached uint8 arrays -> float batches, with the tensor-side crop and flip) and one S-LoRA
training step of the run's backbone at the same batch size, in one process; prints images/s of each. The loader
must be faster than the step, or the data would bound a sweep.
"""

from __future__ import annotations

import json
import time


from slora.configure import compose_run
from slora.continual import ContinualRun
from slora.data import load_benchmark
from slora.data.batches import train_batches
from slora.learner import Task
from slora.training import build_optimizer, continual_loss


def bench_data(overrides: dict[str, str], batches: int = 20) -> dict:
    cfg = compose_run({"benchmark": "omniglot", **overrides})
    bench = load_benchmark(cfg.data)  # the first call decodes into the cache; time the cached path after it
    images, labels = bench.train_images, bench.train_labels
    size = cfg.optim.batch_size
    augment = "crop_flip"  # the paper benchmarks' training augmentation, the costliest path

    start = time.perf_counter()
    seen = 0
    for epoch in range(1000):
        for x, _ in train_batches(images, labels, size, seed=epoch, augment=augment):
            seen += len(x)
            if seen >= batches * size:
                break
        if seen >= batches * size:
            break
    loader = seen / (time.perf_counter() - start)

    run = ContinualRun(cfg, bench, device="cpu")
    run.learner.begin_task(Task(index=0, num_new_classes=bench.task_sizes[0], known=0, data=lambda: iter(())))
    optimizer, _ = build_optimizer(run.learner, cfg.optim, 1)
    x, y = next(train_batches(images, labels, size, seed=0))
    y = y % bench.task_sizes[0]

    def step():
        loss = continual_loss(run.learner(x), y, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    train = 5 * size / (time.perf_counter() - start)
    return {"benchmark": bench.name, "batch_size": size, "image_shape": list(bench.image_shape),
            "loader_images_per_s": round(loader, 1), "train_step_images_per_s": round(train, 1),
            "loader_over_step": round(loader / train, 2)}


def main(argv: list[str]) -> int:
    overrides = dict(arg.split("=", 1) for arg in argv)
    figures = bench_data(overrides)
    print(f"loader {figures['loader_images_per_s']:,.0f} images/s, training step "
          f"{figures['train_step_images_per_s']:,.0f} images/s ({figures['benchmark']}, batch "
          f"{figures['batch_size']}): the loader is {figures['loader_over_step']:.1f}x the step")
    print(json.dumps(figures))
    return 0
