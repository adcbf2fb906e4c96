"""Cost of S-LoRA against its own first task, plain LoRA and the plain backbone, measured in one process:
``python pipelines/bench.py [quick=true] [reps=N]``; ``python pipelines/bench.py data`` times the data path;
``python pipelines/bench.py methods`` compares every method's cost (pipelines/bench_methods.py);
``python pipelines/bench.py memory`` measures concurrent runs' unique memory over a large cache (bench_memory.py);
``python pipelines/bench.py precision`` times the S-LoRA step in bf16 autocast against fp32 on ViT-Tiny at 112 px;
``python pipelines/bench.py lean [batch=4] [reps=3]`` times the S-LoRA step on ViT-B/16 at 224 against the plain
frozen-backbone step (forward + input gradients only), merged and factored (``adapter.compute``), and a
PEFT-style factored LoRA, fp32 and bf16; with the model FLOPs of the S-LoRA step (FlopCounterMode), its TFLOP/s,
its MFU on a known GPU and the training hours of a 10-task, 20-epoch ImageNet-R sequence at that rate.

- train step (forward, backward, optimiser step) at task 20 / at task 1: the frozen directions are concatenated
  buffers (no Python loop over tasks), so the cost should barely grow with the number of tasks (goal <= 1.10);
- S-LoRA step / rank-10 LoRA step (goal <= 1.15), against two LoRAs: ``seq_lora`` (the same folded-weight
  forward, one adapter and no magnitudes) and a hand-written PEFT-style LoRA (x V^T U^T added to q and v);
- merged-model forward / plain backbone forward (goal <= 1.02): the exported model is the plain ViT.

The models share one frozen ViT and are timed interleaved (A B C A B C ...), so a load change on the machine
hits them alike; each figure is a median over reps after warm-up. The last line is one JSON object.
On CPU a small ViT; with CUDA also ViT-B/16 at 224 under bf16 autocast, with images/s.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipelines.timing import (CLASSES_PER_TASK, LEAN_MODELS, RANK, SIZES, HandwrittenLoRA, forward_pass,
                              median_seconds, slora_at_task, train_step)


def bench(size: str, device: torch.device, reps: int, warmup: int, autocast: bool) -> dict:
    kwargs, batch = SIZES[size]
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **kwargs).to(device)
    images = torch.randn(batch, 3, kwargs["img_size"], kwargs["img_size"], device=device)
    labels = torch.randint(0, CLASSES_PER_TASK, (batch,), device=device)
    task1, task20 = slora_at_task(vit, 1), slora_at_task(vit, 20)
    lora = slora_at_task(vit, 1, decoupled=False)
    handwritten = HandwrittenLoRA(vit, RANK, CLASSES_PER_TASK)
    steps = median_seconds({
        "slora_task1": train_step(task1, images, labels, autocast),
        "slora_task20": train_step(task20, images, labels, autocast),
        "seq_lora": train_step(lora, images, labels, autocast),
        "handwritten_lora": train_step(handwritten, images, labels, autocast),
    }, reps, warmup, device)
    forwards = median_seconds({
        "merged": forward_pass(task20.merged(), images, autocast),
        "plain": forward_pass(vit, images, autocast),
    }, reps, warmup, device)
    per_task = (task20.stored_parameters() - task1.stored_parameters()) / 19
    return {
        "size": size, "device": str(device), "batch": batch, "bf16_autocast": autocast, **kwargs,
        "step_ms": {k: round(v * 1e3, 3) for k, v in steps.items()},
        "forward_ms": {k: round(v * 1e3, 3) for k, v in forwards.items()},
        "train_images_per_s_task20": round(batch / steps["slora_task20"], 1),
        "merged_images_per_s": round(batch / forwards["merged"], 1),
        "step_task20_over_task1": steps["slora_task20"] / steps["slora_task1"],
        "slora_over_lora_step": steps["slora_task1"] / steps["seq_lora"],
        "slora_task20_over_lora_step": steps["slora_task20"] / steps["seq_lora"],
        "slora_over_handwritten_lora_step": steps["slora_task1"] / steps["handwritten_lora"],
        "merged_over_plain_forward": forwards["merged"] / forwards["plain"],
        "adapter_params_per_task": int(per_task),
    }


def precision_bench(reps: int) -> dict:
    """bf16 autocast / fp32 for the S-LoRA train step (task 1 and task 20) and the merged forward, on the ViT-Tiny
    architecture at 112 px (timing does not depend on the weights, so no checkpoint is needed)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=112).to(device)
    batch = 32
    images = torch.randn(batch, 3, 112, 112, device=device)
    labels = torch.randint(0, CLASSES_PER_TASK, (batch,), device=device)
    task1, task20 = slora_at_task(vit, 1), slora_at_task(vit, 20)
    merged = task20.merged()
    times = median_seconds({
        **{f"step_task1_{p}": train_step(task1, images, labels, p == "bf16") for p in ("fp32", "bf16")},
        **{f"step_task20_{p}": train_step(task20, images, labels, p == "bf16") for p in ("fp32", "bf16")},
        **{f"merged_forward_{p}": forward_pass(merged, images, p == "bf16") for p in ("fp32", "bf16")},
    }, reps, warmup=2, device=device)
    figures = {"device": str(device), "model": "vit_tiny_patch16_224 @112", "batch": batch,
               "ms": {k: round(v * 1e3, 2) for k, v in times.items()}}
    for what in ("step_task1", "step_task20", "merged_forward"):
        figures[f"{what}_bf16_over_fp32"] = times[f"{what}_bf16"] / times[f"{what}_fp32"]
        print(f"  {what:16s} bf16 / fp32 = {figures[f'{what}_bf16_over_fp32']:.3f}  "
              f"({times[f'{what}_bf16'] * 1e3:.1f} ms vs {times[f'{what}_fp32'] * 1e3:.1f} ms, batch {batch})")
    return figures


