"""The exported stage folder is plain timm: no project code needed to load it, preprocessing included."""

from __future__ import annotations

import json

import timm
import torch

from slora.export import load_timm_folder, save_timm_folder
from slora.learners.slora import SLORA_VARIANTS
from tiny import images, logits, make_model, run_tasks

MEAN, STD = (0.25,), (0.5,)


def exported(tmp_path):
    model = make_model("slora_pp")
    run_tasks(model, SLORA_VARIANTS["slora_pp"], tasks=2)
    folder = save_timm_folder(model.merged(), tmp_path / "stage_02", MEAN, STD, extra={"stage": 2})
    return model, folder


def test_exported_folder_loads_with_plain_timm_and_gives_the_same_logits(tmp_path):
    model, folder = exported(tmp_path)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert loaded.num_classes == model.num_classes
    torch.testing.assert_close(logits(loaded), logits(model.merged()), rtol=0, atol=0)
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-4)


def test_exported_folder_carries_the_runs_mean_and_std(tmp_path):
    _, folder = exported(tmp_path)
    data = timm.data.resolve_data_config(model=load_timm_folder(folder))
    assert tuple(data["mean"]) == MEAN and tuple(data["std"]) == STD and tuple(data["input_size"]) == (1, 8, 8)


def test_exported_folder_keeps_the_extra_metadata(tmp_path):
    _, folder = exported(tmp_path)
    assert json.loads((folder / "slora.json").read_text()) == {"stage": 2}


def test_load_timm_folder_names_a_folder_without_config(tmp_path):
    try:
        load_timm_folder(tmp_path)
    except FileNotFoundError as err:
        assert str(tmp_path) in str(err)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_exported_logits_do_not_depend_on_the_batch():
    model = make_model("slora")
    run_tasks(model, SLORA_VARIANTS["slora"], tasks=1)
    merged, x = model.merged(), images(6)
    torch.testing.assert_close(logits(merged, x)[:3], logits(merged, x[:3]), rtol=0, atol=1e-6)
