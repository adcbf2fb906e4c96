"""pipelines/pretrain.py: a small ViT trained with a linear head, saved as a timm folder the runs can load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines.pretrain import PretrainConfig, parse, pretrain
from slora.backbone import create_backbone
from slora.config import BackboneConfig
from slora.configure import ConfigError


def write_tree(root: Path) -> Path:
    for split in ("train", "test"):
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16), (100 * c, 50 * i, 0)).save(root / split / f"c{c}" / f"{i}.png")
    return root


def test_overrides_parse_into_the_typed_config():
    cfg = parse(["benchmark=imagefolder", "embed_dim=32", "num_heads=4", "lr=0.01"])
    assert (cfg.benchmark, cfg.embed_dim, cfg.num_heads, cfg.lr) == ("imagefolder", 32, 4, 0.01)


def test_embed_dim_must_divide_into_heads():
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        parse(["embed_dim=30", "num_heads=4"])


def test_the_saved_folder_loads_as_a_backbone_with_the_same_features(tmp_path):
    cfg = PretrainConfig(benchmark="imagefolder", data_root=str(write_tree(tmp_path / "data")), image_size=16,
                         cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "vit"), embed_dim=24, depth=1,
                         num_heads=2, patch_size=4, epochs=1, batch_size=4)
    figures = pretrain(cfg, log=lambda *_: None)
    assert 0.0 <= figures["train_accuracy"] <= 1.0
    backbone = create_backbone(BackboneConfig(checkpoint=str(tmp_path / "vit")), image_size=16, in_chans=3)
    assert backbone.num_classes == 0 and backbone.embed_dim == 24 and len(backbone.blocks) == 1
    features = backbone(torch.rand(2, 3, 16, 16))
    assert features.shape == (2, 24)


def test_a_checkpoint_with_other_channels_is_refused(tmp_path):
    cfg = PretrainConfig(benchmark="imagefolder", data_root=str(write_tree(tmp_path / "data")), image_size=16,
                         cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "vit"), embed_dim=24, depth=1,
                         num_heads=2, patch_size=4, epochs=1, batch_size=4)
    pretrain(cfg, log=lambda *_: None)
    with pytest.raises(ValueError, match="3-channel images, but the benchmark's have 1"):
        create_backbone(BackboneConfig(checkpoint=str(tmp_path / "vit")), image_size=16, in_chans=1)
