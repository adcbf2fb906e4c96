"""Everything a lent GPU should confirm, in one run: ``python pipelines/device_check.py [out=device_report.md]``.

A GPU is lent for minutes, so this is ready before one is: on one GPU, in about 8 minutes, with no network,
1. the CUDA tests (``pytest -m gpu``, tests/test_gpu.py): side-stream batches equal the CPU batches, bf16/fp16
   autocast runs track fp32, factored and merged compute agree, two sweep trials share one GPU through Ray;
2. the lean step on ViT-B/16 at 224 (``bench.py lean``: ms, images/s, TFLOP/s, MFU, fp32 and bf16) and the data
   path at 224 (``bench.py data image_size=224``: loader images/s against the bf16 step);
3. a 3-stage tinyimagenet-shaped run at 224 in bf16 on synthetic images (30 classes, ViT-B/16 at random init):
   seconds and images/s per stage, accuracy as a sanity check only.
Each step's failure is written down and the next step still runs. One Markdown report (``out=``, default
``device_report.md``; the device tool returns what is written under $OUT). ``--dry-run``: the same steps on the
CPU at tiny sizes, the CUDA tests included (SLORA_TEST_DEVICE=cpu): CI runs it (tests/test_device_check.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    options = dict(a.partition("=")[::2] for a in argv if a != "--dry-run")
    unknown = set(options) - {"out"}
    if unknown:
        print(f"error: unknown option(s) {sorted(unknown)}; valid: out=FILE, --dry-run", file=sys.stderr)
        return 2
    out = Path(options.get("out") or Path(os.environ.get("OUT", ".")) / "device_report.md")
    import torch

    if not dry and not torch.cuda.is_available():
        print("error: no CUDA device here; --dry-run runs the same steps on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    sections = [header(torch, dry)]
    failed = 0
    for title, step in (("CUDA tests (pytest -m gpu)", cuda_tests), ("Lean step and data path", benches),
                        ("3-stage run, bf16", three_stage_run)):
        started = time.perf_counter()
        try:
            body = step(device, dry)
        except Exception:  # one step's failure is a finding; the GPU time left goes to the next step
            failed += 1
            body = "**failed**\n\n```\n" + traceback.format_exc()[-4000:] + "```"
        sections.append(f"## {title} ({time.perf_counter() - started:.0f} s)\n\n{body}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n\n".join(sections) + "\n")  # written after every step: a timeout keeps what ran
        print(sections[-1], flush=True)
    print(f"report: {out}")
    return 1 if failed else 0


def header(torch, dry: bool) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"# Device check{' (dry run on the CPU, tiny sizes)' if dry else ''}\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}; GPU {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
            f"Python {platform.python_version()}; {os.cpu_count()} CPUs")


def cuda_tests(device, dry: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"SLORA_TEST_DEVICE": "cpu"} if dry else {})}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_gpu.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=420)
    tail = "\n".join(done.stdout.strip().splitlines()[-15:])
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}:\n{tail}\n{done.stderr[-2000:]}")
    return f"```\n{tail}\n```"


def benches(device, dry: bool) -> str:
    from pipelines.bench import lean_bench
    from pipelines.bench_data import bench_data_224

    model = "tiny" if dry else "vit_b16"
    lean = lean_bench(batch=4 if dry else 64, reps=2 if dry else 5, model=model, device=device)
    data = bench_data_224(8 if dry else 64, batches=8 if dry else 20, model=model, device=device)
    rows = ["| precision | plain step ms | S-LoRA task 1 / plain | task 20 / plain | task 1 TFLOP/s | MFU | "
            "images/s (task 1) |", "|---|---|---|---|---|---|---|"]
    for precision in ("fp32", "bf16"):
        f = lean[precision]
        task1 = f"slora_task1_{f['auto_picks']['task1']}"
        rows.append(f"| {precision} | {f['ms']['plain']} | {f['slora_task1_auto_over_plain']} | "
                    f"{f['slora_task20_auto_over_plain']} | {f['task1_tflops_per_s']} | {f.get('task1_mfu', '-')} | "
                    f"{f['images_per_s'][task1]} |")
    return (f"{lean['model']}, batch {lean['batch']}, on {lean['device']}:\n\n" + "\n".join(rows)
            + f"\n\nData path: loader {data['loader_images_per_s']:,.0f} images/s against the bf16 step's "
            f"{data['train_step_images_per_s']:,.0f} ({data['loader_over_step']}x; {data['benchmark']}, batch "
            f"{data['batch_size']}).\n\n<details><summary>JSON</summary>\n\n```\n{json.dumps(lean)}\n"
            f"{json.dumps(data)}\n```\n</details>")


def three_stage_run(device, dry: bool) -> str:
    from pipelines.bench_memory import write_folder
    from slora.configure import compose_run
    from slora.runner import run_continual

    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "data", train_per_class=4 if dry else 40, classes=6 if dry else 30,
                     test_per_class=2 if dry else 10)
        size = 32 if dry else 224
        keys = ["benchmark=imagefolder", f"data_root={tmp}/data", f"cache_dir={tmp}/cache", f"image_size={size}",
                "num_tasks=3", "epochs=1", "precision=bf16", "progress=false", "save_merged=last",
                f"out_dir={tmp}/run", f"device={device.type}", "optim.batch_size=32"]
        if not dry:
            keys += ["backbone=vit_base_patch16_224"]  # random init: nothing downloads; the cost is what counts
        results = run_continual(compose_run(keys), log=lambda *_: None)
    rows = ["| stage | seconds | train images/s | test accuracy |", "|---|---|---|---|"]
    per_stage = (4 if dry else 40) * (2 if dry else 10)  # training images a stage meets, per epoch
    for stage in results["stages"]:
        rows.append(f"| {int(stage['stage'])} | {stage['stage_seconds']:.1f} | "
                    f"{per_stage / stage['stage_seconds']:.0f} | {stage['test_accuracy']:.2%} |")
    return (f"benchmark imagefolder (synthetic), {size} px, 3 tasks, 1 epoch, bf16 autocast, "
            f"{'the tiny default ViT' if dry else 'ViT-B/16 (random init)'}; train images/s counts the stage's "
            "evaluation too:\n\n" + "\n".join(rows))


def cli() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
