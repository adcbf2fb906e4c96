"""Pretrained weights with no reachable hub: the tag's file from the hub cache, or one clear error at once."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from slora.backbone import BackboneError, create_backbone
from slora.config import BackboneConfig

NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
SIZES = {"embed_dim": 24, "depth": 2, "num_heads": 2, "patch_size": 4}


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """A hub endpoint whose port refuses connections, no proxy, and an empty hub cache; yields the cache."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused at once
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path / "hub"
    closed.close()


def test_no_hub_and_no_cached_weights_is_one_error_naming_both_ways_out(unreachable_hub):
    with pytest.raises(BackboneError) as err:
        create_backbone(BackboneConfig(name=NAME, pretrained=True, **SIZES), image_size=8, in_chans=3)
    message = str(err.value)
    assert "cannot be reached" in message and f"timm/{NAME}/model.safetensors" in message
    assert str(unreachable_hub) in message and "backbone.checkpoint=PATH" in message


def test_no_hub_loads_the_tags_weights_from_the_hub_cache(unreachable_hub):
    torch.manual_seed(3)
    source = timm.create_model(NAME, pretrained=False, img_size=8, **SIZES)  # with its 1000-class head, as published
    snapshot = unreachable_hub / f"models--timm--{NAME}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")

    loaded = create_backbone(BackboneConfig(name=NAME, pretrained=True, **SIZES), image_size=8, in_chans=3, seed=9)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
