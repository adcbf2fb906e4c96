"""pipelines/run.py on a user's own ImageFolder tree with a local backbone folder: the whole path, on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from PIL import Image

from slora.export import save_timm_folder

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_tree(root: Path, num_classes: int = 4, per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c in range(num_classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = (60 * c, 255 - 60 * c, 20 * i)
                Image.new("RGB", (30 + 7 * i, 24), colour).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.mark.slow
def test_run_on_an_imagefolder_with_a_local_timm_folder_backbone(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2,
                            in_chans=3, num_classes=0)
    backbone = save_timm_folder(vit, tmp_path / "backbone", (0.0,) * 3, (1.0,) * 3)
    args = [f"data_root={write_tree(tmp_path / 'data')}", f"backbone.checkpoint={backbone}",
            f"cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [sys.executable, "pipelines/run.py", "benchmark=imagefolder", "image_size=16", "num_tasks=2", "epochs=1",
         "batch_size=4", "device=cpu", "progress=false", "save_merged=last", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["test_accuracy_curve"]) == 2
    assert results["class_names"] and set(results["class_names"]) == {f"class{c}" for c in range(4)}
    assert (tmp_path / "run" / "merged" / "stage_02" / "model.safetensors").is_file()
    evaluated = subprocess.run(
        [sys.executable, "pipelines/evaluate.py", f"checkpoint={tmp_path / 'run' / 'merged' / 'stage_02'}",
         f"cache_dir={tmp_path / 'cache'}", "device=cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["accuracy"] == results["final_test_accuracy"]


def test_a_backbone_folder_saved_at_another_image_size_loads_with_resampled_positions(tmp_path):
    from slora.backbone import create_backbone
    from slora.config import BackboneConfig

    vit = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2,
                            in_chans=3, num_classes=0)
    folder = save_timm_folder(vit, tmp_path / "backbone", (0.0,) * 3, (1.0,) * 3)
    loaded = create_backbone(BackboneConfig(checkpoint=str(folder)), image_size=24, in_chans=3)
    assert loaded.pos_embed.shape[1] == 1 + 6 * 6
    assert loaded.patch_embed.proj.weight.equal(vit.patch_embed.proj.weight)
