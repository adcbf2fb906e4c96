"""The data path against the training step: ``python pipelines/bench.py data data_root=DIR [batch_size=64]`` (omniglot,
DIR holding its npz files).

Times the loader (cached uint8 arrays -> float batches, with the tensor-side crop and flip) and one S-LoRA
training step of the run's backbone at the same batch size, in one process; prints images/s of each. The loader
must be faster than the step, or the data would bound a sweep.

``python pipelines/bench.py data image_size=224 [batch_size=64]``: the paper's setting, on the GPU when there is one:
uint8 images at 224 px in host memory (synthetic: the loader's cost does not depend on the pixels) through the
same loader (pinned, copied one batch ahead, crop and flip on the device) against ViT-B/16's S-LoRA step in bf16.
"""

from __future__ import annotations

import json
import time

import timm
import torch

from pipelines.timing import LEAN_MODELS, median_seconds, slora_at_task, train_step
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


def bench_data_224(batch_size: int, batches: int = 20, model: str = "vit_b16", device: torch.device | None = None
                   ) -> dict:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = LEAN_MODELS[model]  # the tiny one for dry runs
    size = arch.get("img_size", 224)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch_size, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (len(images),), generator=generator)

    def load(epochs: int) -> int:
        seen = 0
        for epoch in range(epochs):
            for x, y in train_batches(images, labels, batch_size, seed=epoch, augment="crop_flip", device=device):
                seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen

    load(1)  # warm-up: pinned blocks, kernels
    start = time.perf_counter()
    seen = load(max(1, batches // 4))
    loader = seen / (time.perf_counter() - start)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **arch)
    vit = vit.to(device).requires_grad_(False)
    x, y = next(train_batches(images, labels, batch_size, seed=0, augment="crop_flip", device=device))
    step = median_seconds({"step": train_step(slora_at_task(vit, 1), x, y, autocast=True)}, reps=3, warmup=1,
                          device=device)["step"]
    train = batch_size / step
    return {"benchmark": f"synthetic uint8 {size} px", "device": str(device), "batch_size": batch_size,
            "image_shape": [3, size, size], "step": f"vit_base_patch16_224 {arch or ''} S-LoRA task 1, bf16 autocast",
            "loader_images_per_s": round(loader, 1), "train_step_images_per_s": round(train, 1),
            "loader_over_step": round(loader / train, 2)}


def main(argv: list[str]) -> int:
    overrides = dict(arg.split("=", 1) for arg in argv)
    if overrides.get("image_size") == "224":
        figures = bench_data_224(int(overrides.get("batch_size", 64)))
    else:
        figures = bench_data(overrides)
    print(f"loader {figures['loader_images_per_s']:,.0f} images/s, training step "
          f"{figures['train_step_images_per_s']:,.0f} images/s ({figures['benchmark']}, batch "
          f"{figures['batch_size']}): the loader is {figures['loader_over_step']:.1f}x the step")
    print(json.dumps(figures))
    return 0