def plain_step(vit: nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast: bool) -> Callable[[], None]:
    """The floor an adapter step is measured against: the frozen ViT's forward and the gradients with respect to
    its activations (what any adapter inside it needs), a trainable head, no weight gradients in the backbone."""
    head = nn.Linear(vit.num_features, CLASSES_PER_TASK, device=images.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    inputs = images.clone().requires_grad_(True)  # so the backward runs through every block

    def step() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(head(vit(inputs)), labels)
        optimizer.zero_grad(set_to_none=True)
        inputs.grad = None
        loss.backward()
        optimizer.step()

    return step


# bf16 dense tensor-core peak (NVIDIA's datasheets), the denominator of model FLOPs utilisation
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
IMAGENET_R_SEQUENCE = 24_000 * 20  # training images of ImageNet-R's 10 tasks x 20 epochs (the paper's protocol)


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs one call executes, as counted by torch's FlopCounterMode: the forward, the input-gradient backward and
    the weight gradients of what trains (adapters, head): the model FLOPs of this step."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()




def lean_bench(batch: int, reps: int, model: str = "vit_b16", device: torch.device | None = None) -> dict:
    """S-LoRA's step at tasks 1 and 20, merged and factored, and a PEFT-style factored LoRA, over the plain frozen
    step on ViT-B/16 at 224; and which of the two S-LoRA forms ``adapter.compute=auto`` picks for each case."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    arch = LEAN_MODELS[model]
    size = arch.get("img_size", 224)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **arch)
    vit = vit.to(device).requires_grad_(False)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, CLASSES_PER_TASK, (batch,), device=device)
    models = {f"slora_task{task}_{compute}": slora_at_task(vit, task, compute=compute)
              for task in (1, 20) for compute in ("merged", "factored")}
    factored_lora = HandwrittenLoRA(vit, RANK, CLASSES_PER_TASK)
    figures = {"device": str(device), "model": f"vit_base_patch16_224 {arch or ''} @{size}", "batch": batch}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        calls = {"plain": plain_step(vit, images, labels, bf16),
                 **{name: train_step(model, images, labels, bf16) for name, model in models.items()},
                 "factored_lora": train_step(factored_lora, images, labels, bf16)}
        times = median_seconds(calls, reps, warmup=1, device=device)
        over = {k: times[k] / times["plain"] for k in calls if k != "plain"}
        auto = {}
        for task in (1, 20):
            model = slora_at_task(vit, task)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                auto[f"task{task}"] = model.compute_for(images)
            over[f"slora_task{task}_auto"] = over[f"slora_task{task}_{auto[f'task{task}']}"]
        figures[precision] = {"ms": {k: round(v * 1e3, 1) for k, v in times.items()},
                              "images_per_s": {k: round(batch / v, 2) for k, v in times.items()},
                              "auto_picks": auto, **{f"{k}_over_plain": round(v, 3) for k, v in over.items()},
                              **utilisation(calls, times, auto, batch, device, bf16)}
        print(f"  {precision} (plain {times['plain'] * 1e3:.0f} ms = {batch / times['plain']:.2f} img/s, batch {batch})"
              f", step / plain: " + ", ".join(f"{k} {v:.3f}" for k, v in over.items())
              + f"; auto picks {auto}; " + ", ".join(f"{k} {v}" for k, v in figures[precision].items()
                                                     if k.startswith(("task", "imagenet"))))
    return figures


def utilisation(calls: dict, times: dict, auto: dict, batch: int, device: torch.device, bf16: bool) -> dict:
    """S-LoRA's (``auto``) achieved TFLOP/s at tasks 1 and 20, the MFU where the GPU's peak is known, and the
    training time of an ImageNet-R-sized sequence at the task-1 rate."""
    out = {}
    for task in (1, 20):
        name = f"slora_task{task}_{auto[f'task{task}']}"
        flops = step_flops(calls[name])
        out[f"task{task}_gflops_per_image"] = round(flops / batch / 1e9, 2)
        out[f"task{task}_tflops_per_s"] = round(flops / times[name] / 1e12, 3)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if device.type == "cuda" and bf16
                     and k in torch.cuda.get_device_name(device)), None)
        if peak:
            out[f"task{task}_mfu"] = round(flops / times[name] / 1e12 / peak, 3)
    rate = batch / times[f"slora_task1_{auto['task1']}"]
    out["imagenet_r_10_tasks_20_epochs_hours"] = round(IMAGENET_R_SEQUENCE / rate / 3600, 2)
    return out


def report(figures: dict) -> None:
    print(f"\n{figures['size']} ViT on {figures['device']}: embed {figures['embed_dim']}, depth {figures['depth']}, "
          f"img {figures['img_size']}/{figures['patch_size']}, batch {figures['batch']}, "
          f"bf16 autocast {figures['bf16_autocast']}")
    print("  train step ms: " + ", ".join(f"{k} {v:.2f}" for k, v in figures["step_ms"].items()))
    print("  forward ms:    " + ", ".join(f"{k} {v:.2f}" for k, v in figures["forward_ms"].items()))
    for key, goal in (("step_task20_over_task1", 1.10), ("slora_over_lora_step", 1.15),
                      ("slora_task20_over_lora_step", 1.15), ("slora_over_handwritten_lora_step", 1.15),
                      ("merged_over_plain_forward", 1.02)):
        print(f"  {key:34s} {figures[key]:.3f}  (goal <= {goal})")
    print(f"  adapter parameters per task: {figures['adapter_params_per_task']:,}")
    print(f"  images/s: train at task 20 {figures['train_images_per_s_task20']:,.0f}, "
          f"merged forward {figures['merged_images_per_s']:,.0f}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["data"]:
        from pipelines.bench_data import main as data_main

        return data_main(argv[1:])
    if argv[:1] == ["lean"]:
        opts = dict(a.partition("=")[::2] for a in argv[1:])
        print(json.dumps(lean_bench(int(opts.get("batch", 4)), int(opts.get("reps", 3)))))
        return 0
    if argv[:1] == ["precision"]:
        print(json.dumps(precision_bench(int(argv[1].partition("=")[2]) if argv[1:] else 8)))
        return 0
    if argv[:1] == ["memory"]:
        from pipelines.bench_memory import main as memory_main

        return memory_main(argv[1:])
    if argv[:1] == ["methods"]:
        from pipelines.bench_methods import main as methods_main

        return methods_main(argv[1:])
    options = {"quick": "false", "reps": ""}
    for arg in argv:
        key, _, value = arg.removeprefix("--").partition("=")
        if key not in options:
            print(f"error: unknown option {arg!r}; valid: quick=true|false, reps=N", file=sys.stderr)
            return 2
        options[key] = value or "true"
    quick = options["quick"].lower() in ("true", "1", "yes")
    reps = int(options["reps"]) if options["reps"] else (3 if quick else 12)
    runs = [bench("cpu_quick" if quick else "cpu", torch.device("cpu"), reps, warmup=1 if quick else 2,
                  autocast=False)]
    if torch.cuda.is_available() and not quick:
        runs.append(bench("cuda", torch.device("cuda"), reps, warmup=5, autocast=True))
    for figures in runs:
        report(figures)
    summary = dict(runs[-1])
    if len(runs) > 1:
        summary["cpu"] = runs[0]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
