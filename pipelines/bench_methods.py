"""Cost per method, measured in one process: ``python pipelines/bench.py methods [quick=true] [reps=N]``.

For each method on the same frozen ViT, after one task has begun: a train step (forward, backward, optimiser step
over what the method trains) and the exported model's forward, each relative to the plain backbone's forward on
the same batch, timed interleaved; and the numbers it stores after that task. Every method here exports a plain
timm ViT, so inference costs one backbone forward; prompt methods, which need a query forward first, would show 2x.
The last line is one JSON object.
"""

from __future__ import annotations

import copy
import json
import sys

import timm
import torch

from pipelines.timing import SIZES, forward_pass, median_seconds
from slora.configure import compose_run, keys_read
from slora.learner import Task
from slora.learners import build_learner
from slora.training import build_optimizer

METHODS = ("slora", "slora_pp", "seq_lora", "inflora", "coda_prompt", "l2p", "dualprompt", "simplecil", "seq_ft")
CLASSES = 10


def method_costs(size: str, reps: int, warmup: int) -> dict:
    kwargs, batch = SIZES[size]
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **kwargs)
    images = torch.randn(batch, 3, kwargs["img_size"], kwargs["img_size"])
    labels = torch.arange(batch) % CLASSES
    task = Task(index=0, num_new_classes=CLASSES, known=0, data=lambda: iter([(images, labels)]), num_tasks=10)
    plain = forward_pass(vit, images, autocast=False)
    step_ratio, forward_ratio, stored = {}, {}, {}
    for name in METHODS:  # each timed interleaved with the plain forward, while its task trains, then exported
        cfg = compose_run({**keys_read({"optim.optimizer": "adam"}, name)[0], "variant": name})  # where it trains
        learner = build_learner(cfg, copy.deepcopy(vit))  # seq_ft trains its backbone: each its own copy
        learner.begin_task(task)
        if learner.trains:
            optimizer, _ = build_optimizer(learner, cfg.optim, epochs=1)
            times = median_seconds({"step": _step(learner, optimizer, images, labels), "plain": plain}, reps, warmup,
                                   torch.device("cpu"))
            step_ratio[name] = round(times["step"] / times["plain"], 2)
        merged, _ = learner.end_task(task)
        times = median_seconds({"forward": forward_pass(merged, images, autocast=False), "plain": plain}, reps,
                               warmup, torch.device("cpu"))
        forward_ratio[name] = round(times["forward"] / times["plain"], 3)
        stored[name] = learner.stored_parameters()
    return {"size": size, "batch": batch, **kwargs, "train_step_over_plain_forward": step_ratio,
            "inference_over_plain_forward": forward_ratio, "stored_parameters_after_one_task": stored}


def _step(learner, optimizer, images, labels):
    learner.train()

    def step() -> None:
        loss = learner.loss(learner(images), labels, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    quick = options.get("quick", "false").lower() in ("true", "1", "yes")
    reps = int(options.get("reps", 3 if quick else 10))
    figures = method_costs("cpu_quick" if quick else "cpu", reps, warmup=1 if quick else 2)
    print(f"{figures['size']} ViT (embed {figures['embed_dim']}, depth {figures['depth']}, batch {figures['batch']}); "
          f"each method against the plain backbone's forward:")
    for name in METHODS:
        step = figures["train_step_over_plain_forward"].get(name)
        print(f"  {name:11s} train step {'-' if step is None else f'{step:.2f}x':>6}   inference "
              f"{figures['inference_over_plain_forward'][name]:.3f}x   stored after one task "
              f"{figures['stored_parameters_after_one_task'][name]:,}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
