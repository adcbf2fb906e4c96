"""The CUDA paths (``pytest -m gpu``): skipped without a GPU; pipelines/device_check.py runs them where one is lent,
and its --dry-run runs them on the CPU (SLORA_TEST_DEVICE=cpu) so CI keeps them working.

The side-stream batch copy equals the CPU batches; bf16/fp16 autocast runs track fp32; factored and merged compute
agree; a 2-trial sweep packs both trials on one GPU (trials_per_gpu=2) through a local Ray instance."""

from __future__ import annotations

import os

import pytest
import torch

from slora.configure import compose_run
from slora.data.batches import train_batches
from slora.data.views import ImageView
from slora.runner import run_continual
from slora.learners.slora import SLORA_VARIANTS
from tiny import CLASSES_PER_TASK, images, make_model, randomise_current, run_tasks

DEVICE = os.environ.get("SLORA_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not DEVICE, reason="needs a CUDA GPU (pipelines/device_check.py "
                                                                     "runs these where one is lent)")]


def test_batches_copied_on_the_side_stream_equal_the_cpu_batches():
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (60, 3, 16, 16), dtype=torch.uint8, generator=generator)
    view = ImageView(pool, torch.arange(0, 60, 2))  # a task's images: gathered batch by batch
    labels = torch.arange(30)
    on_cpu = list(train_batches(view, labels, 8, seed=3, device="cpu"))
    on_device = list(train_batches(view, labels, 8, seed=3, device=DEVICE))
    assert len(on_cpu) == len(on_device) == 4
    for (x, y), (dx, dy) in zip(on_cpu, on_device):
        assert dx.device.type == DEVICE and torch.equal(x, dx.cpu()) and torch.equal(y, dy.cpu())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_an_autocast_run_tracks_the_fp32_run_on_the_device(precision, tmp_path):
    def stages(p: str) -> list[float]:
        cfg = compose_run({"variant": "slora", "num_tasks": "3", "epochs": "3", "max_train_per_class": "60",
                           "precision": p, "save_merged": "none", "progress": "false", "device": DEVICE,
                           "out_dir": str(tmp_path / p)})
        return [s["test_accuracy"] for s in run_continual(cfg, log=lambda *_: None)["stages"]]

    assert stages(precision) == pytest.approx(stages("fp32"), abs=0.03)  # the CPU test's tolerance


def test_factored_and_merged_compute_agree_on_the_device():
    torch.manual_seed(0)
    model = make_model("slora")
    run_tasks(model, SLORA_VARIANTS["slora"], tasks=2)
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model)
    model = model.to(DEVICE).eval()
    x = images(16, seed=5).to(DEVICE)
    out = {}
    for compute in ("merged", "factored"):
        model.cfg.compute = compute
        with torch.no_grad():
            out[compute] = model(x).float()
    assert out["merged"].device.type == DEVICE
    assert torch.allclose(out["merged"], out["factored"], atol=1e-4, rtol=1e-3)


def test_two_trials_share_one_gpu(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from pipelines.sweeper.options import parse_sweep_args
    from pipelines.sweeper.tuner import run_sweep, start_ray, stop_ray

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep, run_overrides, space_overrides = parse_sweep_args(
        ["variant=slora", "num_samples=2", "scheduler=none", "trials_per_gpu=2", "num_tasks=2",
         "max_train_per_class=20", "max_test_per_class=10", "space.optim.epochs=1", "name=gpu", "save_merged=none",
         f"tracking_uri={uri}", *(["device=cpu"] if DEVICE == "cpu" else [])])
    lines: list[str] = []
    start_ray("", **({"num_gpus": 1} if DEVICE == "cpu" else {}))  # on the CPU dry run: one logical GPU
    try:
        run_sweep(sweep, run_overrides, space_overrides, log=lines.append, shared_ray=True)
    finally:
        stop_ray()
    assert any("GPUs" in line and "2 trials at a time, 0.5 GPU" in line for line in lines), lines
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("slora-sweep").experiment_id],
                              "tags.`slora.kind` = 'trial'")
    assert sorted((r.data.params["resources.gpus_per_worker"], r.data.params["device"], r.data.tags["slora.status"])
                  for r in runs) == [("0.5", DEVICE, "finished")] * 2
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time, "both trials ran on the GPU at once"
