"""Memory of concurrent runs over one large decoded-data cache: ``python pipelines/bench.py memory [gb=2.0]
[processes=2] [out_dir=DIR]``.

Writes a synthetic ImageFolder (20 classes of small PNGs, decoded at 224 px into the cache: at least ``gb`` GB of
training images on disk), builds its cache once, then runs ``processes`` 2-stage sequences at the same time, each
holding out val_fraction=0.1 of the training images as a sweep's trials do, and prints each process's unique memory
(USS, psutil: the pages no other process maps) at its peak, over the cache's size, and what it grew by while it
held the data: all of it, and its copies alone (less the cache file's clean pages that only it had mapped, which
are the page cache's, shared and droppable, not copies: the kernel maps whole page-cache folios, up to megabytes,
around each image read, so this part of USS varies with which process touched a region first). Goal <= 0.15 for
the copies: the splits, the hold-out, the caps and the tasks index the memory-mapped cache instead of copying it
(slora/data/views.py), so a process holds only its own batches. Linux (/proc/self/smaps). The last line is JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES, TEST_PER_CLASS, SIZE = 20, 10, 224
# a tiny ViT at 224 px: the runs exist to exercise the data path, not to learn
RUN = ["benchmark=imagefolder", "num_tasks=2", f"image_size={SIZE}", "val_fraction=0.1", "max_train_per_class=8",
       "max_test_per_class=4", "epochs=1", "backbone.embed_dim=24", "backbone.depth=1", "backbone.num_heads=2",
       "backbone.patch_size=16", "progress=false", "save_merged=none", "device=cpu"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        print(json.dumps(worker(argv[1:])))
        return 0
    options = dict(a.partition("=")[::2] for a in argv)
    unknown = set(options) - {"gb", "processes", "out_dir"}
    if unknown:
        print(f"error: unknown option(s) {sorted(unknown)}; valid: gb=, processes=, out_dir=", file=sys.stderr)
        return 2
    gb, processes = float(options.get("gb", 2.0)), int(options.get("processes", 2))
    with tempfile.TemporaryDirectory(dir=options.get("out_dir") or None) as tmp:
        figures = measure(Path(tmp), gb, processes)
    for i, uss in enumerate(figures["uss_peak_bytes"]):
        print(f"process {i}: peak USS {uss / 2**30:.2f} GiB = {uss / figures['cache_bytes']:.3f} of the cache "
              f"({figures['cache_bytes'] / 2**30:.2f} GiB); grown while it held the data: "
              f"{figures['data_ratio'][i]:.3f}, of which copies (not the cache's clean pages) "
              f"{figures['copies_ratio'][i]:.3f}")
    print(f"goal <= 0.15 of the cache per process, copies: worst {max(figures['copies_ratio']):.3f} (USS grown: "
          f"{max(figures['data_ratio']):.3f}; USS with torch's own runtime: {max(figures['uss_ratio']):.3f})")
    print(json.dumps(figures))
    return 0


def measure(tmp: Path, gb: float, processes: int) -> dict:
    from slora.configure import compose_run
    from slora.data import load_benchmark

    per_class = int(np.ceil(gb * 1e9 / (CLASSES * 3 * SIZE * SIZE)))
    started = time.perf_counter()
    write_folder(tmp / "data", per_class)
    run = [*RUN, f"data_root={tmp / 'data'}", f"cache_dir={tmp / 'cache'}"]
    load_benchmark(compose_run(run).data)  # builds the cache entries once, as a sweep's preflight does
    cache_bytes = sum(p.stat().st_size for p in (tmp / "cache").rglob("images.npy"))
    built = time.perf_counter() - started
    workers = [subprocess.Popen([sys.executable, "-m", "pipelines.bench_memory", "worker", *run,
                                 f"out_dir={tmp / f'run{i}'}"], stdout=subprocess.PIPE, text=True)
               for i in range(processes)]
    results = []
    for process in workers:
        out, _ = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"a measured run failed (exit {process.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    peaks = [r["uss_peak"] for r in results]
    return {"cache_bytes": cache_bytes, "train_images": CLASSES * per_class, "processes": processes,
            "uss_peak_bytes": peaks, "uss_ratio": [round(p / cache_bytes, 4) for p in peaks],
            "data_ratio": [round((r["uss_peak"] - r["uss_before_data"]) / cache_bytes, 4) for r in results],
            "copies_ratio": [round((r["owned_peak"] - r["uss_before_data"]) / cache_bytes, 4) for r in results],
            "build_seconds": round(built, 1), "run_seconds": [round(r["seconds"], 1) for r in results]}


def write_folder(root: Path, train_per_class: int, classes: int = CLASSES, test_per_class: int = TEST_PER_CLASS
                 ) -> None:
    """An ImageFolder of small PNGs (a class colour and a per-image gradient); the decoder upscales them."""
    from PIL import Image

    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    for c in range(classes):
        colour = np.array([(37 * c) % 256, (91 * c) % 256, (53 * c) % 256], dtype=np.uint8)
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.empty((32, 32, 3), dtype=np.uint8)
                pixels[:] = colour
                pixels[:, :, i % 3] = np.roll(ramp, i)[None, :]
                Image.fromarray(pixels).save(folder / f"{i:05d}.png", compress_level=1)


def worker(overrides: list[str]) -> dict:
    """One run's peak USS (sampled every 0.2 s while it loads its data and runs its stages: a split copied for one
    stage counts too), and its USS before the data was touched."""
    import threading

    import psutil
    import torch

    from slora.configure import compose_run
    from slora.continual import ContinualRun
    from slora.data import load_benchmark

    torch.set_num_threads(1)
    process = psutil.Process()
    cfg = compose_run(overrides)
    cache = str(Path(cfg.data.cache_dir).resolve())
    before = process.memory_full_info().uss
    peak, owned, done = [before], [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak.append(process.memory_full_info().uss)
            owned.append(peak[-1] - clean_cache_pages(cache))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    run = ContinualRun(cfg, load_benchmark(cfg.data), device=torch.device("cpu"))
    for _ in range(run.num_stages):
        run.run_stage()
    done.set()
    sampler.join()
    peak.append(process.memory_full_info().uss)
    owned.append(peak[-1] - clean_cache_pages(cache))
    return {"uss_before_data": before, "uss_peak": max(peak), "owned_peak": max(owned),
            "seconds": time.perf_counter() - started}


def clean_cache_pages(cache: str) -> int:
    """Bytes of the cache files' unmodified pages that USS counts for this process alone (it mapped them first, or
    alone): page-cache pages read through the copy-on-write map, which the kernel shares and may drop, not copies."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and " " in line and "-" in line.split(" ", 1)[0]:
                parts = line.split()
                inside = len(parts) > 5 and parts[5].startswith(cache)
            elif inside and line.startswith("Private_Clean:"):
                total += int(line.split()[1]) * 1024
    return total


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
